package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
)

// Refresher lifecycle tests run on synctest's fake clock with a fake
// loadFunc: hours pass in microseconds, no network, and every goroutine
// the refresher starts must have ended when a test returns (synctest.Test
// fails otherwise), so each test also proves that Stop ends the loop.

// fakeLoad is a loadFunc that records when it is called, takes latency
// (virtual time) per call, and answers with result.
type fakeLoad struct {
	latency time.Duration

	mu          sync.Mutex
	result      func(n int, now time.Time) (*Credential, error)
	calls       []time.Time
	inFlight    int
	maxInFlight int
}

func (f *fakeLoad) load(ctx context.Context, _ *Credential, _ bool) (*Credential, error) {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, time.Now())
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	result := f.result
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.latency > 0 {
		select {
		case <-time.After(f.latency):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return result(n, time.Now())
}

func (f *fakeLoad) setResult(result func(n int, now time.Time) (*Credential, error)) {
	f.mu.Lock()
	f.result = result
	f.mu.Unlock()
}

func (f *fakeLoad) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func (f *fakeLoad) count() int { return len(f.callTimes()) }

// checkNoOverlap fails if two loads ever ran at once.
func (f *fakeLoad) checkNoOverlap(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxInFlight > 1 {
		t.Errorf("%d loads ran at once; a source refreshes one at a time", f.maxInFlight)
	}
}

// mints returns tokens named token-<n> living lifetime from the call.
func mints(lifetime time.Duration) func(int, time.Time) (*Credential, error) {
	return func(n int, now time.Time) (*Credential, error) {
		return New(fmt.Sprintf("token-%d", n), MethodOIDC, now.Add(lifetime), now), nil
	}
}

func fails(msg string) func(int, time.Time) (*Credential, error) {
	return func(int, time.Time) (*Credential, error) { return nil, errors.New(msg) }
}

func testRefresher(f *fakeLoad, refreshBefore time.Duration) *refresher {
	return newRefresher("vercel_oidc", refreshBefore, f.load, zap.NewNop())
}

func valueOf(c *Credential) string {
	if c == nil {
		return "<nil>"
	}
	return c.value
}

// A refresh starts refresh_before ahead of exp, not earlier, and the new
// token replaces the old one.
func TestRefresherRefreshesAheadOfExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{latency: 200 * time.Millisecond, result: mints(time.Hour)}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()

		first, err := r.Fetch(t.Context())
		if err != nil || first.value != "token-0" {
			t.Fatalf("Fetch = %v, %v", valueOf(first), err)
		}
		refreshAt := first.expires.Add(-5 * time.Minute)

		// just before the refresh point: no refresh yet, the token is served
		time.Sleep(time.Until(refreshAt) - time.Second)
		synctest.Wait()
		if n := f.count(); n != 1 {
			t.Fatalf("%d loads before the refresh point, want 1", n)
		}
		if c := r.Current(time.Now()); valueOf(c) != first.value {
			t.Fatalf("Current = %v before the refresh point", valueOf(c))
		}

		// at the refresh point the loop refreshes by itself
		time.Sleep(time.Second + f.latency)
		synctest.Wait()
		calls := f.callTimes()
		if len(calls) != 2 {
			t.Fatalf("%d loads after the refresh point, want 2", len(calls))
		}
		if !calls[1].Equal(refreshAt) {
			t.Errorf("refresh started at %v, want %v (5m before exp)", calls[1].Sub(calls[0]), refreshAt.Sub(calls[0]))
		}
		second := r.Current(time.Now())
		if valueOf(second) != "token-1" {
			t.Fatalf("Current = %v after the refresh, want token-1", valueOf(second))
		}

		// and so on, once per token
		time.Sleep(time.Until(second.expires))
		synctest.Wait()
		if n := f.count(); n != 3 {
			t.Errorf("%d loads after the second token's life, want 3", n)
		}
		f.checkNoOverlap(t)
	})
}

