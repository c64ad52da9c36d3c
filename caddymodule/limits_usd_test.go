package caddymodule

import (
	"encoding/json"
	"math"
	"net/http"
	"testing"
)

// With a dollar limit and no catalog ever read, a generation cannot be
// priced: it is refused 503 catalog_unavailable with Retry-After, in its
// SDK's shape, and nothing goes upstream; a token limit alone needs no
// catalog.
func TestUSDLimitWithoutCatalog(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.Limits = &Limits{USDPerDay: 5} })
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		w := serve(t, h, clientRequest(t, "usd-nocat", path), neverNext(t))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("%s: %d (Retry-After %q), want 503 with Retry-After", path, w.Code, w.Header().Get("Retry-After"))
		}
		assertErrorShape(t, w.Body.Bytes(), path == "/v1/messages", errUnavailable, "catalog_unavailable")
	}
	h2 := spendHandler(t, func(h *Handler) { h.Limits = &Limits{TokensPerDay: 100_000} })
	ok := answering("application/json", `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`, nil)
	if w := serve(t, h2, clientRequest(t, "tokens-nocat", "/v1/chat/completions"), ok); w.Code != http.StatusOK {
		t.Fatalf("tokens_per_day without a catalog: %d", w.Code)
	}
}

// A bad usd_per_day in a JSON config is refused by Provision (the
// Caddyfile parser refuses it earlier, with file and line).
func TestUSDPerDayJSON(t *testing.T) {
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"usd_per_day":5}`, true},
		{`{"usd_per_day":0.5,"requests_per_minute":10}`, true},
		{`{"usd_per_day":-1}`, false},
		{`{"usd_per_day":0}`, false}, // no limit at all
		{`{"usd_per_day":1e12}`, false},
		{`{"usd_per_day":"5"}`, false},
	} {
		var lim Limits
		if err := json.Unmarshal([]byte(tc.json), &lim); err != nil {
			if tc.ok {
				t.Errorf("%s: %v", tc.json, err)
			}
			continue
		}
		err := tryProvisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
			ClientKeys:     []string{"sk-placeholder"},
			Limits:         &lim,
		})
		if (err == nil) != tc.ok {
			t.Errorf("%s: Provision returned %v", tc.json, err)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.01} {
		if err := (&Limits{USDPerDay: v}).check(); err == nil {
			t.Errorf("usd_per_day %v accepted", v)
		}
	}
}
