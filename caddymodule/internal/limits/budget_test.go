package limits

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// A day of the tests that use Redis: in the future of every clock here,
// so that no key expires (keys expire by the instance's clock).
var t0 = time.Date(2031, 3, 12, 10, 0, 0, 0, time.UTC)

// forEach runs f on each backend: a local ledger, a miniredis, a real
// redis-server (skipped when absent); with Redis, a fleet of n stores.
func forEach(t *testing.T, n int, f func(t *testing.T, stores []*Store)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b.fleet(t, n)) })
	}
}

// burst sends n requests at once, each with a worst case of worst, from
// one client through the stores in turn, and settles every admitted one
// at actual once all have been decided. It returns how many were
// admitted, and the refusals.
func burst(t *testing.T, stores []*Store, client string, cfg Config, n int, worst, actual Amount, now time.Time) (int, []*Refusal) {
	t.Helper()
	var mu sync.Mutex
	var tickets []*Ticket
	var refusals []*Refusal
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tk, ref := stores[i%len(stores)].Admit(client, cfg, worst, now)
			mu.Lock()
			defer mu.Unlock()
			if ref != nil {
				refusals = append(refusals, ref)
			} else {
				tickets = append(tickets, tk)
			}
		})
	}
	wg.Wait()
	for _, tk := range tickets {
		if len(stores) > 1 && tk.Store() != "redis" {
			t.Errorf("a ticket was admitted %s: the fleet did not count in Redis", tk.Store())
		}
		wg.Go(func() { tk.Settle(actual, false, now) })
	}
	wg.Wait()
	settled(t, stores...)
	return len(tickets), refusals
}

// 40 requests at once under usd_per_day L, each with a worst case of
// cost: exactly ⌊L / cost⌋ are admitted, never more (also across a fleet
// of 3 stores on one Redis); what is settled stays within L; the
// others are told to retry in a second (requests in flight may free
// room), and once they settled, what is left admits what fits.
func TestBurstUSDPerDay(t *testing.T) {
	forEach(t, 3, func(t *testing.T, stores []*Store) {
		cfg := Config{USDPerDay: 5}
		worst, actual := Amount{Tokens: 3000, Input: 1000, USD: 0.3}, Amount{Tokens: 2500, Input: 1000, USD: 0.25}
		n, refusals := burst(t, stores, "burst-usd", cfg, 40, worst, actual, t0)
		if want := int(math.Floor(5 / 0.3)); n != want {
			t.Fatalf("%d admitted, want exactly %d", n, want)
		}
		for _, ref := range refusals {
			if ref.Limit != USDPerDay || ref.NeverFits || ref.RetryAfter != InFlightRetry {
				t.Fatalf("refusal %+v, want usd_per_day in flight, retry %v", *ref, InFlightRetry)
			}
		}
		st := stores[0].ClientStatus("burst-usd", cfg, t0)
		if st.Today.USD != 4 || st.Today.Requests != 16 || st.Today.Tokens != 40000 || st.Reserved.USD != 0 || st.InFlight != 0 {
			t.Errorf("status after the burst: %+v", st)
		}
		if st.Today.USD > cfg.USDPerDay || st.Left[USDPerDay] != 1 {
			t.Errorf("spent %v of %v, left %v", st.Today.USD, cfg.USDPerDay, st.Left)
		}
		// $4 spent: three more of $0.3 fit ($4.9), the fourth does not,
		// and never will today
		n, refusals = burst(t, stores, "burst-usd", cfg, 10, worst, worst, t0.Add(time.Second))
		if n != 3 || len(refusals) != 7 {
			t.Fatalf("second burst: %d admitted, want 3", n)
		}
		ref := refused(t, stores[len(stores)-1], "burst-usd", cfg, worst, t0.Add(2*time.Second), USDPerDay)
		if !ref.NeverFits || ref.RetryAfter != 14*time.Hour-2*time.Second || math.Abs(ref.Left.USD-0.1) > 1e-9 {
			t.Errorf("refusal %+v, want never fits, until midnight, $0.1 left", *ref)
		}
		if !strings.Contains(ref.Message(), "lower output cap") {
			t.Errorf("message %q", ref.Message())
		}
		if st := stores[0].ClientStatus("burst-usd", cfg, t0.Add(3*time.Second)); math.Abs(st.Today.USD-4.9) > 1e-9 {
			t.Errorf("spent %v, want 4.9", st.Today.USD)
		}
	})
}

