package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/certmagic"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

const (
	// DefaultEnv is the variable a vercel_oidc source reads when no input
	// is configured, and the variable a dotenv token file is read for.
	DefaultEnv = "VERCEL_OIDC_TOKEN"
	// DefaultRefreshBefore is how long before a token's exp a refresh
	// starts unless configured otherwise (refresh_before).
	DefaultRefreshBefore = 5 * time.Minute
)

// OIDCConfig is a vercel_oidc source resolved (placeholders, defaults,
// absolute paths): it identifies the source's runtime, so that two
// sources with the same config share one cache ([OIDCConfig.Key]).
// Secrets appear only as hashes, and only in memory.
type OIDCConfig struct {
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
	Push *PushRules `json:"push,omitempty"`
	// Share turns fleet sharing on; the storage id follows from the
	// fields above and the project (see shareIdentity).
	Share bool `json:"share,omitempty"`

	mint *Minter
	// With share: the config's storage, this instance's id, and the
	// project the mint or push settings name (nil: learned from the
	// source's first env or file token).
	storage      certmagic.Storage
	instance     string
	shareProject *shareProject
}

// SetMinter makes the source mint with m: its endpoint, its access token
// (hashed) and its timeout become part of the source's identity.
func (c *OIDCConfig) SetMinter(m *Minter) {
	c.mint = m
	c.MintEndpoint, c.MintAccessTokenHash = m.endpoint, hashString(m.accessToken)
	c.MintTimeout = m.timeout
}

// ReadEnv records the env variable's value as it is now (hashed): a
// reload after the variable changed makes another source.
func (c *OIDCConfig) ReadEnv() {
	if c.Env != "" {
		c.EnvValueHash = hashString(os.Getenv(c.Env))
	}
}

// EnableShare turns fleet sharing on: the token is kept in storage (no
// I/O until the source runs), written as this instance's, for the project
// the mint or push settings name (none: learned from the source's first
// env or file token). Call it after SetMinter and setting Push.
func (c *OIDCConfig) EnableShare(storage certmagic.Storage, instance string) {
	c.Share = true
	c.storage = storage
	c.instance = instance
	c.shareProject = configuredProject(c)
}

// Key identifies the source's runtime: "vercel_oidc:" and the config's
// JSON.
func (c OIDCConfig) Key() (string, error) {
	keyJSON, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return "vercel_oidc:" + string(keyJSON), nil
}

func hashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// OIDCSource is the runtime of one vercel_oidc source: its inputs (env,
// file, mint, pushed tokens, the fleet's storage) and the refresher that
// caches the best of them. It outlives a config reload that keeps the
// source (the module keeps it in a caddy.UsagePool by its Key).
type OIDCSource struct {
	id        string // short, stable hash of the config, for metrics and status
	cfg       OIDCConfig
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

// NewOIDCSource starts the runtime of the source cfg describes, whose Key
// is key: it reads the env variable and the file now (no network call);
// its refresh loop, and with share its storage, start on first use. Its
// log lines go to logger (see SetLogger).
func NewOIDCSource(cfg OIDCConfig, key string, logger *zap.Logger) *OIDCSource {
	return newOIDCSource(cfg, hashString(key)[:12], logger)
}

func newOIDCSource(cfg OIDCConfig, id string, logger *zap.Logger) *OIDCSource {
	st := &OIDCSource{cfg: cfg, id: id}
	track(st, true)
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
		} else if st.envCred, _, st.envErr = ParseToken(v, now); st.envErr == nil {
			st.refresher.Offer(st.envCred)
		}
	}
	if cfg.File != "" {
		st.watcher = filewatch.Watch(cfg.File, st.fileChanged)
	}
	return st
}

// SetLogger makes the source log through the newest config's logger: it
// outlives the config that created it.
func (st *OIDCSource) SetLogger(l *zap.Logger) {
	st.logger.Store(l)
	st.refresher.setLogger(l)
}

