package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// While a token or dollar limit is on, the default allow_paths leaves out
// the endpoints whose answers the proxy cannot meter (speech,
// transcription, images, rerank): a sandbox cannot spend there past its
// budget. Without one (no limits, or only requests_per_minute), the
// default allows them as before; metered endpoints are allowed either way.
func TestDefaultAllowPathsWithSpendLimits(t *testing.T) {
	handler := func(l *Limits) *Handler {
		return provisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
			ClientKeys:     []string{"sk-placeholder"},
			Limits:         l,
		})
	}
	for _, tc := range []struct {
		name        string
		h           *Handler
		unmeterable bool // allowed
	}{
		{"no limits", handler(nil), true},
		{"requests_per_minute only", handler(&Limits{RequestsPerMinute: 100}), true},
		{"tokens_per_day", handler(&Limits{TokensPerDay: 100000}), false},
		{"usd_per_day", handler(&Limits{USDPerDay: 5}), false},
		{"tokens_per_month", handler(&Limits{TokensPerMonth: 1000000}), false},
		{"usd_per_month", handler(&Limits{USDPerMonth: 50}), false},
		{"concurrent_requests only", handler(&Limits{ConcurrentRequests: 4}), true},
	} {
		for _, path := range append(slices.Clone(unmeterablePaths), "/v1/chat/completions", "/v1/messages", "/v1/embeddings") {
			want := tc.unmeterable || !slices.Contains(unmeterablePaths, path)
			if got := sendTo(t, tc.h, path); got != want {
				t.Errorf("%s: %s reached the upstream: %v, want %v", tc.name, path, got, want)
			}
		}
		// the gateway's ledger is the proxy's to read, never a sandbox's
		if sendTo(t, tc.h, "/v1/generation?id=gen_01KY071V9GQK1EBS343E5TY39W") {
			t.Errorf("%s: /v1/generation reached the upstream", tc.name)
		}
	}
}

// sendTo sends a small JSON request to path through h and reports
// whether allow_paths let it through: false when it was refused with 403
// path_not_allowed (and never reached the next handler). One let through
// may still be refused for another reason (503 with a dollar limit and no
// catalog read yet).
func sendTo(t *testing.T, h *Handler, path string) bool {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"model":"openai/gpt-5-mini","input":"hi"}`))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r.Header.Set("Content-Type", "application/json")
	r, _ = withReplacer(r)
	var next recordingNext
	w := serve(t, h, r, next.handler())
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "path_not_allowed") {
		return true
	}
	if len(next.calls()) != 0 {
		t.Fatalf("%s: refused with 403 but reached the next handler", path)
	}
	assertErrorShape(t, w.Body.Bytes(), strings.HasPrefix(path, "/v1/messages"), "permission_error", "path_not_allowed")
	return false
}

// Naming an unmeterable endpoint explicitly is allowed, and with a token
// or dollar limit on, the config loads with a warning naming what spend
// there is bounded by. The word default, no limit, or only
// requests_per_minute warns of nothing.
func TestAllowPathsUnmeterableWarning(t *testing.T) {
	for _, tc := range []struct {
		name   string
		paths  []string
		limits *Limits
		warned []string
	}{
		{"named", []string{"default", "/v1/images/generations"}, &Limits{USDPerDay: 1}, []string{"/v1/images/generations"}},
		{"by prefix", []string{"/v1/*"}, &Limits{TokensPerDay: 1000}, []string{"/v1/images/generations", "/v1/images/edits", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/rerank"}},
		{"every path", []string{"*"}, &Limits{TokensPerDay: 1000}, unmeterablePaths},
		{"default only", []string{"default"}, &Limits{USDPerDay: 1}, nil},
		{"no allow_paths", nil, &Limits{USDPerDay: 1}, nil},
		{"no spend limit", []string{"default", "/v1/audio/speech"}, &Limits{RequestsPerMinute: 5}, nil},
		{"no limits", []string{"/v1/audio/speech"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			h := &Handler{AllowPaths: tc.paths, Limits: tc.limits, logger: zap.New(core)}
			if err := h.provisionPaths(); err != nil {
				t.Fatal(err)
			}
			warnings := logs.FilterMessageSnippet("cannot meter or price").All()
			if tc.warned == nil {
				if len(warnings) != 0 {
					t.Fatalf("warned: %v", warnings)
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("%d warnings, want 1", len(warnings))
			}
			msg := warnings[0].Message
			for _, s := range []string{"requests_per_minute", "concurrent_requests"} {
				if !strings.Contains(msg, s) {
					t.Errorf("the warning %q does not name %s", msg, s)
				}
			}
			got := warnings[0].ContextMap()["paths"]
			if !slices.Equal(anyStrings(got), tc.warned) {
				t.Errorf("the warning names %v, want %v", got, tc.warned)
			}
			for _, p := range tc.warned { // allowed, though named with a warning
				if !h.paths.allows(p) {
					t.Errorf("%s named but not allowed", p)
				}
			}
		})
	}
}

func anyStrings(v any) []string {
	var out []string
	switch v := v.(type) {
	case []string:
		return v
	case []any:
		for _, s := range v {
			out = append(out, s.(string))
		}
	}
	return out
}