// The same with tokens_per_day: 40 at once, ⌊L / worst⌋ admitted.
func TestBurstTokensPerDay(t *testing.T) {
	forEach(t, 3, func(t *testing.T, stores []*Store) {
		cfg := Config{TokensPerDay: 5000}
		n, refusals := burst(t, stores, "burst-tokens", cfg, 40, Amount{Tokens: 1200}, Amount{Tokens: 1000, Input: 900}, t0)
		if n != 4 || len(refusals) != 36 {
			t.Fatalf("%d admitted, want exactly 4", n)
		}
		st := stores[0].ClientStatus("burst-tokens", cfg, t0)
		if st.Today.Tokens != 4000 || st.Today.InputTokens != 3600 || st.Today.OutputTokens != 400 || st.Left[TokensPerDay] != 1000 {
			t.Errorf("status %+v", st)
		}
		if top, _ := stores[0].Top(t0, 10); len(top) != 1 || top[0].InputTokens+top[0].OutputTokens != 4000 || top[0].Requests != 4 {
			t.Errorf("top %+v", top)
		}
	})
}

// Month limits: a UTC calendar month; a worst case that does not fit
// what is left of the month is refused until the 1st (not midnight);
// when a day limit refuses too, the month's, which frees later, is the
// one given.
func TestMonthLimits(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{TokensPerMonth: 10_000, TokensPerDay: 7000, USDPerMonth: 1}
		now := time.Date(2031, 3, 31, 20, 0, 0, 0, time.UTC)
		admitted(t, s, "monthly", cfg, Amount{Tokens: 6000}, now).Settle(Amount{Tokens: 6000}, false, now)
		settled(t, s)
		ref := refused(t, s, "monthly", cfg, Amount{Tokens: 5000}, now, TokensPerMonth)
		if !ref.NeverFits || ref.RetryAfter != 4*time.Hour || ref.Left.Tokens != 4000 {
			t.Errorf("refusal %+v, want never fits until 2031-04-01 (4h), 4000 left", *ref)
		}
		// mid-month, the day refuses too (6000 + 5000 > 7000), but frees
		// first: the month's refusal is the one given
		admitted(t, s, "monthly2", cfg, Amount{Tokens: 6000}, t0).Settle(Amount{Tokens: 6000}, false, t0)
		settled(t, s)
		ref = refused(t, s, "monthly2", cfg, Amount{Tokens: 5000}, t0, TokensPerMonth)
		if want := time.Date(2031, 4, 1, 0, 0, 0, 0, time.UTC).Sub(t0); ref.RetryAfter != want || !ref.NeverFits {
			t.Errorf("mid-month: %+v, want retry %v", *ref, want)
		}
		admitted(t, s, "monthly", cfg, Amount{Tokens: 1000, USD: 1}, now).Settle(Amount{Tokens: 10, USD: 1}, false, now)
		settled(t, s)
		ref = refused(t, s, "monthly", cfg, Amount{}, now, USDPerMonth)
		if !ref.NeverFits || ref.RetryAfter != 4*time.Hour || !strings.Contains(ref.Message(), "used up its budget for this month") || ref.Code() != "usd_per_month_exceeded" {
			t.Errorf("refusal %+v: %s", *ref, ref.Message())
		}
		april := time.Date(2031, 4, 1, 0, 0, 1, 0, time.UTC)
		admitted(t, s, "monthly", cfg, Amount{Tokens: 7000, USD: 0.99}, april).Settle(Amount{Tokens: 7000}, false, april)
		settled(t, s)
		st := s.ClientStatus("monthly", cfg, april)
		if st.Month.Tokens != 7000 || st.Today.Tokens != 7000 || st.Left[TokensPerMonth] != 3000 || st.Left[USDPerMonth] != 1 || st.Left[TokensPerDay] != 0 {
			t.Errorf("status in April: %+v", st)
		}
	})
}

