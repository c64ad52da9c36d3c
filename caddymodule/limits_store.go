package caddymodule

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Where a handler's limits are counted: in the process's ledger
// (limits.go), or in a Redis shared by the fleet (limits_redis.go) with
// the ledger as its fallback. spend.go calls admit and record.

// provisionRedis sets up the handler's shared counts, if limits name a
// Redis: the URL is resolved (placeholders) and checked, no connection
// is made.
func (s *spend) provisionRedis(l *Limits) error {
	if l.Redis == "" {
		return nil
	}
	raw := strings.TrimSpace(caddy.NewReplacer().ReplaceAll(l.Redis, ""))
	if raw == "" {
		return fmt.Errorf("limits redis %s is empty: set the variable, or remove `redis` to count on each instance alone", l.Redis)
	}
	r, key, err := acquireRedisLimits(raw)
	if err != nil {
		return fmt.Errorf("limits redis: %v", err)
	}
	s.shared, s.sharedKey = r, key
	if !strings.Contains(l.Redis, "{") && r.target.hasPassword {
		s.logger.Warn("limits redis holds a literal URL with a password: it is visible in the config and the admin API; use {env.LIMITS_REDIS_URL} or {file.<path>} instead")
	}
	return nil
}

// releaseRedis lets go of the shared counts; safe after a partial
// Provision. s.shared stays: the status route may read it a last time.
func (s *spend) releaseRedis() {
	if s.sharedKey != "" {
		_, _ = redisPool.Delete(s.sharedKey)
		s.sharedKey = ""
	}
}

// admit checks and counts a request: in Redis when the limits name one
// and it answers, else in the instance's ledger.
func (s *spend) admit(name string, lim Limits, now time.Time) (refused string, retry time.Duration) {
	if s.shared != nil {
		if refused, retry, ok := s.shared.admit(name, lim, now); ok {
			if refused == "" {
				s.ledger.note(name, lim, now)
			}
			return refused, retry
		}
	}
	return s.ledger.admit(name, lim, now)
}

// record counts what a finished request used: in the instance's ledger,
// and in Redis when the limits name one.
func (s *spend) record(name string, u usage, now time.Time) {
	s.ledger.record(name, u, now)
	if s.shared != nil {
		s.shared.record(name, u, now)
	}
}

// limitsStatus is the status route's view of a handler's limits.
func (s *spend) limitsStatus() *LimitsStatus {
	if s == nil || !s.limited {
		return nil
	}
	if s.shared == nil {
		return &LimitsStatus{Store: "local", Healthy: true}
	}
	s.shared.start()
	return s.shared.status()
}

// fleetTopClientsToday is the status route's top_clients_today: from a
// healthy Redis that limits are counted in, if any (then from is
// "redis"), else from this instance's ledger ("local").
func fleetTopClientsToday(now time.Time) (top []ClientUsage, from string) {
	var stores []*redisLimits
	redisPool.Range(func(_, v any) bool {
		stores = append(stores, v.(*redisLimits))
		return true
	})
	for _, r := range stores {
		r.start()
		if r.state.Load() != storeHealthy {
			continue
		}
		top, err := r.top(now, 10)
		if err != nil {
			r.fail(storeOpTop, err)
			continue
		}
		r.answered()
		return top, "redis"
	}
	top = topClientsToday(now)
	if top == nil {
		return nil, ""
	}
	return top, "local"
}
