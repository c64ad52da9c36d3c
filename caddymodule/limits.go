package caddymodule

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Per-client counts: requests in a rolling minute, and tokens, cost and
// requests per UTC day. They live in one ledger per process, kept in a
// usage pool so that a config reload keeps them, and are per proxy
// instance; with `redis`, the instances naming the same Redis count
// together there (limits_redis.go), and the ledger is what an instance
// falls back on while that Redis does not answer.

// Limits caps what each client (by {ai_gateway_auth.client}) may use.
// A client over a limit gets 429 with Retry-After, in its SDK's error
// shape, before anything is sent upstream; a request already under way
// is never cut, so a client can go over tokens_per_day by what its last
// requests used.
type Limits struct {
	// At most this many requests of a client in any 60 seconds (rolling,
	// counted per second: no burst at a minute boundary). Default: 0, no
	// limit.
	RequestsPerMinute int `json:"requests_per_minute,omitempty"`

	// Once a client's input plus output tokens of the current UTC day
	// reach this, its requests are refused until midnight UTC. Default:
	// 0, no limit.
	TokensPerDay int64 `json:"tokens_per_day,omitempty"`

	// Once a client's cost of the current UTC day, as AI Gateway reports
	// it in its answers (`cost`, in USD), reaches this amount, its
	// requests are refused until midnight UTC. Answers without a cost
	// count nothing toward it. Default: 0, no limit.
	USDPerDay float64 `json:"usd_per_day,omitempty"`

	// Count in this Redis, together with every instance that names the
	// same one: `redis://[[user]:password@]host[:port][/db]`, or
	// `rediss://` for TLS. Write it as a placeholder
	// (`{env.LIMITS_REDIS_URL}`): it is resolved in Provision, so the
	// password stays out of the JSON config. While Redis does not answer,
	// the instance counts alone (see limits_redis.go). Default: none, each
	// instance counts alone.
	Redis string `json:"redis,omitempty"`

	// How long a request waits for Redis to admit it before it is counted
	// on this instance alone (from 1ms to 10s). Default: 50ms.
	RedisTimeout caddy.Duration `json:"redis_timeout,omitempty"`

	// The most clients the instance keeps counts for (its ledger, shared
	// by every handler: the largest value configured applies). Clients
	// with nothing counted go first, then the least recently seen under
	// every limit; a client over a daily limit is kept until its day
	// ends, and when every client is, new clients are refused (429
	// too_many_clients) until midnight UTC. Default: 100000.
	MaxClients int `json:"max_clients,omitempty"`
}

// Limit names, for metrics and error codes.
const (
	limitRequestsPerMinute = "requests_per_minute"
	limitTokensPerDay      = "tokens_per_day"
	limitUSDPerDay         = "usd_per_day"
)

// maxRedisTimeout bounds redis_timeout: a request should not wait
// longer for a count than for most answers.
const maxRedisTimeout = 10 * time.Second

// maxUSDPerDay bounds usd_per_day: a larger amount is a typo, not a budget.
const maxUSDPerDay = 1e9

// check says what is wrong with limits given in JSON (the Caddyfile
// parser refuses the same values with file and line).
func (l Limits) check() error {
	if l.RequestsPerMinute < 0 || l.RequestsPerMinute > 1_000_000 || l.TokensPerDay < 0 {
		return errors.New("limits: requests_per_minute must be from 0 to 1000000 and tokens_per_day not negative")
	}
	if math.IsNaN(l.USDPerDay) || l.USDPerDay < 0 || l.USDPerDay > maxUSDPerDay {
		return errors.New("limits: usd_per_day must be an amount from 0 (no limit) to 1000000000")
	}
	if l.RequestsPerMinute == 0 && l.TokensPerDay == 0 && l.USDPerDay == 0 {
		return errors.New("limits: set requests_per_minute, tokens_per_day, usd_per_day or several")
	}
	if t := time.Duration(l.RedisTimeout); t != 0 && (l.Redis == "" || t < time.Millisecond || t > maxRedisTimeout) {
		return errors.New("limits: redis_timeout must be from 1ms to 10s, with redis")
	}
	if l.MaxClients != 0 && (l.MaxClients < minMaxClients || l.MaxClients > maxMaxClients) {
		return errors.New("limits: max_clients must be from 10 to 100000000")
	}
	return nil
}

// maxLedgerClients bounds the ledger unless a config sets max_clients.
var maxLedgerClients = 100_000

// Bounds of max_clients.
const (
	minMaxClients = 10
	maxMaxClients = 100_000_000
)

// limitTooManyClients refuses a client the ledger has no room for: every
// client it holds is over a daily limit, and none may be forgotten.
const limitTooManyClients = "too_many_clients"

