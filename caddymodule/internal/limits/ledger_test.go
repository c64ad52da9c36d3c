package limits

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// The rolling minute and the UTC day: at most N requests in any 60 s,
// none more at a minute boundary, one more as soon as the oldest leaves
// the window; tokens start again at midnight UTC. (Ported from the
// module's TestLimitsWindows.)
func TestLimitsWindows(t *testing.T) {
	s := NewStore(NewLedger(), nil, 0)
	cfg := Config{RequestsPerMinute: 3, TokensPerDay: 100}
	t0 := time.Date(2000, 1, 1, 0, 0, 50, 0, time.UTC)
	for range 3 {
		admitted(t, s, "clock", cfg, Amount{}, t0).Settle(Amount{}, false, t0)
	}
	ref := refused(t, s, "clock", cfg, Amount{}, t0.Add(15*time.Second), RequestsPerMinute)
	if ref.RetryAfter != 46*time.Second || ref.NeverFits {
		t.Fatalf("after the minute boundary: %+v, want retry 46s", *ref)
	}
	t1 := t0.Add(61 * time.Second) // 00:01:51: the three left the window
	for range 3 {
		admitted(t, s, "clock", cfg, Amount{}, t1).Settle(Amount{}, false, t1)
	}
	admitted(t, s, "clock", Config{}, Amount{}, t1).Settle(Amount{Tokens: 100, Input: 60}, false, t1)
	t2 := t1.Add(2 * time.Minute)
	ref = refused(t, s, "clock", cfg, Amount{}, t2, TokensPerDay)
	if want := time.Duration(86400-50-61-120) * time.Second; ref.RetryAfter != want || !ref.NeverFits {
		t.Fatalf("over tokens_per_day: %+v, want retry %v", *ref, want)
	}
	if !strings.Contains(ref.Message(), "used up its tokens for today") || ref.Code() != "tokens_per_day_exceeded" {
		t.Errorf("message %q, code %q", ref.Message(), ref.Code())
	}
	admitted(t, s, "clock", cfg, Amount{}, t2.Add(24*time.Hour)) // the next UTC day
}

// The day's dollars start again at midnight UTC, and tokens and dollars
// each refuse on their own. (Ported from TestUSDPerDayRollsOver.)
func TestUSDPerDayRollsOver(t *testing.T) {
	s := NewStore(NewLedger(), nil, 0)
	cfg := Config{USDPerDay: 1, TokensPerDay: 1000}
	now := time.Date(2000, 1, 1, 1, 0, 0, 0, time.UTC)
	admitted(t, s, "c", cfg, Amount{}, now).Settle(Amount{Tokens: 1, USD: 0.75}, false, now)
	admitted(t, s, "c", cfg, Amount{}, now).Settle(Amount{Tokens: 1, USD: 0.25}, false, now)
	ref := refused(t, s, "c", cfg, Amount{}, now, USDPerDay)
	if ref.RetryAfter != 23*time.Hour || !ref.NeverFits {
		t.Fatalf("at $1.00: %+v; want usd_per_day, 23h", *ref)
	}
	next := now.Add(23 * time.Hour)
	admitted(t, s, "c", cfg, Amount{}, next).Settle(Amount{Tokens: 1000}, false, next)
	refused(t, s, "c", cfg, Amount{}, next, TokensPerDay)
}

