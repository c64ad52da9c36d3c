package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
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
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	deriveKeyNamespaces(h, &handler)                       // keynamespace.go
	if err := checkPoliciesAdapted(&handler); err != nil { // policies_caddyfile.go
		return nil, err
	}
	return &handler, nil
}

// UnmarshalCaddyfile sets up the handler from its Caddyfile block. The
// options of each block are in the tables below; docs/caddyfile.md is
// their reference, held to them by TestDocsCaddyfileReference.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("ai_gateway_auth takes no arguments on its line, only a block; got '%s'", d.Val())
	}
	if err := handlerOptions.parseBlock(d, h); err != nil {
		return err
	}
	if len(h.CredentialsRaw) == 0 {
		return d.Errf("ai_gateway_auth needs at least one upstream credential: add `credential static {env.AI_GATEWAY_API_KEY}` or `credential vercel_oidc`")
	}
	if !h.hasClientAuth() {
		return d.Errf("ai_gateway_auth: %s", noClientAuthMessage)
	}
	if h.Limits != nil && h.Limits.storeOnly() && !h.policiesLimited() {
		return fmt.Errorf("limits sets no limit, only where to count (redis, max_clients, default_max_tokens): add one of "+
			"requests_per_minute, tokens_per_day, tokens_per_month, usd_per_day, usd_per_month, concurrent_requests, or a policy with limits, at %s:%d",
			d.File(), h.limitsLine)
	}
	return nil
}

