package caddymodule

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/caddyserver/caddy/v2"
)

// VercelSandbox accepts requests forwarded by a Vercel Sandbox firewall
// forwardURL rule, identified by their verified sandbox OIDC token.
type VercelSandbox struct {
	// The forwardURL exactly as the sandbox network policy names it; the
	// token's aud must equal it (a trailing slash is ignored). Required.
	Audience string `json:"audience,omitempty"`
	// Allowed team_id values. At least one is required.
	Teams []string `json:"teams,omitempty"`
	// Allowed project_id values. Empty: any project of an allowed team.
	Projects []string `json:"projects,omitempty"`
	// The accepted token issuer; when set, the only one. Default: what
	// the teams imply, https://oidc.vercel.com/<team> for each team (live
	// sandbox tokens carry the team id in iss), never a path a token
	// picks: a token from any other issuer is refused before any fetch.
	Issuer string `json:"issuer,omitempty"`
	// Where the issuer's keys are. Default: <iss>/.well-known/jwks.
	JWKSURL string `json:"jwks_url,omitempty"`
	// Hosts a sandbox may have meant (vercel-forwarded-host); others are
	// refused with 403, never followed: the upstream is the one in the
	// config. Default: ai-gateway.vercel.sh.
	ForwardedHosts []string `json:"forwarded_hosts,omitempty"`
}

// resolve resolves v's placeholders ({env.X}), as everywhere in the
// config, and checks that it names an audience and a team.
func (v VercelSandbox) resolve() (identity.SandboxConfig, error) {
	repl := caddy.NewReplacer()
	resolve := func(vs []string) []string {
		var out []string
		for _, v := range vs {
			if v = strings.TrimSpace(repl.ReplaceAll(v, "")); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	cfg := identity.SandboxConfig{
		Audience:       strings.TrimSpace(repl.ReplaceAll(v.Audience, "")),
		Teams:          resolve(v.Teams),
		Projects:       resolve(v.Projects),
		Issuer:         strings.TrimSpace(repl.ReplaceAll(v.Issuer, "")),
		JWKSURL:        strings.TrimSpace(repl.ReplaceAll(v.JWKSURL, "")),
		ForwardedHosts: resolve(v.ForwardedHosts),
	}
	if cfg.Audience == "" {
		return cfg, errors.New("vercel_sandbox needs `audience <forwardURL>`: the URL of the sandbox policy's forwardURL (is its placeholder set?)")
	}
	if len(cfg.Teams) == 0 {
		// the teams as written, to name them
		return cfg, fmt.Errorf("vercel_sandbox needs at least one `team team_…`: the teams whose sandboxes may use the proxy (%s resolved to nothing: are the variables set?)", strings.Join(v.Teams, " "))
	}
	return cfg, nil
}
