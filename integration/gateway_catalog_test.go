package integration

import (
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// catalogStatus is a handler's "catalog" in the admin status.
type catalogStatus struct {
	URL         string     `json:"url"`
	FetchedAt   *time.Time `json:"fetched_at"`
	AgeSeconds  *int64     `json:"age_seconds"`
	Models      int        `json:"models"`
	LastError   string     `json:"last_error"`
	Failures    int        `json:"consecutive_failures"`
	NextAttempt *time.Time `json:"next_attempt"`
}

// adminCatalogs is each handler's catalog status, in the status's order
// (nil for a handler without one).
func adminCatalogs(t testing.TB, p *caddyProc) []*catalogStatus {
	t.Helper()
	_, res := adminStatus(t, p)
	var doc struct {
		Handlers []struct {
			Catalog *catalogStatus `json:"catalog"`
		} `json:"handlers"`
	}
	if err := json.Unmarshal(res.Body, &doc); err != nil {
		t.Fatal(err)
	}
	var out []*catalogStatus
	for _, h := range doc.Handlers {
		out = append(out, h.Catalog)
	}
	return out
}

// meteredSite is a site that meters usage and reads the catalog from
// the fake gateway, with the static API key and client key sk-client.
func meteredSite(gwURL, extra string) string {
	return `	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-client-key-not-a-credential
		usage_metrics
		gateway ` + gwURL + `
		` + extra + `
	}
	reverse_proxy ` + gwURL
}

const catalogClientKey = "sk-client-key-not-a-credential"

// TestCatalogReadInBackground: `caddy validate` and loading the config
// make no call to the gateway; the first metered request starts the
// catalog's background read, with the proxy's own credential (never the
// client's key); the status shows its URL, age and model count, never the
// credential; a reload keeps the catalog without a second read.
func TestCatalogReadInBackground(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	env := map[string]string{"AI_GATEWAY_API_KEY": apiKey}

	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte("http://127.0.0.1:0 {\n"+meteredSite(gw.URL(), "")+"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCaddyCommand(t, env, "validate", "--config", cfg, "--adapter", "caddyfile"); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	p := startCaddy(t, caddyOptions{Env: env}, meteredSite(gw.URL(), ""))
	if n := len(gw.CatalogFetches()); n != 0 {
		t.Fatalf("%d catalog fetches after validate and load, want none", n)
	}
	if st := adminCatalogs(t, p)[0]; st == nil || st.URL != gw.URL()+"/v1/models" || st.Models != 0 || st.AgeSeconds != nil || st.NextAttempt != nil {
		t.Fatalf("catalog status before any request: %+v", st)
	}

	tc := newTestClient(t)
	if res := tc.chat(t, p.URL, catalogClientKey); res.Status != http.StatusOK {
		t.Fatalf("chat: %d %s", res.Status, res.Body)
	}
	var st *catalogStatus
	eventually(t, waitTimeout, "the catalog is read", func() string {
		if st = adminCatalogs(t, p)[0]; st.Models == 0 {
			return "no models yet: " + st.LastError
		}
		return ""
	})
	if want := len(gw.Catalog()); st.Models != want || st.AgeSeconds == nil || st.FetchedAt == nil || st.LastError != "" {
		t.Errorf("catalog status: %+v, want %d models and an age", st, want)
	}
	fetches := gw.CatalogFetches()
	if len(fetches) != 1 || fetches[0].Credential != apiKey || fetches[0].AuthMethod != "api-key" {
		t.Fatalf("catalog fetches: %d, the first with %q", len(fetches), redactAll([]string{fetches[0].Credential}))
	}
	_, res := adminStatus(t, p)
	if strings.Contains(string(res.Body), apiKey) {
		t.Error("the status shows the API key")
	}

	// a reload (another client key: a new handler) keeps it, unread
	adminLoad(t, p, strings.Replace(readFileString(t, p.Caddyfile), "client_key sk-client-key-not-a-credential",
		"client_key sk-client-key-not-a-credential sk-another-client", 1))
	if st := adminCatalogs(t, p); len(st) != 1 || st[0] == nil || st[0].Models != len(gw.Catalog()) {
		t.Fatalf("after the reload: %+v", st)
	}
	if res := tc.chat(t, p.URL, "sk-another-client"); res.Status != http.StatusOK {
		t.Fatalf("chat after the reload: %d %s", res.Status, res.Body)
	}
	if n := len(gw.CatalogFetches()); n != 1 {
		t.Errorf("%d catalog fetches after the reload, want still 1", n)
	}
	if strings.Contains(p.Logs(), apiKey) {
		t.Error("the logs show the API key")
	}
}

// TestCatalogFailureShown: a catalog read that fails is on the status
// (its error, the failures), without a catalog; the retry that works
// clears it. The retry comes 30 s after the failure: the test waits.
func TestCatalogFailureShown(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for the catalog's 30 s retry")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetCatalogFailure(catalogError)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, meteredSite(gw.URL(), ""))
	if res := newTestClient(t).chat(t, p.URL, catalogClientKey); res.Status != http.StatusOK {
		t.Fatalf("chat without a catalog (no dollar limit): %d %s", res.Status, res.Body)
	}
	var st *catalogStatus
	eventually(t, waitTimeout, "the failed read is shown", func() string {
		if st = adminCatalogs(t, p)[0]; st.Failures == 0 {
			return "no failure yet"
		}
		return ""
	})
	if st.LastError == "" || !strings.Contains(st.LastError, "500") || st.Models != 0 || st.AgeSeconds != nil || st.NextAttempt == nil {
		t.Errorf("status after a failed read: %+v", st)
	}
	if strings.Contains(st.LastError, apiKey) {
		t.Error("last_error shows the API key")
	}
	gw.SetCatalogFailure(catalogOK)
	eventually(t, 2*time.Minute, "the retry reads the catalog", func() string {
		if st = adminCatalogs(t, p)[0]; st.Models == 0 {
			return "still no catalog: " + st.LastError
		}
		return ""
	})
	if st.LastError != "" || st.Failures != 0 {
		t.Errorf("status after the retry: %+v", st)
	}
	if !strings.Contains(p.Logs(), "model catalog read") || !strings.Contains(p.Logs(), "reading the model catalog failed") {
		t.Errorf("the logs do not tell the failure and the recovery:\n%s", tail(p.Logs(), 20))
	}
}

// TestUnmeterablePathsRefusedUnderLimits: with a dollar limit, the
// default allow_paths refuses an endpoint whose answer the proxy cannot
// meter (403 path_not_allowed, the gateway never sees it); naming it
// allows it, and `caddy validate` warns that spend there is bounded only
// by requests_per_minute and concurrent_requests.
func TestUnmeterablePathsRefusedUnderLimits(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	env := map[string]string{"AI_GATEWAY_API_KEY": apiKey}
	limited := meteredSite(gw.URL(), "limits {\n\t\t\tusd_per_day 5\n\t\t}")
	named := meteredSite(gw.URL(), "limits {\n\t\t\tusd_per_day 5\n\t\t}\n\t\tallow_paths default /v1/images/generations")
	p := startCaddy(t, caddyOptions{Env: env}, limited, named)
	const image = `{"model":"openai/gpt-image-1","prompt":"a cat"}`
	hdr := map[string]string{"Authorization": "Bearer " + catalogClientKey, "Content-Type": "application/json"}
	tc := newTestClient(t)
	res := tc.do(t, http.MethodPost, p.URLs[0]+"/v1/images/generations", hdr, image)
	if res.Status != http.StatusForbidden || !strings.Contains(string(res.Body), "path_not_allowed") {
		t.Errorf("default allow_paths under usd_per_day: %d %s, want 403 path_not_allowed", res.Status, res.Body)
	}
	for _, r := range gw.Requests() {
		if r.Path == "/v1/images/generations" {
			t.Fatal("the gateway got the refused request")
		}
	}
	res = tc.do(t, http.MethodPost, p.URLs[1]+"/v1/images/generations", hdr, image)
	if res.Status == http.StatusForbidden {
		t.Errorf("named in allow_paths: %d %s, want it forwarded", res.Status, res.Body)
	}

	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte("http://127.0.0.1:0 {\n"+named+"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCaddyCommand(t, env, "validate", "--config", cfg, "--adapter", "caddyfile")
	if err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "cannot meter or price") || !strings.Contains(out, "requests_per_minute and concurrent_requests") ||
		!strings.Contains(out, "/v1/images/generations") {
		t.Errorf("caddy validate does not warn about the unmeterable endpoint:\n%s", out)
	}
}

// TestReconcileWithProxyCredential: a Messages stream cut upstream after
// its message_start (the generation id seen, no usage) is charged its
// worst case, estimated; the proxy then looks the generation up in the
// gateway's ledger with its own credential (the API key, never the
// client's key), and the gateway's figure replaces the estimate exactly:
// its tokens and what the account paid.
func TestReconcileWithProxyCredential(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.Faithful()
	gw.SetSurcharge(0.0001)
	gw.CutStreams(4)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}},
		meteredSite(gw.URL(), "limits {\n\t\t\ttokens_per_day 10000000\n\t\t}"))
	body := `{"model":"anthropic/claude-haiku-4.5","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"hello there"}]}`
	// the client's key in x-api-key, as pi and OpenClaw send it: it must
	// reach neither the answer's generation nor its lookup
	_, _ = newTestClient(t).try(http.MethodPost, p.URL+"/v1/messages",
		map[string]string{"x-api-key": catalogClientKey, "anthropic-version": "2023-06-01"}, body)
	gens := gw.Generations()
	if len(gens) != 1 {
		t.Fatalf("%d generations billed, want 1", len(gens))
	}
	gen := gens[0]
	var c budgetClient
	var raw string
	eventually(t, 2*time.Minute, "the estimate is reconciled", func() string {
		if c, raw = clientBudget(t, p, "placeholder"); c.Today.EstimatedTokens != 0 || c.Today.Tokens == 0 {
			return raw
		}
		return ""
	})
	if want := int64(gen.Usage.Input + gen.Usage.Output); c.Today.Tokens != want {
		t.Errorf("charged %d tokens after reconciliation, want the gateway's %d: %s", c.Today.Tokens, want, raw)
	}
	if want := gen.Usage.Total(); math.Abs(c.Today.USD-want) > 1e-12 {
		t.Errorf("charged $%v after reconciliation, want the gateway's total_cost $%v: %s", c.Today.USD, want, raw)
	}
	lookups := gw.GenerationLookups()
	if len(lookups) == 0 {
		t.Fatal("no generation lookup")
	}
	for _, l := range lookups {
		if l.Credential != apiKey || l.AuthMethod != "api-key" || l.RawQuery != "id="+gen.ID {
			t.Errorf("lookup %s?%s with %s credential %q, want the proxy's API key", l.Path, l.RawQuery, l.AuthMethod, redactAll([]string{l.Credential}))
		}
		for name, vals := range l.Header {
			for _, v := range vals {
				if strings.Contains(v, catalogClientKey) {
					t.Errorf("a lookup carried the client's key in %s", name)
				}
			}
		}
	}
	if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_reconciliations_total{result="reconciled"}`); got != 1 {
		t.Errorf(`reconciliations_total{result="reconciled"} = %v, want 1`, got)
	}
}