// handlerOptions are the options of the ai_gateway_auth block.
var handlerOptions = newOptions("ai_gateway_auth",
	option[Handler]{"credential", func(d *caddyfile.Dispenser, h *Handler) error {
		if !d.NextArg() {
			return d.Errf("credential needs a kind: `credential static <key>` or `credential vercel_oidc { ... }`")
		}
		var raw json.RawMessage
		if err := credentialKinds.parseOne(d, &raw, "unknown credential kind"); err != nil {
			return err
		}
		h.CredentialsRaw = append(h.CredentialsRaw, raw)
		return nil
	}},
	option[Handler]{"client_key", func(d *caddyfile.Dispenser, h *Handler) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("client_key needs at least one key, e.g. `client_key sk-placeholder`")
		}
		h.ClientKeys = append(h.ClientKeys, args...)
		return nil
	}},
	option[Handler]{"client_keys_file", func(d *caddyfile.Dispenser, h *Handler) error {
		if h.ClientKeysFile != "" {
			return d.Errf("client_keys_file is already set to %s; give it once", h.ClientKeysFile)
		}
		if err := oneArg(d, &h.ClientKeysFile); err != nil {
			return err
		}
		h.keySourceOrder = append(h.keySourceOrder, keySourceFile)
		return keysFileOptions.parseBlock(d, h)
	}},
	option[Handler]{"client_key_secret", func(d *caddyfile.Dispenser, h *Handler) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("client_key_secret needs a secret, e.g. `client_key_secret {env.CLIENT_KEY_SECRET}`")
		}
		if len(h.ClientKeySecrets) == 0 {
			h.keySourceOrder = append(h.keySourceOrder, keySourceSigned)
		}
		h.ClientKeySecrets = append(h.ClientKeySecrets, args...)
		return keySecretOptions.parseBlock(d, h)
	}},
	option[Handler]{"client_keys_revoked_file", func(d *caddyfile.Dispenser, h *Handler) error {
		if h.ClientKeysRevokedFile != "" {
			return d.Errf("client_keys_revoked_file is already set to %s; give it once", h.ClientKeysRevokedFile)
		}
		return oneArg(d, &h.ClientKeysRevokedFile)
	}},
	option[Handler]{"vercel_sandbox", func(d *caddyfile.Dispenser, h *Handler) error {
		if h.VercelSandbox != nil {
			return d.Errf("vercel_sandbox is already configured; give it once")
		}
		h.VercelSandbox = new(VercelSandbox)
		return h.VercelSandbox.unmarshalCaddyfile(d)
	}},
	option[Handler]{"allow_paths", func(d *caddyfile.Dispenser, h *Handler) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("allow_paths needs at least one path pattern, e.g. `allow_paths /v1/*`")
		}
		if _, err := newPathAllowList(args); err != nil {
			return d.Errf("%v", err)
		}
		h.AllowPaths = append(h.AllowPaths, args...)
		return nil
	}},
	option[Handler]{"retry_body_limit", func(d *caddyfile.Dispenser, h *Handler) error {
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
		return nil
	}},
	option[Handler]{"retry_memory_limit", func(d *caddyfile.Dispenser, h *Handler) error {
		var v string
		if err := oneArg(d, &v); err != nil {
			return err
		}
		if v == "auto" {
			h.RetryMemoryLimit = 0
			return nil
		}
		size, err := humanize.ParseBytes(v)
		if err != nil || size == 0 || size > 1<<40 {
			return d.Errf("retry_memory_limit: '%s' is not auto or a positive size up to 1TiB (e.g. 64MiB)", v)
		}
		h.RetryMemoryLimit = int64(size)
		return nil
	}},
	option[Handler]{"credential_wait", func(d *caddyfile.Dispenser, h *Handler) error {
		return durationArg(d, &h.CredentialWait)
	}},
	option[Handler]{"reporting", func(d *caddyfile.Dispenser, h *Handler) error { // spend_caddyfile.go
		if h.Reporting != nil {
			return d.Errf("reporting is already configured; give it once")
		}
		h.Reporting = new(Reporting)
		return h.Reporting.unmarshalCaddyfile(d)
	}},
	option[Handler]{"limits", func(d *caddyfile.Dispenser, h *Handler) error {
		if h.Limits != nil {
			return d.Errf("limits is already configured; give it once")
		}
		h.Limits, h.limitsLine = new(Limits), d.Line()
		return h.Limits.unmarshalCaddyfile(d)
	}},
	option[Handler]{"usage_metrics", func(d *caddyfile.Dispenser, h *Handler) error {
		if d.NextArg() {
			return d.Errf("usage_metrics takes no arguments; got '%s'", d.Val())
		}
		if d.NextBlock(d.Nesting()) {
			return d.Errf("usage_metrics takes no block")
		}
		h.UsageMetrics = true
		return nil
	}},
	option[Handler]{"allow_models", parseBlockAllowModels}, // policies_caddyfile.go
	option[Handler]{"policy", parsePolicy},
	option[Handler]{"catalog_file", parseCatalogFile},
	option[Handler]{"gateway", func(d *caddyfile.Dispenser, h *Handler) error { // catalog.go
		if h.Gateway != "" {
			return d.Errf("gateway is already set to %s; give it once", h.Gateway)
		}
		if err := oneArg(d, &h.Gateway); err != nil {
			return err
		}
		if !strings.Contains(h.Gateway, "{") { // a placeholder is checked at provision
			if err := checkGatewayURL(h.Gateway); err != nil {
				return d.Errf("%v", err)
			}
		}
		return nil
	}},
)

// keysFileOptions are the options of client_keys_file's block.
var keysFileOptions = newOptions("client_keys_file",
	option[Handler]{"namespace", func(d *caddyfile.Dispenser, h *Handler) error {
		return namespaceArg(d, &h.ClientKeysFileNamespace, nil)
	}},
)

// keySecretOptions are the options of client_key_secret's block. The
// secrets of one ai_gateway_auth block are one key source (rotation), so
// the namespaces their lines name must agree.
var keySecretOptions = newOptions("client_key_secret",
	option[Handler]{"namespace", func(d *caddyfile.Dispenser, h *Handler) error {
		return namespaceArg(d, &h.ClientKeySecretsNamespace, &h.secretsNamespaceLine)
	}},
)

