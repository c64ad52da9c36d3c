package caddymodule

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
)

// principal is who a request comes from. Its name is for people (logs,
// {ai_gateway_auth.client}); its id is unique among every kind of client
// and says its kind, so that everything that counts or attributes
// (limits, the client metric label, top_clients_today, the default
// reporting user, {ai_gateway_auth.client_id}) can never mistake one
// client for another: a name a client chooses, such as a sandbox's name,
// is display only.
//
// The ids:
//
//	placeholder                               a literal client_key
//	key:<name>                                a client_keys_file entry or a signed key, from a key source without a namespace
//	key:<namespace>/<name>                    the same, from a key source with a namespace (keynamespace.go)
//	sandbox:<team_id>/<project_id>/<sandbox_id>  a Vercel Sandbox (each part path-escaped)
//
// A key's name is path-escaped in its id (a client_keys_file name is free
// text and may hold a slash), and a namespace holds no slash, so no name
// of one source can spell another source's id.
type principal struct {
	name any // string, boxed once: setting a placeholder then allocates nothing
	id   any // string, boxed once
}

func (p *principal) nameString() string { return p.name.(string) }

// placeholderPrincipal is every literal client_key's client.
var placeholderPrincipal = &principal{name: placeholderClient, id: placeholderClient}

// keyPrincipal is the client of a named key (client_keys_file or signed)
// from the key source with namespace ns ("" for none).
func keyPrincipal(ns, name string) *principal {
	return &principal{name: name, id: keyID(ns, name)}
}

// keyID is the id of the key client name of the key source with
// namespace ns.
func keyID(ns, name string) string {
	if ns == "" {
		return "key:" + url.PathEscape(name)
	}
	return "key:" + ns + "/" + url.PathEscape(name)
}

// sandboxPrincipal is the client of a verified Vercel Sandbox token:
// named by its sandbox_name (or id), identified by team, project and
// sandbox id. The parts are escaped, so no claim can make two sandboxes'
// ids equal by carrying a slash.
func sandboxPrincipal(c *sandboxClaims) *principal {
	name := c.SandboxName
	if name == "" {
		name = c.SandboxID
	}
	id := "sandbox:" + strings.Join([]string{url.PathEscape(c.TeamID), url.PathEscape(c.ProjectID), url.PathEscape(c.SandboxID)}, "/")
	return &principal{name: name, id: id}
}

// maxKeyNamespaceLen is the longest key source namespace.
const maxKeyNamespaceLen = 64

// checkKeyNamespace says what is wrong with a key source's namespace:
// 1 to 64 of A-Z, a-z, 0-9, '.', '_', ':' and '-' (no '/', which ends
// the namespace in an id).
func checkKeyNamespace(ns string) error {
	if ns == "" || len(ns) > maxKeyNamespaceLen {
		return fmt.Errorf("namespace %q must be 1 to %d characters", safetext.Clipped(ns), maxKeyNamespaceLen)
	}
	for i := 0; i < len(ns); i++ {
		if !keyNamespaceByte(ns[i]) {
			return fmt.Errorf("namespace %q may hold only A-Z, a-z, 0-9, '.', '_', ':' and '-' (no '/' or placeholder)", safetext.Clipped(ns))
		}
	}
	return nil
}

func keyNamespaceByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}
