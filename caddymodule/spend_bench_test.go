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
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The cost of spend per client on the hot path: the same request and
// answer (a ~600-byte chat completion with usage, or the same as 5 SSE
// chunks and a usage chunk) through the handler without and with
// reporting + metering. Compare the pairs:
//
//	go test ./caddymodule -run '^$' -bench 'ServeHTTPSpend' -benchmem -count 5
//
// "Limits" adds limits (tokens and dollars per day and month,
// concurrent_requests) to reporting and metering:
// every request reserves its worst case, priced from a catalog read
// before the loop, and settles from its answer.
func BenchmarkServeHTTPSpendOffJSON(b *testing.B)    { benchSpend(b, spendOff, false) }
func BenchmarkServeHTTPSpendOnJSON(b *testing.B)     { benchSpend(b, spendOn, false) }
func BenchmarkServeHTTPSpendLimitsJSON(b *testing.B) { benchSpend(b, spendLimits, false) }
func BenchmarkServeHTTPSpendOffSSE(b *testing.B)     { benchSpend(b, spendOff, true) }
func BenchmarkServeHTTPSpendOnSSE(b *testing.B)      { benchSpend(b, spendOn, true) }
func BenchmarkServeHTTPSpendLimitsSSE(b *testing.B)  { benchSpend(b, spendLimits, true) }

const (
	spendOff    = iota // no reporting, metering or limits
	spendOn            // reporting and usage_metrics
	spendLimits        // reporting and limits
)

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

func benchSpend(b *testing.B, mode int, sse bool) { benchSpendWith(b, mode, sse, nil) }

// benchSpendWith is benchSpend with configure, if not nil, adding to the
// handler's configuration (policies_bench_test.go).
func benchSpendWith(b *testing.B, mode int, sse bool, configure func(*Handler)) {
	b.Setenv("BENCH_AIGW_KEY", "sk-bench-static-key")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{CredentialsRaw: []json.RawMessage{staticSourceJSON("{env.BENCH_AIGW_KEY}")}, ClientKeys: []string{"sk-placeholder"},
		Gateway: closedGateway} // loopback only: a metered handler reads the catalog
	switch mode {
	case spendOn:
		h.Reporting, h.UsageMetrics = &Reporting{Tags: []string{"sandboxes"}}, true
	case spendLimits:
		catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, pricingCatalogJSON)
		}))
		defer catalog.Close()
		h.Reporting, h.Gateway = &Reporting{Tags: []string{"sandboxes"}}, catalog.URL
		h.Limits = &Limits{TokensPerDay: 1 << 50, USDPerDay: 1e9,
			TokensPerMonth: 1 << 50, USDPerMonth: 1e9, ConcurrentRequests: 10000}
	}
	if configure != nil {
		configure(h)
	}
	if h.Gateway == "" {
		h.Gateway = "http://127.0.0.1:9" // the catalog is read there (and fails): never the internet
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	if mode == spendLimits {
		for h.currentCatalog() == nil { // read in the background
			time.Sleep(time.Millisecond)
		}
	}

	answer := [][]byte{[]byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1767225600,"model":"openai/gpt-5",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream: a short answer of a few dozen words, ` +
		`about as long as a one-line reply from a coding agent's model, so that the body is close to six hundred bytes in all, ` +
		`like the answer bench/upstream sends."},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":812,"completion_tokens":41,"total_tokens":853,"cost":0.0031}}`)}
	contentType := "application/json"
	if sse {
		contentType = "text/event-stream"
		answer = nil
		for _, w := range []string{"Hello", " from", " the", " bench", " upstream."} {
			answer = append(answer, []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,"model":"openai/gpt-5",`+
				`"choices":[{"index":0,"delta":{"content":"`+w+`"},"finish_reason":null}]}`+"\n\n"))
		}
		answer = append(answer,
			[]byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":812,"completion_tokens":41,"cost":0.0031}}`+"\n\n"),
			[]byte("data: [DONE]\n\n"))
	}
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
		w.Header()["Content-Type"] = []string{contentType}
		w.WriteHeader(http.StatusOK)
		for _, p := range answer {
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
		return r.Body.Close()
	})
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", http.NoBody)
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	w := &discardWriter{h: http.Header{}}
	clientAuth := []string{"Bearer sk-placeholder"}
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(body)
		req.Body, req.ContentLength = reqBody, int64(len(body)) // as a server sets them
		req.Header["Authorization"] = clientAuth
		clear(w.h)
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}