// windowSlots counts a rolling minute in seconds: the current second
// and the 60 before it, so that whatever fell within the last 60 s is
// always counted (refusing up to a second early, never admitting more).
const windowSlots = 61

type minuteWindow struct {
	counts [windowSlots]uint32
	head   int64 // the second of the newest slot
	sum    uint32
}

func (w *minuteWindow) advance(sec int64) {
	if sec <= w.head {
		return
	}
	if sec-w.head >= windowSlots {
		w.counts, w.sum = [windowSlots]uint32{}, 0
	} else {
		for s := w.head + 1; s <= sec; s++ {
			i := s % windowSlots
			w.sum -= w.counts[i]
			w.counts[i] = 0
		}
	}
	w.head = sec
}

// retryAfter is how long until the window holds fewer than limit.
func (w *minuteWindow) retryAfter(now time.Time, limit uint32) time.Duration {
	var gone uint32
	for s := w.head - windowSlots + 1; s <= w.head; s++ {
		gone += w.counts[s%windowSlots]
		if w.sum-gone < limit {
			return time.Unix(s+windowSlots, 0).Sub(now)
		}
	}
	return time.Minute
}

// clientLedger is one client's counts.
type clientLedger struct {
	day           int64 // UTC day (days since the epoch) of the counts below
	input, output int64
	cost          float64
	requests      int64
	lastSeen      int64 // unix seconds
	window        *minuteWindow
	refusedDay    int64 // the day a daily limit refused the client, +1 (0: never)
}

type ledger struct {
	mu      sync.Mutex
	clients map[string]*clientLedger
	// the limits of every handler that counts here, to tell which clients
	// are over a daily limit (kept until their day ends)
	limits map[*spend]Limits
	// noRoomUntil: an eviction found every client over a daily limit;
	// until then a new client is refused without scanning the ledger
	// again (a stream of new clients must not cost a scan each)
	noRoomUntil time.Time
}

func newLedger() *ledger {
	return &ledger{clients: map[string]*clientLedger{}, limits: map[*spend]Limits{}}
}

// register makes s's limits count when the ledger decides whom it may
// forget; unregister undoes it.
func (l *ledger) register(s *spend, lim Limits) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limits[s] = lim
}

func (l *ledger) unregister(s *spend) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.limits, s)
}

// capacity is the ledger's bound: the largest max_clients configured.
// l.mu must be held.
func (l *ledger) capacity() int {
	n := 0
	for _, lim := range l.limits {
		n = max(n, lim.MaxClients)
	}
	if n == 0 {
		return maxLedgerClients
	}
	return n
}

// overDailyLimit reports whether e is over a daily limit of some handler
// today (or was refused by one today). l.mu must be held.
func (l *ledger) overDailyLimit(e *clientLedger, day int64) bool {
	if e.day != day {
		return false
	}
	if e.refusedDay == day+1 {
		return true
	}
	for _, lim := range l.limits {
		if lim.TokensPerDay > 0 && e.input+e.output >= lim.TokensPerDay || lim.USDPerDay > 0 && e.cost >= lim.USDPerDay {
			return true
		}
	}
	return false
}

// counted reports whether e has anything counted against a limit now:
// tokens or cost today, or requests in the current minute.
func (e *clientLedger) counted(now time.Time, day int64) bool {
	if e.day == day && (e.input+e.output > 0 || e.cost > 0) {
		return true
	}
	return e.window != nil && e.minute(now).sum > 0
}

// Destruct implements caddy.Destructor.
func (*ledger) Destruct() error { return nil }

var spendPool = caddy.NewUsagePool()

const ledgerKey = "ledger"

func acquireLedger() *ledger {
	v, _, _ := spendPool.LoadOrNew(ledgerKey, func() (caddy.Destructor, error) { return newLedger(), nil })
	return v.(*ledger)
}

func releaseLedger() { _, _ = spendPool.Delete(ledgerKey) }

func utcDay(now time.Time) int64 { return now.Unix() / 86400 }

// entry returns name's counts, created if needed, with the day rolled
// over; nil when there is no room for a new client (every client held is
// over a daily limit today). l.mu must be held.
func (l *ledger) entry(name string, now time.Time) *clientLedger {
	e := l.clients[name]
	if e == nil {
		if capacity := l.capacity(); len(l.clients) >= capacity {
			if now.Before(l.noRoomUntil) {
				return nil
			}
			l.evict(now, capacity)
			if len(l.clients) >= capacity {
				l.noRoomUntil = now.Add(time.Second)
				return nil
			}
		}
		e = &clientLedger{}
		l.clients[name] = e
	}
	if day := utcDay(now); e.day != day {
		e.day, e.input, e.output, e.cost, e.requests = day, 0, 0, 0, 0
	}
	e.lastSeen = now.Unix()
	return e
}

