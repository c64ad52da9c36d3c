package caddymodule

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest/observer"
)

// Vercel Sandbox forwardURL mode: requests carry a vercel-sandbox-oidc-token
// (RS256 JWT from the issuer's JWKS, aud = the forwardURL) and
// vercel-forwarded-* headers.

// sandboxHandler is a handler that accepts sandboxes of testTeam whose
// tokens are issued by jwks (keys at the default <iss>/.well-known/jwks),
// with a static upstream key.
func sandboxHandler(t *testing.T, jwks *oidctest.JWKS, edit ...func(*Handler)) *Handler {
	t.Helper()
	h := &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox:  &VercelSandbox{Audience: oidctest.ForwardURL, Teams: []string{"team_other", oidctest.Team}, Issuer: jwks.URL},
	}
	for _, e := range edit {
		e(h)
	}
	return provisionHandler(t, h)
}

// sandboxRequest is a request as the sandbox firewall forwards it: to the
// forwardURL's path, the original path in vercel-forwarded-path.
func sandboxRequest(token string, headers map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/forward", strings.NewReader(`{"model":"openai/gpt-5"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer sk-sandbox-inert") // what the agent was given
	if token != "" {
		r.Header.Set("Vercel-Sandbox-Oidc-Token", token)
	}
	r.Header.Set("Vercel-Forwarded-Host", "ai-gateway.vercel.sh")
	r.Header.Set("Vercel-Forwarded-Scheme", "https")
	r.Header.Set("Vercel-Forwarded-Port", "443")
	r.Header.Set("Vercel-Forwarded-Path", "/v1/chat/completions")
	for k, v := range headers {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return r
}

// A valid sandbox token passes: the upstream gets the original path and
// the injected credential, none of the sandbox's headers, and the
// placeholder names the sandbox.
func TestSandboxAccepted(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := sandboxHandler(t, jwks)
	logs := observeLogs(h)

	for _, tc := range []struct {
		name       string
		edit       func(jwt.MapClaims)
		headers    map[string]string
		wantClient string
		wantPath   string
		wantQuery  string
	}{
		{"named sandbox", nil, nil, "agent-7", "/v1/chat/completions", ""},
		{"unnamed sandbox is its id", func(c jwt.MapClaims) { delete(c, "sandbox_name") }, nil, "sbx_0123456789", "/v1/chat/completions", ""},
		{"aud with a trailing slash", func(c jwt.MapClaims) { c["aud"] = oidctest.ForwardURL + "/" }, nil, "agent-7", "/v1/chat/completions", ""},
		{"aud among several", func(c jwt.MapClaims) { c["aud"] = []string{"https://other.example", oidctest.ForwardURL} }, nil, "agent-7", "/v1/chat/completions", ""},
		{"the other allowed team", func(c jwt.MapClaims) { c["team_id"] = "team_other" }, nil, "agent-7", "/v1/chat/completions", ""},
		{"expired within the leeway", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-20 * time.Second).Unix() }, nil, "agent-7", "/v1/chat/completions", ""},
		{"nbf within the leeway", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(20 * time.Second).Unix() }, nil, "agent-7", "/v1/chat/completions", ""},
		{"forwarded host with port and case", nil, map[string]string{"Vercel-Forwarded-Host": "AI-Gateway.vercel.sh:443"}, "agent-7", "/v1/chat/completions", ""},
		{"no forwarded host", nil, map[string]string{"Vercel-Forwarded-Host": ""}, "agent-7", "/v1/chat/completions", ""},
		{"forwarded path with query", nil, map[string]string{"Vercel-Forwarded-Path": "/v1/messages?beta=true"}, "agent-7", "/v1/messages", "beta=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := oidctest.SandboxClaims(jwks.URL)
			if tc.edit != nil {
				tc.edit(claims)
			}
			token := oidctest.Sign(t, claims)
			r, repl := withReplacer(sandboxRequest(token, tc.headers))
			var next recordingNext
			w := serve(t, h, r, next.handler())
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			calls := next.calls()
			if len(calls) != 1 {
				t.Fatalf("next called %d times", len(calls))
			}
			got := calls[0]
			if got.path != tc.wantPath || got.rawQuery != tc.wantQuery {
				t.Errorf("upstream path %q ?%q, want %q ?%q", got.path, got.rawQuery, tc.wantPath, tc.wantQuery)
			}
			if a := got.header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+testStaticKey {
				t.Errorf("upstream Authorization %q", a)
			}
			for k := range got.header {
				if strings.HasPrefix(strings.ToLower(k), "vercel-") {
					t.Errorf("header %s reached the upstream", k)
				}
			}
			assertNotContains(t, "upstream headers", strings.Join(flatten(got.header), "\n"), token, "sk-sandbox-inert")
			if v, _ := repl.Get("ai_gateway_auth.client"); v != tc.wantClient {
				t.Errorf("{ai_gateway_auth.client} = %v, want %s", v, tc.wantClient)
			}
			// the id is team, project and sandbox id, never the name
			if v, _ := repl.Get("ai_gateway_auth.client_id"); v != fmt.Sprintf("sandbox:%s/%s/sbx_0123456789", claims["team_id"], oidctest.Project) {
				t.Errorf("{ai_gateway_auth.client_id} = %v, want sandbox:%s/%s/sbx_0123456789", v, claims["team_id"], oidctest.Project)
			}
			if v, _ := repl.Get("ai_gateway_auth.credential_source"); v != "static" {
				t.Errorf("{ai_gateway_auth.credential_source} = %v", v)
			}
			assertLogsClean(t, logs, token, testStaticKey)
		})
	}
}

