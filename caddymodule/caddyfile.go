package caddymodule

import (
	"encoding/json"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_gateway_auth", parseCaddyfile)
	// Early, right after basic_auth: authentication must run before any
	// handler that could answer or proxy the request (reverse_proxy, and
	// handle/route blocks that contain one), so it cannot be bypassed by
	// the order of directives in a site block.
	httpcaddyfile.RegisterDirectiveOrder("ai_gateway_auth", httpcaddyfile.After, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	ai_gateway_auth {
//	    credential static <key>
//	    credential vercel_oidc {
//	        env            [<variable>]
//	        file           <path>
//	        mint {
//	            project      <id or name>
//	            team         <id or slug>
//	            access_token <token>
//	            api          <url>
//	            timeout      <duration>
//	        }
//	        push <path> {
//	            issuer   <url>
//	            jwks_url <url>
//	            team     <team_id>
//	            project  <project_id>
//	        }
//	        refresh_before          <duration>
//	        expiry_margin           <duration>
//	        forced_refresh_interval <duration>
//	        share
//	    }
//	    client_key               <key...>
//	    client_keys_file         <path>
//	    client_key_secret        <secret...>
//	    client_keys_revoked_file <path>
//	    vercel_sandbox {
//	        audience       <forwardURL>
//	        team           <team_id...>
//	        project        <project_id...>
//	        issuer         <url>
//	        jwks_url       <url>
//	        forwarded_host <host...>
//	    }
//	    allow_paths        <pattern...>
//	    retry_body_limit   <size>
//	    retry_memory_limit auto|<size>
//	    credential_wait    <duration>
//	    reporting {
//	        user <value>
//	        tags <tag...>
//	    }
//	    limits {
//	        requests_per_minute <n>
//	        tokens_per_day      <n>
//	        usd_per_day         <amount>
//	        redis               <redis://… URL> [{ timeout <duration> }]
//	    }
//	    usage_metrics
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("ai_gateway_auth takes no arguments on its line, only a block; got '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "credential":
			raw, err := parseCredential(d)
			if err != nil {
				return err
			}
			h.CredentialsRaw = append(h.CredentialsRaw, raw)
		case "client_key":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("client_key needs at least one key, e.g. `client_key sk-placeholder`")
			}
			h.ClientKeys = append(h.ClientKeys, args...)
		case "client_keys_file":
			if h.ClientKeysFile != "" {
				return d.Errf("client_keys_file is already set to %s; give it once", h.ClientKeysFile)
			}
			if err := oneArg(d, &h.ClientKeysFile); err != nil {
				return err
			}
		case "client_key_secret":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("client_key_secret needs a secret, e.g. `client_key_secret {env.CLIENT_KEY_SECRET}`")
			}
			h.ClientKeySecrets = append(h.ClientKeySecrets, args...)
		case "client_keys_revoked_file":
			if h.ClientKeysRevokedFile != "" {
				return d.Errf("client_keys_revoked_file is already set to %s; give it once", h.ClientKeysRevokedFile)
			}
			if err := oneArg(d, &h.ClientKeysRevokedFile); err != nil {
				return err
			}
		case "vercel_sandbox":
			if h.VercelSandbox != nil {
				return d.Errf("vercel_sandbox is already configured; give it once")
			}
			h.VercelSandbox = new(VercelSandbox)
			if err := h.VercelSandbox.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "allow_paths":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("allow_paths needs at least one path pattern, e.g. `allow_paths /v1/*`")
			}
			if _, err := newPathAllowList(args); err != nil {
				return d.Errf("%v", err)
			}
			h.AllowPaths = append(h.AllowPaths, args...)
		case "retry_body_limit":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size > 1<<30 {
				return d.Errf("retry_body_limit: '%s' is not a size up to 1GiB (e.g. 1MiB, 512KB, 0 is not allowed: use 1 to disable replays of bodies)", v)
			}
			if size == 0 {
				return d.Errf("retry_body_limit must be positive (e.g. 1MiB)")
			}
			h.RetryBodyLimit = int64(size)
		case "retry_memory_limit":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			if v == "auto" {
				h.RetryMemoryLimit = 0
				break
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("retry_memory_limit: '%s' is not auto or a positive size up to 1TiB (e.g. 64MiB)", v)
			}
			h.RetryMemoryLimit = int64(size)
		case "credential_wait":
			if err := durationArg(d, &h.CredentialWait); err != nil {
				return err
			}
		case "reporting", "limits", "usage_metrics": // spend_caddyfile.go
			if err := h.unmarshalSpend(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized ai_gateway_auth option '%s' (expected credential, client_key, client_keys_file, "+
				"client_key_secret, client_keys_revoked_file, vercel_sandbox, allow_paths, retry_body_limit, retry_memory_limit, credential_wait, "+
				"reporting, limits or usage_metrics)", d.Val())
		}
	}
	if len(h.CredentialsRaw) == 0 {
		return d.Errf("ai_gateway_auth needs at least one upstream credential: add `credential static {env.AI_GATEWAY_API_KEY}` or `credential vercel_oidc`")
	}
	if !h.hasClientAuth() {
		return d.Errf("ai_gateway_auth: %s", noClientAuthMessage)
	}
	return nil
}

