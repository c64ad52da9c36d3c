package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
)

// Refresh-and-replay on an upstream 401. The rig: a vercel_oidc source
// whose env token T1 the fake gateway refuses (as if revoked), and a
// loopback mint server that counts mints and hands out fresh tokens.

// fakeGateway is a next handler that answers 401 to the tokens it
// refuses, like AI Gateway, and otherwise 200 echoing the body it read.
type fakeGateway struct {
	mu        sync.Mutex
	refused   map[string]bool
	refuseAll bool
	// readBody: "all" (default), "none" or "half" of the body is read
	// before a 401
	readBody string
	// before401, if set, runs before a 401 is answered
	before401 func()
	attempts  []gatewayAttempt
}

type gatewayAttempt struct {
	auth   string
	body   []byte
	header http.Header
}

func (g *fakeGateway) refuse(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused == nil {
		g.refused = map[string]bool{}
	}
	g.refused[token] = true
}

func (g *fakeGateway) calls() []gatewayAttempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gatewayAttempt(nil), g.attempts...)
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	g.mu.Lock()
	refused := g.refuseAll || g.refused[token]
	mode := g.readBody
	n := len(g.attempts) + 1
	g.mu.Unlock()

	var body []byte
	var err error
	switch {
	case !refused || mode == "" || mode == "all":
		body, err = io.ReadAll(r.Body)
	case mode == "half":
		body, err = io.ReadAll(io.LimitReader(r.Body, r.ContentLength/2))
	}
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.attempts = append(g.attempts, gatewayAttempt{auth: token, body: body, header: r.Header.Clone()})
	g.mu.Unlock()

	if refused {
		if g.before401 != nil {
			g.before401()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Www-Authenticate", `Bearer error="invalid_token"`)
		w.Header().Set("X-Gateway-Attempt", fmt.Sprint(n))
		w.Header().Set("X-Gateway-401-Only", "yes")
		w.WriteHeader(http.StatusUnauthorized)
		// through io.Copy (ReadFrom) and a flush, as reverse_proxy may
		// (the source hides WriteTo, so that io.Copy uses w's ReadFrom)
		_, _ = io.Copy(w, struct{ io.Reader }{strings.NewReader(fmt.Sprintf(`{"error":{"message":"invalid token (attempt %d)","type":"authentication_error"}}`, n))})
		_ = http.NewResponseController(w).Flush()
		return nil
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Gateway-Attempt", fmt.Sprint(n))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(body)
	return err
}

type replayRig struct {
	h          *Handler
	gw         *fakeGateway
	first      string // the env token the gateway refuses
	mints      atomic.Int32
	mintFails  atomic.Bool
	mintedMu   sync.Mutex
	minted     []string
	mintServer *httptest.Server
}

var replayEnvSeq atomic.Int32

// newReplayRig provisions the rig; edit may change the handler config.
func newReplayRig(t *testing.T, edit func(*Handler)) *replayRig {
	t.Helper()
	rig := &replayRig{gw: &fakeGateway{}}
	rig.first = oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	rig.gw.refuse(rig.first)
	env := fmt.Sprintf("AIGW_TEST_REPLAY_OIDC_%d", replayEnvSeq.Add(1))
	t.Setenv(env, rig.first)

	rig.mintServer = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rig.mints.Add(1)
		if rig.mintFails.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error":{"code":"internal_error","message":"mint is down"}}`)
			return
		}
		// each mint a distinct token, expiring later than T1
		tok := oidctest.SignWith(jwt.SigningMethodRS256, oidctest.Key(), oidctest.Kid, oidctest.OIDCClaims(time.Now().Add(2*time.Hour+time.Duration(n)*time.Second)))
		rig.mintedMu.Lock()
		rig.minted = append(rig.minted, tok)
		rig.mintedMu.Unlock()
		fmt.Fprintf(w, `{"token":%q}`, tok)
	}))
	t.Cleanup(rig.mintServer.Close)

	h := &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{
			Env:  env,
			Mint: &MintConfig{Project: oidctest.Project, Team: oidctest.Team, AccessToken: "vercel-access-token", API: rig.mintServer.URL},
			// every round of these tests revokes and replays at once; the
			// forced-refresh throttle has tests of its own (refused_test.go)
			ForcedRefreshInterval: caddy.Duration(time.Nanosecond),
		})},
		ClientKeys: []string{"sk-placeholder"},
	}
	if edit != nil {
		edit(h)
	}
	rig.h = provisionHandler(t, h)
	return rig
}

func (rig *replayRig) mintedTokens() []string {
	rig.mintedMu.Lock()
	defer rig.mintedMu.Unlock()
	return append([]string(nil), rig.minted...)
}

