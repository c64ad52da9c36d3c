package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
)

// The hot path: ServeHTTP up to the next handler, for an accepted client
// key and a cached credential, with a tiny body and with an agent-sized
// one (a mid-length conversation: 256 KiB). Run with:
//
//	go test ./caddymodule -run '^$' -bench ServeHTTP -benchmem
func BenchmarkServeHTTPStatic(b *testing.B) {
	b.Setenv("BENCH_AIGW_KEY", "sk-bench-static-key")
	benchServeHTTPSizes(b, caddyconfig.JSONModuleObject(StaticSource{Key: "{env.BENCH_AIGW_KEY}"}, "source", "static", nil))
}

func BenchmarkServeHTTPOIDC(b *testing.B) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "project_id": "prj_bench", "owner_id": "team_bench",
	}).SignedString([]byte("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("BENCH_OIDC_TOKEN", tok)
	benchServeHTTPSizes(b, caddyconfig.JSONModuleObject(VercelOIDCSource{Env: "BENCH_OIDC_TOKEN"}, "source", "vercel_oidc", nil))
}

func benchServeHTTPSizes(b *testing.B, source []byte) {
	small := []byte(`{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`)
	agent := []byte(`{"model":"anthropic/claude-sonnet-4.5","stream":true,"messages":[{"role":"user","content":"` +
		strings.Repeat("x", 256<<10-100) + `"}]}`)
	b.Run("body=70B", func(b *testing.B) { benchServeHTTP(b, source, small) })
	b.Run("body=256KiB", func(b *testing.B) { benchServeHTTP(b, source, agent) })
}

func benchServeHTTP(b *testing.B, source []byte, body []byte) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{CredentialsRaw: []json.RawMessage{source}, ClientKeys: []string{"sk-placeholder"}}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	// like reverse_proxy's transport: read the body through its 4 KiB
	// write buffer, and close it
	var src bytes.Reader
	reqBody := io.NopCloser(&src)
	buf := make([]byte, 4096)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		return r.Body.Close()
	})
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", http.NoBody)
	req.ContentLength = int64(len(body)) // as every agent's SDK sends it
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	// warm up: the first request starts the refresher
	src.Reset(body)
	req.Body = reqBody
	req.Header.Set("Authorization", "Bearer sk-placeholder")
	if err := h.ServeHTTP(w, req, next); err != nil {
		b.Fatal(err)
	}
	clientAuth := []string{"Bearer sk-placeholder"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		src.Reset(body)
		req.Body = reqBody
		req.Header["Authorization"] = clientAuth
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}