func flatten(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}

// Every bad sandbox request is refused with 403 (401 with no token at
// all), and the upstream is never contacted.
func TestSandboxRefused(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := sandboxHandler(t, jwks, func(h *Handler) {
		h.VercelSandbox.Projects = []string{oidctest.Project, "prj_second"}
	})
	logs := observeLogs(h)
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := oidctest.SandboxClaims(jwks.URL)
		edit(c)
		return c
	}
	type refusal struct {
		token   string
		headers map[string]string
		status  int
		want    string // in the log line's reason
		public  string // in the response's message
	}
	const (
		unverified = "the sandbox token could not be verified"
		notAllowed = "the sandbox's team or project may not use this proxy"
		otherAud   = "the sandbox token is not for this proxy's forward URL"
		otherHost  = "the request was forwarded for a host this proxy does not serve"
		otherPath  = "this path is not allowed through this proxy"
	)
	cases := map[string]refusal{
		"wrong key": {token: oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), oidctest.Kid, oidctest.SandboxClaims(jwks.URL)),
			status: 403, want: "signature is invalid", public: unverified},
		"unknown kid": {token: oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), "kid-nobody-knows", oidctest.SandboxClaims(jwks.URL)),
			status: 403, want: `no key "kid-nobody-knows"`, public: unverified},
		"wrong aud": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["aud"] = "https://proxy.example.com/other" })),
			status: 403, want: "audience", public: otherAud},
		"aud prefix": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["aud"] = oidctest.ForwardURL + "/x" })),
			status: 403, want: "audience", public: otherAud},
		"no aud": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { delete(c, "aud") })),
			status: 403, want: "audience", public: otherAud},
		"expired": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Minute).Unix() })),
			status: 403, want: "expired", public: "the sandbox token has expired"},
		"no exp": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { delete(c, "exp") })),
			status: 403, want: "exp", public: unverified},
		"future nbf": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(3 * time.Minute).Unix() })),
			status: 403, want: "not valid yet", public: "the sandbox token is not valid yet"},
		"other team": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["team_id"] = "team_intruder" })),
			status: 403, want: `team "team_intruder" is not allowed`, public: notAllowed},
		"no team": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { delete(c, "team_id") })),
			status: 403, want: "is not allowed", public: notAllowed},
		"other project": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["project_id"] = "prj_intruder" })),
			status: 403, want: `project "prj_intruder" is not allowed`, public: notAllowed},
		"no sandbox id": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { delete(c, "sandbox_id"); delete(c, "sandbox_name") })),
			status: 403, want: "no sandbox_id", public: "the sandbox token names no sandbox"},
		"other issuer": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/acme" })),
			status: 403, want: `issuer "https://oidc.vercel.com/acme" is not a trusted issuer`, public: unverified},
		"long issuer": {token: oidctest.Sign(t, claims(func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/" + strings.Repeat("a", 6000) })),
			status: 403, want: "(6024 bytes)", public: unverified},
		"alg none": {token: oidctest.Unsigned(oidctest.SandboxClaims(jwks.URL)), status: 403, want: "sandbox token", public: unverified},
		"garbage":  {token: "not.a.jwt", status: 403, want: "malformed", public: unverified},
		"forbidden forwarded host": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Host": "evil.example.com"}, status: 403, want: `forwarded host "evil.example.com"`, public: otherHost},
		"forwarded host suffix": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Host": "ai-gateway.vercel.sh.evil.example"}, status: 403, want: "forwarded host", public: otherHost},
		"forwarded host prefix": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Host": "evil-ai-gateway.vercel.sh"}, status: 403, want: "forwarded host", public: otherHost},
		"long forwarded host": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Host": strings.Repeat("h", 5000) + ".example"}, status: 403, want: "(5008 bytes)", public: otherHost},
		"forwarded path outside allow_paths": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Path": "/v2/admin"}, status: 403, want: "path /v2/admin", public: otherPath},
		"forwarded path with dot segments": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Path": "/v1/../admin"}, status: 403, want: "allow_paths", public: otherPath},
		"forwarded path with encoded dots": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Path": "/v1/%2e%2e/admin"}, status: 403, want: "allow_paths", public: otherPath},
		"long forwarded path": {token: oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)),
			headers: map[string]string{"Vercel-Forwarded-Path": "/v2/" + strings.Repeat("p", 5000)}, status: 403, want: "path /v2/ppp", public: otherPath},
		// the agent's inert key is not a client key of this proxy
		"missing token":    {token: "", status: 401, public: "invalid client key"},
		"no token, no key": {token: "", headers: map[string]string{"Authorization": ""}, status: 401, public: "missing client key"},
	}
	for name, tok := range oidctest.HS256WithPublicKey(oidctest.SandboxClaims(jwks.URL)) {
		cases["HS256 with the public key as secret ("+name+")"] = refusal{token: tok, status: 403, want: "signature is invalid", public: unverified}
	}
	// what the client must never be told: the configuration, or what it
	// sent, at length
	configured := []string{oidctest.Team, "team_other", oidctest.Project, "prj_second", jwks.URL, strings.TrimPrefix(jwks.URL, "http://"),
		oidctest.ForwardURL, "/.well-known/jwks", "team_intruder", "prj_intruder", "kid-nobody-knows", "evil", "hhhhhhhhhh", "pppppppppp", "aaaaaaaaaa"}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := withReplacer(sandboxRequest(tc.token, tc.headers))
			w := serve(t, h, r, neverNext(t))
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			errType, code := "permission_error", "sandbox_rejected"
			if tc.status == 401 {
				errType, code = "authentication_error", "invalid_api_key"
			} else if strings.Contains(name, "forwarded path") {
				code = "path_not_allowed"
			}
			msg := assertErrorShape(t, w.Body.Bytes(), false, errType, code)
			if !strings.Contains(msg, tc.public) {
				t.Errorf("message %q does not contain %q", msg, tc.public)
			}
			if tc.status == 403 {
				assertNotContains(t, "error body", w.Body.String(), configured...)
				reason := lastLogReason(t, logs, "request forbidden")
				if !strings.Contains(reason, tc.want) {
					t.Errorf("log reason %q does not contain %q", reason, tc.want)
				}
				if len(reason) > 400 {
					t.Errorf("log reason is %d bytes: a client value is not cut short", len(reason))
				}
			}
			if tc.token != "" && len(tc.token) > 20 {
				assertNotContains(t, "error body", w.Body.String(), tc.token, strings.Split(tc.token, ".")[1])
			}
		})
	}
	for _, tc := range cases {
		if tc.token != "" && len(tc.token) > 20 {
			assertLogsClean(t, logs, tc.token, strings.Split(tc.token, ".")[1])
		}
	}
	if n := jwks.Fetches(); n > 2 {
		t.Errorf("JWKS fetched %d times (once, plus at most one for the unknown kid)", n)
	}
}

