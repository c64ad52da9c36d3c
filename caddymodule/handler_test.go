package caddymodule

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const testStaticKey = "vck_test_static_upstream_key"

func staticHandler(t *testing.T) *Handler {
	t.Helper()
	return provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"sk-placeholder"},
	})
}

// neverNext fails the test if the request reaches the upstream.
func neverNext(t *testing.T) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("the request reached the next handler (upstream)")
		return nil
	})
}

// A request like Claude Code's: every client credential is removed,
// the upstream credential set, and everything else (other headers, query,
// a ~50 KB body) reaches the upstream unchanged.
func TestHandlerRewritesCredentialHeaders(t *testing.T) {
	h := staticHandler(t)
	logs := observeLogs(h)
	defer assertLogsClean(t, logs, testStaticKey, "sk-placeholder", "sk-invalid-but-winning-upstream")
	body := make([]byte, 50*1024)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		clients map[string]string // how the client sends its key
	}{
		{"bearer", map[string]string{"Authorization": "Bearer sk-placeholder"}},
		{"lower-case bearer", map[string]string{"Authorization": "bearer sk-placeholder"}},
		{"x-api-key", map[string]string{"X-Api-Key": "sk-placeholder"}},
		{"api-key", map[string]string{"Api-Key": "sk-placeholder"}},
		{"all of them", map[string]string{
			"Authorization": "Bearer sk-placeholder", "X-Api-Key": "sk-invalid-but-winning-upstream",
			"Api-Key": "sk-other", "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:4000/v1/messages?beta=true&x=1%202", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Anthropic-Version", "2023-06-01")
			r.Header.Set("Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
			r.Header.Set("User-Agent", "claude-cli/2.1.0 (external, cli)")
			r.Header["X-Multi"] = []string{"one", "two"}
			r.Header.Set("Ai-Gateway-Auth-Method", "oidc") // the client's claim is replaced
			for k, v := range tc.clients {
				r.Header.Set(k, v)
			}
			want := r.Header.Clone()
			for _, k := range []string{"Authorization", "X-Api-Key", "Api-Key", "Proxy-Authorization"} {
				delete(want, k)
			}
			want.Set("Authorization", "Bearer "+testStaticKey)
			want.Set("Ai-Gateway-Auth-Method", "api-key")

			r, repl := withReplacer(r)
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
			if !maps.EqualFunc(got.header, want, slices.Equal) {
				t.Errorf("upstream headers:\n got %v\nwant %v", got.header, want)
			}
			if got.method != http.MethodPost || got.path != "/v1/messages" || got.rawQuery != "beta=true&x=1%202" {
				t.Errorf("upstream got %s %s ?%s", got.method, got.path, got.rawQuery)
			}
			if !bytes.Equal(got.body, body) {
				t.Errorf("upstream body differs (%d bytes, want %d)", len(got.body), len(body))
			}
			if v, _ := repl.Get("ai_gateway_auth.client"); v != "placeholder" {
				t.Errorf("{ai_gateway_auth.client} = %v, want placeholder", v)
			}
			if v, _ := repl.Get("ai_gateway_auth.credential_source"); v != "static" {
				t.Errorf("{ai_gateway_auth.credential_source} = %v, want static", v)
			}
		})
	}
}

// The client named in client_keys_file shows up in the placeholder.
func TestHandlerPlaceholderNamesFileClient(t *testing.T) {
	keysFile := writeFile(t, t.TempDir(), "keys", "sandbox-42 sk-sandbox-42\n")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeysFile: keysFile,
	})
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer sk-sandbox-42")
	r, repl := withReplacer(r)
	var next recordingNext
	if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if v, _ := repl.Get("ai_gateway_auth.client"); v != "sandbox-42" {
		t.Errorf("{ai_gateway_auth.client} = %v, want sandbox-42", v)
	}
}

