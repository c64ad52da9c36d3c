package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestBudgetPathSpellings: with a broad allow_paths (/v1/*), a generation
// sent to its endpoint with a trailing slash (which a server may route as
// without it) still reserves its worst case, and a path with an empty
// segment (which a server may merge) is refused: no spelling of a
// generation endpoint goes upstream unmetered.
func TestBudgetPathSpellings(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "allow_paths /v1/*\n\t\tlimits {\n\t\t\ttokens_per_day 1000\n\t\t}")
	header := map[string]string{"Authorization": "Bearer " + signedClientKey("spell", secret), "Content-Type": "application/json"}
	body := `{"model":"openai/gpt-5","max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}`
	tc := newTestClient(t)
	for _, tt := range []struct {
		path, code string
		status     int
	}{
		{"/v1/chat/completions", "tokens_per_day_exceeded", http.StatusTooManyRequests},
		{"/v1/chat/completions/", "tokens_per_day_exceeded", http.StatusTooManyRequests},
		{"/v1/messages/", "rate_limit_error", http.StatusTooManyRequests}, // Anthropic's shape: a type, no code
		{"/v1//chat/completions", "path_not_allowed", http.StatusForbidden},
		{"//v1/chat/completions", "path_not_allowed", http.StatusForbidden},
	} {
		res := tc.do(t, http.MethodPost, p.URL+tt.path, header, body)
		if res.Status != tt.status || !strings.Contains(string(res.Body), fmt.Sprintf("%q", tt.code)) {
			t.Errorf("POST %s: status %d, want %d %s: %s", tt.path, res.Status, tt.status, tt.code, res.Body)
		}
	}
	if n := len(gw.Billed()); n != 0 {
		t.Fatalf("the gateway ran %d generations", n)
	}
}
