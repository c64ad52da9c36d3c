package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/caddyserver/caddy/v2"
)

// Limits glue: the `limits` block's configuration, and where a handler
// counts. The counting itself (reservations, settlement, the ledger, the
// Redis scripts) is the engine's, package limits. The process's ledger
// and each Redis live in usage pools, so that a config reload keeps them.

// Limits caps what each client (by {ai_gateway_auth.client_id}) may use.
// Every generation reserves its worst case before it goes upstream (its
// input estimated from the body, plus its output cap, priced at its
// model's prices), and is admitted only if that fits what is left of
// each token and dollar limit once the requests in flight are counted;
// its answer's figure then replaces the reservation (docs/spend.md). A
// client over a limit gets 429 with Retry-After, in its SDK's error
// shape, before its request reaches the gateway.
type Limits struct {
	// At most this many requests of a client in any 60 seconds (rolling,
	// counted per second: no burst at a minute boundary). Default: 0, no
	// limit.
	RequestsPerMinute int `json:"requests_per_minute,omitempty"`

	// Input plus output tokens per client per UTC day: a request is
	// admitted only if its worst case fits what is left. Default: 0, no
	// limit.
	TokensPerDay int64 `json:"tokens_per_day,omitempty"`

	// The same per UTC calendar month; refused requests retry on the 1st.
	// Default: 0, no limit.
	TokensPerMonth int64 `json:"tokens_per_month,omitempty"`

	// US dollars per client per UTC day, as the account pays them: the
	// gateway's cost from each answer, else the answer priced from the
	// gateway's model catalog; a request is admitted only if its worst
	// case, priced, fits what is left. Until a catalog was read, requests
	// are refused (503 catalog_unavailable). Default: 0, no limit.
	USDPerDay float64 `json:"usd_per_day,omitempty"`

	// The same per UTC calendar month. Default: 0, no limit.
	USDPerMonth float64 `json:"usd_per_month,omitempty"`

	// At most this many requests of a client in flight at once.
	// Default: 0, no limit.
	ConcurrentRequests int `json:"concurrent_requests,omitempty"`

	// The output cap a reservation assumes for a request whose body gives
	// none (max_tokens, max_completion_tokens, max_output_tokens) and
	// whose model the catalog gives no max_tokens for. Default: 8192.
	DefaultMaxTokens int64 `json:"default_max_tokens,omitempty"`

	// Count in this Redis, together with every instance that names the
	// same one: `redis://[[user]:password@]host[:port][/db]`, or
	// `rediss://` for TLS. Write it as a placeholder
	// (`{env.LIMITS_REDIS_URL}`): it is resolved in Provision, so the
	// password stays out of the JSON config. While Redis does not answer,
	// the instance counts alone. Default: none, each instance counts
	// alone.
	Redis string `json:"redis,omitempty"`

	// How long a request waits for Redis to admit it before it is counted
	// on this instance alone (from 1ms to 10s). Default: 50ms.
	RedisTimeout caddy.Duration `json:"redis_timeout,omitempty"`

	// The most clients the instance keeps counts for (its ledger, shared
	// by every handler: the largest value configured applies). Clients
	// with nothing counted go first, then the least recently seen under
	// every limit with nothing in flight; a client over a limit is kept
	// until its period ends, and when every client is, new clients are
	// refused (429 too_many_clients). Default: 100000.
	MaxClients int `json:"max_clients,omitempty"`
}

// defaultMaxTokens is default_max_tokens' default: a common output cap
// of today's models, so that a request without one reserves what it may
// well use.
const defaultMaxTokens = 8192

// maxDefaultMaxTokens bounds default_max_tokens: no model writes more.
const maxDefaultMaxTokens = 10_000_000

// config is the engine's view of the limits.
func (l *Limits) config() limits.Config {
	return limits.Config{
		RequestsPerMinute: l.RequestsPerMinute,
		TokensPerDay:      l.TokensPerDay, TokensPerMonth: l.TokensPerMonth,
		USDPerDay: l.USDPerDay, USDPerMonth: l.USDPerMonth,
		ConcurrentRequests: l.ConcurrentRequests,
	}
}

// outputCap is the default output cap of reservations.
func (l *Limits) outputCap() int64 {
	if l == nil || l.DefaultMaxTokens == 0 {
		return defaultMaxTokens
	}
	return l.DefaultMaxTokens
}

// storeOnly reports whether l holds the store's settings but no limit: a
// block whose policies set the limits, its clients counted in l's Redis.
func (l *Limits) storeOnly() bool {
	return l.config() == (limits.Config{}) && (l.Redis != "" || l.MaxClients != 0 || l.DefaultMaxTokens != 0)
}