// concurrent_requests: the tickets in flight, whichever store of the
// fleet admitted them; a settled or abandoned ticket frees its slot.
func TestConcurrentRequests(t *testing.T) {
	forEach(t, 2, func(t *testing.T, stores []*Store) {
		cfg := Config{ConcurrentRequests: 2}
		a := admitted(t, stores[0], "conc", cfg, Amount{}, t0)
		b := admitted(t, stores[len(stores)-1], "conc", cfg, Amount{}, t0)
		ref := refused(t, stores[0], "conc", cfg, Amount{}, t0, ConcurrentRequests)
		if ref.RetryAfter != InFlightRetry || ref.NeverFits || ref.Code() != "concurrent_requests_exceeded" {
			t.Errorf("refusal %+v", *ref)
		}
		if st := stores[0].ClientStatus("conc", cfg, t0); st.InFlight != 2 || st.Left[ConcurrentRequests] != 0 {
			t.Errorf("status %+v", st)
		}
		a.Settle(Amount{Tokens: 5}, false, t0)
		a.Settle(Amount{Tokens: 5}, false, t0) // a second Settle does nothing
		b.Abandon()
		settled(t, stores...)
		c := admitted(t, stores[len(stores)-1], "conc", cfg, Amount{}, t0)
		admitted(t, stores[0], "conc", cfg, Amount{}, t0)
		refused(t, stores[0], "conc", cfg, Amount{}, t0, ConcurrentRequests)
		c.Settle(Amount{}, false, t0)
		settled(t, stores...)
		if st := stores[0].ClientStatus("conc", cfg, t0); st.InFlight != 1 || st.Today.Requests != 2 || st.Today.Tokens != 5 {
			t.Errorf("status %+v: want 1 in flight, 2 requests (the abandoned one not counted), 5 tokens", st)
		}
	})
}

// A settlement replaces the reservation by what was used, below or
// above the worst case; what is left follows.
func TestSettleLowersAndRaises(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{TokensPerDay: 1000}
		a := admitted(t, s, "settle", cfg, Amount{Tokens: 600}, t0)
		refused(t, s, "settle", cfg, Amount{Tokens: 600}, t0, TokensPerDay)
		a.Settle(Amount{Tokens: 100}, false, t0)
		settled(t, s)
		b := admitted(t, s, "settle", cfg, Amount{Tokens: 600}, t0) // 100 + 600
		if st := s.ClientStatus("settle", cfg, t0); st.Today.Tokens != 100 || st.Reserved.Tokens != 600 || st.Left[TokensPerDay] != 300 {
			t.Errorf("status %+v", st)
		}
		b.Settle(Amount{Tokens: 800}, false, t0) // more than its worst case: the figure counts
		settled(t, s)
		ref := refused(t, s, "settle", cfg, Amount{Tokens: 200}, t0, TokensPerDay)
		if !ref.NeverFits || ref.Left.Tokens != 100 {
			t.Errorf("refusal %+v", *ref)
		}
		admitted(t, s, "settle", cfg, Amount{Tokens: 100}, t0)
	})
}

// An estimated settlement is shown apart, and its reconciliation
// replaces it, lower or higher, once.
func TestCorrectAfterEstimate(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{USDPerDay: 1}
		a := admitted(t, s, "recon", cfg, Amount{Tokens: 500, USD: 0.5}, t0)
		if a.Correct(Amount{USD: 0.1}, t0) {
			t.Error("Correct before Settle applied")
		}
		a.Settle(Amount{Tokens: 500, USD: 0.5}, true, t0)
		settled(t, s)
		st := s.ClientStatus("recon", cfg, t0)
		if st.Today.USD != 0.5 || st.Today.EstimatedUSD != 0.5 || st.Today.EstimatedTokens != 500 || st.Today.EstimatedRequests != 1 {
			t.Errorf("estimated: %+v", st.Today)
		}
		if !a.Correct(Amount{Tokens: 120, Input: 100, USD: 0.1}, t0) || a.Correct(Amount{USD: 0.9}, t0) {
			t.Error("Correct did not apply exactly once")
		}
		b := admitted(t, s, "recon", cfg, Amount{USD: 0.2}, t0)
		b.Settle(Amount{USD: 0.2}, false, t0)
		if b.Correct(Amount{USD: 0.9}, t0) {
			t.Error("Correct applied to a settlement that was not estimated")
		}
		c := admitted(t, s, "recon", cfg, Amount{USD: 0.2}, t0)
		c.Settle(Amount{USD: 0.2}, true, t0)
		c.Correct(Amount{USD: 0.6}, t0) // higher than estimated
		settled(t, s)
		st = s.ClientStatus("recon", cfg, t0)
		want := Spent{Tokens: 120, InputTokens: 100, OutputTokens: 20, USD: 0.9, Requests: 3}
		if st.Today != want || st.Month != want {
			t.Errorf("after reconciliation: %+v, want %+v", st, want)
		}
		ref := refused(t, s, "recon", cfg, Amount{USD: 0.2}, t0, USDPerDay)
		if !ref.NeverFits {
			t.Errorf("refusal %+v", *ref)
		}
	})
}

