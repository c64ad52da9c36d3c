package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBudgetChoices: a Chat Completions request that asks for n choices
// is billed the output of every one, each up to its cap (the faithful
// fake bills n × the cap), so its worst case is its input plus n × its
// cap. Under tokens_per_day 600, a request of 100 input tokens with
// max_tokens 100 fits once (200) but not with n 8 (900): it is refused 429
// tokens_per_day_exceeded, saying fewer choices may fit, before the
// gateway runs anything. (Before, it was admitted on 200 and billed 900.)
// With n 8 and max_tokens 50 (500) it is served, and charged exactly what
// the gateway billed.
func TestBudgetChoices(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	const limit = 600
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.Faithful()
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t}", limit))
	tc := newTestClient(t)
	auth := map[string]string{"Authorization": "Bearer " + signedClientKey("choices", secret)}
	body := func(outCap, n int) string {
		b := fmt.Sprintf(`{"model":"openai/gpt-5","messages":[{"role":"user","content":"%%s"}],"max_tokens":%d,"n":%d}`, outCap, n)
		return fmt.Sprintf(b, strings.Repeat("c", 400-len(b)+2)) // 400 bytes: 100 input tokens
	}
	if b := body(100, 8); len(b) != 400 {
		t.Fatalf("the body is %d bytes", len(b))
	}

	res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", auth, body(100, 8))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(res.Body, &e)
	if res.Status != http.StatusTooManyRequests || e.Error.Code != "tokens_per_day_exceeded" || !strings.Contains(e.Error.Message, "fewer choices (n)") {
		t.Errorf("n 8 × max_tokens 100 under %d tokens: %d %s, want 429 tokens_per_day_exceeded saying fewer choices may fit", limit, res.Status, res.Body)
	}
	if n := len(gw.Billed()); n != 0 {
		t.Fatalf("the gateway ran %d refused requests", n)
	}

	if res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", auth, body(50, 8)); res.Status != http.StatusOK {
		t.Fatalf("n 8 × max_tokens 50 under %d tokens: %d %s", limit, res.Status, res.Body)
	}
	billed := gw.Billed()
	if len(billed) != 1 || billed[0].Billed.Input != 100 || billed[0].Billed.Output != 8*50 {
		t.Fatalf("billed %+v, want one request of 100 input and 8 × 50 output tokens", billed)
	}
	eventually(t, waitTimeout, "the proxy charged what the gateway billed", func() string {
		c, raw := settledBudget(t, p, "key:choices")
		if c.Today.Tokens != 500 || c.Today.OutputTokens != 400 || c.Today.Requests != 1 || c.InFlight != 0 || c.Reserved.Tokens != 0 ||
			c.Left["tokens_per_day"] != limit-500 {
			return raw
		}
		return ""
	})
}
