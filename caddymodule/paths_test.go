package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPathAllowList(t *testing.T) {
	def, err := newPathAllowList(defaultAllowPaths)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := newPathAllowList([]string{"/v1/chat/completions", "/v1/models*", "/health"})
	if err != nil {
		t.Fatal(err)
	}
	anyPath, err := newPathAllowList([]string{"/*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path                string
		def, custom, anyway bool
	}{
		{"/v1/chat/completions", true, true, true},
		{"/v1/messages", true, false, true},
		{"/v1/models", true, true, true},
		{"/v1/models/openai/gpt-5", true, true, true},
		{"/v1/", false, false, true},
		{"/v1/responses", true, false, true},
		{"/v1/messages/count_tokens", true, false, true},
		{"/v1/embeddings", true, false, true},
		{"/v2/rerank", true, false, true},
		// account and management endpoints: not by default
		{"/v1/report", false, false, true},
		{"/v1/credits", false, false, true},
		{"/v1/generation", false, false, true},
		{"/v1/quotas", false, false, true},
		{"/v1/realtime/client-secrets", false, false, true},
		{"/v1/ai/language-model", false, false, true},
		{"/v1/chat/completions/x", false, false, true},
		{"/v1", false, false, true},
		{"/v1x/chat", false, false, true},
		{"/v2/chat/completions", false, false, true},
		{"/", false, false, true},
		{"/health", false, true, true},
		{"/health/x", false, false, true},
		{"/v1/chat/completions/", false, false, true},
		{"/v1/models/.well-known", true, true, true}, // a dot file, not a dot segment
		{"/v1/models/a...b", true, true, true},
		// dot segments and encoded separators are refused by every list
		{"/v1/../admin", false, false, false},
		{"/v1/./chat/completions", false, false, false},
		{"/v1/..", false, false, false},
		{"/v1/.", false, false, false},
		{"/v1/chat/completions/../../admin", false, false, false},
		{"/v1/%2e%2e/admin", false, false, false},
		{"/v1/%2E%2E/admin", false, false, false},
		{"/v1/.%2e/admin", false, false, false},
		{"/v1%2fchat%2fcompletions", false, false, false},
		{"/v1/chat%2Fcompletions", false, false, false},
		{"/v1/..%5cadmin", false, false, false},
		{"/v1/models%2F..%2F..%2Fadmin", false, false, false},
	} {
		for name, got := range map[string]bool{"default": def.allows(tc.path), "custom": custom.allows(tc.path), "/*": anyPath.allows(tc.path)} {
			want := map[string]bool{"default": tc.def, "custom": tc.custom, "/*": tc.anyway}[name]
			if got != want {
				t.Errorf("%s.allows(%q) = %v, want %v", name, tc.path, got, want)
			}
		}
	}
}

func TestPathAllowListPatternErrors(t *testing.T) {
	for _, p := range []string{"v1/*", "*/v1", "/v1/*/chat", "/v*/*", "/v1/**", ""} {
		if _, err := newPathAllowList([]string{p}); err == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

// Through the handler: an accepted client on a path outside allow_paths
// gets 403 in its SDK's shape, and the upstream is not contacted; the
// escaped form is what is checked.
func TestHandlerAllowPaths(t *testing.T) {
	def := staticHandler(t)
	narrow := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"sk-placeholder"},
		AllowPaths:     []string{"/v1/chat/completions", "/v1/models"},
	})
	for _, tc := range []struct {
		h      *Handler
		target string
		ok     bool
	}{
		{def, "/v1/chat/completions", true},
		{def, "/v1/messages?beta=true", true},
		{def, "/v1/models", true},
		{def, "/admin", false},
		{def, "/v2/chat/completions", false},
		{def, "/v1/../admin", false},
		{def, "/v1/%2e%2e/admin", false},
		{def, "/v1%2Fchat%2Fcompletions", false},
		{def, "/v1/chat/completions?x=/../admin", true}, // the query is not the path
		{narrow, "/v1/chat/completions", true},
		{narrow, "/v1/models", true},
		{narrow, "/v1/messages", false},
		{narrow, "/v1/models/x", false},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.target, strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r, _ = withReplacer(r)
		var next recordingNext
		w := serve(t, tc.h, r, next.handler())
		reached := len(next.calls()) == 1
		if tc.ok {
			if w.Code != http.StatusOK || !reached {
				t.Errorf("%s: status %d, reached %v; want 200", tc.target, w.Code, reached)
			}
			continue
		}
		if w.Code != http.StatusForbidden || reached {
			t.Errorf("%s: status %d, reached %v; want 403, not reached", tc.target, w.Code, reached)
			continue
		}
		anthropic := strings.HasPrefix(r.URL.Path, "/v1/messages")
		msg := assertErrorShape(t, w.Body.Bytes(), anthropic, "permission_error", "path_not_allowed")
		if !strings.Contains(msg, "allow_paths") {
			t.Errorf("%s: message %q does not name allow_paths", tc.target, msg)
		}
	}
}

// The client is checked before the path: an unknown client learns
// nothing about which paths exist.
func TestHandlerClientCheckedBeforePath(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/admin", nil)
	r, _ = withReplacer(r)
	if w := serve(t, staticHandler(t), r, neverNext(t)); w.Code != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", w.Code)
	}
}

// `default` in allow_paths is the default list, so an operator can add a
// path to it without copying it.
func TestAllowPathsDefaultWord(t *testing.T) {
	l, err := newPathAllowList([]string{"default", "/v1/credits"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/v1/chat/completions": true, "/v1/models/openai/gpt-5": true, "/v1/credits": true,
		"/v1/report": false, "/v1/generation": false,
	} {
		if got := l.allows(path); got != want {
			t.Errorf("allow_paths default /v1/credits: allows(%q) = %v, want %v", path, got, want)
		}
	}
}
