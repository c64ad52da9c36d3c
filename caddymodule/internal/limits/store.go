package limits

import (
	"time"
)

// Store is where one handler counts: the process's Ledger, and the
// fleet's Redis when its limits name one. It is a small value over
// shared parts: the glue makes one per handler (or policy) and keeps
// the Ledger and the Redis in usage pools.
type Store struct {
	ledger  *Ledger
	redis   *Redis
	timeout time.Duration
}

// NewStore counts in ledger, and in r when not nil (then the ledger is
// this instance's share, and what it counts on while r does not answer
// within timeout; 0 is DefaultRedisTimeout).
func NewStore(ledger *Ledger, r *Redis, timeout time.Duration) *Store {
	if timeout <= 0 {
		timeout = DefaultRedisTimeout
	}
	return &Store{ledger: ledger, redis: r, timeout: timeout}
}

// Admit decides whether client may send a request whose worst case is
// worst, now, under cfg, and if so reserves worst, takes a concurrency
// slot and counts the request in the minute: exactly one of the results
// is nil. The request fits when, for every token and dollar limit of the
// day and of the month, spent + reserved by tickets in flight + worst ≤
// limit and the limit is not used up (spent < limit: a used-up limit
// refuses even a request whose worst case is zero, such as a model
// listing); when fewer than concurrent_requests tickets are in flight;
// and when the rolling minute holds fewer than requests_per_minute
// requests. In Redis, one script does it all atomically; when Redis does
// not answer within the store's timeout, the ledger decides alone.
func (s *Store) Admit(client string, cfg Config, worst Amount, now time.Time) (*Ticket, *Refusal) {
	lim := cfg.units()
	w := worstOf(worst)
	t := &Ticket{client: client, worst: w, day: dayOf(now), month: monthOf(now), ledger: s.ledger}
	if s.redis != nil {
		t.redis = s.redis
		rid := newRID()
		mem := member(rid, t.day, t.month, w)
		ref, asked, err := s.redis.admit(client, lim, w, now, mem, s.timeout)
		switch {
		case err == nil && ref != nil:
			return nil, ref
		case err == nil:
			t.inRedis, t.member, t.rid = true, mem, rid
			t.res, _ = s.ledger.admit(client, lim, w, now, true)
			return t, nil
		case asked: // the script may have reserved: the ticket settles that reservation, wherever admitted
			t.member, t.rid = mem, rid
		}
	}
	res, ref := s.ledger.admit(client, lim, w, now, false)
	if ref != nil {
		if t.member != "" { // free what the lost admission may have reserved
			t.end(amt{}, false, 0, time.Time{})
		}
		return nil, ref
	}
	t.res = res
	return t, nil
}

// ClientStatus is one client's counts and what is left under each
// limit, for the status route.
type ClientStatus struct {
	Client string `json:"client"`
	// From says where the figures come from: "redis" (the fleet's) or
	// "local" (this instance's).
	From string `json:"from"`
	// Today and Month: spent since midnight UTC, and since the 1st.
	Today Spent `json:"today"`
	Month Spent `json:"month"`
	// Reserved is the worst cases of the requests in flight now.
	Reserved Reserved `json:"reserved"`
	InFlight int64    `json:"in_flight"`
	// RequestsLastMinute is what the rolling minute holds.
	RequestsLastMinute int64 `json:"requests_last_minute"`
	// Left is, per configured limit, what a request may still reserve (in
	// tokens, US dollars or requests): the limit less what is spent and
	// reserved in its period, never below 0.
	Left map[string]float64 `json:"left,omitempty"`
}

// Spent is what a client used in a period.
type Spent struct {
	Tokens       int64   `json:"tokens"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	USD          float64 `json:"usd"`
	Requests     int64   `json:"requests"`
	// Of the above, charged from an estimate (an answer without usage, or
	// a reservation swept at its worst case) and not yet reconciled.
	EstimatedTokens   int64   `json:"estimated_tokens"`
	EstimatedUSD      float64 `json:"estimated_usd"`
	EstimatedRequests int64   `json:"estimated_requests"`
}

// Reserved is what requests in flight hold.
type Reserved struct {
	Tokens int64   `json:"tokens"`
	USD    float64 `json:"usd"`
}

func spentOf(c counts) Spent {
	return Spent{
		Tokens: c.tok, InputTokens: c.in, OutputTokens: c.tok - c.in, USD: usdOf(c.nusd), Requests: c.req,
		EstimatedTokens: c.etok, EstimatedUSD: usdOf(c.enusd), EstimatedRequests: c.ereq,
	}
}

// ClientStatus reads one client's counts: from Redis when it answers (one
// round trip, which also sweeps the client's expired reservations), else
// from the ledger.
func (s *Store) ClientStatus(client string, cfg Config, now time.Time) ClientStatus {
	var v clientView
	from := "local"
	if s.redis != nil && s.redis.healthy() {
		if rv, err := s.redis.view(client, now); err == nil {
			v, from = rv, "redis"
		}
	}
	if from == "local" {
		v = s.ledger.view(client, now)
	}
	st := ClientStatus{
		Client: client, From: from, Today: spentOf(v.day), Month: spentOf(v.month),
		Reserved: Reserved{Tokens: v.reserved.tok, USD: usdOf(v.reserved.nusd)},
		InFlight: v.inFlight, RequestsLastMinute: v.minute,
	}
	lim := cfg.units()
	left := func(name string, limit, used int64, usd bool) {
		if limit <= 0 {
			return
		}
		if st.Left == nil {
			st.Left = map[string]float64{}
		}
		l := max(limit-used, 0)
		if usd {
			st.Left[name] = usdOf(l)
		} else {
			st.Left[name] = float64(l)
		}
	}
	left(RequestsPerMinute, lim.rpm, v.minute, false)
	left(ConcurrentRequests, lim.conc, v.inFlight, false)
	left(TokensPerDay, lim.tpd, v.day.tok+v.dayReserved.tok, false)
	left(USDPerDay, lim.nupd, v.day.nusd+v.dayReserved.nusd, true)
	left(TokensPerMonth, lim.tpm, v.month.tok+v.monthReserved.tok, false)
	left(USDPerMonth, lim.nupm, v.month.nusd+v.monthReserved.nusd, true)
	return st
}

// Top returns the n clients with the most tokens today (UTC), and where
// the figures come from: "redis" (the fleet's, when it answers),
// "local" (this instance's), or "" when there is nothing to show.
func (s *Store) Top(now time.Time, n int) ([]ClientUsage, string) {
	if n <= 0 {
		return nil, ""
	}
	if s.redis != nil && s.redis.healthy() {
		top, err := s.redis.top(now, n)
		if err == nil {
			s.redis.answered()
			return top, "redis"
		}
		s.redis.fail(opTop, err)
	}
	top := s.ledger.top(now, n)
	if len(top) == 0 {
		return nil, ""
	}
	return top, "local"
}

// Status says how the store counts: locally, or in Redis and how Redis
// is doing.
func (s *Store) Status() Status {
	if s.redis == nil {
		return Status{Store: "local", Healthy: true}
	}
	return s.redis.Status()
}

// Redis is the store's Redis, nil when it counts locally only.
func (s *Store) Redis() *Redis { return s.redis }
