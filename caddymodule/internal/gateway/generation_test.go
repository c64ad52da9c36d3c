package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	genID = "gen_01KY071V9GQK1EBS343E5TY39W"
	// Recorded live (numbers are JSON numbers here).
	genRecord = `{"data":{"id":"gen_01KY071V9GQK1EBS343E5TY39W","total_cost":0.000138,"upstream_inference_cost":0,"usage":0.000138,"created_at":"2026-01-07T10:00:00.000Z","model":"anthropic/claude-haiku-4.5","is_byok":false,"provider_name":"anthropic","streamed":true,"finish_reason":"stop","latency":412,"generation_time":901,"native_tokens_prompt":13,"native_tokens_completion":5,"native_tokens_reasoning":0,"native_tokens_cached":0,"native_tokens_cache_creation":0,"billable_web_search_calls":0}}`
)

// answering serves every request with status and body.
func answering(status int, body string) *fake {
	return &fake{answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}}
}

func TestLookupGenerationReadsTheRecord(t *testing.T) {
	f := answering(200, genRecord)
	srv := httptest.NewServer(f)
	defer srv.Close()
	g, err := LookupGeneration(context.Background(), srv.Client(), srv.URL, secret, genID)
	if err != nil {
		t.Fatal(err)
	}
	want := Generation{ID: genID, Model: "anthropic/claude-haiku-4.5", TotalCost: 0.000138, PromptTokens: 13, CompletionTokens: 5}
	if g != want {
		t.Fatalf("got %+v, want %+v", g, want)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].path != "/v1/generation" || reqs[0].query != "id="+genID || reqs[0].auth != "Bearer "+secret {
		t.Fatalf("requests: %+v", reqs)
	}
	// Every count, and costs as decimal strings.
	f = answering(200, `{"data":{"total_cost":"0.5","native_tokens_prompt":100,"native_tokens_completion":20.0,"native_tokens_cached":60,"native_tokens_cache_creation":30,"native_tokens_reasoning":7}}`)
	g, err = LookupGeneration(context.Background(), inProcess(f), "https://gw.example", secret, genID)
	want = Generation{ID: genID, TotalCost: 0.5, PromptTokens: 100, CompletionTokens: 20, CachedTokens: 60, CacheCreationTokens: 30, ReasoningTokens: 7}
	if err != nil || g != want {
		t.Fatalf("got %+v, %v; want %+v", g, err, want)
	}
}

func TestLookupGenerationRefusesInvalidIDs(t *testing.T) {
	f := answering(200, genRecord)
	for _, id := range []string{"", "gen_", "gen", "GEN_abc", "msg_01abc", "gen_abc/../x", "gen_a&id=gen_b", "gen_a b", "gen_a%26", "gen_ä", "gen_abc\n", "gen_" + strings.Repeat("a", 65)} {
		if _, err := LookupGeneration(context.Background(), inProcess(f), "https://gw.example", secret, id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%q: err = %v, want ErrInvalidID", id, err)
		}
	}
	if f.count() != 0 {
		t.Fatalf("%d requests for invalid ids", f.count())
	}
	if _, err := LookupGeneration(context.Background(), inProcess(f), "https://gw.example", secret, "gen_"+strings.Repeat("a", 64)); errors.Is(err, ErrInvalidID) || f.count() != 1 {
		t.Fatalf("64 characters: %v", err)
	}
}

func TestLookupGenerationErrors(t *testing.T) {
	type class int
	const (
		notYet class = iota
		refused
		retry
	)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   class
	}{
		{"404", 404, `{"error":{"message":"Generation not found","type":"not_found"}}`, notYet},
		{"no data", 200, `{}`, notYet},
		{"null data", 200, `{"data":null}`, notYet},
		{"no total_cost yet", 200, `{"data":{"id":"` + genID + `"}}`, notYet},
		{"401", 401, `{"error":{"message":"Invalid API key","type":"authentication_error"}}`, refused},
		{"403", 403, `{}`, refused},
		{"400", 400, `{}`, refused},
		{"another generation's record", 200, `{"data":{"id":"gen_other","total_cost":1}}`, refused},
		{"negative cost", 200, `{"data":{"total_cost":-1}}`, refused},
		{"cost not a number", 200, `{"data":{"total_cost":"lots"}}`, refused},
		{"fractional tokens", 200, `{"data":{"total_cost":1,"native_tokens_prompt":1.5}}`, refused},
		{"negative tokens", 200, `{"data":{"total_cost":1,"native_tokens_completion":-3}}`, refused},
		{"408", 408, ``, retry},
		{"429", 429, `{"error":{"type":"rate_limit_exceeded"}}`, retry},
		{"500", 500, `oops`, retry},
		{"502", 502, ``, retry},
		{"malformed body", 200, `{"data":`, retry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LookupGeneration(context.Background(), inProcess(answering(tc.status, tc.body)), "https://gw.example", secret, genID)
			if err == nil {
				t.Fatal("no error")
			}
			got := retry
			switch {
			case errors.Is(err, ErrNotYet):
				got = notYet
			case errors.Is(err, ErrRefused):
				got = refused
			}
			if got != tc.want || (errors.Is(err, ErrNotYet) && errors.Is(err, ErrRefused)) {
				t.Fatalf("err = %v: class %d, want %d", err, got, tc.want)
			}
		})
	}
}

func TestLookupGenerationKeepsTheCredentialOutOfErrors(t *testing.T) {
	// The credential straddles the 200-character cut of the message.
	echo := &fake{answer: func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		w.Write([]byte(`{"error":{"type":"authentication_error","message":"` + strings.Repeat("x", 150) + ` bad key: ` + r.Header.Get("Authorization") + `"}}`))
	}}
	_, err := LookupGeneration(context.Background(), inProcess(echo), "https://gw.example", secret, genID)
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:8]) {
		t.Fatalf("err = %v", err)
	}
	// A transport error names the URL, never the credential.
	srv := httptest.NewServer(echo)
	srv.Close()
	_, err = LookupGeneration(context.Background(), srv.Client(), srv.URL, secret, genID)
	if err == nil || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotYet) || strings.Contains(err.Error(), secret) {
		t.Fatalf("err = %v", err)
	}
	if _, err := LookupGeneration(context.Background(), inProcess(echo), "https://gw.example", "", genID); err == nil || echo.count() != 1 {
		t.Fatalf("no credential: %v, %d requests", err, echo.count())
	}
}

func TestLookupGenerationFollowsNoRedirect(t *testing.T) {
	elsewhere := &fake{answer: func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write([]byte(genRecord)) }}
	other := httptest.NewServer(elsewhere)
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/v1/generation?id="+genID, http.StatusFound))
	defer redirect.Close()
	// With no client given, the package's own follows no redirect.
	_, err := LookupGeneration(context.Background(), nil, redirect.URL, secret, genID)
	if err == nil || elsewhere.count() != 0 {
		t.Fatalf("err = %v; the credential went to %d other places", err, elsewhere.count())
	}
}