// A token shorter-lived than refresh_before is refreshed at half its life,
// not at once and over and over.
func TestRefresherHalfLifeForShortTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{result: mints(4 * time.Minute)}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		first := New("offered", MethodOIDC, time.Now().Add(4*time.Minute), time.Now())
		if !r.Offer(first) {
			t.Fatal("Offer refused a usable token")
		}
		start := time.Now()
		r.Current(start) // start the loop

		time.Sleep(2*time.Minute - time.Second)
		synctest.Wait()
		if n := f.count(); n != 0 {
			t.Fatalf("%d loads before half the token's life", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		calls := f.callTimes()
		if len(calls) != 1 || !calls[0].Equal(start.Add(2*time.Minute)) {
			t.Fatalf("loads at %v, want one at +2m", calls)
		}

		// each 4-minute token is refreshed after 2 minutes: ~5 in 10 minutes, no storm
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := f.count(); n < 5 || n > 7 {
			t.Errorf("%d loads in 12 minutes of 4-minute tokens, want about 6", n)
		}
		if r.Current(time.Now()) == nil {
			t.Error("no token")
		}
	})
}

// 100 concurrent requests with no token cause exactly one load.
func TestRefresherSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{latency: time.Second, result: mints(time.Hour)}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()

		var wg sync.WaitGroup
		got := make([]*Credential, 100)
		for i := range got {
			wg.Go(func() {
				if i%2 == 0 && r.Current(time.Now()) != nil {
					t.Error("Current returned a token before any was loaded")
				}
				c, err := r.Fetch(t.Context())
				if err != nil {
					t.Errorf("Fetch %d: %v", i, err)
				}
				got[i] = c
			})
		}
		wg.Wait()
		if n := f.count(); n != 1 {
			t.Errorf("%d loads for 100 concurrent Fetches, want 1", n)
		}
		for i, c := range got {
			if valueOf(c) != valueOf(got[0]) {
				t.Fatalf("Fetch %d got %v, Fetch 0 got %v", i, valueOf(c), valueOf(got[0]))
			}
		}
		f.checkNoOverlap(t)
	})
}

// A refresh asked for by a caller that found no token, once another
// refresh has just installed one, loads nothing and reports nothing.
func TestRefresherLateCallerFindsFreshToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{result: mints(time.Hour)}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		fresh := New("just-refreshed", MethodOIDC, time.Now().Add(time.Hour), time.Now())
		if !r.Offer(fresh) {
			t.Fatal("Offer refused a usable token")
		}
		// what Fetch does after it found no usable token
		v, err, _ := r.group.Do("refresh", r.refreshShared)
		if err != nil || valueOf(v.(*Credential)) != "just-refreshed" {
			t.Fatalf("refresh = %v, %v; want the token in place", v, err)
		}
		if n := f.count(); n != 0 {
			t.Errorf("%d loads, want none: the token in place is fresh", n)
		}
	})
}