// Refused clients get a 401 in their SDK's shape that says what to do;
// the upstream is never contacted, even when a credential is available.
func TestHandlerRejectsClient(t *testing.T) {
	h := staticHandler(t)
	logs := observeLogs(h)
	defer func() {
		if logs.FilterMessage("client rejected").Len() == 0 {
			t.Error("rejections not logged")
		}
		assertLogsClean(t, logs, "sk-wrong-key-123", testStaticKey, "c2stcGxhY2Vob2xkZXI")
	}()
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		anthropic  bool
		reason     string
	}{
		{"missing, openai", "/v1/chat/completions", nil, false, "missing client key"},
		{"wrong bearer, openai", "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-wrong-key-123"}, false, "invalid client key"},
		{"wrong x-api-key, anthropic", "/v1/messages", map[string]string{"X-Api-Key": "sk-wrong-key-123"}, true, "invalid client key"},
		{"missing, anthropic with query", "/v1/messages?beta=true", nil, true, "missing client key"},
		{"basic auth only", "/v1/responses", map[string]string{"Authorization": "Basic c2stcGxhY2Vob2xkZXI="}, false, "missing client key"},
		{"upstream key", "/v1/messages", map[string]string{"Authorization": "Bearer " + testStaticKey}, true, "invalid client key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(`{"model":"x"}`))
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			r, _ = withReplacer(r)
			w := serve(t, h, r, neverNext(t))
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", w.Code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(w.Body.Len()) {
				t.Errorf("Content-Length %s, body is %d bytes", cl, w.Body.Len())
			}
			msg := assertErrorShape(t, w.Body.Bytes(), tc.anthropic, "authentication_error", "invalid_api_key")
			if !strings.HasPrefix(msg, tc.reason) {
				t.Errorf("message %q does not start with %q", msg, tc.reason)
			}
			if !strings.Contains(msg, "API key") {
				t.Errorf("message %q does not say to set the SDK's API key", msg)
			}
			assertNotContains(t, "401 body", w.Body.String(), "sk-wrong-key-123", testStaticKey)
		})
	}
}

// assertErrorShape checks an error body is exactly OpenAI's
// {"error":{"message","type","code","param"}} or Anthropic's
// {"type":"error","error":{"type","message"}}, and returns the message.
func assertErrorShape(t *testing.T, body []byte, anthropic bool, errType, code string) string {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	var inner map[string]any
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		t.Fatalf("error body has no error object: %s", body)
	}
	if anthropic {
		if len(top) != 2 || string(top["type"]) != `"error"` {
			t.Errorf("not Anthropic's shape: %s", body)
		}
		if len(inner) != 2 || inner["type"] != errType {
			t.Errorf("Anthropic error object: %v", inner)
		}
	} else {
		if len(top) != 1 {
			t.Errorf("not OpenAI's shape: %s", body)
		}
		if len(inner) != 4 || inner["type"] != errType || inner["code"] != code || inner["param"] != nil {
			t.Errorf("OpenAI error object: %v", inner)
		}
	}
	msg, _ := inner["message"].(string)
	if msg == "" {
		t.Errorf("no message: %s", body)
	}
	return msg
}

// With no usable credential anywhere: 503, Retry-After, and a message that
// names each source and why it has nothing, never a credential.
func TestHandlerNoCredential(t *testing.T) {
	expired := oidctest.OIDCToken(t, time.Now().Add(-time.Minute))
	t.Setenv("AIGW_TEST_EMPTY_KEY", "")
	t.Setenv("AIGW_TEST_EXPIRED_OIDC", expired)
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{
			staticSourceJSON("{env.AIGW_TEST_EMPTY_KEY}"),
			oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_EXPIRED_OIDC"}),
		},
		ClientKeys: []string{"sk-placeholder"},
		// long, so that waiting for it could not pass for a slow machine
		CredentialWait: caddyDuration(2 * time.Minute),
	})
	logs := observeLogs(h)

	for _, anthropic := range []bool{false, true} {
		path := "/v1/chat/completions"
		if anthropic {
			path = "/v1/messages"
		}
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r, _ = withReplacer(r)
		start := time.Now()
		w := serve(t, h, r, neverNext(t))
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503: %s", w.Code, w.Body)
		}
		if took := time.Since(start); took >= time.Minute {
			// the sources know at once that they have nothing: credential_wait is not spent
			t.Errorf("503 took %v: the request waited for credential_wait", took)
		}
		ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
		if err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q, want a number of seconds", w.Header().Get("Retry-After"))
		}
		msg := assertErrorShape(t, w.Body.Bytes(), anthropic, "api_error", "no_upstream_credential")
		// which sources were tried and why, in categories
		for _, want := range []string{"no usable upstream credential", "static (no key)", "vercel_oidc (env: token expired)"} {
			if !strings.Contains(msg, want) {
				t.Errorf("503 message %q does not contain %q", msg, want)
			}
		}
		// the configuration is for the log, not for clients
		assertNotContains(t, "503 body", w.Body.String(), expired, strings.Split(expired, ".")[1],
			"AIGW_TEST_EMPTY_KEY", "AIGW_TEST_EXPIRED_OIDC")
	}
	lines := logs.FilterMessage("no upstream credential").All()
	if len(lines) == 0 {
		t.Fatal("the 503 was not logged")
	}
	reason := lines[0].ContextMap()["error"]
	for _, want := range []string{
		"static: key is empty ({env.AIGW_TEST_EMPTY_KEY} resolved to nothing)",
		"vercel_oidc: env AIGW_TEST_EXPIRED_OIDC: token expired at",
	} {
		if !strings.Contains(fmt.Sprint(reason), want) {
			t.Errorf("the log's reason %q does not contain %q", reason, want)
		}
	}
	assertLogsClean(t, logs, expired, strings.Split(expired, ".")[1])
}