// check says what is wrong with limits given in JSON (the Caddyfile
// parser refuses the same values with file and line).
func (l *Limits) check() error { return l.checkWith(false) }

// checkWith is check for a block whose policies set limits
// (policyLimits): its own limits block may then hold the store's
// settings alone (redis, max_clients, default_max_tokens), for the
// policies' clients to be counted in that Redis.
func (l *Limits) checkWith(policyLimits bool) error {
	cfg := l.config()
	if err := cfg.Validate(); err != nil && cfg != (limits.Config{}) {
		return fmt.Errorf("limits: %v", err)
	}
	if cfg == (limits.Config{}) && !policyLimits {
		return errors.New("limits: set at least one of " + strings.Join(limitNames, ", "))
	}
	if math.IsNaN(l.USDPerDay) || math.IsNaN(l.USDPerMonth) {
		return errors.New("limits: usd_per_day and usd_per_month must be amounts")
	}
	if l.DefaultMaxTokens < 0 || l.DefaultMaxTokens > maxDefaultMaxTokens {
		return fmt.Errorf("limits: default_max_tokens must be from 1 to %d", maxDefaultMaxTokens)
	}
	if t := time.Duration(l.RedisTimeout); t != 0 {
		if l.Redis == "" {
			return errors.New("limits: redis_timeout needs redis")
		}
		if err := limits.CheckRedisTimeout(t); err != nil {
			return fmt.Errorf("limits: %v", err)
		}
	}
	if err := limits.CheckMaxClients(l.MaxClients); err != nil {
		return fmt.Errorf("limits: %v", err)
	}
	return nil
}

// limitNames are the limits a `limits` block needs at least one of.
var limitNames = []string{
	limits.RequestsPerMinute, limits.TokensPerDay, limits.TokensPerMonth,
	limits.USDPerDay, limits.USDPerMonth, limits.ConcurrentRequests,
}

// spendPool holds the process's ledger (under ledgerKey) and each Redis
// that limits are counted in (under redisPoolKey of its URL).
var spendPool = caddy.NewUsagePool()

const ledgerKey = "ledger"

func acquireLedger() *limits.Ledger {
	v, _, _ := spendPool.LoadOrNew(ledgerKey, func() (caddy.Destructor, error) { return limits.NewLedger(), nil })
	return v.(*limits.Ledger)
}

func releaseLedger() { _, _ = spendPool.Delete(ledgerKey) }

// redisPoolKey keys a Redis by its URL's hash: the key never shows the
// password.
func redisPoolKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "redis:" + hex.EncodeToString(sum[:])
}

// acquireRedis returns the Redis of a resolved URL, shared with every
// handler naming the same one; no connection is made.
func (s *spend) acquireRedis(raw string) (*limits.Redis, error) {
	key := redisPoolKey(raw)
	v, _, err := spendPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return limits.NewRedis(raw, s.logger.Named("limits"))
	})
	if err != nil {
		return nil, err
	}
	s.redisKey = key
	return v.(*limits.Redis), nil
}

// provisionStore sets up where the handler counts: the ledger, and the
// Redis its limits name (the URL resolved from placeholders and checked;
// no connection is made).
func (s *spend) provisionStore(l *Limits) error {
	var r *limits.Redis
	var timeout time.Duration
	if l != nil && l.Redis != "" {
		raw := strings.TrimSpace(caddy.NewReplacer().ReplaceAll(l.Redis, ""))
		if raw == "" {
			return fmt.Errorf("limits redis %s is empty: set the variable, or remove `redis` to count on each instance alone", l.Redis)
		}
		var err error
		if r, err = s.acquireRedis(raw); err != nil {
			return fmt.Errorf("limits redis: %v", err)
		}
		if !strings.Contains(l.Redis, "{") && r.HasPassword() {
			s.logger.Warn("limits redis holds a literal URL with a password: it is visible in the config and the admin API; use {env.LIMITS_REDIS_URL} or {file.<path>} instead")
		}
		timeout = time.Duration(l.RedisTimeout)
	}
	s.store = limits.NewStore(s.ledger, r, timeout)
	return nil
}

// releaseStore lets go of the handler's Redis; safe after a partial
// Provision. s.store stays: the status route may read it a last time.
func (s *spend) releaseStore() {
	if s.redisKey != "" {
		_, _ = spendPool.Delete(s.redisKey)
		s.redisKey = ""
	}
}

// limitsStatus is the status route's view of a handler's limits.
func (s *spend) limitsStatus() *limits.Status {
	if s == nil || !s.limited {
		return nil
	}
	st := s.store.Status()
	return &st
}
