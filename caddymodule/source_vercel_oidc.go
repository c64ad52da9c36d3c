package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(VercelOIDCSource{})
}

const (
	defaultOIDCEnv       = "VERCEL_OIDC_TOKEN"
	defaultRefreshBefore = 5 * time.Minute
)

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

	state    *oidcState
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
	if s.Env == "" && s.File == "" && s.Mint == nil && s.Push == nil {
		s.Env = defaultOIDCEnv
	}
	if s.RefreshBefore < 0 || s.ExpiryMargin < 0 || s.ForcedRefreshInterval < 0 {
		return fmt.Errorf("refresh_before, expiry_margin and forced_refresh_interval must not be negative")
	}
	cfg := resolvedOIDCConfig{
		Env:                   s.Env,
		RefreshBefore:         time.Duration(s.RefreshBefore),
		ExpiryMargin:          time.Duration(s.ExpiryMargin),
		ForcedRefreshInterval: time.Duration(s.ForcedRefreshInterval),
	}
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = defaultRefreshBefore
	}
	if cfg.ForcedRefreshInterval == 0 {
		cfg.ForcedRefreshInterval = defaultForcedRefreshInterval
	}
	if s.File != "" {
		path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(s.File, ""))
		if err != nil {
			return fmt.Errorf("file: %v", err)
		}
		cfg.File = path
	}
	if s.Mint != nil {
		m, err := newMinter(s.Mint)
		if err != nil {
			return err
		}
		cfg.mint = m
		cfg.MintEndpoint, cfg.MintAccessTokenHash = m.endpoint, hashString(m.accessToken)
		cfg.MintTimeout = m.timeout
	}
	if cfg.Env != "" {
		cfg.EnvValueHash = hashString(os.Getenv(cfg.Env))
	}
	if err := pushUnresolved(s.Push); err != nil {
		return err
	}
	cfg.Push = resolvePush(s.Push, s.Mint)
	if s.Share {
		if err := cfg.resolveShare(ctx); err != nil {
			return err
		}
	}
	keyJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	s.key = "vercel_oidc:" + string(keyJSON)
	val, loaded, err := oidcStates.LoadOrNew(s.key, func() (caddy.Destructor, error) {
		return newOIDCState(cfg, hashString(s.key)[:12], s.logger), nil
	})
	if err != nil {
		return err
	}
	s.state = val.(*oidcState)
	if loaded {
		s.state.setLogger(s.logger)
		s.state.share.setStorage(cfg.storage) // the newest config's
		s.logger.Debug("reusing the credential cache of the previous config")
	}
	return nil
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
func (s *VercelOIDCSource) Current(now time.Time) *Credential { return s.state.refresher.Current(now) }

// Fetch implements Source.
func (s *VercelOIDCSource) Fetch(ctx context.Context) (*Credential, error) {
	return s.state.refresher.Fetch(ctx)
}

// RetryAfter is when this source may have a credential again.
func (s *VercelOIDCSource) RetryAfter() time.Duration { return s.state.refresher.RetryAfter() }

// Offer installs a pushed token if it expires later than the cached one;
// with share, it is stored for the fleet too. A push is the source at
// work, like a request: it starts the source if nothing has (its refresh
// loop and, with share, the storage's poll and the publishing of this
// token), so that a push to an instance that has served nothing yet
// still reaches the fleet.
func (s *VercelOIDCSource) Offer(c *Credential) bool {
	used := s.state.offer(c) // before the start, which publishes it
	s.state.refresher.run()
	return used
}

// Refused is told the upstream answered 401 to a request sent with c; it
// returns the credential to replay with, or nil (see refresher.Refused).
func (s *VercelOIDCSource) Refused(ctx context.Context, c *Credential) *Credential {
	return s.state.refresher.Refused(ctx, c)
}

// Kind implements Source.
func (*VercelOIDCSource) Kind() string { return "vercel_oidc" }

// Status implements Source.
func (s *VercelOIDCSource) Status(now time.Time) SourceStatus {
	st := s.state.refresher.status(now)
	st.ID = s.state.id
	st.Shared = s.state.share.status()
	return st
}

