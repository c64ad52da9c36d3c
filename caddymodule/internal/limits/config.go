package limits

import (
	"errors"
	"math"
	"time"
)

// Config is what one client may use: the limits of one `limits` block
// (or of a policy's). A zero field is no limit; a Config with every field
// zero only meters.
type Config struct {
	// At most this many requests admitted in any 60 s (rolling, counted
	// per second).
	RequestsPerMinute int
	// Tokens (input plus output) per UTC day and per UTC calendar month.
	TokensPerDay   int64
	TokensPerMonth int64
	// US dollars per UTC day and per UTC calendar month.
	USDPerDay   float64
	USDPerMonth float64
	// At most this many requests in flight (admitted, not yet settled).
	ConcurrentRequests int
}

// Limit names: the `limit` label of refusals and the stem of their error
// codes (<name>_exceeded).
const (
	RequestsPerMinute  = "requests_per_minute"
	TokensPerDay       = "tokens_per_day"
	TokensPerMonth     = "tokens_per_month"
	USDPerDay          = "usd_per_day"
	USDPerMonth        = "usd_per_month"
	ConcurrentRequests = "concurrent_requests"
	// TooManyClients refuses a new client the ledger has no room for.
	TooManyClients = "too_many_clients"
)

// Bounds of the configuration.
const (
	// MaxRequestsPerMinute and MaxConcurrentRequests bound those limits.
	MaxRequestsPerMinute  = 1_000_000
	MaxConcurrentRequests = 1_000_000
	// MaxTokens bounds a token limit (2^53: counts stay exact in Redis's
	// Lua, whose numbers are doubles).
	MaxTokens = 1 << 53
	// MaxUSD bounds a dollar limit: a larger amount is a typo, not a
	// budget.
	MaxUSD = 1e9

	// DefaultMaxClients is the ledger's bound unless one is registered;
	// MinMaxClients and MaxMaxClients bound max_clients.
	DefaultMaxClients = 100_000
	MinMaxClients     = 10
	MaxMaxClients     = 100_000_000

	// DefaultRedisTimeout is how long an admission waits for Redis before
	// it counts locally; MaxRedisTimeout bounds redis_timeout.
	DefaultRedisTimeout = 50 * time.Millisecond
	MinRedisTimeout     = time.Millisecond
	MaxRedisTimeout     = 10 * time.Second

	// ReservationLifetime is how long a reservation holds its worst case
	// before a sweep charges it (see the package comment).
	ReservationLifetime = 15 * time.Minute

	// InFlightRetry is the Retry-After of a refusal that the settlement of
	// requests in flight may lift: concurrent_requests, or a budget whose
	// worst cases reserved in flight leave no room for this one.
	InFlightRetry = time.Second
)

// Validate says what is wrong with a Config, the first fault found,
// naming the field as the Caddyfile does.
func (c Config) Validate() error {
	switch {
	case c.RequestsPerMinute < 0 || c.RequestsPerMinute > MaxRequestsPerMinute:
		return errors.New("limits: requests_per_minute must be from 0 (no limit) to 1000000")
	case c.ConcurrentRequests < 0 || c.ConcurrentRequests > MaxConcurrentRequests:
		return errors.New("limits: concurrent_requests must be from 0 (no limit) to 1000000")
	case c.TokensPerDay < 0 || c.TokensPerDay > MaxTokens:
		return errors.New("limits: tokens_per_day must be from 0 (no limit) to 9007199254740992")
	case c.TokensPerMonth < 0 || c.TokensPerMonth > MaxTokens:
		return errors.New("limits: tokens_per_month must be from 0 (no limit) to 9007199254740992")
	case !validUSD(c.USDPerDay):
		return errors.New("limits: usd_per_day must be an amount from 0 (no limit) to 1000000000")
	case !validUSD(c.USDPerMonth):
		return errors.New("limits: usd_per_month must be an amount from 0 (no limit) to 1000000000")
	case c == Config{}:
		return errors.New("limits: set requests_per_minute, tokens_per_day, tokens_per_month, usd_per_day, usd_per_month, concurrent_requests or several")
	}
	return nil
}

func validUSD(v float64) bool { return !math.IsNaN(v) && v >= 0 && v <= MaxUSD }

// CheckMaxClients says what is wrong with a max_clients value (0: the
// default).
func CheckMaxClients(n int) error {
	if n != 0 && (n < MinMaxClients || n > MaxMaxClients) {
		return errors.New("limits: max_clients must be from 10 to 100000000")
	}
	return nil
}

