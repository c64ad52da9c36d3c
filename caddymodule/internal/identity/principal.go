// Package identity owns who a request comes from: the [Principal] and
// its one id, the client keys a handler accepts ([Keys]: literal keys,
// a keys file, keys signed with a secret, revocation), the Vercel Sandbox
// forwardURL tokens ([SandboxVerifier]), and the registry of live key
// sources that warns when two would give the same ids
// ([RegisterKeySources]).
//
// It never sees an upstream credential, never writes a response, never
// logs (its callers say what a refusal or a collision means), and reads
// no file itself: the module hands it the content of the files it
// watches. A client key is never kept in the clear beyond a literal
// client_key: keys are looked up by digest.
package identity

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
)

// Principal is who a request comes from. Its name is for people (logs,
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
//	key:<namespace>/<name>                    the same, from a key source with a namespace (registry.go)
//	sandbox:<team_id>/<project_id>/<sandbox_id>  a Vercel Sandbox (each part path-escaped)
//
// A key's name is path-escaped in its id (a client_keys_file name is free
// text and may hold a slash), and a namespace holds no slash, so no name
// of one source can spell another source's id.
type Principal struct {
	name any // string, boxed once: setting a placeholder then allocates nothing
	id   any // string, boxed once
}

// Name is the principal's name for people, a string boxed once: setting
// a placeholder or a log field with it allocates nothing.
func (p *Principal) Name() any { return p.name }

// ID is the principal's unique id, a string boxed once.
func (p *Principal) ID() any { return p.id }

func (p *Principal) nameString() string { return p.name.(string) }

// Placeholder is every literal client_key's client.
var Placeholder = &Principal{name: PlaceholderName, id: PlaceholderName}

// KeyPrincipal is the client of a named key (client_keys_file or signed)
// from the key source with namespace ns ("" for none).
func KeyPrincipal(ns, name string) *Principal {
	return &Principal{name: name, id: KeyID(ns, name)}
}

// KeyID is the id of the key client name of the key source with
// namespace ns.
func KeyID(ns, name string) string {
	if ns == "" {
		return "key:" + url.PathEscape(name)
	}
	return "key:" + ns + "/" + url.PathEscape(name)
}

// sandboxPrincipal is the client of a verified Vercel Sandbox token:
// named by its sandbox_name (or id), identified by team, project and
// sandbox id. The parts are escaped, so no claim can make two sandboxes'
// ids equal by carrying a slash.
func sandboxPrincipal(c *sandboxClaims) *Principal {
	name := c.SandboxName
	if name == "" {
		name = c.SandboxID
	}
	id := "sandbox:" + strings.Join([]string{url.PathEscape(c.TeamID), url.PathEscape(c.ProjectID), url.PathEscape(c.SandboxID)}, "/")
	return &Principal{name: name, id: id}
}

// MaxNamespaceLen is the longest key source namespace.
const MaxNamespaceLen = 64

// CheckNamespace says what is wrong with a key source's namespace:
// 1 to 64 of A-Z, a-z, 0-9, '.', '_', ':' and '-' (no '/', which ends
// the namespace in an id).
func CheckNamespace(ns string) error {
	if ns == "" || len(ns) > MaxNamespaceLen {
		return fmt.Errorf("namespace %q must be 1 to %d characters", safetext.Clipped(ns), MaxNamespaceLen)
	}
	for i := 0; i < len(ns); i++ {
		if !NamespaceByte(ns[i]) {
			return fmt.Errorf("namespace %q may hold only A-Z, a-z, 0-9, '.', '_', ':' and '-' (no '/' or placeholder)", safetext.Clipped(ns))
		}
	}
	return nil
}

// NamespaceByte reports whether c may appear in a namespace.
func NamespaceByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}