// resolvedOIDCConfig identifies a source's runtime state: two sources
// with the same resolved config share one cache. Secrets appear only as
// hashes, and only in memory.
type resolvedOIDCConfig struct {
	Env                 string        `json:"env,omitempty"`
	EnvValueHash        string        `json:"env_value,omitempty"`
	File                string        `json:"file,omitempty"`
	MintEndpoint        string        `json:"mint,omitempty"`
	MintAccessTokenHash string        `json:"mint_token,omitempty"`
	MintTimeout         time.Duration `json:"mint_timeout,omitempty"`
	RefreshBefore       time.Duration `json:"refresh_before"`
	ExpiryMargin        time.Duration `json:"expiry_margin,omitempty"`
	// ForcedRefreshInterval is part of the identity only because the
	// refresher that enforces it is shared.
	ForcedRefreshInterval time.Duration `json:"forced_refresh_interval"`
	// Push is what decides which pushed tokens are accepted (issuers,
	// JWKS, team, project): sources that accept different tokens must
	// not share one.
	Push *resolvedPush `json:"push,omitempty"`
	// Share turns fleet sharing on; the storage id follows from the
	// fields above and the project (see shareIdentity).
	Share bool `json:"share,omitempty"`

	mint *minter
	// With share: the config's storage, this instance's id, and the
	// project the mint or push settings name (nil: learned from the
	// source's first env or file token).
	storage      certmagic.Storage
	instance     string
	shareProject *shareProject
}

func hashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// oidcState is the runtime of one vercel_oidc source: its inputs and the
// refresher that caches the best of them.
type oidcState struct {
	id        string // short, stable hash of the config, for metrics and status
	cfg       resolvedOIDCConfig
	logger    atomic.Pointer[zap.Logger] // the newest config's; see setLogger
	refresher *refresher
	share     *sharer // nil unless share is on

	envCred *Credential
	envErr  error

	fileMu   sync.Mutex
	fileCred *Credential
	fileErr  error
	watcher  *filewatch.Watcher
}

func newOIDCState(cfg resolvedOIDCConfig, id string, logger *zap.Logger) *oidcState {
	st := &oidcState{cfg: cfg, id: id}
	st.logger.Store(logger)
	st.refresher = newRefresher("vercel_oidc", cfg.RefreshBefore, st.load, logger)
	st.refresher.expiryMargin = cfg.ExpiryMargin
	st.refresher.forcedInterval = cfg.ForcedRefreshInterval
	if cfg.Share {
		st.share = newSharer(cfg, st.logger.Load)
		st.refresher.load = st.sharedLoad
		st.refresher.onStart = st.startSharePoll
	}
	now := time.Now()
	if cfg.Env != "" {
		v := strings.TrimSpace(os.Getenv(cfg.Env))
		st.learnProject(v)
		if v == "" {
			st.envErr = errors.New("not set")
		} else if st.envCred, _, st.envErr = parseOIDCToken(v, now); st.envErr == nil {
			st.refresher.Offer(st.envCred)
		}
	}
	if cfg.File != "" {
		st.watcher = filewatch.Watch(cfg.File, st.fileChanged)
	}
	return st
}

// setLogger makes the state log through the newest config's logger: the
// state outlives the config that created it.
func (st *oidcState) setLogger(l *zap.Logger) {
	st.logger.Store(l)
	st.refresher.setLogger(l)
}

// fileChanged takes the token file's new content: a fresher token is
// installed at once, without waiting for a refresh.
func (st *oidcState) fileChanged(content []byte, err error) {
	var cred *Credential
	if err == nil {
		variable := st.cfg.Env
		if variable == "" {
			variable = defaultOIDCEnv
		}
		if tok, ok := tokenFromFileContent(string(content), variable); !ok || tok == "" {
			err = fmt.Errorf("no token in it (expected a JWT or a %s=… line)", variable)
		} else {
			st.learnProject(tok)
			cred, _, err = parseOIDCToken(tok, time.Now())
		}
	}
	st.fileMu.Lock()
	st.fileCred, st.fileErr = cred, err
	st.fileMu.Unlock()
	if err != nil {
		st.logger.Load().Warn("token file has no usable token", zap.String("file", st.cfg.File), zap.Error(err))
		return
	}
	installed := st.offer(cred)
	st.logger.Load().Info("token file re-read", zap.String("file", st.cfg.File),
		zap.Time("expires", cred.expires), zap.Bool("used", installed))
}