// CheckRedisTimeout says what is wrong with a redis_timeout value (0: the
// default).
func CheckRedisTimeout(d time.Duration) error {
	if d != 0 && (d < MinRedisTimeout || d > MaxRedisTimeout) {
		return errors.New("limits: redis_timeout must be from 1ms to 10s")
	}
	return nil
}

// Amount is a quantity of spend: a request's worst case before it goes
// upstream, or what it used.
type Amount struct {
	// Tokens, input plus output: what token limits count.
	Tokens int64
	// Input is how many of Tokens were input: shown by Top and
	// ClientStatus, counted by no limit (0 when unknown; at most Tokens).
	Input int64
	// USD is what the account pays, in US dollars.
	USD float64
}

// amt is an Amount as the engine counts it: dollars in whole
// nano-dollars (1e-9 USD), so that sums are exact, the same in the
// ledger and in Redis, and limits are compared without rounding drift.
type amt struct {
	tok, in, nusd int64
}

// maxAmount bounds each figure of one request's amount (2^53, about
// $9 million in nano-dollars): sums stay exact in Lua and never overflow.
const maxAmount = 1 << 53

// worstOf converts a worst case: dollars rounded up to the nano-dollar;
// a dollar figure that is not a number, or infinite, counts as the
// largest amount (it fits no dollar limit); negatives count as nothing.
func worstOf(a Amount) amt {
	n := nanoUSD(a.USD, math.Ceil)
	if math.IsNaN(a.USD) {
		n = maxAmount
	}
	return clampAmt(a.Tokens, a.Input, n)
}

// actualOf converts what a request used: dollars rounded to the nearest
// nano-dollar; a dollar figure that is not a number is missing, and
// counts as the worst case's.
func actualOf(a Amount, worst amt) amt {
	if math.IsNaN(a.USD) {
		return clampAmt(a.Tokens, a.Input, worst.nusd)
	}
	return clampAmt(a.Tokens, a.Input, nanoUSD(a.USD, math.Round))
}

func nanoUSD(usd float64, round func(float64) float64) int64 {
	switch {
	case math.IsNaN(usd) || usd <= 0:
		return 0
	case usd >= maxAmount/1e9:
		return maxAmount
	}
	return int64(round(usd * 1e9))
}

func clampAmt(tok, in, nusd int64) amt {
	tok = min(max(tok, 0), maxAmount)
	return amt{tok: tok, in: min(max(in, 0), tok), nusd: min(max(nusd, 0), maxAmount)}
}

func usdOf(nusd int64) float64 { return float64(nusd) / 1e9 }

// limitsOf is a Config in the engine's units.
type limitsOf struct {
	rpm, conc  int64
	tpd, tpm   int64
	nupd, nupm int64 // nano-dollars
}

func (c Config) units() limitsOf {
	return limitsOf{
		rpm: int64(c.RequestsPerMinute), conc: int64(c.ConcurrentRequests),
		tpd: c.TokensPerDay, tpm: c.TokensPerMonth,
		nupd: limitNanoUSD(c.USDPerDay), nupm: limitNanoUSD(c.USDPerMonth),
	}
}

// limitNanoUSD converts a dollar limit, rounded to the nano-dollar; a
// positive limit is at least one nano-dollar (never "no limit").
func limitNanoUSD(usd float64) int64 {
	if math.IsNaN(usd) || usd <= 0 {
		return 0
	}
	return max(nanoUSD(usd, math.Round), 1)
}

// UTC periods: days since the epoch, and months since year 0 (year*12 +
// month-1), with their ends.

func dayOf(t time.Time) int64 { return floorDiv(t.Unix(), 86400) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func dayEnd(day int64) time.Time { return time.Unix((day+1)*86400, 0).UTC() }

func monthOf(t time.Time) int64 {
	t = t.UTC()
	return int64(t.Year())*12 + int64(t.Month()) - 1
}

func monthStart(month int64) time.Time {
	return time.Date(int(month/12), time.Month(month%12+1), 1, 0, 0, 0, 0, time.UTC)
}

func monthEnd(month int64) time.Time { return monthStart(month + 1) }

func dayDate(day int64) string { return time.Unix(day*86400, 0).UTC().Format(time.DateOnly) }

func monthDate(month int64) string { return monthStart(month).Format("2006-01") }
