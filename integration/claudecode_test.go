package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// claudeCodeBody is a Claude Code–sized /v1/messages body (~50 KB: a long
// system prompt, tool definitions, a conversation), with characters that a
// careless proxy would re-encode.
func claudeCodeBody(t testing.TB) []byte {
	t.Helper()
	var system strings.Builder
	for i := 0; system.Len() < 40_000; i++ {
		fmt.Fprintf(&system, "Rule %d: prefer small diffs; quote paths like `src/<pkg>/main.go` & keep \"tests\" green — ünïcödé ✓ 🚀.\n", i)
	}
	tools := []map[string]any{}
	for _, name := range []string{"Bash", "Read", "Edit", "Write", "Grep", "Glob", "WebFetch", "TodoWrite"} {
		tools = append(tools, map[string]any{
			"name":        name,
			"description": strings.Repeat("Runs "+name+" with care. ", 40),
			"input_schema": map[string]any{
				"type":       "object",
				"properties": map[string]any{"arg": map[string]string{"type": "string"}},
				"required":   []string{"arg"},
			},
		})
	}
	body := map[string]any{
		"model":      "anthropic/claude-sonnet-4",
		"max_tokens": 32000,
		"stream":     true,
		"system": []map[string]any{
			{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
			{"type": "text", "text": system.String(), "cache_control": map[string]string{"type": "ephemeral"}},
		},
		"messages": []map[string]any{
			{"role": "user", "content": []map[string]any{{"type": "text", "text": "Fix the failing test in ./pkg/… please </script> \u2028"}}},
		},
		"tools":    tools,
		"metadata": map[string]string{"user_id": "user_" + randomString(32)},
		"thinking": map[string]any{"type": "enabled", "budget_tokens": 4000},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <, >, & raw, as Node's JSON.stringify does
	if err := enc.Encode(body); err != nil {
		t.Fatal(err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) < 45_000 || len(b) > 60_000 {
		t.Fatalf("body is %d bytes, want about 50 KB", len(b))
	}
	return b
}

// claudeCodeHeaders are the headers Claude Code 2.x sends besides its key.
var claudeCodeHeaders = map[string]string{
	"Anthropic-Version":                         "2023-06-01",
	"Anthropic-Beta":                            "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
	"Anthropic-Dangerous-Direct-Browser-Access": "true",
	"User-Agent":                                "claude-cli/2.1.0 (external, cli)",
	"X-App":                                     "cli",
	"X-Stainless-Lang":                          "js",
	"X-Stainless-Package-Version":               "0.60.0",
	"X-Stainless-Retry-Count":                   "0",
	"X-Stainless-Timeout":                       "600",
	"Accept":                                    "application/json",
	"Content-Type":                              "application/json",
}

// TestClaudeCodeRequest sends what Claude Code sends (POST
// /v1/messages?beta=true, anthropic-version and anthropic-beta headers, a
// ~50 KB streamed request), with the key as x-api-key (ANTHROPIC_API_KEY)
// and as a bearer token (ANTHROPIC_AUTH_TOKEN): the gateway must get the
// path, query, headers and body unchanged, and the client the whole
// stream.
func TestClaudeCodeRequest(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, staticSite(gw.URL()))
	tc := newTestClient(t)
	body := claudeCodeBody(t)

	for _, keyHeader := range []string{"X-Api-Key", "Authorization"} {
		t.Run(keyHeader, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages?beta=true", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range claudeCodeHeaders {
				req.Header.Set(k, v)
			}
			if keyHeader == "Authorization" {
				req.Header.Set("Authorization", "Bearer sk-placeholder")
			} else {
				req.Header.Set("X-Api-Key", "sk-placeholder")
			}
			resp, err := tc.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q, want text/event-stream", ct)
			}
			sr := &sseReader{r: bufio.NewReader(resp.Body)}
			want := anthropicEvents("anthropic/claude-sonnet-4")
			for i := range want {
				ev, err := sr.next()
				if err != nil {
					t.Fatalf("event %d: %v", i+1, err)
				}
				if ev+"\n" != want[i] {
					t.Errorf("event %d is %q, want %q", i+1, ev, want[i])
				}
			}
			if ev, err := sr.next(); err != io.EOF {
				t.Errorf("after the last event: %q, %v; want the end of the stream", ev, err)
			}

			r := lastRequest(t, gw)
			assertForwarded(t, r, apiKey, "api-key")
			if r.Method != http.MethodPost || r.Path != "/v1/messages" || r.RawQuery != "beta=true" {
				t.Errorf("gateway got %s %s?%s, want POST /v1/messages?beta=true", r.Method, r.Path, r.RawQuery)
			}
			if !bytes.Equal(r.Body, body) {
				t.Errorf("gateway got a %d-byte body that differs from the %d bytes sent", len(r.Body), len(body))
			}
			for k, v := range claudeCodeHeaders {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("gateway got %s: %q, want %q", k, got, v)
				}
			}
		})
	}
}
