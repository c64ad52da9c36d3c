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

// caddyLogEntries parses Caddy's JSON log output (one object per line)
// and returns the entries whose msg is msg (every entry for "").
func caddyLogEntries(logs, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if msg == "" || e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// accessLogEntry finds the access log entry of the request that carried
// X-Test-Id: id.
func accessLogEntry(entries []map[string]any, id string) map[string]any {
	for _, e := range entries {
		req, _ := e["request"].(map[string]any)
		headers, _ := req["headers"].(map[string]any)
		if vals, _ := headers["X-Test-Id"].([]any); len(vals) == 1 && vals[0] == id {
			return e
		}
	}
	return nil
}

// TestAccessLogPlaceholders: with log_append, as the README shows, each
// access log entry names the client ({ai_gateway_auth.client}: placeholder,
// a signed key's name, a sandbox's name or id) and the kind of credential
// sent ({ai_gateway_auth.credential_source}: static or vercel_oidc); a
// refused request has neither. With the README's filter format, the log
// holds no client key and no sandbox token.
func TestAccessLogPlaceholders(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, v, apiKey)
	oidcTok := v.Token(time.Hour)
	secretKey := newClientKeySecret()
	dir := t.TempDir()
	staticLog, oidcLog := filepath.Join(dir, "static.log"), filepath.Join(dir, "oidc.log")
	p := startCaddy(t, caddyOptions{Env: map[string]string{
		"AI_GATEWAY_API_KEY": apiKey, "VERCEL_OIDC_TOKEN": oidcTok, "CLIENT_KEY_SECRET": secretKey,
	}},
		// Every kind of client, a static key, and the README's filtered log.
		fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
		client_key_secret {env.CLIENT_KEY_SECRET}
		vercel_sandbox {
			audience %s
			team     %s
			issuer   %s
			jwks_url %s/%s/.well-known/jwks
		}
	}
	reverse_proxy %s
	log {
		output file %s
		format filter {
			wrap json
			fields {
				request>headers>Vercel-Sandbox-Oidc-Token delete
				request>headers>X-Api-Key delete
				request>headers>Api-Key delete
			}
		}
	}
	log_append client {ai_gateway_auth.client}
	log_append credential_source {ai_gateway_auth.credential_source}`,
			sandboxAudience, v.TeamID, v.Issuer(), v.URL(), v.TeamSlug, gw.URL(), staticLog),
		// An OIDC token, and the plain JSON log of the issue.
		fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
		}
		client_key sk-placeholder
	}
	reverse_proxy %s
	log {
		output file %s
		format json
	}
	log_append client {ai_gateway_auth.client}
	log_append credential_source {ai_gateway_auth.credential_source}`, gw.URL(), oidcLog))
	staticURL, oidcURL := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)

	signed := signedClientKey("sandbox-42", secretKey)
	named := sandboxClaims(v, "agent-green")
	unnamed := sandboxClaims(v, "")
	delete(unnamed, "sandbox_name")
	namedTok, unnamedTok := signSandboxToken(t, v, named), signSandboxToken(t, v, unnamed)
	// a valid token, but a forwarded host that is not allowed
	evilHost := forwardedHeaders(signSandboxToken(t, v, sandboxClaims(v, "x")), "/v1/models")
	evilHost["Vercel-Forwarded-Host"] = "evil.example.com"
	withID := func(id string, h map[string]string) map[string]string {
		out := map[string]string{"X-Test-Id": id}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		id, base, path string
		header         map[string]string
		status         int
		client, source any // nil: the field is null or absent
	}{
		{"literal", staticURL, "/v1/models", map[string]string{"Authorization": "Bearer sk-placeholder"}, 200, "placeholder", "static"},
		{"signed", staticURL, "/v1/models", map[string]string{"X-Api-Key": signed}, 200, "sandbox-42", "static"},
		{"sandbox-name", staticURL, "/forward", forwardedHeaders(namedTok, "/v1/models"), 200, "agent-green", "static"},
		{"sandbox-id", staticURL, "/forward", forwardedHeaders(unnamedTok, "/v1/models"), 200, unnamed["sandbox_id"], "static"},
		{"oidc", oidcURL, "/v1/models", map[string]string{"Api-Key": "sk-placeholder"}, 200, "placeholder", "vercel_oidc"},
		{"refused-key", staticURL, "/v1/models", map[string]string{"X-Api-Key": "sk-wrong"}, 401, nil, nil},
		{"refused-path", staticURL, "/admin", map[string]string{"Authorization": "Bearer " + signed}, 403, nil, nil},
		{"refused-sandbox", staticURL, "/forward", evilHost, 403, nil, nil},
		{"oidc-refused", oidcURL, "/v1/models", nil, 401, nil, nil},
	}
	for _, c := range cases {
		res := tc.do(t, http.MethodGet, c.base+c.path, withID(c.id, c.header), "")
		if res.Status != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.id, res.Status, c.status, res.Body)
		}
	}

	var entries []map[string]any
	eventually(t, waitTimeout, "every request is in the access logs", func() string {
		entries = nil
		for _, f := range []string{staticLog, oidcLog} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err.Error()
			}
			entries = append(entries, caddyLogEntries(string(b), "handled request")...)
		}
		for _, c := range cases {
			if accessLogEntry(entries, c.id) == nil {
				return "no access log entry for " + c.id
			}
		}
		return ""
	})
	for _, c := range cases {
		e := accessLogEntry(entries, c.id)
		if got := e["status"]; got != float64(c.status) {
			t.Errorf("%s: logged status %v, want %d", c.id, got, c.status)
		}
		if got := e["client"]; got != c.client {
			t.Errorf("%s: logged client %#v, want %#v", c.id, got, c.client)
		}
		if got := e["credential_source"]; got != c.source {
			t.Errorf("%s: logged credential_source %#v, want %#v", c.id, got, c.source)
		}
	}
	// The filtered log holds no client key or token (Caddy redacts
	// Authorization itself; the filter deletes the other headers).
	b, err := os.ReadFile(staticLog)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "the filtered access log", string(b),
		secret{"a sandbox token", namedTok}, secret{"another sandbox token", unnamedTok},
		secret{"a signed key's signature", signed[strings.IndexByte(signed, '.')+1:]},
		secret{"the API key", apiKey}, secret{"the OIDC token", oidcTok})
	if strings.Contains(string(b), "sk-wrong") {
		t.Error("the filtered access log holds a refused client's x-api-key")
	}
}
