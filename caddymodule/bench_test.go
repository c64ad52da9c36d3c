package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
)

// The hot path: ServeHTTP up to the next handler, for an accepted client
// key and a cached credential. Run with:
//
//	go test ./caddymodule -run '^$' -bench ServeHTTP -benchmem
func BenchmarkServeHTTPStatic(b *testing.B) {
	b.Setenv("BENCH_AIGW_KEY", "sk-bench-static-key")
	benchServeHTTP(b, caddyconfig.JSONModuleObject(StaticSource{Key: "{env.BENCH_AIGW_KEY}"}, "source", "static", nil))
}

func BenchmarkServeHTTPOIDC(b *testing.B) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "project_id": "prj_bench", "owner_id": "team_bench",
	}).SignedString([]byte("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("BENCH_OIDC_TOKEN", tok)
	benchServeHTTP(b, caddyconfig.JSONModuleObject(VercelOIDCSource{Env: "BENCH_OIDC_TOKEN"}, "source", "vercel_oidc", nil))
}

func benchServeHTTP(b *testing.B, source []byte) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{CredentialsRaw: []json.RawMessage{source}, ClientKeys: []string{"sk-placeholder"}}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	// like reverse_proxy's transport: read the body and close it
	body := []byte(`{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`)
	var src bytes.Reader
	reqBody := io.NopCloser(&src)
	buf := make([]byte, 512)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		return r.Body.Close()
	})
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", http.NoBody)
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