func (rig *replayRig) request(path string, body io.Reader) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, body)
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r.Header.Set("Content-Type", "application/json")
	r, _ = withReplacer(r)
	return r
}

func (rig *replayRig) send(t *testing.T, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return serve(t, rig.h, rig.request(path, strings.NewReader(body)), caddyhttp.HandlerFunc(rig.gw.ServeHTTP))
}

// unknownLength hides a body's length, as a chunked request's is.
type unknownLength struct{ io.Reader }

// The client sees the 200 of the replay with its body intact; the 401
// leaves no trace in the answer; the fresh token is kept for later
// requests.
func TestReplayOn401(t *testing.T) {
	rig := newReplayRig(t, nil)
	logs := observeLogs(rig.h)
	body := strings.Repeat(`{"messages":[{"role":"user","content":"hello"}]}`, 1000) // ~48 KB, like Claude Code's
	r := rig.request("/v1/messages?beta=true", strings.NewReader(body))
	w := httptest.NewRecorder()
	w.Header().Set("X-Served-By", "proxy") // as the header directive sets it, before the handler
	if err := rig.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(rig.gw.ServeHTTP)); err != nil {
		t.Fatal(err)
	}
	res := w.Result()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, w.Body)
	}
	if w.Body.String() != body {
		t.Errorf("client got %d bytes, want the %d-byte body echoed", w.Body.Len(), len(body))
	}
	for _, k := range []string{"Www-Authenticate", "X-Gateway-401-Only"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("the 401's header %s: %s leaked into the replayed answer", k, v)
		}
	}
	if res.Header.Get("X-Gateway-Attempt") != "2" || res.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("answer headers %v, want the replay's", res.Header)
	}
	if res.Header.Get("X-Served-By") != "proxy" {
		t.Error("a header set before the handler was lost in the replay")
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.Get("ai_gateway_auth.credential_source"); v != "vercel_oidc" {
		t.Errorf("{ai_gateway_auth.credential_source} = %v, want vercel_oidc", v)
	}
	if v, _ := repl.Get("ai_gateway_auth.client"); v != "placeholder" {
		t.Errorf("{ai_gateway_auth.client} = %v, want placeholder", v)
	}

	calls := rig.gw.calls()
	minted := rig.mintedTokens()
	if len(calls) != 2 || len(minted) != 1 {
		t.Fatalf("%d upstream attempts, %d mints; want 2 and 1", len(calls), len(minted))
	}
	if calls[0].auth != rig.first || calls[1].auth != minted[0] {
		t.Error("attempts did not carry the refused token, then the minted one")
	}
	if string(calls[0].body) != body || string(calls[1].body) != body {
		t.Error("an attempt did not get the whole body")
	}

	// the next request uses the fresh token at once
	w = rig.send(t, "/v1/chat/completions", "next")
	if w.Code != http.StatusOK || len(rig.gw.calls()) != 3 || rig.gw.calls()[2].auth != minted[0] || rig.mints.Load() != 1 {
		t.Errorf("after the replay: status %d, %d attempts, %d mints", w.Code, len(rig.gw.calls()), rig.mints.Load())
	}
	assertLogsClean(t, logs, rig.first, minted[0])
	if logs.FilterMessage("replaying request with a fresh credential").Len() != 1 {
		t.Error("the replay was not logged")
	}
}

// A replay changes only the credential: the reporting headers the module
// stamped go upstream again, and no client header comes back.
func TestReplayKeepsModuleHeaders(t *testing.T) {
	rig := newReplayRig(t, func(h *Handler) { h.Reporting = &Reporting{Tags: []string{"fleet"}} })
	r := rig.request("/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	r.Header.Set("X-Api-Key", "sk-client")
	r.Header.Set("Ai-Reporting-User", "someone-else")
	w := httptest.NewRecorder()
	if err := rig.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(rig.gw.ServeHTTP)); err != nil {
		t.Fatal(err)
	}
	calls := rig.gw.calls()
	if w.Code != http.StatusOK || len(calls) != 2 {
		t.Fatalf("status %d after %d attempts, want 200 after a replay", w.Code, len(calls))
	}
	for i, c := range calls {
		if got := c.header.Get(headerReportingUser); got != identity.PlaceholderName {
			t.Errorf("attempt %d: ai-reporting-user %q, want %q", i+1, got, identity.PlaceholderName)
		}
		if got := c.header.Get(headerReportingTags); got != "fleet" {
			t.Errorf("attempt %d: ai-reporting-tags %q, want fleet", i+1, got)
		}
		if c.header.Get("X-Api-Key") != "" {
			t.Errorf("attempt %d: the client's x-api-key went upstream", i+1)
		}
		if c.header.Get("Ai-Gateway-Auth-Method") != credential.MethodOIDC {
			t.Errorf("attempt %d: ai-gateway-auth-method %q", i+1, c.header.Get("Ai-Gateway-Auth-Method"))
		}
	}
	if calls[1].auth == calls[0].auth {
		t.Error("the replay carried the refused token")
	}
}