// lastLogReason is the reason field of the last log entry named msg.
func lastLogReason(t *testing.T, logs *observer.ObservedLogs, msg string) string {
	t.Helper()
	entries := logs.FilterMessage(msg).All()
	if len(entries) == 0 {
		t.Fatalf("no %q log line", msg)
	}
	reason, _ := entries[len(entries)-1].ContextMap()["reason"].(string)
	return reason
}

// A handler with vercel_sandbox and client keys accepts both kinds of
// client; a request that carries a sandbox token is judged by it alone.
func TestSandboxWithClientKeys(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := sandboxHandler(t, jwks, func(h *Handler) { h.ClientKeys = []string{"sk-placeholder"} })

	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, repl := withReplacer(r)
	var next recordingNext
	if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
		t.Fatalf("client key: status %d: %s", w.Code, w.Body)
	}
	if v, _ := repl.Get("ai_gateway_auth.client"); v != "placeholder" {
		t.Errorf("client %v", v)
	}

	bad := oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), oidctest.Kid, oidctest.SandboxClaims(jwks.URL))
	r, _ = withReplacer(sandboxRequest(bad, map[string]string{"Authorization": "Bearer sk-placeholder"}))
	if w := serve(t, h, r, neverNext(t)); w.Code != http.StatusForbidden {
		t.Errorf("bad sandbox token with a good client key: status %d, want 403", w.Code)
	}
}