// Sources are tried in order: an empty static key is skipped for the
// next source; a set one wins over a later source.
func TestHandlerSourcePriority(t *testing.T) {
	token := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("AIGW_TEST_PRIO_OIDC", token)
	t.Setenv("AIGW_TEST_PRIO_KEY", testStaticKey)
	t.Setenv("AIGW_TEST_PRIO_EMPTY", "")

	for _, tc := range []struct {
		name       string
		sources    []json.RawMessage
		wantAuth   string
		wantMethod string
		wantSource string
	}{
		{
			"empty static skipped",
			[]json.RawMessage{staticSourceJSON("{env.AIGW_TEST_PRIO_EMPTY}"), oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_PRIO_OIDC"})},
			"Bearer " + token, "oidc", "vercel_oidc",
		},
		{
			"static first",
			[]json.RawMessage{staticSourceJSON("{env.AIGW_TEST_PRIO_KEY}"), oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_PRIO_OIDC"})},
			"Bearer " + testStaticKey, "api-key", "static",
		},
		{
			"oidc first",
			[]json.RawMessage{oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_PRIO_OIDC"}), staticSourceJSON("{env.AIGW_TEST_PRIO_KEY}")},
			"Bearer " + token, "oidc", "vercel_oidc",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := provisionHandler(t, &Handler{CredentialsRaw: tc.sources, ClientKeys: []string{"sk-placeholder"}})
			body := `{"model":"anthropic/claude-sonnet-4","stream":true}`
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			r.Header.Set("X-Api-Key", "sk-placeholder")
			r, repl := withReplacer(r)
			var next recordingNext
			if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			got := next.calls()[0]
			if a := got.header.Get("Authorization"); a != tc.wantAuth {
				t.Errorf("Authorization %.30q…, want %.30q…", a, tc.wantAuth)
			}
			if m := got.header.Get("Ai-Gateway-Auth-Method"); m != tc.wantMethod {
				t.Errorf("Ai-Gateway-Auth-Method %q, want %q", m, tc.wantMethod)
			}
			if got.header.Get("X-Api-Key") != "" {
				t.Error("x-api-key reached the upstream")
			}
			if string(got.body) != body {
				t.Errorf("body %q", got.body)
			}
			if v, _ := repl.Get("ai_gateway_auth.credential_source"); v != tc.wantSource {
				t.Errorf("{ai_gateway_auth.credential_source} = %v, want %s", v, tc.wantSource)
			}
		})
	}
}

// Many concurrent requests (run with -race): each upstream request
// carries exactly the upstream credential.
func TestHandlerConcurrentRequests(t *testing.T) {
	token := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("AIGW_TEST_CONC_OIDC", token)
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_CONC_OIDC"})},
		ClientKeys:     []string{"sk-placeholder"},
	})
	var next recordingNext
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(fmt.Sprint(i)))
			r.Header.Set("Authorization", "Bearer sk-placeholder")
			r, _ = withReplacer(r)
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, next.handler()); err != nil || w.Code != http.StatusOK {
				t.Errorf("request %d: %v, status %d", i, err, w.Code)
			}
		})
	}
	wg.Wait()
	calls := next.calls()
	if len(calls) != 64 {
		t.Fatalf("%d upstream requests, want 64", len(calls))
	}
	for _, c := range calls {
		if got := c.header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+token {
			t.Fatalf("upstream Authorization %d values", len(got))
		}
	}
}

// Provision and Validate refuse configs that could not work, and say what
// to add.
func TestHandlerConfigErrors(t *testing.T) {
	t.Setenv("AIGW_TEST_CFG_EMPTY", "")
	h := &Handler{ClientKeys: []string{"sk-placeholder"}}
	if err := tryProvisionHandler(t, h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "credential static {env.AI_GATEWAY_API_KEY}") {
		t.Errorf("no sources: Validate() = %v", err)
	}

	h = &Handler{CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)}}
	if err := tryProvisionHandler(t, h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "client_key sk-placeholder") {
		t.Errorf("no client auth: Validate() = %v", err)
	}

	// sizes given in JSON, which the Caddyfile parser did not check
	h = &Handler{CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys: []string{"sk-placeholder"}, RetryMemoryLimit: -1}
	if err := tryProvisionHandler(t, h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "retry_memory_limit") {
		t.Errorf("negative retry_memory_limit: Validate() = %v", err)
	}

	h = &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"{env.AIGW_TEST_CFG_EMPTY}"},
	}
	if err := tryProvisionHandler(t, h); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("only empty client keys: Provision() = %v", err)
	}
}