// A request admitted before midnight UTC and settled after is charged to
// the day it was admitted in (that day's budget reserved it), and its
// reservation does not count against the new day's budget; the month's
// counts it throughout.
func TestMidnightCrossing(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{TokensPerDay: 1000, TokensPerMonth: 2000}
		before := time.Date(2031, 3, 12, 23, 59, 30, 0, time.UTC)
		after := before.Add(40 * time.Second)
		a := admitted(t, s, "night", cfg, Amount{Tokens: 800}, before)
		b := admitted(t, s, "night", cfg, Amount{Tokens: 900}, after) // the new day: 900 ≤ 1000; the month 1700 ≤ 2000
		ref := refused(t, s, "night", cfg, Amount{Tokens: 400}, after, TokensPerMonth)
		if ref.NeverFits || ref.RetryAfter != InFlightRetry {
			t.Errorf("refusal %+v: the month's room is held in flight", *ref)
		}
		a.Settle(Amount{Tokens: 700}, false, after)
		settled(t, s)
		st := s.ClientStatus("night", cfg, after)
		if st.Today.Tokens != 0 || st.Month.Tokens != 700 || st.Reserved.Tokens != 900 || st.Left[TokensPerDay] != 100 || st.Left[TokensPerMonth] != 400 {
			t.Errorf("status after midnight: %+v", st)
		}
		b.Settle(Amount{Tokens: 100}, false, after)
		settled(t, s)
		admitted(t, s, "night", cfg, Amount{Tokens: 900}, after)
	})
}

// A reservation not settled within ReservationLifetime is charged its
// worst case (estimated) by the next sweep, and its slot is freed; its
// late settlement then corrects by actual − worst: no double count.
func TestSweepThenLateSettle(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{TokensPerDay: 1000, ConcurrentRequests: 1}
		swept := sweptLocal
		if s.redis != nil {
			swept = sweptRedis
		}
		before := counterValue(swept)
		slow := admitted(t, s, "slow", cfg, Amount{Tokens: 600, Input: 100}, t0)
		refused(t, s, "slow", cfg, Amount{Tokens: 100}, t0.Add(ReservationLifetime-time.Millisecond), ConcurrentRequests)
		later := t0.Add(ReservationLifetime)
		next := admitted(t, s, "slow", cfg, Amount{Tokens: 100}, later) // sweeps slow: 600 spent, estimated
		if got := counterValue(swept) - before; got != 1 {
			t.Errorf("swept %v, want 1", got)
		}
		st := s.ClientStatus("slow", cfg, later)
		if st.Today.Tokens != 600 || st.Today.EstimatedTokens != 600 || st.Today.EstimatedRequests != 1 || st.Today.Requests != 1 || st.InFlight != 1 || st.Reserved.Tokens != 100 {
			t.Errorf("after the sweep: %+v", st)
		}
		slow.Settle(Amount{Tokens: 200, Input: 150}, false, later.Add(time.Minute))
		next.Settle(Amount{Tokens: 50}, false, later.Add(time.Minute))
		settled(t, s)
		st = s.ClientStatus("slow", cfg, later.Add(time.Minute))
		want := Spent{Tokens: 250, InputTokens: 150, OutputTokens: 100, Requests: 2}
		if st.Today != want || st.InFlight != 0 || st.Reserved.Tokens != 0 {
			t.Errorf("after the late settlement: %+v, want %+v", st, want)
		}
		if got := counterValue(swept) - before; got != 1 {
			t.Errorf("swept %v, want 1", got)
		}
		if s.redis != nil {
			top, _ := s.Top(later, 10)
			if len(top) != 1 || top[0].InputTokens+top[0].OutputTokens != 250 {
				t.Errorf("top %+v", top)
			}
		}
	})
}