// N requests with one token cost one RSA verification (and one JWKS
// fetch); the cached verdict still checks the forwarded host per request.
func TestSandboxVerificationCached(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := sandboxHandler(t, jwks)
	token := oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL))
	before := engineCounter("caddy_ai_gateway_auth_sandbox_token_verifications_total", "", "")

	send := func(token string, headers map[string]string) int {
		r, _ := withReplacer(sandboxRequest(token, headers))
		w := httptest.NewRecorder()
		var next recordingNext
		if err := h.ServeHTTP(w, r, next.handler()); err != nil {
			t.Error(err)
		}
		return w.Code
	}
	if code := send(token, nil); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if code := send(token, nil); code != http.StatusOK {
				t.Errorf("status %d", code)
			}
		})
	}
	wg.Wait()
	if n := engineCounter("caddy_ai_gateway_auth_sandbox_token_verifications_total", "", "") - before; n != 1 {
		t.Errorf("%v verifications for 101 requests with one token, want 1", n)
	}
	if code := send(token, map[string]string{"Vercel-Forwarded-Host": "evil.example.com"}); code != http.StatusForbidden {
		t.Errorf("cached token with a forbidden host: status %d, want 403", code)
	}

	// another sandbox's token costs one more verification
	other := oidctest.SandboxClaims(jwks.URL)
	other["sandbox_name"] = "agent-8"
	token2 := oidctest.Sign(t, other)
	for range 10 {
		if code := send(token2, nil); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
	}
	if n := engineCounter("caddy_ai_gateway_auth_sandbox_token_verifications_total", "", "") - before; n != 2 {
		t.Errorf("%v verifications for two tokens, want 2", n)
	}
	// refused tokens are not cached as accepted: each is verified (and
	// refused) again
	bad := oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), oidctest.Kid, oidctest.SandboxClaims(jwks.URL))
	for range 5 {
		if code := send(bad, nil); code != http.StatusForbidden {
			t.Fatalf("bad token: status %d", code)
		}
	}
	if n := engineCounter("caddy_ai_gateway_auth_sandbox_token_verifications_total", "", "") - before; n != 7 {
		t.Errorf("%v verifications after 5 refused requests, want 7", n)
	}
	if n := jwks.Fetches(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1", n)
	}
}

