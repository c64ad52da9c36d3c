package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReplayWithoutCopy: when the memory for replay copies is used up
// (here retry_memory_limit 1, so that no body ever gets a copy), a
// request refused with a revoked token cannot be replayed by the proxy.
// The client gets the gateway's 401 marked X-Should-Retry: true, since
// the proxy has replaced the token meanwhile, and the real OpenAI and
// Anthropic SDKs with their default retries (2) resend it at once and
// succeed: the gateway sees the refused request, then the same request
// with a fresh token. Without a fresh token (the mint is down) the 401
// carries no such mark.
func TestReplayWithoutCopy(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, replaySite(v, gw.URL(), "retry_memory_limit 1"))
	tc := newTestClient(t)
	ctx := t.Context()
	calls := sdkCalls(p.URLs[0], tc.HTTP, 2)
	if err := calls[0].do(ctx); err != nil {
		t.Fatalf("first request: %v", err)
	}

	// revokeCurrent revokes the token the gateway saw last; it returns
	// the token and how many requests the gateway had by then.
	revokeCurrent := func(t *testing.T) (string, int) {
		t.Helper()
		reqs := gw.Requests()
		last := reqs[len(reqs)-1]
		if last.Status != http.StatusOK {
			t.Fatalf("the gateway's last answer was %d (%s), want 200", last.Status, last.Reject)
		}
		time.Sleep(replayForcedInterval) // one forced refresh per interval
		gw.Revoke(last.Credential)
		return last.Credential, len(reqs)
	}

	for _, c := range calls {
		revoked, n := revokeCurrent(t)
		if err := c.do(ctx); err != nil {
			t.Fatalf("%s after the token was revoked: %v", c.name, err)
		}
		reqs := gw.Requests()[n:]
		if len(reqs) != 2 {
			t.Fatalf("%s: the gateway got %d requests, want 2 (the refused one, then the SDK's retry)", c.name, len(reqs))
		}
		if reqs[0].Status != http.StatusUnauthorized || reqs[0].Credential != revoked {
			t.Errorf("%s: first attempt %d, revoked token %v; want 401 with the revoked token", c.name, reqs[0].Status, reqs[0].Credential == revoked)
		}
		if reqs[1].Status != http.StatusOK || reqs[1].Credential == revoked || string(reqs[1].Body) != string(reqs[0].Body) {
			t.Errorf("%s: retry %d (%s), revoked token %v, same body %v; want 200 with a fresh token and the same body",
				c.name, reqs[1].Status, reqs[1].Reject, reqs[1].Credential == revoked, string(reqs[1].Body) == string(reqs[0].Body))
		}
	}
	if n := strings.Count(tc.Transcript(), "X-Should-Retry: true"); n != len(calls) {
		t.Errorf("the SDKs saw X-Should-Retry: true %d times, want %d (once per revocation)", n, len(calls))
	}
	m := adminMetrics(t, p)
	if got := m.value(t, "caddy_ai_gateway_auth_replay_copies_skipped_total", "reason", "memory_limit"); got < float64(2*len(calls)) {
		t.Errorf("replay_copies_skipped_total{reason=memory_limit} = %v, want at least %d", got, 2*len(calls))
	}
	if got := m.value(t, "caddy_ai_gateway_auth_requests_total", "outcome", "replayed"); got != 0 {
		t.Errorf("%v requests replayed, want none (no copy was kept)", got)
	}

	t.Run("no fresh token, no retry mark", func(t *testing.T) {
		revokeCurrent(t)
		v.SetFailing(http.StatusInternalServerError)
		defer v.SetFailing(0)
		res, err := tc.tryChat(p.URLs[0], "sk-placeholder")
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != http.StatusUnauthorized || !strings.Contains(string(res.Body), "authentication_error") ||
			res.Header.Get("X-Should-Retry") != "" {
			t.Errorf("status %d, X-Should-Retry %q, body %s; want the gateway's 401, unmarked", res.Status, res.Header.Get("X-Should-Retry"), res.Body)
		}
	})
}
