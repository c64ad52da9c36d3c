package caddymodule

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(VercelOIDCSource{})
}

// oidcStates holds each source's runtime state (cached token, refresher,
// file watcher) keyed by its resolved configuration, so that a config
// reload with the same source keeps its token and its running refresher.
var oidcStates = caddy.NewUsagePool()

// VercelOIDCSource is a Vercel OIDC token that the proxy keeps fresh. It
// has up to three inputs: an environment variable, a file, and minting
// through the Vercel API. Among the inputs that have a token, the valid
// one that expires last is used; a token is never used at or after its
// exp. With no input configured, the env variable VERCEL_OIDC_TOKEN is
// read.
type VercelOIDCSource struct {
	// The environment variable holding a token. Read at provision.
	// Default: VERCEL_OIDC_TOKEN when neither file nor mint is set.
	Env string `json:"env,omitempty"`

	// A file holding the token: a raw JWT, or a dotenv file with a line
	// VERCEL_OIDC_TOKEN=… (as `vercel env pull` writes .env.local). It is
	// re-read whenever it changes, atomic renames included, without a
	// reload.
	File string `json:"file,omitempty"`

	// Mint fresh tokens through the Vercel API.
	Mint *MintConfig `json:"mint,omitempty"`

	// Accept verified tokens POSTed to a path of this site.
	Push *PushConfig `json:"push,omitempty"`

	// How long before a token's exp a refresh starts (capped at half the
	// token's lifetime). Default: 5m.
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`

	// A token is not sent in this last stretch before its exp, so that
	// clock skew and time in flight do not turn into upstream 401s.
	// Default: the smaller of 5s and a tenth of the token's lifetime.
	ExpiryMargin caddy.Duration `json:"expiry_margin,omitempty"`

	// After the gateway refuses the token (401), a different one is
	// fetched (minted, or re-read from the env or file) at most once per
	// this interval, however many requests were refused; until then the
	// refused token is kept, since a single request's 401 does not prove
	// the token bad. Default: 10s.
	ForcedRefreshInterval caddy.Duration `json:"forced_refresh_interval,omitempty"`

	// Keep the token in Caddy's configured storage (the global `storage`
	// option), so that every instance sharing that storage uses it: one
	// refresh per rotation for the whole fleet, under the storage's lock;
	// a pushed token, and the verdict that the gateway refused one, reach
	// every instance within a few seconds. The stored value is a live
	// credential: the storage must be as private as the TLS keys Caddy
	// keeps in it. Instances share when their tokens are for the same
	// team and project and their mint (api, project, team) and push
	// settings are the same; a source that learns its project from its
	// env or file token shares nothing until it has one. Default: off.
	Share bool `json:"share,omitempty"`

	state    *credential.OIDCSource
	key      string
	released bool
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (VercelOIDCSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway_auth.credentials.vercel_oidc",
		New: func() caddy.Module { return new(VercelOIDCSource) },
	}
}

// Provision resolves the configuration and takes (or creates) the shared
// runtime state. It reads the env variable and the file, and makes no
// network call.
func (s *VercelOIDCSource) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	cfg, err := s.resolve(ctx)
	if err != nil {
		return err
	}
	if s.key, err = cfg.Key(); err != nil {
		return err
	}
	val, loaded, err := oidcStates.LoadOrNew(s.key, func() (caddy.Destructor, error) {
		return credential.NewOIDCSource(cfg, s.key, s.logger), nil
	})
	if err != nil {
		return err
	}
	s.state = val.(*credential.OIDCSource)
	if loaded {
		s.state.Adopt(cfg, s.logger) // the newest config's logger and storage
		s.logger.Debug("reusing the credential cache of the previous config")
	}
	return nil
}

// resolve is the source's configuration resolved: defaults, placeholders,
// the file's absolute path, the minter, the push rules, the storage.
func (s *VercelOIDCSource) resolve(ctx caddy.Context) (credential.OIDCConfig, error) {
	if s.Env == "" && s.File == "" && s.Mint == nil && s.Push == nil {
		s.Env = credential.DefaultEnv
	}
	if s.RefreshBefore < 0 || s.ExpiryMargin < 0 || s.ForcedRefreshInterval < 0 {
		return credential.OIDCConfig{}, fmt.Errorf("refresh_before, expiry_margin and forced_refresh_interval must not be negative")
	}
	cfg := credential.OIDCConfig{
		Env:                   s.Env,
		RefreshBefore:         time.Duration(s.RefreshBefore),
		ExpiryMargin:          time.Duration(s.ExpiryMargin),
		ForcedRefreshInterval: time.Duration(s.ForcedRefreshInterval),
	}
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = credential.DefaultRefreshBefore
	}
	if cfg.ForcedRefreshInterval == 0 {
		cfg.ForcedRefreshInterval = credential.DefaultForcedRefreshInterval
	}
	if s.File != "" {
		path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(s.File, ""))
		if err != nil {
			return cfg, fmt.Errorf("file: %v", err)
		}
		cfg.File = path
	}
	if s.Mint != nil {
		m, err := credential.NewMinter(s.Mint.settings())
		if err != nil {
			return cfg, err
		}
		cfg.SetMinter(m)
	}
	cfg.ReadEnv()
	if err := pushUnresolved(s.Push); err != nil {
		return cfg, err
	}
	cfg.Push = resolvePush(s.Push, s.Mint)
	if s.Share {
		if err := resolveShare(ctx, &cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// Cleanup releases the shared state; the last user stops its goroutines.
func (s *VercelOIDCSource) Cleanup() error {
	if s.state == nil {
		return nil
	}
	if s.released {
		return nil // a second Cleanup must not release another config's reference
	}
	s.released = true
	_, err := oidcStates.Delete(s.key)
	return err
}

// Current implements Source.
func (s *VercelOIDCSource) Current(now time.Time) *credential.Credential { return s.state.Current(now) }

// Fetch implements Source.
func (s *VercelOIDCSource) Fetch(ctx context.Context) (*credential.Credential, error) {
	return s.state.Fetch(ctx)
}

// RetryAfter is when this source may have a credential again.
func (s *VercelOIDCSource) RetryAfter() time.Duration { return s.state.RetryAfter() }

// Offer installs a pushed token if it expires later than the cached one;
// with share, it is stored for the fleet too (credential.OIDCSource.Offer).
func (s *VercelOIDCSource) Offer(c *credential.Credential) bool { return s.state.Offer(c) }

// Refused is told the upstream answered 401 to a request sent with c; it
// returns the credential to replay with, or nil.
func (s *VercelOIDCSource) Refused(ctx context.Context, c *credential.Credential) *credential.Credential {
	return s.state.Refused(ctx, c)
}

// Kind implements Source.
func (*VercelOIDCSource) Kind() string { return "vercel_oidc" }

// Status implements Source.
func (s *VercelOIDCSource) Status(now time.Time) credential.SourceStatus { return s.state.Status(now) }

var (
	_ credential.Source  = (*VercelOIDCSource)(nil)
	_ caddy.Provisioner  = (*VercelOIDCSource)(nil)
	_ caddy.CleanerUpper = (*VercelOIDCSource)(nil)
)