// A ticket whose caller dropped it (or whose instance died) is charged
// its worst case when its reservation expires: no money is lost. Before
// that, its reservation holds its room; in a fleet, the other instances
// see it, and the status route's read sweeps it too.
func TestDroppedTicketChargedWorstCase(t *testing.T) {
	forEach(t, 2, func(t *testing.T, stores []*Store) {
		cfg := Config{TokensPerDay: 1000, USDPerDay: 1}
		dead, alive := stores[0], stores[len(stores)-1]
		admitted(t, dead, "orphan", cfg, Amount{Tokens: 500, USD: 0.5}, t0) // never settled
		if dead.redis != nil {
			_ = dead.redis.Close() // the instance dies
		}
		ref := refused(t, alive, "orphan", cfg, Amount{Tokens: 600}, t0.Add(5*time.Minute), TokensPerDay)
		if ref.NeverFits || ref.RetryAfter != InFlightRetry {
			t.Errorf("before expiry: %+v", *ref)
		}
		later := t0.Add(ReservationLifetime + time.Second)
		st := alive.ClientStatus("orphan", cfg, later)
		if st.Today.Tokens != 500 || st.Today.USD != 0.5 || st.Today.EstimatedUSD != 0.5 || st.InFlight != 0 {
			t.Errorf("after expiry: %+v", st)
		}
		ref = refused(t, alive, "orphan", cfg, Amount{Tokens: 600}, later, TokensPerDay)
		if !ref.NeverFits {
			t.Errorf("after expiry: %+v", *ref)
		}
		admitted(t, alive, "orphan", cfg, Amount{Tokens: 500, USD: 0.5}, later)
	})
}

// A zero worst case (a model listing) is admitted while the limit is not
// used up, even with its room reserved in flight, and refused once it
// is: a used-up limit refuses everything until its period ends.
func TestZeroWorstCase(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{TokensPerDay: 100}
		admitted(t, s, "free", cfg, Amount{Tokens: 99}, t0).Settle(Amount{Tokens: 99}, false, t0)
		settled(t, s)
		held := admitted(t, s, "free", cfg, Amount{Tokens: 1}, t0)
		admitted(t, s, "free", cfg, Amount{}, t0).Settle(Amount{}, false, t0)
		held.Settle(Amount{Tokens: 1}, false, t0)
		settled(t, s)
		ref := refused(t, s, "free", cfg, Amount{}, t0, TokensPerDay)
		if !ref.NeverFits || ref.RetryAfter != 14*time.Hour {
			t.Errorf("refusal %+v", *ref)
		}
	})
}

// A worst case whose dollars are unknown (NaN) or infinite fits no dollar
// limit; negative figures count as nothing; a NaN actual figure is
// missing and charged at the worst case's dollars.
func TestOddAmounts(t *testing.T) {
	forEach(t, 1, func(t *testing.T, stores []*Store) {
		s := stores[0]
		cfg := Config{USDPerDay: 1000}
		for _, usd := range []float64{math.NaN(), math.Inf(1)} {
			refused(t, s, "odd", cfg, Amount{Tokens: 1, USD: usd}, t0, USDPerDay)
		}
		admitted(t, s, "odd", cfg, Amount{Tokens: -5, USD: -1}, t0).Settle(Amount{Tokens: -3, Input: 7, USD: -2}, false, t0)
		admitted(t, s, "odd", cfg, Amount{Tokens: 10, Input: 50, USD: 0.25}, t0).Settle(Amount{Tokens: 10, USD: math.NaN()}, false, t0)
		settled(t, s)
		if st := s.ClientStatus("odd", cfg, t0); st.Today.USD != 0.25 || st.Today.Tokens != 10 || st.Today.InputTokens != 0 || st.Today.Requests != 2 {
			t.Errorf("status %+v", st)
		}
		if w := admitted(t, s, "odd", cfg, Amount{Tokens: 10, Input: 50, USD: 1e-10}, t0).Worst(); w != (Amount{Tokens: 10, Input: 10, USD: 1e-9}) {
			t.Errorf("worst case counted as %+v (dollars round up to the nano-dollar)", w)
		}
	})
}

// Many clients at once, each with its own budget: no client's count
// touches another's.
func TestClientsApart(t *testing.T) {
	forEach(t, 2, func(t *testing.T, stores []*Store) {
		cfg := Config{TokensPerDay: 1000}
		var wg sync.WaitGroup
		for c := range 8 {
			wg.Go(func() {
				for i := range 5 {
					name := fmt.Sprintf("apart-%d", c)
					tk, ref := stores[i%len(stores)].Admit(name, cfg, Amount{Tokens: 300}, t0)
					if (ref == nil) != (i < 3) {
						t.Errorf("%s request %d: %+v", name, i, ref)
					}
					if tk != nil {
						defer tk.Settle(Amount{Tokens: 300}, false, t0)
					}
				}
			})
		}
		wg.Wait()
		settled(t, stores...)
		for c := range 8 {
			if st := stores[0].ClientStatus(fmt.Sprintf("apart-%d", c), cfg, t0); st.Today.Tokens != 900 {
				t.Errorf("apart-%d: %+v", c, st.Today)
			}
		}
	})
}