// A bad config is refused with a message naming the field.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		fault string // "" when valid
	}{
		{Config{USDPerDay: 5}, ""},
		{Config{USDPerDay: 0.5, RequestsPerMinute: 10}, ""},
		{Config{TokensPerMonth: 1e6, USDPerMonth: 100, ConcurrentRequests: 4}, ""},
		{Config{USDPerDay: -1}, "usd_per_day"},
		{Config{}, "set requests_per_minute"},
		{Config{USDPerDay: 1e12}, "usd_per_day"},
		{Config{USDPerMonth: math.NaN()}, "usd_per_month"},
		{Config{USDPerMonth: math.Inf(1)}, "usd_per_month"},
		{Config{USDPerDay: math.Inf(-1)}, "usd_per_day"},
		{Config{USDPerDay: -0.01}, "usd_per_day"},
		{Config{TokensPerDay: -1}, "tokens_per_day"},
		{Config{TokensPerMonth: -1}, "tokens_per_month"},
		{Config{TokensPerMonth: 1 << 60}, "tokens_per_month"},
		{Config{RequestsPerMinute: 2_000_000}, "requests_per_minute"},
		{Config{ConcurrentRequests: -1}, "concurrent_requests"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.fault == "") || err != nil && !strings.Contains(err.Error(), tc.fault) {
			t.Errorf("%+v: %v, want a fault about %q", tc.cfg, err, tc.fault)
		}
	}
	for _, n := range []int{1, 9, 100_000_001, -5} {
		if CheckMaxClients(n) == nil {
			t.Errorf("max_clients %d accepted", n)
		}
	}
	for _, d := range []time.Duration{time.Microsecond, 11 * time.Second, -time.Second} {
		if CheckRedisTimeout(d) == nil {
			t.Errorf("redis_timeout %v accepted", d)
		}
	}
	if CheckMaxClients(0) != nil || CheckMaxClients(10) != nil || CheckRedisTimeout(0) != nil || CheckRedisTimeout(time.Second) != nil {
		t.Error("a valid max_clients or redis_timeout refused")
	}
}

// The ledger's bound forgets the clients with nothing counted first,
// then the least recently seen under every limit, and never a client
// over a daily limit before its day ends: a client far over
// tokens_per_day that idles while new clients arrive is still refused.
// When every client held is over a daily limit, a new client is refused
// (too_many_clients) rather than tracked past the bound. (Ported from
// TestLedgerKeepsClientsOverALimit.)
func TestLedgerKeepsClientsOverALimit(t *testing.T) {
	l := NewLedger()
	l.Register(t, 20)
	s := NewStore(l, nil, 0)
	cfg := Config{TokensPerDay: 100, RequestsPerMinute: 1000}
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

	// hog is over its tokens today, then idles
	admitted(t, s, "hog", cfg, Amount{}, now).Settle(Amount{Tokens: 5000}, false, now)
	// under is counted but under every limit; idle has nothing counted
	admitted(t, s, "under", cfg, Amount{}, now).Settle(Amount{Tokens: 10}, false, now)
	admitted(t, s, "idle", Config{}, Amount{}, now).Settle(Amount{}, false, now)

	// 200 new clients arrive over the next minutes, each with a request
	for i := range 200 {
		now = now.Add(time.Second)
		admitted(t, s, fmt.Sprintf("new-%d", i), cfg, Amount{}, now).Settle(Amount{}, false, now)
		if n := len(l.clients); n > 20 {
			t.Fatalf("the ledger holds %d clients, over its bound 20", n)
		}
	}
	if _, ok := l.clients["idle"]; ok {
		t.Error("a client with nothing counted was kept while counted ones were forgotten")
	}
	if ref := refused(t, s, "hog", cfg, Amount{}, now, TokensPerDay); ref.RetryAfter <= 0 {
		t.Errorf("retry %v", ref.RetryAfter)
	}

	// at midnight its day ends: it may be forgotten, and is admitted again
	midnight := time.Date(2026, 12, 5, 0, 0, 1, 0, time.UTC)
	admitted(t, s, "hog", cfg, Amount{}, midnight)

	// a ledger full of clients over a daily limit refuses a new client
	full := NewLedger()
	full.Register(t, 20)
	fs := NewStore(full, nil, 0)
	day := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for i := range 20 {
		admitted(t, fs, fmt.Sprintf("over-%d", i), cfg, Amount{}, day).Settle(Amount{Tokens: 100}, false, day)
	}
	ref := refused(t, fs, "newcomer", cfg, Amount{}, day, TooManyClients)
	if ref.RetryAfter != 12*time.Hour {
		t.Errorf("a new client in a ledger full of clients over a limit: %+v; want %s until midnight", *ref, TooManyClients)
	}
	if len(full.clients) != 20 {
		t.Errorf("the full ledger holds %d clients", len(full.clients))
	}
	for i := range 20 {
		refused(t, fs, fmt.Sprintf("over-%d", i), cfg, Amount{}, day, TokensPerDay)
	}
	full.Unregister(t)
	if full.capacity() != DefaultMaxClients {
		t.Errorf("capacity after Unregister: %d", full.capacity())
	}
}

