package credential

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// An upstream 401 is one request's word: it never takes the only usable
// token away from the other clients. Here the source can only give the
// same token back (an env variable or a file that has not changed): the
// token stays in use, and nothing is marked as refused.
func TestRefusedKeepsTheOnlyToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tok := New("the-only-token", MethodOIDC, time.Now().Add(time.Hour), time.Now())
		f := &fakeLoad{result: func(int, time.Time) (*Credential, error) { return tok, nil }}
		r := testRefresher(f, 5*time.Minute)
		defer r.Stop()
		if _, err := r.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
		kept := counterValue(forcedRefreshesTotal.WithLabelValues("vercel_oidc", forcedKept))

		cur := r.Current(time.Now())
		if fresh := r.Refused(t.Context(), cur); fresh != nil {
			t.Fatalf("Refused returned %v; want nil (no different token to replay with)", valueOf(fresh))
		}
		if c := r.Current(time.Now()); valueOf(c) != tok.value {
			t.Fatalf("after a 401 the source serves %v; want the token kept", valueOf(c))
		}
		if r.IsRejected(tok) {
			t.Error("the token is marked refused on the word of one request")
		}
		if got := counterValue(forcedRefreshesTotal.WithLabelValues("vercel_oidc", forcedKept)); got != kept+1 {
			t.Errorf("forced refreshes with result kept: +%v, want +1", got-kept)
		}
	})
}

// However many requests are refused, and however often, a source runs at
// most one forced refresh (one mint) per interval; concurrent refusals of
// one token share it and all replay with the same fresh token. Once a
// different token replaced the refused one, the refused one is never
// installed again.
func TestRefusedAtMostOneForcedRefreshPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLoad{latency: 100 * time.Millisecond, result: mints(time.Hour)}
		r := testRefresher(f, 5*time.Minute)
		r.forcedInterval = 10 * time.Second
		defer r.Stop()
		first, err := r.Fetch(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		throttled := counterValue(forcedRefreshesTotal.WithLabelValues("vercel_oidc", forcedThrottled))

		// 100 requests refused with the same token at once
		var wg sync.WaitGroup
		results := make([]*Credential, 100)
		for i := range results {
			wg.Go(func() { results[i] = r.Refused(t.Context(), first) })
		}
		wg.Wait()
		if n := f.count(); n != 2 {
			t.Fatalf("%d loads for 100 concurrent refusals, want 2 (the first fetch and one forced refresh)", n)
		}
		fresh := results[0]
		for i, c := range results {
			if c == nil || c.value != "token-1" {
				t.Fatalf("refusal %d: replay credential %v, want token-1", i, valueOf(c))
			}
		}
		if c := r.Current(time.Now()); valueOf(c) != "token-1" {
			t.Fatalf("Current = %v after the forced refresh, want token-1", valueOf(c))
		}
		if r.Offer(first) {
			t.Error("the refused token was installed again by Offer")
		}

		// a hostile stream of 401s with the fresh token: inside the
		// interval, no load at all, and the fresh token stays
		for range 50 {
			if c := r.Refused(t.Context(), fresh); c != nil {
				t.Fatalf("Refused inside the interval returned %v; want nil", valueOf(c))
			}
		}
		if n := f.count(); n != 2 {
			t.Fatalf("%d loads after 50 refusals inside the interval, want still 2", n)
		}
		if got := counterValue(forcedRefreshesTotal.WithLabelValues("vercel_oidc", forcedThrottled)); got != throttled+50 {
			t.Errorf("throttled forced refreshes: +%v, want +50", got-throttled)
		}
		if c := r.Current(time.Now()); valueOf(c) != "token-1" {
			t.Fatalf("Current = %v; the throttled 401s must not drop the token", valueOf(c))
		}

		// a late request refused with the old token replays with the new
		// one without any load
		if c := r.Refused(t.Context(), first); valueOf(c) != "token-1" {
			t.Fatalf("a late refusal of the old token replays with %v, want token-1", valueOf(c))
		}

		// after the interval, one more forced refresh is allowed
		time.Sleep(10 * time.Second)
		if c := r.Refused(t.Context(), fresh); valueOf(c) != "token-2" {
			t.Fatalf("Refused after the interval = %v, want token-2", valueOf(c))
		}
		if n := f.count(); n != 3 {
			t.Errorf("%d loads, want 3", n)
		}
		f.checkNoOverlap(t)
	})
}

// A token is not sent in its last stretch: by default the smaller of 5s
// and a tenth of its lifetime, or the configured expiry_margin.
func TestExpiryMargin(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name     string
		lifetime time.Duration
		margin   time.Duration // configured; 0: default
		want     time.Duration // the last moment it is usable, before exp
	}{
		{"an hour-long token", time.Hour, 0, 5 * time.Second},
		{"an 8s test token", 8 * time.Second, 0, 800 * time.Millisecond},
		{"configured", time.Hour, 30 * time.Second, 30 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			cred := New("tok", MethodOIDC, now.Add(c.lifetime), now)
			r := newRefresher("vercel_oidc", 5*time.Minute, nil, nil)
			r.expiryMargin = c.margin
			cred = r.prepare(cred)
			exp := now.Add(c.lifetime)
			if !cred.Usable(exp.Add(-c.want - time.Millisecond)) {
				t.Errorf("not usable %s before exp", c.want+time.Millisecond)
			}
			if cred.Usable(exp.Add(-c.want)) {
				t.Errorf("still usable %s before exp; the margin is %s", c.want, c.want)
			}
		})
	}

	// a token read late in its life keeps the margin of its whole life
	// (from iat), not a tenth of what is left
	tok := oidctest.OIDCToken(t, now.Add(10*time.Minute), func(c jwt.MapClaims) { c["iat"] = now.Add(-50 * time.Minute).Unix() })
	cred, _, err := ParseToken(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if exp := jwtExp(now.Add(10 * time.Minute)); cred.Usable(exp.Add(-5 * time.Second)) {
		t.Error("a token issued an hour before its exp is usable in its last 5s")
	}
}