// A failed refresh keeps the still-valid token; retries back off
// exponentially (±20% jitter) up to a cap; at exp the token is gone and
// Fetch answers with the last error at once; success resets the backoff.
func TestRefresherBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{result: fails("mint: 503 Service Unavailable")}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		start := time.Now()
		tok := New("still-valid", MethodOIDC, start.Add(time.Hour), start)
		r.Offer(tok)
		r.Current(start) // start the loop

		// failures from 55m on; the token is served until its exp, less
		// the 5s expiry margin
		time.Sleep(time.Hour - maxDefaultExpiryMargin - time.Nanosecond)
		synctest.Wait()
		if c := r.Current(time.Now()); valueOf(c) != tok.value {
			t.Fatalf("Current = %v while the token is valid and refreshes fail", valueOf(c))
		}
		if c, err := r.Fetch(t.Context()); valueOf(c) != tok.value || err != nil {
			t.Fatalf("Fetch = %v, %v while the token is valid", valueOf(c), err)
		}
		st := r.status(time.Now())
		if !st.Usable || !strings.Contains(st.LastError, "mint: 503") {
			t.Errorf("status while failing: %+v", st)
		}

		// within the expiry margin: nothing, and Fetch says why at once
		time.Sleep(time.Nanosecond)
		if c := r.Current(time.Now()); c != nil {
			t.Fatalf("Current returned %v at exp", valueOf(c))
		}
		before := time.Now()
		c, err := r.Fetch(t.Context())
		if c != nil || err == nil || !strings.Contains(err.Error(), "mint: 503 Service Unavailable") {
			t.Fatalf("Fetch at exp = %v, %v", valueOf(c), err)
		}
		if !time.Now().Equal(before) {
			t.Errorf("Fetch during backoff waited %v", time.Since(before))
		}

		time.Sleep(15 * time.Minute)
		synctest.Wait()
		calls := f.callTimes()
		if len(calls) < 20 {
			t.Fatalf("only %d refresh attempts in 20 minutes of failures", len(calls))
		}
		if want := start.Add(55 * time.Minute); !calls[0].Equal(want) {
			t.Errorf("first attempt at %v, want %v", calls[0].Sub(start), want.Sub(start))
		}
		for i := 1; i < len(calls); i++ {
			base := 30 * time.Second
			if i <= 5 {
				base = time.Second << (i - 1)
			}
			lo, hi := base*8/10, base*12/10
			if gap := calls[i].Sub(calls[i-1]); gap < lo || gap > hi {
				t.Errorf("attempt %d came %v after the previous one, want %v..%v", i+1, gap, lo, hi)
			}
		}
		if c, err := r.Fetch(t.Context()); c != nil || err == nil {
			t.Errorf("Fetch after exp = %v, %v", valueOf(c), err)
		}

		// recovery: the next attempt succeeds, the backoff resets
		f.setResult(mints(time.Hour))
		time.Sleep(maxBackoff * 12 / 10) // the longest backoff, jitter included
		synctest.Wait()
		fresh := r.Current(time.Now())
		if fresh == nil {
			t.Fatal("no token after the source recovered")
		}
		if st := r.status(time.Now()); st.LastError != "" || !st.Usable {
			t.Errorf("status after recovery: %+v", st)
		}
		f.setResult(fails("down again"))
		n := f.count()
		time.Sleep(time.Until(fresh.refreshAt) + 1300*time.Millisecond)
		synctest.Wait()
		if got := f.count() - n; got != 2 {
			t.Errorf("%d attempts in the first 1.3s of failing again, want 2 (backoff restarts at 1s)", got)
		}
		f.checkNoOverlap(t)
	})
}

// A refresh that yields no fresher token is a failure: the current token
// stays, and the attempt is retried with backoff, not in a tight loop.
func TestRefresherNoFresherToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		tok := New("current", MethodOIDC, start.Add(time.Hour), start)
		f := &fakeLoad{result: func(int, time.Time) (*Credential, error) { return tok, nil }}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		r.Offer(tok)
		r.Current(start)
		time.Sleep(56 * time.Minute)
		synctest.Wait()
		if n := f.count(); n < 3 || n > 10 {
			t.Errorf("%d attempts in the minute after the refresh point, want a few (backoff)", n)
		}
		if valueOf(r.Current(time.Now())) != tok.value {
			t.Error("token dropped")
		}
		if st := r.status(time.Now()); !strings.Contains(st.LastError, "no fresher token available") {
			t.Errorf("status: %+v", st)
		}
	})
}