func TestSandboxConfigErrors(t *testing.T) {
	for name, cfg := range map[string]VercelSandbox{
		"no audience": {Teams: []string{oidctest.Team}},
		"no team":     {Audience: oidctest.ForwardURL},
	} {
		err := tryProvisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
			VercelSandbox:  &cfg,
		})
		if err == nil || !strings.Contains(err.Error(), "vercel_sandbox needs") {
			t.Errorf("%s: Provision() = %v", name, err)
		}
	}
	// vercel_sandbox alone is enough client authentication
	h := &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox:  &VercelSandbox{Audience: oidctest.ForwardURL, Teams: []string{oidctest.Team}},
	}
	if err := tryProvisionHandler(t, h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

// Placeholders in vercel_sandbox are resolved at provision, and hosts are
// compared case-insensitively.
func TestSandboxConfigPlaceholders(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	t.Setenv("AIGW_TEST_SBX_AUD", oidctest.ForwardURL)
	t.Setenv("AIGW_TEST_SBX_TEAM", oidctest.Team)
	t.Setenv("AIGW_TEST_SBX_PROJECT", oidctest.Project)
	t.Setenv("AIGW_TEST_SBX_ISS", jwks.URL)
	t.Setenv("AIGW_TEST_SBX_EMPTY", "")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox: &VercelSandbox{
			Audience:       "{env.AIGW_TEST_SBX_AUD}",
			Teams:          []string{"{env.AIGW_TEST_SBX_TEAM}", "{env.AIGW_TEST_SBX_EMPTY}"},
			Projects:       []string{"{env.AIGW_TEST_SBX_PROJECT}"},
			Issuer:         "{env.AIGW_TEST_SBX_ISS}",
			ForwardedHosts: []string{"AI-Gateway.Vercel.sh"},
		},
	})
	r, repl := withReplacer(sandboxRequest(oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)), nil))
	var next recordingNext
	if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if v, _ := repl.Get("ai_gateway_auth.client"); v != "agent-7" {
		t.Errorf("client %v", v)
	}
	other := oidctest.SandboxClaims(jwks.URL)
	other["project_id"] = "prj_other"
	r, _ = withReplacer(sandboxRequest(oidctest.Sign(t, other), nil))
	if w := serve(t, h, r, neverNext(t)); w.Code != http.StatusForbidden {
		t.Errorf("other project: status %d", w.Code)
	}

	// a team placeholder that resolves to nothing leaves no team
	err := tryProvisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox:  &VercelSandbox{Audience: oidctest.ForwardURL, Teams: []string{"{env.AIGW_TEST_SBX_EMPTY}"}},
	})
	if err == nil || !strings.Contains(err.Error(), "team") {
		t.Errorf("empty team placeholder: Provision() = %v", err)
	}
}

// vercel-forwarded-path is the sandbox's: a request with a client key
// keeps its own path, whatever that header says (and the header does not
// reach the upstream).
func TestForwardedPathOnlyForSandboxes(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := sandboxHandler(t, jwks, func(h *Handler) { h.ClientKeys = []string{"sk-placeholder"} })
	for _, fp := range []string{"/v1/models", "/admin"} {
		r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r.Header.Set("Vercel-Forwarded-Path", fp)
		r, _ = withReplacer(r)
		var next recordingNext
		if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		got := next.calls()[0]
		if got.path != "/v1/chat/completions" || got.header.Get("Vercel-Forwarded-Path") != "" {
			t.Errorf("forwarded path %s: upstream path %q, header %q", fp, got.path, got.header.Get("Vercel-Forwarded-Path"))
		}
	}
}

