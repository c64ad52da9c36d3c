package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// statusDoc is the admin endpoint's GET /ai_gateway_auth/status.
type statusDoc struct {
	Healthy  bool      `json:"healthy"`
	Time     time.Time `json:"time"`
	Handlers []struct {
		Handler uint64         `json:"handler"`
		Usable  bool           `json:"usable"`
		Sources []sourceStatus `json:"sources"`
		Replay  struct {
			RequestsInFlight int64 `json:"requests_in_flight"`
			MemoryInUse      int64 `json:"memory_in_use"`
			MemoryLimit      int64 `json:"memory_limit"`
		} `json:"replay"`
	} `json:"handlers"`
}

type sourceStatus struct {
	Kind        string     `json:"kind"`
	Usable      bool       `json:"usable"`
	Method      string     `json:"method"`
	Expires     *time.Time `json:"expires"`
	LastRefresh *time.Time `json:"last_refresh"`
	NextRefresh *time.Time `json:"next_refresh"`
	LastError   string     `json:"last_error"`
}

// adminStatus gets the status from the admin endpoint.
func adminStatus(t testing.TB, p *caddyProc) (statusDoc, response) {
	t.Helper()
	res, err := newTestClient(t).try(http.MethodGet, p.Admin+"/ai_gateway_auth/status", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var st statusDoc
	if err := json.Unmarshal(res.Body, &st); err != nil {
		t.Fatalf("status %d, body is not the status JSON (%v): %s", res.Status, err, res.Body)
	}
	if want := map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[st.Healthy]; res.Status != want {
		t.Errorf("status %d with healthy %v, want %d", res.Status, st.Healthy, want)
	}
	return st, res
}

// TestStatusEndpoint: the admin status shows a mint outage as it happens
// and the recovery after it. Asked before any request, it starts the
// first mint and answers 200 with the source's expiry and last refresh;
// once the Vercel API fails and the token has expired, 503 with the
// source's error; when the API is back, 200 again without the error. No
// answer ever contains a token or the access token.
func TestStatusEndpoint(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	v.SetTTL(6 * time.Second)
	gw := newFakeGateway(t, v)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, mintSite(v, gw.URL(), ""))
	tc := newTestClient(t)
	var seen strings.Builder // every answer, searched for secrets at the end

	// sources returns the static and the vercel_oidc source of the only
	// handler.
	sources := func(t *testing.T, st statusDoc) (static, oidc sourceStatus) {
		t.Helper()
		if len(st.Handlers) != 1 || len(st.Handlers[0].Sources) != 2 {
			t.Fatalf("status %+v, want one handler with two sources", st)
		}
		static, oidc = st.Handlers[0].Sources[0], st.Handlers[0].Sources[1]
		if static.Kind != "static" || oidc.Kind != "vercel_oidc" {
			t.Fatalf("sources %q, %q; want static, vercel_oidc in config order", static.Kind, oidc.Kind)
		}
		if static.Usable || !strings.Contains(static.LastError, "AI_GATEWAY_API_KEY") {
			t.Errorf("the static source with an unset variable: usable %v, last_error %q; want unusable, naming the variable", static.Usable, static.LastError)
		}
		return static, oidc
	}
	waitHealthy := func(t *testing.T, what string, healthy bool) statusDoc {
		t.Helper()
		var st statusDoc
		eventually(t, waitTimeout, what, func() string {
			var res response
			st, res = adminStatus(t, p)
			seen.Write(res.Body)
			if st.Healthy != healthy {
				return fmt.Sprintf("status %d: %s", res.Status, res.Body)
			}
			return ""
		})
		return st
	}

	var firstExp, firstUsable time.Time // the token's exp, and exp less the expiry margin
	t.Run("first mint", func(t *testing.T) {
		if len(v.Mints()) != 0 {
			t.Fatal("a mint before anything asked for a credential")
		}
		st := waitHealthy(t, "the status reports a usable credential", true)
		_, oidc := sources(t, st)
		if !st.Handlers[0].Usable || !oidc.Usable || oidc.Method != "oidc" || oidc.LastError != "" {
			t.Errorf("vercel_oidc source %+v, want usable, method oidc, no error", oidc)
		}
		issued := v.Issued()
		if len(issued) != 1 {
			t.Fatalf("%d tokens minted, want 1", len(issued))
		}
		firstExp, firstUsable = issued[0].Exp, v.usableUntil(issued[0].Token)
		if oidc.Expires == nil || !oidc.Expires.Equal(firstExp) {
			t.Errorf("expires %v, want the minted token's exp %v", oidc.Expires, firstExp)
		}
		if oidc.LastRefresh == nil || oidc.NextRefresh == nil || !oidc.NextRefresh.Before(firstExp) {
			t.Errorf("last_refresh %v, next_refresh %v; want both, the next refresh before exp %v", oidc.LastRefresh, oidc.NextRefresh, firstExp)
		}
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("a request while the status is healthy: %d: %s", res.Status, res.Body)
		}
	})

	t.Run("outage", func(t *testing.T) {
		v.SetFailing(http.StatusInternalServerError)
		st := waitHealthy(t, "the status reports the outage once the token has expired", false)
		if time.Now().Before(firstUsable) {
			t.Errorf("unhealthy %s before the token's exp less the expiry margin", time.Until(firstUsable))
		}
		_, oidc := sources(t, st)
		if st.Handlers[0].Usable || oidc.Usable {
			t.Errorf("handler usable %v, source usable %v during the outage", st.Handlers[0].Usable, oidc.Usable)
		}
		if !strings.Contains(oidc.LastError, "mint") || !strings.Contains(oidc.LastError, "500") {
			t.Errorf("last_error %q, want the mint's failure (500)", oidc.LastError)
		}
		if oidc.NextRefresh == nil {
			t.Error("no next_refresh: the next attempt should be reported")
		}
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusServiceUnavailable {
			t.Errorf("a request while the status is unhealthy: %d, want 503: %s", res.Status, res.Body)
		}
		// HEAD answers the same status, without a body.
		res := tc.do(t, http.MethodHead, p.Admin+"/ai_gateway_auth/status", nil, "")
		if res.Status != http.StatusServiceUnavailable || len(res.Body) != 0 {
			t.Errorf("HEAD: status %d with %d bytes, want 503 and no body", res.Status, len(res.Body))
		}
	})

	t.Run("recovery", func(t *testing.T) {
		v.SetFailing(0)
		st := waitHealthy(t, "the status reports the recovery", true)
		_, oidc := sources(t, st)
		if !oidc.Usable || oidc.LastError != "" || oidc.Expires == nil || !oidc.Expires.After(firstExp) {
			t.Errorf("vercel_oidc source %+v after the recovery, want usable with a later exp than %v and no error", oidc, firstExp)
		}
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Errorf("a request after the recovery: %d: %s", res.Status, res.Body)
		}
		if res := tc.do(t, http.MethodPost, p.Admin+"/ai_gateway_auth/status", nil, ""); res.Status != http.StatusMethodNotAllowed {
			t.Errorf("POST: status %d, want 405", res.Status)
		}
	})

	assertNoSecrets(t, "status answers", seen.String()+tc.Transcript(), secretsOf(v)...)
}