// Twenty requests that all hit the same refused token cost one mint
// between them, and each client gets its own body back.
func TestReplayConcurrentOneRefresh(t *testing.T) {
	const n = 20
	rig := newReplayRig(t, nil)
	var arrived atomic.Int32
	all := make(chan struct{})
	rig.gw.before401 = func() {
		// hold every 401 until all requests have been sent upstream
		// with the refused token
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(20 * time.Second):
			t.Error("not every request reached the upstream with the refused token")
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"request":%d}`, i)
			w := httptest.NewRecorder()
			r := rig.request("/v1/chat/completions", strings.NewReader(body))
			if err := rig.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(rig.gw.ServeHTTP)); err != nil {
				t.Error(err)
			}
			if w.Code != http.StatusOK || w.Body.String() != body {
				t.Errorf("request %d: status %d, body %q", i, w.Code, w.Body)
			}
		})
	}
	wg.Wait()
	if m := rig.mints.Load(); m != 1 {
		t.Errorf("%d mints for %d requests refused with one token, want 1", m, n)
	}
	if c := len(rig.gw.calls()); c != 2*n {
		t.Errorf("%d upstream attempts, want %d (each request replayed once)", c, 2*n)
	}
}

// A body larger than retry_body_limit is streamed, not kept: the client
// gets the upstream's 401 as it was, headers and body.
func TestReplayBodyOverLimitNotReplayed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		known    bool   // Content-Length known
		readBody string // how much the gateway reads before its 401
	}{
		{"known length", true, "all"},
		{"known length, unread", true, "none"},
		{"chunked", false, "all"},
		{"chunked, unread", false, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newReplayRig(t, func(h *Handler) { h.RetryBodyLimit = 1024 })
			rig.gw.readBody = tc.readBody
			body := strings.Repeat("x", 4096)
			var rd io.Reader = strings.NewReader(body)
			if !tc.known {
				rd = unknownLength{rd}
			}
			w := serve(t, rig.h, rig.request("/v1/chat/completions", rd), caddyhttp.HandlerFunc(rig.gw.ServeHTTP))
			res := w.Result()
			if res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want the upstream's 401", res.StatusCode)
			}
			if want := `{"error":{"message":"invalid token (attempt 1)","type":"authentication_error"}}`; w.Body.String() != want {
				t.Errorf("body %q, want the upstream's %q", w.Body, want)
			}
			if res.Header.Get("Www-Authenticate") == "" || res.Header.Get("X-Gateway-Attempt") != "1" {
				t.Errorf("the upstream's 401 headers are missing: %v", res.Header)
			}
			// the credential was replaced: the SDKs may retry at once
			if res.Header.Get("X-Should-Retry") != "true" {
				t.Errorf("X-Should-Retry %q, want true", res.Header.Get("X-Should-Retry"))
			}
			if c := len(rig.gw.calls()); c != 1 {
				t.Errorf("%d upstream attempts, want 1", c)
			}
			// the refused token is dropped and a fresh one fetched in the
			// background, ready for the next request
			eventually(t, "a fresh token after the refused one", func() bool { return rig.mints.Load() == 1 })
			w = rig.send(t, "/v1/chat/completions", "small")
			if calls := rig.gw.calls(); w.Code != http.StatusOK || len(calls) != 2 || calls[1].auth == rig.first {
				t.Errorf("next request: status %d, %d attempts", w.Code, len(calls))
			}
			if m := rig.mints.Load(); m != 1 {
				t.Errorf("%d mints, want 1", m)
			}
		})
	}
}

// A body within the limit is replayed whole whatever the upstream read of
// it before its 401 (all, half, nothing), with or without a known length.
func TestReplayBodyWithinLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		known    bool
		readBody string
	}{
		{"chunked, read", false, "all"},
		{"chunked, unread", false, "none"},
		{"known, half read", true, "half"},
		{"known, unread", true, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newReplayRig(t, func(h *Handler) { h.RetryBodyLimit = 64 * 1024 })
			rig.gw.readBody = tc.readBody
			body := strings.Repeat("0123456789", 6000) // 60 KB, under the limit
			var rd io.Reader = strings.NewReader(body)
			if !tc.known {
				rd = unknownLength{rd}
			}
			w := serve(t, rig.h, rig.request("/v1/chat/completions", rd), caddyhttp.HandlerFunc(rig.gw.ServeHTTP))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if w.Body.String() != body {
				t.Errorf("replayed body: %d bytes, want %d", w.Body.Len(), len(body))
			}
		})
	}
	// exactly at the limit: replayed; one byte more: not
	for _, size := range []int{1024, 1025} {
		rig := newReplayRig(t, func(h *Handler) { h.RetryBodyLimit = 1024 })
		w := serve(t, rig.h, rig.request("/v1/chat/completions", unknownLength{strings.NewReader(strings.Repeat("y", size))}),
			caddyhttp.HandlerFunc(rig.gw.ServeHTTP))
		if want := map[int]int{1024: 200, 1025: 401}[size]; w.Code != want {
			t.Errorf("%d-byte body, limit 1024: status %d, want %d", size, w.Code, want)
		}
	}
}

// A request without a body (GET /v1/models) is replayed too.
func TestReplayWithoutBody(t *testing.T) {
	rig := newReplayRig(t, nil)
	r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
	r.Header.Set("X-Api-Key", "sk-placeholder")
	r, _ = withReplacer(r)
	w := serve(t, rig.h, r, caddyhttp.HandlerFunc(rig.gw.ServeHTTP))
	if w.Code != http.StatusOK || len(rig.gw.calls()) != 2 {
		t.Errorf("status %d after %d attempts", w.Code, len(rig.gw.calls()))
	}
}

// A static key is never retried: its 401 goes to the client as it is.
func TestReplayNotForStaticKey(t *testing.T) {
	h := staticHandler(t)
	gw := &fakeGateway{refuseAll: true}
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, _ = withReplacer(r)
	before := outcomeCounts()
	w := serve(t, h, r, caddyhttp.HandlerFunc(gw.ServeHTTP))
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "attempt 1") {
		t.Errorf("status %d, body %s; want the upstream's 401", w.Code, w.Body)
	}
	// the same token would be refused again: no retry is suggested
	if v := w.Header().Get("X-Should-Retry"); v != "" {
		t.Errorf("X-Should-Retry %q with no fresh token", v)
	}
	if c := len(gw.calls()); c != 1 {
		t.Errorf("next called %d times, want 1", c)
	}
	assertOutcome(t, before, outcomeForwarded)
}

// The 401 of the replay goes to the client unchanged, with none of the
// first 401's headers.
func TestReplaySecond401PassedThrough(t *testing.T) {
	rig := newReplayRig(t, nil)
	rig.gw.refuseAll = true
	w := httptest.NewRecorder()
	r := rig.request("/v1/chat/completions", strings.NewReader("{}"))
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if len(rig.gw.calls()) == 0 {
			w.Header().Set("X-Only-On-First", "1")
		}
		return rig.gw.ServeHTTP(w, r)
	})
	if err := rig.h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	res := w.Result()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
	if want := `{"error":{"message":"invalid token (attempt 2)","type":"authentication_error"}}`; w.Body.String() != want {
		t.Errorf("body %q, want the second attempt's %q", w.Body, want)
	}
	if res.Header.Get("X-Gateway-Attempt") != "2" || res.Header.Get("X-Only-On-First") != "" {
		t.Errorf("headers %v: want the second 401's only", res.Header)
	}
	if c := len(rig.gw.calls()); c != 2 {
		t.Errorf("%d attempts, want 2 (one replay only)", c)
	}
}

// With no fresh token to be had, the client gets the upstream's 401.
func TestReplayNoFreshToken(t *testing.T) {
	rig := newReplayRig(t, nil)
	rig.mintFails.Store(true)
	w := rig.send(t, "/v1/chat/completions", "{}")
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "attempt 1") {
		t.Errorf("status %d, body %s; want the upstream's 401", w.Code, w.Body)
	}
	if c := len(rig.gw.calls()); c != 1 {
		t.Errorf("%d attempts, want 1", c)
	}
}

// The body streams upstream as the client sends it: the first attempt
// does not wait for the whole body.
func TestReplayDoesNotBufferBodyFirst(t *testing.T) {
	rig := newReplayRig(t, nil)
	rig.gw.refused = nil // the gateway accepts T1
	pr, pw := io.Pipe()
	r := rig.request("/v1/chat/completions", unknownLength{pr})
	gotFirst := make(chan struct{})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return err
		}
		close(gotFirst)
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		_, err = w.Write(append(buf, rest...))
		return err
	})
	w := httptest.NewRecorder()
	done := make(chan error, 1)
	go func() { done <- rig.h.ServeHTTP(w, r, next) }()
	if _, err := pw.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gotFirst:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream did not get the start of the body before the client finished sending it")
	}
	pw.Write([]byte(" and the rest"))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.Body.String() != "first and the rest" {
		t.Errorf("body %q", w.Body)
	}
}

// SSE streams flow through the replay wrapper as they are written: each
// event reaches the client before the next is written, whether the
// upstream flushes through http.Flusher or http.ResponseController, and
// also on the replayed attempt.
func TestReplayStreamingFlushes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		controller bool
		replay     bool
	}{
		{"flusher", false, false},
		{"response controller", true, false},
		{"response controller, replayed", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newReplayRig(t, nil)
			if !tc.replay {
				rig.gw.refused = nil
			}
			clientGotFirst := make(chan struct{})
			sse := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "); tok == rig.first && tc.replay {
					return rig.gw.ServeHTTP(w, r)
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				flush := func() {
					if tc.controller {
						if err := http.NewResponseController(w).Flush(); err != nil {
							t.Errorf("ResponseController.Flush: %v", err)
						}
					} else {
						f, ok := w.(http.Flusher)
						if !ok {
							t.Fatal("the writer given to the next handler is not an http.Flusher")
						}
						f.Flush()
					}
				}
				io.WriteString(w, "data: one\n\n")
				flush()
				select {
				case <-clientGotFirst:
				case <-time.After(20 * time.Second):
					t.Error("the first event did not reach the client before the next was written")
				}
				io.WriteString(w, "data: two\n\n")
				flush()
				return nil
			})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r, _ = withReplacer(r)
				if err := rig.h.ServeHTTP(w, r, sse); err != nil {
					t.Error(err)
				}
			}))
			defer srv.Close()

			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
			req.Header.Set("Authorization", "Bearer sk-placeholder")
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			br := bufio.NewReader(res.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != "data: one\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			close(clientGotFirst)
			rest, _ := io.ReadAll(br)
			if string(rest) != "\ndata: two\n\n" {
				t.Errorf("rest %q", rest)
			}
		})
	}
}

// A held-back 401 is never flushed to the client, however the upstream
// writes and flushes it (io.Copy, ResponseController): the client sees
// only the replay's answer.
func TestReplayHeld401NeverReachesClient(t *testing.T) {
	rig := newReplayRig(t, nil)
	w := httptest.NewRecorder()
	if err := rig.h.ServeHTTP(w, rig.request("/v1/chat/completions", strings.NewReader("{}")), caddyhttp.HandlerFunc(rig.gw.ServeHTTP)); err != nil {
		t.Fatal(err)
	}
	// the recorder snapshots the headers at the first WriteHeader (or
	// Flush): a leaked 401 would show its headers or status there
	res := w.Result()
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Gateway-401-Only") != "" {
		t.Errorf("status %d, headers %v: the 401 reached the client", res.StatusCode, res.Header)
	}
	if strings.Contains(w.Body.String(), "invalid token") {
		t.Errorf("the 401's body reached the client: %q", w.Body)
	}
}

// The transport may still read a request body after the attempt that
// used it has returned (the http.RoundTripper contract allows it until it
// closes the body): such a late reader does not race with the replay,
// the replay gets the whole body, and the late reader gets an error
// rather than the bytes the replay needs (run with -race).
func TestReplayLateBodyReader(t *testing.T) {
	rig := newReplayRig(t, nil)
	body := strings.Repeat("abcdefghij", 10000)
	lateDone := make(chan error, 1)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") == rig.first {
			b := r.Body
			go func() { // like http.Transport's writeLoop
				_, err := io.Copy(io.Discard, b)
				b.Close()
				lateDone <- err
			}()
			w.WriteHeader(http.StatusUnauthorized)
			return nil
		}
		got, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		_, err = w.Write(got)
		return err
	})
	for i := range 20 {
		if i > 0 {
			// a fresh refused token for each round
			rig.gw.refuse(rig.mintedTokens()[i-1])
			rig.first = rig.mintedTokens()[i-1]
		}
		w := httptest.NewRecorder()
		if err := rig.h.ServeHTTP(w, rig.request("/v1/chat/completions", unknownLength{strings.NewReader(body)}), next); err != nil {
			t.Fatal(err)
		}
		<-lateDone
		if w.Code != http.StatusOK || w.Body.String() != body {
			t.Fatalf("round %d: status %d, %d bytes, want 200 and the %d-byte body", i, w.Code, w.Body.Len(), len(body))
		}
	}
}