// By default the only trusted issuers are those the configured teams
// imply, https://oidc.vercel.com/<team id>: tokens naming any other
// issuer path, however many and however long, are refused without a
// fetch and leave nothing in the JWKS cache; made-up kids at a trusted
// issuer cost at most one fetch per floor.
func TestSandboxDefaultIssuers(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox:  &VercelSandbox{Audience: oidctest.ForwardURL, Teams: []string{"team_other", oidctest.Team}, JWKSURL: jwks.JWKSURL()},
	})
	send := func(token string) *httptest.ResponseRecorder {
		t.Helper()
		r, _ := withReplacer(sandboxRequest(token, nil))
		w := httptest.NewRecorder()
		var next recordingNext
		if err := h.ServeHTTP(w, r, next.handler()); err != nil {
			t.Fatal(err)
		}
		return w
	}
	for _, team := range []string{oidctest.Team, "team_other"} {
		c := oidctest.SandboxClaims(oidc.VercelIssuer(team))
		c["team_id"] = team
		if w := send(oidctest.Sign(t, c)); w.Code != http.StatusOK {
			t.Fatalf("issuer of team %s: status %d: %s", team, w.Code, w.Body)
		}
	}
	if n := jwks.Fetches(); n != 1 {
		t.Fatalf("%d JWKS fetches, want 1", n)
	}
	for _, iss := range []string{"https://oidc.vercel.com", "https://oidc.vercel.com/acme", "https://oidc.vercel.com/" + oidctest.Team + "/x"} {
		if w := send(oidctest.Sign(t, oidctest.SandboxClaims(iss))); w.Code != http.StatusForbidden {
			t.Errorf("issuer %s: status %d, want 403", iss, w.Code)
		}
	}
	// an attacker's stream: a fresh long issuer path per request, then
	// made-up kids at a trusted issuer (the signature is never checked)
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","kid":"k"}`))
	for i := range 1000 {
		iss := "https://oidc.vercel.com/" + strings.Repeat(fmt.Sprintf("p%d-", i), 500)
		// jwks_url maps every trusted issuer to one URL: the refusal must
		// come from the issuer policy, not from the signature
		if _, err := h.sandbox.Policy().Check(iss); err == nil {
			t.Fatalf("issuer path %d trusted", i)
		}
		c := oidctest.SandboxClaims(iss)
		body, _ := json.Marshal(c)
		tok := header + "." + base64.RawURLEncoding.EncodeToString(body) + ".c2ln"
		if w := send(tok); w.Code != http.StatusForbidden {
			t.Fatalf("issuer path %d: status %d", i, w.Code)
		}
	}
	for i := range 50 {
		tok := oidctest.SignWith(jwt.SigningMethodRS256, oidctest.Key(), fmt.Sprintf("made-up-%d", i), oidctest.SandboxClaims(oidc.VercelIssuer(oidctest.Team)))
		if w := send(tok); w.Code != http.StatusForbidden {
			t.Fatalf("made-up kid %d: status %d", i, w.Code)
		}
	}
	if n := jwks.Fetches(); n > 2 {
		t.Errorf("%d JWKS fetches for hostile tokens, want at most 2 (one per floor)", n)
	}
	if n := h.jwks.Len(); n != 1 {
		t.Errorf("%d JWKS documents cached, want 1 (the configured jwks_url)", n)
	}

	// an explicit issuer is the only one trusted, the teams' included
	h2 := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		VercelSandbox:  &VercelSandbox{Audience: oidctest.ForwardURL, Teams: []string{oidctest.Team}, Issuer: "https://oidc.vercel.com/acme", JWKSURL: jwks.JWKSURL()},
	})
	for iss, want := range map[string]int{"https://oidc.vercel.com/acme": 200, oidc.VercelIssuer(oidctest.Team): 403} {
		r, _ := withReplacer(sandboxRequest(oidctest.Sign(t, oidctest.SandboxClaims(iss)), nil))
		w := httptest.NewRecorder()
		var next recordingNext
		if err := h2.ServeHTTP(w, r, next.handler()); err != nil || w.Code != want {
			t.Errorf("explicit issuer, token from %s: status %d, want %d", iss, w.Code, want)
		}
	}
}
