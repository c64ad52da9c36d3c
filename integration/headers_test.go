package integration

import (
	"net/http"
	"strings"
	"testing"
)

// TestClientCredentialsNeverReachGateway sends the client key in each way
// a client may (Authorization: Bearer, x-api-key, api-key), and all of
// them at once with a Proxy-Authorization: every one is accepted, and the
// gateway gets only the proxy's credential. The fake gateway lets an
// x-api-key win over the bearer token even when invalid, as AI Gateway
// does, so a leaked client x-api-key would also turn into a 401.
func TestClientCredentialsNeverReachGateway(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, staticSite(gw.URL()))
	tc := newTestClient(t)
	const body = `{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`

	for _, c := range []struct {
		name   string
		header map[string]string
	}{
		{"bearer", map[string]string{"Authorization": "Bearer sk-placeholder"}},
		{"x-api-key", map[string]string{"X-Api-Key": "sk-placeholder"}},
		{"api-key", map[string]string{"Api-Key": "sk-placeholder"}},
		{"all at once", map[string]string{
			"Authorization":       "Bearer sk-placeholder",
			"X-Api-Key":           "sk-placeholder",
			"Api-Key":             "sk-placeholder",
			"Proxy-Authorization": "Basic dXNlcjpwYXNz",
		}},
		// spend attribution is not the client's to choose, even when the
		// proxy does not stamp it (reporting off)
		{"reporting headers", map[string]string{
			"Authorization":     "Bearer sk-placeholder",
			"Ai-Reporting-User": "someone-else",
			"ai_reporting_tags": "billed-to-you",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(gw.Requests())
			res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", c.header, body)
			if res.Status != http.StatusOK {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			if got := len(gw.Requests()); got != n+1 {
				t.Fatalf("gateway got %d requests, want 1", got-n)
			}
			last := lastRequest(t, gw)
			assertForwarded(t, last, apiKey, "api-key")
			for name := range last.Header {
				if strings.Contains(strings.ToLower(strings.ReplaceAll(name, "_", "-")), "ai-reporting") {
					t.Errorf("the gateway got the client's %s", name)
				}
			}
		})
	}
}