// Eviction never forgets a client with a ticket in flight (its
// reservation and its slot would be lost), nor one refused because its
// worst case no longer fits the day (it would start the day again);
// when only such clients are held, a new client is refused until the
// first may go.
func TestLedgerKeepsClientsInFlight(t *testing.T) {
	l := NewLedger()
	l.Register(t, 10)
	s := NewStore(l, nil, 0)
	cfg := Config{TokensPerDay: 1000, ConcurrentRequests: 1}
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	var tickets []*Ticket
	for i := range 10 {
		tickets = append(tickets, admitted(t, s, fmt.Sprintf("busy-%d", i), cfg, Amount{Tokens: 900}, now))
	}
	ref := refused(t, s, "newcomer", cfg, Amount{Tokens: 1}, now.Add(time.Minute), TooManyClients)
	if ref.RetryAfter != InFlightRetry {
		t.Errorf("refusal %+v, want retry %v (a ticket may end any moment)", *ref, InFlightRetry)
	}
	for i := range 10 {
		if _, ok := l.clients[fmt.Sprintf("busy-%d", i)]; !ok {
			t.Fatalf("busy-%d, with a ticket in flight, was forgotten", i)
		}
	}
	// their reservations and slots are intact
	refused(t, s, "busy-3", cfg, Amount{Tokens: 50}, now.Add(time.Minute), ConcurrentRequests)
	// busy-0 ends: spent 950, so its next request (worst 100) does not fit
	// the day; it is kept, and so the others are refused room still
	tickets[0].Settle(Amount{Tokens: 950}, false, now)
	refused(t, s, "busy-0", cfg, Amount{Tokens: 100}, now.Add(time.Minute), TokensPerDay)
	later := now.Add(2 * time.Minute)
	tickets[1].Settle(Amount{Tokens: 10}, false, later)
	// busy-1 is under every limit and idle: it goes, the newcomer comes in
	admitted(t, s, "newcomer", cfg, Amount{Tokens: 1}, later.Add(2*time.Second))
	if _, ok := l.clients["busy-1"]; ok {
		t.Error("busy-1, under every limit and idle, was kept instead")
	}
	if _, ok := l.clients["busy-0"]; !ok {
		t.Error("busy-0, refused by tokens_per_day today, was forgotten: its day would start again")
	}
	refused(t, s, "busy-0", cfg, Amount{Tokens: 100}, later.Add(2*time.Second), TokensPerDay)
}

// The local top: the clients with the most tokens today, with their
// input and output apart.
func TestLedgerTop(t *testing.T) {
	s := NewStore(NewLedger(), nil, 0)
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	if top, from := s.Top(now, 10); top != nil || from != "" {
		t.Errorf("empty: %v %q", top, from)
	}
	for i, n := range []int64{5, 50, 20, 0} {
		admitted(t, s, fmt.Sprintf("c%d", i), Config{}, Amount{}, now).Settle(Amount{Tokens: n, Input: n / 5, USD: float64(n) / 100}, i == 2, now)
	}
	top, from := s.Top(now, 2)
	if from != "local" || len(top) != 2 || top[0].Client != "c1" || top[1].Client != "c2" {
		t.Fatalf("top %+v from %q", top, from)
	}
	if c := top[1]; c.InputTokens != 4 || c.OutputTokens != 16 || c.Cost != 0.2 || c.Requests != 1 || c.EstimatedTokens != 20 {
		t.Errorf("c2: %+v", c)
	}
	if top, _ := s.Top(now.Add(24*time.Hour), 10); top != nil {
		t.Errorf("the next day: %+v", top)
	}
}