// namespaceArg reads a key source's namespace into dst. line, if not
// nil, remembers where one was named, so that another line naming a
// different one is an error that points at both.
func namespaceArg(d *caddyfile.Dispenser, dst *string, line *int) error {
	var ns string
	if err := oneArg(d, &ns); err != nil {
		return err
	}
	if err := identity.CheckNamespace(ns); err != nil {
		return d.Errf("%v", err)
	}
	if *dst != "" && *dst != ns {
		if line != nil {
			return d.Errf("namespace %s differs from %s, named on line %d: the client_key_secret lines of one block are one key source (rotation), with one namespace; name the same namespace on each, or on one line only", ns, *dst, *line)
		}
		return d.Errf("namespace is already set to %s; give it once", *dst)
	}
	*dst = ns
	if line != nil {
		*line = d.Line()
	}
	return nil
}

// credentialKinds are the kinds of `credential <kind>`.
var credentialKinds = newOptions("credential",
	option[json.RawMessage]{"static", func(d *caddyfile.Dispenser, raw *json.RawMessage) error {
		var s StaticSource
		if !d.NextArg() {
			return d.Errf("credential static needs a key, e.g. `credential static {env.AI_GATEWAY_API_KEY}`")
		}
		s.Key = d.Val()
		if d.NextArg() {
			return d.Errf("credential static takes one key; got another argument '%s'", d.Val())
		}
		if d.NextBlock(d.Nesting()) {
			return d.Errf("credential static takes no block")
		}
		*raw = caddyconfig.JSONModuleObject(s, "source", "static", nil)
		return nil
	}},
	option[json.RawMessage]{"vercel_oidc", func(d *caddyfile.Dispenser, raw *json.RawMessage) error {
		var s VercelOIDCSource
		if d.NextArg() {
			return d.Errf("credential vercel_oidc takes a block, not arguments; got '%s'", d.Val())
		}
		if err := vercelOIDCOptions.parseBlock(d, &s); err != nil {
			return err
		}
		*raw = caddyconfig.JSONModuleObject(s, "source", "vercel_oidc", nil)
		return nil
	}},
)

// vercelOIDCOptions are the options of `credential vercel_oidc`.
var vercelOIDCOptions = newOptions("vercel_oidc",
	option[VercelOIDCSource]{"env", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		s.Env = credential.DefaultEnv
		if d.NextArg() {
			s.Env = d.Val()
			if strings.ContainsAny(s.Env, "{}=$ ") {
				return d.Errf("env takes the name of an environment variable, not its value or a placeholder: write `env VERCEL_OIDC_TOKEN`; got '%s'", s.Env)
			}
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}},
	option[VercelOIDCSource]{"file", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		return oneArg(d, &s.File)
	}},
	option[VercelOIDCSource]{"mint", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		if s.Mint != nil {
			return d.Errf("mint is already configured; give it once")
		}
		s.Mint = new(MintConfig)
		return s.Mint.unmarshalCaddyfile(d)
	}},
	option[VercelOIDCSource]{"push", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		if s.Push != nil {
			return d.Errf("push is already configured; give it once")
		}
		s.Push = new(PushConfig)
		return s.Push.unmarshalCaddyfile(d)
	}},
	option[VercelOIDCSource]{"refresh_before", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		return durationArg(d, &s.RefreshBefore)
	}},
	option[VercelOIDCSource]{"expiry_margin", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		return durationArg(d, &s.ExpiryMargin)
	}},
	option[VercelOIDCSource]{"forced_refresh_interval", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		return durationArg(d, &s.ForcedRefreshInterval)
	}},
	option[VercelOIDCSource]{"share", func(d *caddyfile.Dispenser, s *VercelOIDCSource) error {
		if d.NextArg() {
			return d.ArgErr()
		}
		s.Share = true
		return nil
	}},
)

func (m *MintConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("mint takes a block, not arguments; got '%s'", d.Val())
	}
	if err := mintOptions.parseBlock(d, m); err != nil {
		return err
	}
	if m.Project == "" {
		return d.Errf("mint needs `project <id>`, e.g. `project {env.VERCEL_PROJECT_ID}`")
	}
	if m.AccessToken == "" {
		return d.Errf("mint needs `access_token <token>`, e.g. `access_token {env.VERCEL_TOKEN}` (a Vercel access token; an OIDC token cannot mint another)")
	}
	return nil
}