// A token is never returned at or after its exp, by Current or Fetch, and
// an expired token is never installed.
func TestRefresherNeverReturnsExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		exp := now.Add(10 * time.Minute)
		f := &fakeLoad{result: func(int, time.Time) (*Credential, error) {
			// a load that claims success with a dead token
			return New("dead", MethodOIDC, now.Add(-time.Second), now.Add(-time.Hour)), nil
		}}
		r := testRefresher(f, time.Minute)
		defer r.Stop()
		tok := New("tok", MethodOIDC, exp, now)
		if !r.Offer(tok) {
			t.Fatal("Offer refused a usable token")
		}
		margin := maxDefaultExpiryMargin // a tenth of 10m is more
		if valueOf(r.Current(exp.Add(-margin-time.Nanosecond))) != tok.value {
			t.Error("token not served just before the expiry margin")
		}
		if c := r.Current(exp.Add(-margin)); c != nil {
			t.Error("token served within the expiry margin")
		}
		if c := r.Current(exp); c != nil {
			t.Error("token served at exp")
		}
		if c := r.Current(exp.Add(time.Hour)); c != nil {
			t.Error("token served after exp")
		}
		if r.Offer(New("expired", MethodOIDC, now, now.Add(-time.Hour))) {
			t.Error("Offer installed a token at its exp")
		}

		time.Sleep(time.Until(exp))
		if c, err := r.Fetch(t.Context()); c != nil || err == nil {
			t.Errorf("Fetch at exp = %v, %v; want no token", valueOf(c), err)
		}
		for range 100 {
			time.Sleep(time.Second)
			if c := r.Current(time.Now()); c != nil {
				t.Fatalf("Current returned %v after exp", valueOf(c))
			}
		}
	})
}

// A load that claims success with an expired token is a failure.
func TestRefresherLoadReturnsExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		f := &fakeLoad{latency: time.Millisecond, result: func(int, time.Time) (*Credential, error) {
			return New("dead", MethodOIDC, now, now.Add(-time.Hour)), nil
		}}
		r := testRefresher(f, time.Minute)
		defer r.Stop()
		c, err := r.Fetch(t.Context())
		if c != nil || err == nil || err.Error() != "no usable token" {
			t.Errorf("Fetch = %v, %v; want no usable token", valueOf(c), err)
		}
		if r.Current(time.Now()) != nil {
			t.Error("expired token installed")
		}
	})
}

// Offer installs a token only if it expires later than the current one.
func TestRefresherOfferFreshestWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{result: fails("no inputs")}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		now := time.Now()
		cred := func(name string, life time.Duration) *Credential {
			return New(name, MethodOIDC, now.Add(life), now)
		}
		a, b, c, d := cred("1h", time.Hour), cred("2h", 2*time.Hour), cred("30m", 30*time.Minute), cred("2h-again", 2*time.Hour)
		for _, step := range []struct {
			offer   *Credential
			install bool
			current *Credential
		}{
			{a, true, a},
			{b, true, b},  // later exp replaces
			{c, false, b}, // earlier does not
			{a, false, b},
			{d, false, b}, // same exp: the one in use stays
		} {
			if got := r.Offer(step.offer); got != step.install {
				t.Errorf("Offer(%s) = %v, want %v", step.offer.value, got, step.install)
			}
			if got := r.Current(now); valueOf(got) != step.current.value {
				t.Errorf("after Offer(%s): Current = %v, want %s", step.offer.value, valueOf(got), step.current.value)
			}
		}
		// once the fresher token has expired, an older-but-valid one may
		// not come back: it expired even earlier
		if r.Offer(c) {
			t.Error("installed an earlier-expiring token")
		}
		if got := r.Current(now).refreshAt; !got.Equal(b.expires.Add(-5 * time.Minute)) {
			t.Errorf("installed token refreshes at %v, want 5m before exp", got.Sub(now))
		}
	})
}