func parseCredential(d *caddyfile.Dispenser) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.Errf("credential needs a kind: `credential static <key>` or `credential vercel_oidc { ... }`")
	}
	switch kind := d.Val(); kind {
	case "static":
		var s StaticSource
		if !d.NextArg() {
			return nil, d.Errf("credential static needs a key, e.g. `credential static {env.AI_GATEWAY_API_KEY}`")
		}
		s.Key = d.Val()
		if d.NextArg() {
			return nil, d.Errf("credential static takes one key; got another argument '%s'", d.Val())
		}
		if d.NextBlock(d.Nesting()) {
			return nil, d.Errf("credential static takes no block")
		}
		return caddyconfig.JSONModuleObject(s, "source", kind, nil), nil
	case "vercel_oidc":
		var s VercelOIDCSource
		if err := s.unmarshalCaddyfile(d); err != nil {
			return nil, err
		}
		return caddyconfig.JSONModuleObject(s, "source", kind, nil), nil
	default:
		return nil, d.Errf("unknown credential kind '%s' (expected static or vercel_oidc)", kind)
	}
}

func (s *VercelOIDCSource) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("credential vercel_oidc takes a block, not arguments; got '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "env":
			s.Env = defaultOIDCEnv
			if d.NextArg() {
				s.Env = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "file":
			if err := oneArg(d, &s.File); err != nil {
				return err
			}
		case "mint":
			if s.Mint != nil {
				return d.Errf("mint is already configured; give it once")
			}
			s.Mint = new(MintConfig)
			if err := s.Mint.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "refresh_before":
			if err := durationArg(d, &s.RefreshBefore); err != nil {
				return err
			}
		case "expiry_margin":
			if err := durationArg(d, &s.ExpiryMargin); err != nil {
				return err
			}
		case "forced_refresh_interval":
			if err := durationArg(d, &s.ForcedRefreshInterval); err != nil {
				return err
			}
		case "share":
			if d.NextArg() {
				return d.ArgErr()
			}
			s.Share = true
		case "push":
			if s.Push != nil {
				return d.Errf("push is already configured; give it once")
			}
			s.Push = new(PushConfig)
			if err := s.Push.unmarshalCaddyfile(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized vercel_oidc option '%s' (expected env, file, mint, push, refresh_before, expiry_margin, forced_refresh_interval or share)", d.Val())
		}
	}
	return nil
}

func (m *MintConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("mint takes a block, not arguments; got '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "project":
			err = oneArg(d, &m.Project)
		case "team":
			err = oneArg(d, &m.Team)
		case "access_token":
			err = oneArg(d, &m.AccessToken)
		case "api":
			if err = oneArg(d, &m.API); err == nil && !strings.Contains(m.API, "{") {
				if _, perr := parseAPIURL(m.API); perr != nil {
					err = d.Errf("%v", perr)
				}
			}
		case "timeout":
			err = durationArg(d, &m.Timeout)
		default:
			err = d.Errf("unrecognized mint option '%s' (expected project, team, access_token, api or timeout)", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if m.Project == "" {
		return d.Errf("mint needs `project <id>`, e.g. `project {env.VERCEL_PROJECT_ID}`")
	}
	if m.AccessToken == "" {
		return d.Errf("mint needs `access_token <token>`, e.g. `access_token {env.VERCEL_TOKEN}` (a Vercel access token; an OIDC token cannot mint another)")
	}
	return nil
}

func (p *PushConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() || !strings.HasPrefix(d.Val(), "/") {
		return d.Errf("push needs the path that accepts tokens, e.g. `push /ai-gateway-auth/token`")
	}
	p.Path = d.Val()
	if d.NextArg() {
		return d.Errf("push takes one path; got another argument '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "issuer":
			err = oneArg(d, &p.Issuer)
		case "jwks_url":
			err = oneArg(d, &p.JWKSURL)
		case "team":
			err = oneArg(d, &p.Team)
		case "project":
			err = oneArg(d, &p.Project)
		default:
			err = d.Errf("unrecognized push option '%s' (expected issuer, jwks_url, team or project)", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (v *VercelSandbox) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("vercel_sandbox takes a block, not arguments; got '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "audience":
			err = oneArg(d, &v.Audience)
		case "issuer":
			err = oneArg(d, &v.Issuer)
		case "jwks_url":
			err = oneArg(d, &v.JWKSURL)
		case "team", "project", "forwarded_host":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("%s needs at least one value", opt)
			}
			switch opt {
			case "team":
				v.Teams = append(v.Teams, args...)
			case "project":
				v.Projects = append(v.Projects, args...)
			default:
				v.ForwardedHosts = append(v.ForwardedHosts, args...)
			}
		default:
			err = d.Errf("unrecognized vercel_sandbox option '%s' (expected audience, team, project, issuer, jwks_url or forwarded_host)", opt)
		}
		if err != nil {
			return err
		}
	}
	if v.Audience == "" {
		return d.Errf("vercel_sandbox needs `audience <forwardURL>`: the forwardURL exactly as the sandbox network policy names it")
	}
	if len(v.Teams) == 0 {
		return d.Errf("vercel_sandbox needs at least one `team team_…`: the teams whose sandboxes may use the proxy")
	}
	return nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s needs a value", name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value; got another argument '%s'", name, d.Val())
	}
	return nil
}

// durationArg reads one positive duration ("5m", "30s") into dst.
func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var v string
	if err := oneArg(d, &v); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s: '%s' is not a positive duration (e.g. 5m, 30s)", name, v)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