// evict makes room, down to seven eighths of capacity (so that the
// next evictions are far apart): first every client with nothing counted
// against a limit now; then, least recently seen first, clients under
// every limit (their counts start again); never a client over a daily
// limit today. l.mu must be held.
func (l *ledger) evict(now time.Time, capacity int) {
	day := utcDay(now)
	for name, e := range l.clients {
		if !e.counted(now, day) {
			delete(l.clients, name)
		}
	}
	target := capacity - capacity/8
	if len(l.clients) <= target {
		return
	}
	type seen struct {
		name string
		at   int64
	}
	var under []seen
	for name, e := range l.clients {
		if !l.overDailyLimit(e, day) {
			under = append(under, seen{name, e.lastSeen})
		}
	}
	slices.SortFunc(under, func(a, b seen) int { return cmp.Compare(a.at, b.at) })
	for _, s := range under[:min(len(under), len(l.clients)-target)] {
		delete(l.clients, s.name)
	}
}

// admit counts a request of name against the limits, or says which
// limit refuses it and for how long.
func (l *ledger) admit(name string, lim Limits, now time.Time) (refused string, retry time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(name, now)
	if e == nil {
		return limitTooManyClients, time.Unix((utcDay(now)+1)*86400, 0).Sub(now)
	}
	if lim.TokensPerDay > 0 && e.input+e.output >= lim.TokensPerDay {
		e.refusedDay = e.day + 1
		return limitTokensPerDay, time.Unix((e.day+1)*86400, 0).Sub(now)
	}
	if lim.USDPerDay > 0 && e.cost >= lim.USDPerDay {
		e.refusedDay = e.day + 1
		return limitUSDPerDay, time.Unix((e.day+1)*86400, 0).Sub(now)
	}
	if lim.RequestsPerMinute > 0 {
		w := e.minute(now)
		if w.sum >= uint32(lim.RequestsPerMinute) {
			return limitRequestsPerMinute, w.retryAfter(now, uint32(lim.RequestsPerMinute))
		}
		w.counts[now.Unix()%windowSlots]++
		w.sum++
	}
	return "", 0
}

// note counts a request that a shared store admitted in name's minute
// window, without refusing it: should that store stop answering, the
// instance goes on from what it admitted itself.
func (l *ledger) note(name string, lim Limits, now time.Time) {
	if lim.RequestsPerMinute <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(name, now)
	if e == nil {
		return
	}
	w := e.minute(now)
	w.counts[now.Unix()%windowSlots]++
	w.sum++
}

// minute returns e's window, moved to now.
func (e *clientLedger) minute(now time.Time) *minuteWindow {
	if e.window == nil {
		e.window = &minuteWindow{head: now.Unix()}
	}
	e.window.advance(now.Unix())
	return e.window
}

// record adds a finished request and what it used to name's day.
func (l *ledger) record(name string, u usage, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(name, now)
	if e == nil {
		return // no room: every client held is over a daily limit today
	}
	e.requests++
	e.input += u.input
	e.output += u.output
	e.cost += u.cost
}

// ClientUsage is one client's use today (UTC), as the status route shows it.
type ClientUsage struct {
	Client       string  `json:"client"`
	Requests     int64   `json:"requests"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	Cost         float64 `json:"cost,omitempty"`
}

// top returns the n clients with the most tokens today.
func (l *ledger) top(now time.Time, n int) []ClientUsage {
	if n <= 0 {
		return nil
	}
	day := utcDay(now)
	l.mu.Lock()
	out := make([]ClientUsage, 0, min(n+1, len(l.clients)))
	less := func(a, b ClientUsage) int {
		if c := cmp.Compare(b.InputTokens+b.OutputTokens, a.InputTokens+a.OutputTokens); c != 0 {
			return c
		}
		return cmp.Compare(a.Client, b.Client)
	}
	for name, e := range l.clients {
		if e.day != day || e.requests == 0 {
			continue
		}
		c := ClientUsage{Client: name, Requests: e.requests, InputTokens: e.input, OutputTokens: e.output, Cost: e.cost}
		if len(out) == n && less(c, out[n-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(out, c, less)
		out = slices.Insert(out, i, c)
		if len(out) > n {
			out = out[:n]
		}
	}
	l.mu.Unlock()
	return out
}

// topClientsToday is the status route's view of the ledger, if metering
// is on anywhere.
func topClientsToday(now time.Time) []ClientUsage {
	var out []ClientUsage
	spendPool.Range(func(_, v any) bool {
		out = v.(*ledger).top(now, 10)
		return false
	})
	return out
}