// Stop ends the loop: no load after it, however much time passes; it is
// idempotent and works when the loop never started or a load hangs.
func TestRefresherStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{result: mints(10 * time.Minute)}
		r := testRefresher(f, time.Minute)
		r.Current(time.Now())
		synctest.Wait()
		if n := f.count(); n != 1 {
			t.Fatalf("%d loads when the loop started without a token, want 1", n)
		}
		r.Stop()
		select {
		case <-r.done:
		default:
			t.Fatal("Stop returned before the loop ended")
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if n := f.count(); n != 1 {
			t.Errorf("%d loads after Stop", n)
		}
		r.Stop()

		// never started
		newRefresher("vercel_oidc", time.Minute, f.load, zap.NewNop()).Stop()

		// a load in flight is cancelled
		hang := &fakeLoad{latency: 1000 * time.Hour, result: mints(time.Hour)}
		r = testRefresher(hang, time.Minute)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := r.Fetch(ctx)
		if err == nil || !strings.Contains(err.Error(), "still refreshing after waiting") {
			t.Errorf("Fetch with a hanging load = %v", err)
		}
		if waited := time.Since(start); waited != 3*time.Second {
			t.Errorf("Fetch waited %v, want its context's 3s", waited)
		}
		r.Stop() // returns although the load would run for 1000h
	})
}

// Fetch while backing off answers at once with the last error, without a
// new load; RetryAfter says when the next attempt is.
func TestRefresherFetchDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{latency: 100 * time.Millisecond, result: fails("env VERCEL_OIDC_TOKEN: not set")}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		_, err := r.Fetch(t.Context())
		if err == nil || err.Error() != "env VERCEL_OIDC_TOKEN: not set" {
			t.Fatalf("first Fetch: %v", err)
		}
		synctest.Wait()
		n := f.count()
		start := time.Now()
		for range 50 {
			_, err = r.Fetch(t.Context())
			if err == nil || !strings.Contains(err.Error(), "env VERCEL_OIDC_TOKEN: not set (next attempt in 1s)") {
				t.Fatalf("Fetch during backoff: %v", err)
			}
		}
		if !time.Now().Equal(start) || f.count() != n {
			t.Errorf("Fetch during backoff waited %v and loaded %d times", time.Since(start), f.count()-n)
		}
		if ra := r.RetryAfter(); ra < time.Second || ra > 2*time.Second {
			t.Errorf("RetryAfter = %v", ra)
		}
		st := r.status(time.Now())
		b, _ := json.Marshal(st)
		if st.Usable || st.NextRefresh == nil || !strings.Contains(string(b), "not set") {
			t.Errorf("status: %s", b)
		}
		f.checkNoOverlap(t)
	})
}

func TestBackoffBounds(t *testing.T) {
	for n := 1; n < 100; n++ {
		base := 30 * time.Second
		if n <= 5 {
			base = time.Second << (n - 1)
		}
		for range 50 {
			if d := backoff(n); d < base*8/10 || d > base*12/10 {
				t.Fatalf("backoff(%d) = %v, want %v±20%%", n, d, base)
			}
		}
	}
}

// Every refused token shares one forced-refresh flight: a caller refused
// with a token that joins a flight started for another token gets nil,
// never its own refused token back as the "fresh" one.
func TestRefreshRefusedFlightNeverReturnsTheRefusedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{latency: 100 * time.Millisecond, result: mints(time.Hour)}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		now := time.Now()
		c1 := New("token-old", MethodOIDC, now.Add(time.Hour), now)
		// the flight for c1 will mint token-0; a request sent with that
		// value is refused while the flight runs and joins it
		c2 := New("token-0", MethodOIDC, now.Add(time.Hour), now)

		var first, second *Credential
		var wg sync.WaitGroup
		wg.Go(func() { first = r.Refused(t.Context(), c1) })
		synctest.Wait() // the flight for c1 is loading
		wg.Go(func() { second = r.Refused(t.Context(), c2) })
		wg.Wait()
		if valueOf(first) != "token-0" {
			t.Fatalf("refused with c1: replay with %v, want token-0", valueOf(first))
		}
		if second != nil {
			t.Fatalf("refused with token-0: replay with %v, want nil (not the refused token itself)", valueOf(second))
		}
		if n := f.count(); n != 1 {
			t.Errorf("%d loads, want 1", n)
		}
	})
}
