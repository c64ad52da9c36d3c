package caddymodule

import (
	"net/url"
	"strings"
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
//	key:<name>                                a client_keys_file entry or a signed key
//	sandbox:<team_id>/<project_id>/<sandbox_id>  a Vercel Sandbox (each part path-escaped)
type principal struct {
	name any // string, boxed once: setting a placeholder then allocates nothing
	id   any // string, boxed once
}

func (p *principal) nameString() string { return p.name.(string) }

// placeholderPrincipal is every literal client_key's client.
var placeholderPrincipal = &principal{name: placeholderClient, id: placeholderClient}

// keyPrincipal is the client of a named key (client_keys_file or signed).
func keyPrincipal(name string) *principal {
	return &principal{name: name, id: "key:" + name}
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
