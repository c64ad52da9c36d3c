package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// fakeLedger is a gateway's /v1/models and /v1/generation, recording
// every call with the credential it carried.
type fakeLedger struct {
	mu    sync.Mutex
	calls []string // "<path>?<query> <Authorization>"
}

func newFakeLedger(t *testing.T) (*fakeLedger, *httptest.Server) {
	f := new(fakeLedger)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Authorization"))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/models":
			_, _ = w.Write([]byte(pricingCatalogJSON))
		case "/v1/generation":
			_, _ = w.Write([]byte(`{"data":{"id":"` + r.URL.Query().Get("id") + `","total_cost":0.000138,"usage":0.000138,"model":"anthropic/claude-haiku-4.5","native_tokens_prompt":13,"native_tokens_completion":5,"native_tokens_reasoning":0,"native_tokens_cached":0,"native_tokens_cache_creation":0}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeLedger) Calls(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func meteredHandler(t *testing.T, gatewayURL string) *Handler {
	t.Helper()
	return provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"sk-placeholder"},
		UsageMetrics:   true,
		Gateway:        gatewayURL,
	})
}

// The catalog is read in the background once a metered request asks for
// it, never at provision; with the proxy's own credential; a reload (the
// next config's handler, provisioned while the old one still runs) keeps
// it without a second read; the status shows it without the credential.
func TestCatalogReadOnFirstUse(t *testing.T) {
	ledger, srv := newFakeLedger(t)
	h := meteredHandler(t, srv.URL)
	if calls := ledger.Calls(""); len(calls) != 0 {
		t.Fatalf("provisioning called the gateway: %v", calls)
	}
	if st := h.catalogStatus(); st == nil || st.URL != srv.URL+"/v1/models" || st.Models != 0 || st.AgeSeconds != nil || !st.NextAttempt.IsZero() {
		t.Fatalf("status before the first use: %+v", st)
	}
	if h.currentCatalog() != nil {
		t.Fatal("a catalog before any was read")
	}
	eventually(t, "the catalog is read", func() bool { return h.currentCatalog() != nil })
	if got := h.currentCatalog().Len(); got != 4 {
		t.Errorf("%d models, want 4", got)
	}
	fetches := ledger.Calls("/v1/models")
	if len(fetches) != 1 || fetches[0] != "/v1/models? Bearer "+testStaticKey {
		t.Errorf("catalog fetches %q, want one with the proxy's credential", fetches)
	}
	st := h.catalogStatus()
	if st.Models != 4 || st.AgeSeconds == nil || st.LastError != "" {
		t.Errorf("status after a read: %+v", st)
	}
	b, _ := json.Marshal(st)
	assertNotContains(t, "catalog status", string(b), testStaticKey)

	next := meteredHandler(t, srv.URL+"/") // the same gateway, written with a slash
	if next.currentCatalog() == nil {
		t.Error("the next config's handler has no catalog: the reload dropped it")
	}
	if n := len(ledger.Calls("/v1/models")); n != 1 {
		t.Errorf("%d catalog fetches after a reload, want 1", n)
	}
}

// A generation is looked up with the proxy's own credential, and apply
// gets the gateway's figure: total_cost, native tokens.
func TestReconcileLater(t *testing.T) {
	defer func(d time.Duration) { reconcilerFirstDelay = d }(reconcilerFirstDelay)
	reconcilerFirstDelay = time.Millisecond
	ledger, srv := newFakeLedger(t)
	h := meteredHandler(t, srv.URL)
	got := make(chan limits.Amount, 1)
	h.reconcileLater("gen_01KY071V9GQK1EBS343E5TY39W", func(a limits.Amount) { got <- a })
	var a limits.Amount
	select {
	case a = <-got:
	case <-time.After(time.Minute): // a generous bound, not a timing assertion
		t.Fatal("apply was not called")
	}
	if want := (limits.Amount{Tokens: 18, Input: 13, USD: 0.000138}); a != want {
		t.Errorf("applied %+v, want %+v", a, want)
	}
	lookups := ledger.Calls("/v1/generation")
	if len(lookups) != 1 || lookups[0] != "/v1/generation?id=gen_01KY071V9GQK1EBS343E5TY39W Bearer "+testStaticKey {
		t.Errorf("lookups %q, want one with the proxy's credential", lookups)
	}
	// an id that is not AI Gateway's is never looked up, nor applied
	h.reconcileLater("../v1/credits", func(limits.Amount) { t.Error("applied a bad id") })
	if n := len(ledger.Calls("")); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestGatewayOptionErrors(t *testing.T) {
	const file = "Caddyfile.test"
	for _, tc := range []struct{ value, want string }{
		{"https://ai-gateway.vercel.sh/v1", "without /v1"},
		{"https://gw.example/base/", "without /v1"},
		{"https://gw.example?x=1", "no query or fragment"},
		{"https://gw.example#f", "no query or fragment"},
		{"https://user:secret@gw.example", "must not carry a user or password"},
		{"ftp://gw.example", "http or https URL"},
		{"gw.example", "http or https URL"},
	} {
		body := ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.K}\n\t\tclient_key sk-placeholder\n\t\tgateway " + tc.value + "\n\t}\n}\n"
		_, _, err := adapt(t, file, body)
		if err == nil {
			t.Errorf("gateway %s accepted", tc.value)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gateway %s: error %q does not say %q", tc.value, err, tc.want)
		}
		if m := regexp.MustCompile(`, at ` + file + `:(\d+)`).FindStringSubmatch(err.Error()); m == nil || m[1] != strconv.Itoa(5) {
			t.Errorf("gateway %s: error %q is not at %s:5", tc.value, err, file)
		}
		assertNotContains(t, "error", err.Error(), "secret")
	}
	for _, ok := range []string{"https://ai-gateway.vercel.sh", "http://127.0.0.1:8080/", "{env.AIGW_TEST_GATEWAY}"} {
		body := ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.K}\n\t\tclient_key sk-placeholder\n\t\tgateway " + ok + "\n\t}\n}\n"
		if _, _, err := adapt(t, file, body); err != nil {
			t.Errorf("gateway %s refused: %v", ok, err)
		}
	}
	// in JSON, or through a placeholder, it is checked at provision
	t.Setenv("AIGW_TEST_GATEWAY", "https://gw.example/v1")
	err := tryProvisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"sk-placeholder"},
		UsageMetrics:   true,
		Gateway:        "{env.AIGW_TEST_GATEWAY}",
	})
	if err == nil || !strings.Contains(err.Error(), "without /v1") {
		t.Errorf("provision: %v, want the /v1 error", err)
	}
}