// load is the source's refresh: the best of env, file and the current
// token, and a freshly minted one when that best is due for refresh.
//
// With force, the upstream refused current: only a different token will
// do, and it is minted even though current is not due, unless the env or
// the file already has one.
func (st *oidcState) load(ctx context.Context, current *Credential, force bool) (*Credential, error) {
	now := time.Now()
	var best *Credential
	consider := func(c *Credential) {
		if force && current != nil && c != nil && c.value == current.value {
			return
		}
		if c.usable(now) && !st.refresher.IsRejected(c) && (best == nil || c.expires.After(best.expires)) {
			best = c
		}
	}
	// reasons name the inputs (env names, paths, URLs) for the log and
	// the status route; public says the same in categories, for clients
	var reasons, public []string
	if st.cfg.Env != "" {
		if st.envCred.usable(now) && !st.refresher.IsRejected(st.envCred) {
			consider(st.envCred)
		} else {
			reasons = append(reasons, fmt.Sprintf("env %s: %s", st.cfg.Env, orExpired(st.envErr, st.envCred)))
			public = append(public, "env: "+inputProblem(st.envErr, st.envCred))
		}
	}
	if st.cfg.File != "" {
		st.fileMu.Lock()
		fc, ferr := st.fileCred, st.fileErr
		st.fileMu.Unlock()
		if fc.usable(now) && !st.refresher.IsRejected(fc) {
			consider(fc)
		} else {
			reasons = append(reasons, fmt.Sprintf("file %s: %s", st.cfg.File, orExpired(ferr, fc)))
			public = append(public, "file: "+inputProblem(ferr, fc))
		}
	}
	if !force {
		consider(current)
	}
	if best != nil && (force || now.Before(refreshPoint(best, st.cfg.RefreshBefore))) {
		return best, nil
	}
	if st.cfg.mint != nil {
		minted, err := st.cfg.mint.mint(ctx)
		if err != nil {
			reasons = append(reasons, "mint: "+err.Error())
			public = append(public, "mint: failed")
		} else {
			consider(minted)
		}
	}
	if best == nil {
		if force && len(reasons) == 0 {
			return nil, safetext.Refuse("no different token", "no input has a different token")
		}
		if len(reasons) == 0 {
			return nil, safetext.Refuse("no token pushed yet", "no token yet (this source only accepts pushed tokens)")
		}
		return nil, safetext.Refuse(strings.Join(public, ", "), strings.Join(reasons, "; "))
	}
	if len(reasons) > 0 && now.After(refreshPoint(best, st.cfg.RefreshBefore)) && best == current {
		return best, safetext.Refuse(strings.Join(public, ", "), strings.Join(reasons, "; "))
	}
	return best, nil
}

// inputProblem is why an input has no usable token, in a word a client
// may read: never a name, a path or an address.
func inputProblem(err error, c *Credential) string {
	switch {
	case c.usable(time.Now()):
		return "token refused by the gateway"
	case c != nil:
		return "token expired"
	case err == nil:
		return "no token"
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	}
	msg := err.Error()
	switch {
	case msg == "not set":
		return "not set"
	case strings.Contains(msg, "expired"):
		return "token expired"
	case strings.HasPrefix(msg, "no token"):
		return "no token"
	}
	return "unusable"
}

func orExpired(err error, c *Credential) string {
	if err != nil {
		return err.Error()
	}
	if c.usable(time.Now()) {
		return "token was refused by the upstream"
	}
	if c != nil {
		return "token expired at " + c.expires.UTC().Format(time.RFC3339)
	}
	return "no token"
}

// Destruct stops the refresher and the file watcher; the usage pool calls
// it when the last config using this state is unloaded.
func (st *oidcState) Destruct() error {
	st.refresher.Stop()
	st.share.stop()
	st.watcher.Stop()
	return nil
}

var (
	_ Source             = (*VercelOIDCSource)(nil)
	_ caddy.Provisioner  = (*VercelOIDCSource)(nil)
	_ caddy.CleanerUpper = (*VercelOIDCSource)(nil)
)
