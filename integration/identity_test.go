package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestClientIDsCannotCollide: a sandbox picks its own name, so a name is
// never identity. Sandboxes named `placeholder` and `alice`, and two
// sandboxes that share a name, use up their own requests_per_minute; the
// sk-placeholder clients, the signed key alice and the other sandbox
// keep theirs; AI Gateway's reports and the metrics keep them apart.
// (Before client ids, the sandbox named placeholder used up the
// sk-placeholder clients' limit.)
func TestClientIDsCannotCollide(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey, secret := newAPIKey(), newClientKeySecret()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret}},
		sandboxSite(v, gw.URL(), `client_key sk-placeholder
		client_key_secret {env.CLIENT_KEY_SECRET}
		limits {
			requests_per_minute 3
		}
		reporting`))
	tc := newTestClient(t)

	sandbox := func(name string) (map[string]string, string) {
		c := sandboxClaims(v, name)
		id := fmt.Sprintf("sandbox:%s/%s/%s", url.PathEscape(v.TeamID), url.PathEscape(v.ProjectID), c["sandbox_id"])
		return forwardedHeaders(signSandboxToken(t, v, c), "/v1/chat/completions"), id
	}
	bearer := func(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }
	send := func(what string, h map[string]string, want int) {
		t.Helper()
		path := "/v1/chat/completions"
		if h["Vercel-Forwarded-Path"] != "" {
			path = "/forward" + path // as a forwardURL with a path sends it
		}
		if res := tc.do(t, http.MethodPost, p.URL+path, h, chatBody); res.Status != want {
			t.Fatalf("%s: status %d, want %d: %s", what, res.Status, want, res.Body)
		}
	}

	namedPlaceholder, placeholderSandboxID := sandbox("placeholder")
	namedAlice, aliceSandboxID := sandbox("alice")
	twin, twinID := sandbox("placeholder") // the same name, another sandbox
	for i := range 3 {
		send(fmt.Sprintf("sandbox named placeholder, request %d", i+1), namedPlaceholder, http.StatusOK)
		send(fmt.Sprintf("sandbox named alice, request %d", i+1), namedAlice, http.StatusOK)
	}
	send("sandbox named placeholder, over its limit", namedPlaceholder, http.StatusTooManyRequests)
	send("sandbox named alice, over its limit", namedAlice, http.StatusTooManyRequests)

	// Everyone else still has the whole minute's budget.
	for i := range 3 {
		send(fmt.Sprintf("sk-placeholder, request %d", i+1), bearer("sk-placeholder"), http.StatusOK)
		send(fmt.Sprintf("signed key alice, request %d", i+1), bearer(signedClientKey("alice", secret)), http.StatusOK)
		send(fmt.Sprintf("the other sandbox named placeholder, request %d", i+1), twin, http.StatusOK)
	}

	// AI Gateway's reports saw five users, each three times.
	users := map[string]int{}
	for _, r := range gw.Requests() {
		users[r.Header.Get("Ai-Reporting-User")]++
	}
	for _, id := range []string{"placeholder", "key:alice", placeholderSandboxID, aliceSandboxID, twinID} {
		if users[id] != 3 {
			t.Errorf("the gateway saw ai-reporting-user %q %d times, want 3 (all users: %v)", id, users[id], users)
		}
		if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_client_requests_total{client="`+id+`"}`); got != 3 {
			t.Errorf("client_requests_total{client=%q} = %v, want 3", id, got)
		}
	}
}

// TestOverLimitClientNotForgotten: a client far over tokens_per_day that
// idles while many new clients arrive is still refused: the ledger's
// bound (max_clients) forgets clients with nothing counted, then those
// under every limit, never one over a daily limit before its day ends.
func TestOverLimitClientNotForgotten(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "limits {\n\t\t\ttokens_per_day 40\n\t\t\tdefault_max_tokens 10\n\t\t\tmax_clients 10\n\t\t}")
	tc := newTestClient(t)
	send := func(name string) int {
		t.Helper()
		return tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey(name, secret)}, chatBody).Status
	}
	if got := send("hog"); got != http.StatusOK { // reserves 28 of 40 tokens, is charged 16: another 28 do not fit
		t.Fatalf("hog's first request: %d", got)
	}
	if got := send("hog"); got != http.StatusTooManyRequests {
		t.Fatalf("hog over its tokens: %d, want 429", got)
	}
	for i := range 40 { // four times the bound of new sandboxes, each under its limit
		if got := send(fmt.Sprintf("newcomer-%d", i)); got != http.StatusOK && got != http.StatusTooManyRequests {
			t.Fatalf("newcomer %d: %d", i, got)
		}
	}
	if got := send("hog"); got != http.StatusTooManyRequests {
		t.Errorf("hog after 40 new clients: %d, want 429 (it was forgotten and started its day again)", got)
	}
}
