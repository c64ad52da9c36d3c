package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pushOnlyFleetSite is a push-only vercel_oidc source with share: it has
// no token until one is pushed to some instance of the fleet.
func pushOnlyFleetSite(v *fakeVercel, gw string) string {
	return strings.Replace(strings.Replace(pushSite(v, gw), "env VERCEL_OIDC_TOKEN\n", "", 1),
		"\t\t}\n\t\tclient_key", "\t\t\tshare\n\t\t}\n\t\tclient_key", 1)
}

// TestFleetPushToIdleInstance: three push-only instances share one
// storage folder. Instances 2 and 3 are asked first and answer 503 for
// 10 s, their refreshes failing and backing off; instance 1 is never
// asked anything (no request, no status check). The cron's push lands
// on instance 1: within a few seconds every instance serves with the
// pushed token, 2 and 3 without waiting for their next attempt.
func TestFleetPushToIdleInstance(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	site := pushOnlyFleetSite(v, gw.URL())
	if strings.Contains(site, "env ") || !strings.Contains(site, "share") {
		t.Fatalf("not a push-only shared site:\n%s", site)
	}
	fleet := startFleet(t, 3, t.TempDir(), caddyOptions{}, site)
	tc := newTestClient(t)
	ask := func(i int) response {
		t.Helper()
		return tc.do(t, http.MethodPost, fleet[i].URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer sk-placeholder", fleetHeader: fleet[i].URL}, chatBody)
	}

	// 2 and 3 have no token: their refreshes fail and back off
	waitFrom := time.Now()
	for i := 1; i < 3; i++ {
		if res := ask(i); res.Status != http.StatusServiceUnavailable {
			t.Fatalf("instance %d before any push: status %d, want 503: %s", i+1, res.Status, res.Body)
		}
	}
	for i := 1; i < 3; i++ {
		eventually(t, waitTimeout, fmt.Sprintf("instance %d backs off", i+1), func() string {
			s, _ := fleetStatus(t, fleet[i])
			if s.LastError == "" || s.NextRefresh == nil || time.Until(*s.NextRefresh) < 4*time.Second {
				return fmt.Sprintf("last error %q, next attempt at %v", s.LastError, s.NextRefresh)
			}
			return ""
		})
	}
	time.Sleep(time.Until(waitFrom.Add(10 * time.Second)))
	for i := 1; i < 3; i++ {
		if res := ask(i); res.Status != http.StatusServiceUnavailable {
			t.Fatalf("instance %d after 10 s: status %d, want 503: %s", i+1, res.Status, res.Body)
		}
	}

	pushed := v.Token(time.Hour)
	pushedExp, _ := v.expOf(pushed)
	res := tc.do(t, http.MethodPost, fleet[0].URL+pushPath, nil, `{"token":"`+pushed+`"}`)
	if res.Status != http.StatusNoContent || res.Header.Get("Ai-Gateway-Auth-Token-Used") != "true" {
		t.Fatalf("push to the idle instance: status %d, used %q: %s", res.Status, res.Header.Get("Ai-Gateway-Auth-Token-Used"), res.Body)
	}
	pushedAt := time.Now()
	for i := 1; i < 3; i++ {
		// generous: the storage is read every 2 s; only a hang fails
		eventually(t, 20*time.Second, fmt.Sprintf("instance %d uses the token pushed to instance 1", i+1), func() string {
			if got := expiresAt(t, fleet[i]); !got.Equal(pushedExp) {
				return "its token expires at " + got.String()
			}
			return ""
		})
	}
	t.Logf("the token pushed to an idle instance was in use on the two backed-off instances %s after the push",
		time.Since(pushedAt).Round(100*time.Millisecond))
	for i := range fleet {
		if res := ask(i); res.Status != http.StatusOK {
			t.Fatalf("instance %d after the push: status %d: %s", i+1, res.Status, res.Body)
		}
		if r := lastRequest(t, gw); r.Credential != pushed || r.Header.Get(fleetHeader) != fleet[i].URL {
			t.Errorf("instance %d did not send the pushed token", i+1)
		}
	}
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}