// mintOptions are the options of a vercel_oidc source's mint block.
var mintOptions = newOptions("mint",
	option[MintConfig]{"project", func(d *caddyfile.Dispenser, m *MintConfig) error { return oneArg(d, &m.Project) }},
	option[MintConfig]{"team", func(d *caddyfile.Dispenser, m *MintConfig) error { return oneArg(d, &m.Team) }},
	option[MintConfig]{"access_token", func(d *caddyfile.Dispenser, m *MintConfig) error { return oneArg(d, &m.AccessToken) }},
	option[MintConfig]{"api", func(d *caddyfile.Dispenser, m *MintConfig) error {
		if err := oneArg(d, &m.API); err != nil {
			return err
		}
		if !strings.Contains(m.API, "{") { // a placeholder is checked when it is resolved
			if err := credential.CheckMintAPI(m.API); err != nil {
				return d.Errf("%v", err)
			}
		}
		return nil
	}},
	option[MintConfig]{"timeout", func(d *caddyfile.Dispenser, m *MintConfig) error { return durationArg(d, &m.Timeout) }},
)

func (p *PushConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() || !strings.HasPrefix(d.Val(), "/") {
		return d.Errf("push needs the path that accepts tokens, e.g. `push /ai-gateway-auth/token`")
	}
	p.Path = d.Val()
	if d.NextArg() {
		return d.Errf("push takes one path; got another argument '%s'", d.Val())
	}
	return pushOptions.parseBlock(d, p)
}

// pushOptions are the options of a vercel_oidc source's push block.
var pushOptions = newOptions("push",
	option[PushConfig]{"issuer", func(d *caddyfile.Dispenser, p *PushConfig) error { return oneArg(d, &p.Issuer) }},
	option[PushConfig]{"jwks_url", func(d *caddyfile.Dispenser, p *PushConfig) error { return oneArg(d, &p.JWKSURL) }},
	option[PushConfig]{"team", func(d *caddyfile.Dispenser, p *PushConfig) error { return oneArg(d, &p.Team) }},
	option[PushConfig]{"project", func(d *caddyfile.Dispenser, p *PushConfig) error { return oneArg(d, &p.Project) }},
)

func (v *VercelSandbox) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("vercel_sandbox takes a block, not arguments; got '%s'", d.Val())
	}
	if err := vercelSandboxOptions.parseBlock(d, v); err != nil {
		return err
	}
	if v.Audience == "" {
		return d.Errf("vercel_sandbox needs `audience <forwardURL>`: the forwardURL exactly as the sandbox network policy names it")
	}
	if len(v.Teams) == 0 {
		return d.Errf("vercel_sandbox needs at least one `team team_…`: the teams whose sandboxes may use the proxy")
	}
	return nil
}

// vercelSandboxOptions are the options of the vercel_sandbox block.
var vercelSandboxOptions = newOptions("vercel_sandbox",
	option[VercelSandbox]{"audience", func(d *caddyfile.Dispenser, v *VercelSandbox) error { return oneArg(d, &v.Audience) }},
	option[VercelSandbox]{"team", func(d *caddyfile.Dispenser, v *VercelSandbox) error { return appendArgs(d, &v.Teams) }},
	option[VercelSandbox]{"project", func(d *caddyfile.Dispenser, v *VercelSandbox) error { return appendArgs(d, &v.Projects) }},
	option[VercelSandbox]{"issuer", func(d *caddyfile.Dispenser, v *VercelSandbox) error { return oneArg(d, &v.Issuer) }},
	option[VercelSandbox]{"jwks_url", func(d *caddyfile.Dispenser, v *VercelSandbox) error { return oneArg(d, &v.JWKSURL) }},
	option[VercelSandbox]{"forwarded_host", func(d *caddyfile.Dispenser, v *VercelSandbox) error {
		return appendArgs(d, &v.ForwardedHosts)
	}},
)

// appendArgs appends the option's arguments, at least one, to dst.
func appendArgs(d *caddyfile.Dispenser, dst *[]string) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s needs at least one value", name)
	}
	*dst = append(*dst, args...)
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
