package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Shared test fixtures and helpers.

func TestMain(m *testing.M) {
	// Watched files are polled; poll fast so that file tests do not wait
	// a second per change. Set once, before any watcher starts.
	filewatch.Interval = 10 * time.Millisecond
	// A metered handler reads the model catalog from its gateway: unless
	// a test names one, a closed loopback port, never AI Gateway itself.
	defaultGatewayURL = "http://127.0.0.1:1"
	os.Exit(m.Run())
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }

// jwtExp is exp as a JWT carries it: whole seconds.
func jwtExp(exp time.Time) time.Time { return time.Unix(exp.Unix(), 0) }

// newTestContext is a caddy.Context as in a unit test; cancelling it (at
// test cleanup) cleans up every module loaded through it.
func newTestContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func staticSourceJSON(key string) json.RawMessage {
	return caddyconfig.JSONModuleObject(StaticSource{Key: key}, "source", "static", nil)
}

func oidcSourceJSON(s VercelOIDCSource) json.RawMessage {
	return caddyconfig.JSONModuleObject(s, "source", "vercel_oidc", nil)
}

// provisionHandler provisions and validates h as Caddy would, and cleans
// it up at the end of the test.
func provisionHandler(t *testing.T, h *Handler) *Handler {
	t.Helper()
	if err := tryProvisionHandler(t, h); err != nil {
		t.Fatalf("provisioning handler: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("validating handler: %v", err)
	}
	return h
}

// tryProvisionHandler provisions h and registers its cleanup (Caddy
// cleans up after a failed Provision too).
func tryProvisionHandler(t *testing.T, h *Handler) error {
	t.Helper()
	ctx := newTestContext(t)
	t.Cleanup(func() { _ = h.Cleanup() }) // runs before the context's cancel
	return h.Provision(ctx)
}

// provisionOIDC provisions a vercel_oidc source and cleans it up at the
// end of the test.
func provisionOIDC(t *testing.T, s *VercelOIDCSource) *VercelOIDCSource {
	t.Helper()
	ctx := newTestContext(t)
	t.Cleanup(func() { _ = s.Cleanup() })
	if err := s.Provision(ctx); err != nil {
		t.Fatalf("provisioning vercel_oidc: %v", err)
	}
	return s
}

// seenRequest is what the next handler (reverse_proxy in production)
// received.
type seenRequest struct {
	method   string
	path     string
	rawQuery string
	header   http.Header
	body     []byte
}

// recordingNext is a next handler that records each request it gets and
// answers 200.
type recordingNext struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (n *recordingNext) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		body, err := readAllAndClose(r)
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.seen = append(n.seen, seenRequest{
			method: r.Method, path: r.URL.Path, rawQuery: r.URL.RawQuery,
			header: r.Header.Clone(), body: body,
		})
		n.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("upstream ok"))
		return nil
	})
}

func (n *recordingNext) calls() []seenRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]seenRequest(nil), n.seen...)
}

func readAllAndClose(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	defer r.Body.Close()
	return io.ReadAll(r.Body)
}

// withReplacer adds a caddy.Replacer to r's context, as caddyhttp's
// server does for every request.
func withReplacer(r *http.Request) (*http.Request, *caddy.Replacer) {
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	return r.WithContext(ctx), repl
}

// serve runs r through h with next, and returns the response.
func serve(t *testing.T, h *Handler, r *http.Request, next caddyhttp.Handler) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP returned error: %v", err)
	}
	return w
}

// eventually polls cond until it holds, failing the test after a
// generous deadline (it never assumes a fast machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// observeLogs sends the handler's log lines, and those of its vercel_oidc
// sources, to an in-memory observer. Call it before the first request
// (which starts the sources' goroutines).
func observeLogs(h *Handler) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	h.logger = logger
	for _, src := range h.sources {
		if s, ok := src.(*VercelOIDCSource); ok {
			s.logger = logger
			s.state.SetLogger(logger)
		}
	}
	return logs
}

// assertLogsClean fails if any log line (message or field) holds a secret.
func assertLogsClean(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, e := range logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		assertNotContains(t, "log line", buf.String(), secrets...)
		buf.Free()
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertNotContains fails if s holds any of the secrets.
func assertNotContains(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains a secret (%.12s…): %s", what, sec, s)
		}
	}
}

// valueOf is the token c carries, read from its Authorization header as
// the upstream gets it ("<nil>" for none).
func valueOf(c *credential.Credential) string {
	if c == nil {
		return "<nil>"
	}
	return strings.TrimPrefix(c.AuthHeader()[0], "Bearer ")
}