// fileChanged takes the token file's new content: a fresher token is
// installed at once, without waiting for a refresh.
func (st *OIDCSource) fileChanged(content []byte, err error) {
	var cred *Credential
	if err == nil {
		variable := st.cfg.Env
		if variable == "" {
			variable = DefaultEnv
		}
		if tok, ok := tokenFromFileContent(string(content), variable); !ok || tok == "" {
			err = fmt.Errorf("no token in it (expected a JWT or a %s=… line)", variable)
		} else {
			st.learnProject(tok)
			cred, _, err = ParseToken(tok, time.Now())
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
func (st *OIDCSource) load(ctx context.Context, current *Credential, force bool) (*Credential, error) {
	now := time.Now()
	var best *Credential
	consider := func(c *Credential) {
		if force && current != nil && c != nil && c.value == current.value {
			return
		}
		if c.Usable(now) && !st.refresher.IsRejected(c) && (best == nil || c.expires.After(best.expires)) {
			best = c
		}
	}
	// reasons name the inputs (env names, paths, URLs) for the log and
	// the status route; public says the same in categories, for clients
	var reasons, public []string
	if st.cfg.Env != "" {
		if st.envCred.Usable(now) && !st.refresher.IsRejected(st.envCred) {
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
		if fc.Usable(now) && !st.refresher.IsRejected(fc) {
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
		minted, err := st.cfg.mint.Mint(ctx)
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
	case c.Usable(time.Now()):
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
	if c.Usable(time.Now()) {
		return "token was refused by the upstream"
	}
	if c != nil {
		return "token expired at " + c.expires.UTC().Format(time.RFC3339)
	}
	return "no token"
}

// Current returns the cached token if it is usable at now, without
// blocking; it starts the source on first use.
func (st *OIDCSource) Current(now time.Time) *Credential { return st.refresher.Current(now) }

// Fetch returns a usable token, waiting for a refresh (shared with every
// other caller) until ctx ends, unless the source is backing off after a
// failure: then it answers at once with the last error.
func (st *OIDCSource) Fetch(ctx context.Context) (*Credential, error) {
	return st.refresher.Fetch(ctx)
}

// RetryAfter is when this source may have a token again, at least 1 s.
func (st *OIDCSource) RetryAfter() time.Duration { return st.refresher.RetryAfter() }

// Offer installs a token learned outside a refresh (a verified push) if
// it expires later than the cached one; with share, it is stored for the
// fleet too. A push is the source at work, like a request: it starts the
// source if nothing has (its refresh loop and, with share, the storage's
// poll and the publishing of this token), so that a push to an instance
// that has served nothing yet still reaches the fleet.
func (st *OIDCSource) Offer(c *Credential) bool {
	used := st.offer(c) // before the start, which publishes it
	st.refresher.run()
	return used
}

// Refused is told the upstream answered 401 to a request sent with c; it
// returns the token to replay with, or nil (see refresher.Refused).
func (st *OIDCSource) Refused(ctx context.Context, c *Credential) *Credential {
	return st.refresher.Refused(ctx, c)
}

// Status describes the source for the status route; never a token.
func (st *OIDCSource) Status(now time.Time) SourceStatus {
	s := st.refresher.status(now)
	s.ID = st.id
	s.Shared = st.share.status()
	return s
}

// Latest is the cached token, usable or not; nil if the source never
// had one.
func (st *OIDCSource) Latest() *Credential { return st.refresher.current.Load() }

// Issuer is the iss of the token the source holds, "" if none. That
// token came from the source's own inputs (env, file, mint) or from a
// push already verified against a trusted issuer, so trusting its issuer
// lets no client choose one.
func (st *OIDCSource) Issuer() string {
	cur := st.Latest()
	if cur == nil {
		return ""
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(cur.value, &claims); err != nil {
		return ""
	}
	return claims.Issuer
}

// Adopt makes a source that a config reload keeps (same Key) log through
// the newest config's logger and, shared, use its storage.
func (st *OIDCSource) Adopt(cfg OIDCConfig, l *zap.Logger) {
	st.SetLogger(l)
	st.share.setStorage(cfg.storage)
}

// Destruct stops the refresher, the fleet's poll and the file watcher;
// the module's usage pool calls it when the last config using this
// source is unloaded.
func (st *OIDCSource) Destruct() error {
	track(st, false)
	st.refresher.Stop()
	st.share.stop()
	st.watcher.Stop()
	return nil
}
