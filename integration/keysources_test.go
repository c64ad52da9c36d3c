package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTenantsKeySourcesKeepTheirIDs: one Caddy, two sites (two tenants),
// each with its own client_key_secret, tokens_per_day and reporting.
// Tenant 2's alice uses up her day; tenant 1's alice, another client
// with the same name, is still served; AI Gateway's reports, the
// metrics, the status route and the logs keep them apart: key:alice for
// the Caddyfile's first key source, key:<the second site's address>/alice
// for the second. (Before, both were key:alice: tenant 1's alice got 429
// for tenant 2's tokens, and both reported as one user.)
func TestTenantsKeySourcesKeepTheirIDs(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetUsage(fakeUsage{Input: 1200, Output: 400}) // one answer is over the day's 1500
	secret1, secret2 := newClientKeySecret(), newClientKeySecret()
	site := func(secretEnv string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.%s}
		limits {
			tokens_per_day     1500
			default_max_tokens 100
		}
		reporting
	}
	reverse_proxy %s`, secretEnv, gw.URL())
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "TENANT1_SECRET": secret1, "TENANT2_SECRET": secret2}},
		site("TENANT1_SECRET"), site("TENANT2_SECRET"))
	tenant1, tenant2 := p.URLs[0], p.URLs[1]
	id1, id2 := "key:alice", "key:"+strings.TrimPrefix(tenant2, "http://")+"/alice" // key:127.0.0.1:<port>/alice
	tc := newTestClient(t)
	send := func(what, site, secret string, want int) response {
		t.Helper()
		res := tc.do(t, http.MethodPost, site+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey("alice", secret)}, chatBody)
		if res.Status != want {
			t.Fatalf("%s: status %d, want %d: %s", what, res.Status, want, res.Body)
		}
		return res
	}

	send("tenant 2's alice", tenant2, secret2, http.StatusOK)
	if res := send("tenant 2's alice over her day", tenant2, secret2, http.StatusTooManyRequests); !strings.Contains(string(res.Body), `"tokens_per_day_exceeded"`) {
		t.Errorf("tenant 2's alice got %s; want the code tokens_per_day_exceeded", res.Body)
	}
	send("tenant 1's alice, after tenant 2's used her day", tenant1, secret1, http.StatusOK)

	users := map[string]int{}
	for _, r := range gw.Requests() {
		users[r.Header.Get("Ai-Reporting-User")]++
	}
	if len(users) != 2 || users[id1] != 1 || users[id2] != 1 {
		t.Errorf("the gateway saw the ai-reporting-users %v; want %s and %s once each", users, id1, id2)
	}
	for _, id := range []string{id1, id2} {
		if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_client_tokens_total{client="`+id+`",direction="input"}`); got != 1200 {
			t.Errorf("client_tokens_total{client=%q,direction=input} = %v, want 1200", id, got)
		}
	}

	res := tc.do(t, http.MethodGet, p.Admin+"/ai_gateway_auth/status", nil, "")
	var status struct {
		TopClientsToday []struct {
			Client      string `json:"client"`
			InputTokens int    `json:"input_tokens"`
		} `json:"top_clients_today"`
	}
	if err := json.Unmarshal(res.Body, &status); err != nil {
		t.Fatalf("status: %v: %s", err, res.Body)
	}
	clients := map[string]int{}
	for _, c := range status.TopClientsToday {
		clients[c.Client] = c.InputTokens
	}
	if len(clients) != 2 || clients[id1] != 1200 || clients[id2] != 1200 {
		t.Errorf("status top_clients_today = %+v; want %s and %s with 1200 input tokens each", status.TopClientsToday, id1, id2)
	}

	var refusals []string
	for _, e := range caddyLogEntries(p.Logs(), "client over its limit") {
		refusals = append(refusals, fmt.Sprint(e["client"]))
	}
	if len(refusals) != 1 || refusals[0] != id2 {
		t.Errorf("the log's refusals name the clients %q; want [%s]", refusals, id2)
	}
}

// TestValidateWarnsOfSharedKeyIDs: `caddy validate` warns when two key
// sources would give their clients the same ids (two sites that name one
// namespace with other secrets), naming the namespace and never a
// secret; it does not warn for one key source, nor for two sites that
// leave the namespaces to the adapter, whose derived namespace `caddy
// adapt` shows.
func TestValidateWarnsOfSharedKeyIDs(t *testing.T) {
	t.Parallel()
	const warning = "two key sources give their clients the same ids"
	secret1, secret2 := newClientKeySecret(), newClientKeySecret()
	env := map[string]string{"AI_GATEWAY_API_KEY": newAPIKey(), "TENANT1_SECRET": secret1, "TENANT2_SECRET": secret2}
	site := func(addr, secretEnv, block string) string {
		return addr + ` {
	bind 127.0.0.1
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.` + secretEnv + `}` + block + `
	}
	reverse_proxy https://ai-gateway.vercel.sh
}
`
	}
	namespace := " {\n\t\t\tnamespace acme\n\t\t}"
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("{\n\tadmin off\n}\n\n"+content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	shared := write("shared.Caddyfile", site("http://127.0.0.1:4000", "TENANT1_SECRET", namespace)+site("http://127.0.0.1:4001", "TENANT2_SECRET", namespace))
	out, err := runCaddyCommand(t, env, "validate", "--config", shared, "--adapter", "caddyfile")
	if err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	var warned []map[string]any
	for _, e := range caddyLogEntries(out, "") {
		if strings.HasPrefix(fmt.Sprint(e["msg"]), warning) {
			warned = append(warned, e)
		}
	}
	if len(warned) != 1 || warned[0]["level"] != "warn" || warned[0]["namespace"] != "acme" ||
		!strings.Contains(fmt.Sprint(warned[0]["msg"]), "namespace <name>") {
		t.Errorf("caddy validate warned %v; want one warning for the namespace acme that says what to do:\n%s", warned, out)
	}
	assertNoSecrets(t, "caddy validate's output", out, secret{"tenant 1's secret", secret1}, secret{"tenant 2's secret", secret2})

	for name, content := range map[string]string{
		"one key source":      site("http://127.0.0.1:4000", "TENANT1_SECRET", ""),
		"namespaces derived":  site("http://127.0.0.1:4000", "TENANT1_SECRET", "") + site("http://127.0.0.1:4001", "TENANT2_SECRET", ""),
		"the same secret set": site("http://127.0.0.1:4000", "TENANT1_SECRET", namespace) + site("http://127.0.0.1:4001", "TENANT1_SECRET", namespace),
	} {
		path := write(strings.ReplaceAll(name, " ", "-")+".Caddyfile", content)
		out, err := runCaddyCommand(t, env, "validate", "--config", path, "--adapter", "caddyfile")
		if err != nil {
			t.Fatalf("%s: caddy validate: %v\n%s", name, err, out)
		}
		if strings.Contains(out, warning) {
			t.Errorf("%s: caddy validate warned:\n%s", name, out)
		}
	}

	derived := write("derived.Caddyfile", site("http://127.0.0.1:4000", "TENANT1_SECRET", "")+site("http://127.0.0.1:4001", "TENANT2_SECRET", ""))
	out, err = runCaddyCommand(t, env, "adapt", "--config", derived, "--adapter", "caddyfile")
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	if n := strings.Count(out, `"client_key_secrets_namespace":`); n != 1 || !strings.Contains(out, `"client_key_secrets_namespace":"127.0.0.1:4001"`) {
		t.Errorf("caddy adapt shows %d namespaces; want the second site's, 127.0.0.1:4001:\n%s", n, out)
	}
}
