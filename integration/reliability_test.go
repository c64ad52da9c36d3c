package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mintFault is how faultyMint misbehaves.
type mintFault int

const (
	mintOK           mintFault = iota // the fake Vercel's own answer
	mintSlow                          // no answer until the fault is cleared (or the caller gives up)
	mintGarbage                       // 200 with a body that is not JSON
	mintNoExp                         // 200 with a token that has no exp
	mintWrongProject                  // 200 with a token for another project
)

// faultyMint is a Vercel token API in front of a fakeVercel that can be
// made to misbehave, and recovers when the fault is cleared.
type faultyMint struct {
	v   *fakeVercel
	srv *httptest.Server

	// releaseHeld: when the slow fault is cleared, calls already waiting
	// answer (a slow API catching up); otherwise they wait until their
	// caller gives up (a stuck call never recovers).
	releaseHeld bool

	mu      sync.Mutex
	fault   mintFault
	changed chan struct{} // closed (and replaced) when the fault changes
	ok      int           // calls answered with a valid token
	failed  int           // calls answered otherwise, or given up by the caller
	tokens  []secret      // tokens it signed itself
}

func newFaultyMint(t testing.TB, v *fakeVercel, fault mintFault) *faultyMint {
	f := &faultyMint{v: v, fault: fault, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/projects/{project}/token", f.serve)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.set(mintOK) // let held calls go before the server closes
		f.srv.Close()
	})
	return f
}

func (f *faultyMint) URL() string { return f.srv.URL }

func (f *faultyMint) set(fault mintFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fault
	close(f.changed)
	f.changed = make(chan struct{})
}

// counts returns the calls answered with a valid token and the others.
func (f *faultyMint) counts() (ok, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ok, f.failed
}

func (f *faultyMint) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fault, changed := f.fault, f.changed
	f.mu.Unlock()
	for fault == mintSlow {
		select {
		case <-r.Context().Done():
			f.count(false)
			return
		case <-changed:
			if !f.releaseHeld {
				<-r.Context().Done()
				f.count(false)
				return
			}
		}
		f.mu.Lock()
		fault, changed = f.fault, f.changed
		f.mu.Unlock()
	}
	claims := f.v.tokenClaims(time.Hour)
	switch fault {
	case mintOK:
		rec := httptest.NewRecorder()
		f.v.mint(rec, r)
		f.count(rec.Code == http.StatusOK)
		for k, vals := range rec.Header() {
			w.Header()[k] = vals
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	case mintGarbage:
		f.count(false)
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><body>502 Bad Gateway (from a proxy in the way)</body></html>")
		return
	case mintNoExp:
		delete(claims, "exp")
	case mintWrongProject:
		claims["project_id"] = "prj_" + randomString(28)
	}
	tok, err := f.v.signClaims(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	f.tokens = append(f.tokens, secret{"a token from the faulty mint", tok})
	f.mu.Unlock()
	f.count(false)
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

func (f *faultyMint) count(ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ok {
		f.ok++
	} else {
		f.failed++
	}
}

// tokenClaims are the claims of a token the fake Vercel would mint now,
// living ttl.
func (v *fakeVercel) tokenClaims(ttl time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":         v.Issuer(),
		"aud":         "https://vercel.com/" + v.TeamSlug,
		"sub":         fmt.Sprintf("owner:%s:project:%s:environment:%s", v.TeamSlug, v.ProjectName, v.Environment),
		"owner_id":    v.TeamID,
		"project_id":  v.ProjectID,
		"environment": v.Environment,
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         now.Add(ttl).Unix(),
		"jti":         randomString(16),
	}
}

// signClaims signs claims with the fake Vercel's current key and kid.
func (v *fakeVercel) signClaims(claims jwt.MapClaims) (string, error) {
	v.mu.Lock()
	k := v.keys[len(v.keys)-1]
	v.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = k.kid
	return tok.SignedString(k.key)
}

// mintOnlySite is a site whose only credential is minted through api;
// the extras go into the mint block, the vercel_oidc block and the
// ai_gateway_auth block.
func mintOnlySite(api, gw, mintExtra, sourceExtra, handlerExtra string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
			%s
		}
		client_key sk-placeholder
		%s
	}
	reverse_proxy %s`, mintBlock(api, mintExtra), sourceExtra, handlerExtra, gw)
}

// TestMintFaults: a mint API that does not answer, answers garbage, a
// token without exp or a token for another project: requests get a 503
// that names the cause, fast (the mint timeout is honoured, and no request
// waits longer than credential_wait), and the proxy recovers by itself
// once the API is fixed. Every failed mint is one "credential refresh
// failed" log line, every good one one "credential refreshed", every 503
// one "no upstream credential" naming the client; none holds a token.
func TestMintFaults(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	cases := []struct {
		name          string
		fault         mintFault
		releaseHeld   bool
		mint, handler string
		cause         string        // in the 503's message
		within        time.Duration // upper bound on the 503's latency
	}{
		// The mint call's own timeout ends the wait, long before
		// credential_wait would.
		{"slow, mint timeout", mintSlow, false, "timeout 1s", "credential_wait 30s", "no answer within 1s", 20 * time.Second},
		// credential_wait ends the wait while the mint is still under way.
		{"slow, credential_wait", mintSlow, true, "timeout 5m", "credential_wait 2s", "still refreshing", 20 * time.Second},
		{"garbage", mintGarbage, false, "", "", "not the expected JSON", waitTimeout},
		{"no exp", mintNoExp, false, "", "", "no exp", waitTimeout},
		{"wrong project", mintWrongProject, false, "", "", "token is for project", waitTimeout},
	}
	mints := make([]*faultyMint, len(cases))
	var sites []string
	for i, c := range cases {
		mints[i] = newFaultyMint(t, v, c.fault)
		mints[i].releaseHeld = c.releaseHeld
		sites = append(sites, mintOnlySite(mints[i].URL(), gw.URL(), c.mint, "", c.handler))
	}
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, sites...)
	tc := newTestClient(t)

	var mu sync.Mutex
	unavailable := 0 // 503s answered, for the log check
	t.Run("group", func(t *testing.T) {
		for i, c := range cases {
			f, base := mints[i], p.URLs[i]
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				for range 2 { // the first try, and one during the backoff
					start := time.Now()
					res := tc.chat(t, base, "sk-placeholder")
					took := time.Since(start)
					if res.Status != http.StatusServiceUnavailable {
						t.Fatalf("status %d, want 503: %s", res.Status, res.Body)
					}
					mu.Lock()
					unavailable++
					mu.Unlock()
					checkUnavailable(t, p, res, c.cause)
					if took > c.within {
						t.Errorf("the 503 took %s, want it well within %s", took.Round(time.Millisecond), c.within)
					}
				}
				f.set(mintOK)
				eventually(t, waitTimeout, "the proxy recovers once the mint API is fixed", func() string {
					res := tc.chat(t, base, "sk-placeholder")
					if res.Status == http.StatusServiceUnavailable {
						mu.Lock()
						unavailable++
						mu.Unlock()
					}
					if res.Status != http.StatusOK {
						return fmt.Sprintf("status %d: %s", res.Status, res.Body)
					}
					return ""
				})
				// One mint brought it back (the log check below counts one
				// "credential refreshed" per site); the fake may count more
				// when the machine is so busy that the proxy's own timeout
				// gave up on an answer already sent.
				if ok, _ := f.counts(); ok < 1 {
					t.Errorf("%d successful mints, want 1", ok)
				} else if ok > 1 {
					t.Logf("%d mints answered with a token; the proxy timed out on %d of them (machine busy)", ok, ok-1)
				}
			})
		}
	})

	// Only good tokens were ever forwarded, and the gateway took them all.
	for _, r := range gw.Requests() {
		assertForwarded(t, r, r.Credential, "oidc")
	}
	if len(gw.Requests()) < len(cases) {
		t.Errorf("the gateway got %d requests, want one per site at least", len(gw.Requests()))
	}

	p.stop()
	logs := p.Logs()
	refreshed, refreshFailed := caddyLogEntries(logs, "credential refreshed"), caddyLogEntries(logs, "credential refresh failed")
	// The fake counts a call the proxy gave up on once it sees the
	// connection close: allow it a moment.
	// Each site recovered with one refresh, and every mint call has its
	// log line: "refreshed", or "failed" (which is also what a call the
	// proxy timed out on says, even if the fake answered it late).
	if len(refreshed) != len(cases) {
		t.Errorf("%d \"credential refreshed\" log lines, want %d: one per site", len(refreshed), len(cases))
	}
	eventually(t, waitTimeout, "one log line per mint call", func() string {
		var ok, failed int
		for _, f := range mints {
			o, fl := f.counts()
			ok, failed = ok+o, failed+fl
		}
		if len(refreshed)+len(refreshFailed) != ok+failed || len(refreshed) > ok {
			return fmt.Sprintf("%d \"credential refreshed\" and %d \"credential refresh failed\" log lines for %d successful and %d failed mint calls",
				len(refreshed), len(refreshFailed), ok, failed)
		}
		return ""
	})
	secrets := secretsOf(v)
	for _, f := range mints {
		f.mu.Lock()
		secrets = append(secrets, f.tokens...)
		f.mu.Unlock()
	}
	for _, e := range append(refreshed, refreshFailed...) {
		if e["source"] != "vercel_oidc" || e["logger"] != "http.handlers.ai_gateway_auth.credentials.vercel_oidc" {
			t.Errorf("log line %v: want source vercel_oidc from the source's logger", e)
		}
	}
	for _, e := range refreshFailed {
		if msg, _ := e["error"].(string); msg == "" {
			t.Errorf("\"credential refresh failed\" without an error: %v", e)
		}
	}
	noCred := caddyLogEntries(logs, "no upstream credential")
	if len(noCred) != unavailable {
		t.Errorf("%d \"no upstream credential\" log lines, want one per 503 (%d)", len(noCred), unavailable)
	}
	for _, e := range noCred {
		if e["client"] != "placeholder" || e["level"] != "error" {
			t.Errorf("\"no upstream credential\" line %v: want level error and client placeholder", e)
		}
	}
	assertNoSecrets(t, "caddy's logs", logs, secrets...)
	assertNoSecrets(t, "responses", tc.Transcript(), secrets...)
}

// TestTokenFileFaults: the token file deleted, truncated, replaced by a
// directory or made unreadable: the proxy keeps the token it read last
// until that token's exp, never after, then answers 503 naming the file
// and the cause; a good file brings it back without a reload. Each read
// of a good file is one "token file re-read" log line, and each bad state
// a "token file has no usable token" line naming the file.
func TestTokenFileFaults(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	type fileCase struct {
		name           string
		cause          string // in the 503's message
		spoil, restore func(t *testing.T, path string)
	}
	cases := []fileCase{
		{"deleted", "no such file",
			func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}, nil},
		{"truncated", "no token in it",
			func(t *testing.T, path string) {
				// half-written: cut inside the JWT's payload
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(path, int64(strings.IndexByte(string(b), '.')+20)); err != nil {
					t.Fatal(err)
				}
			}, nil},
		{"replaced by a directory", "not a regular file",
			func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}},
		{"unreadable", "permission denied",
			func(t *testing.T, path string) {
				if os.Geteuid() == 0 {
					t.Skip("running as root, which reads a file whatever its mode: chmod 000 cannot make it unreadable " +
						"(the directory case covers a path that cannot be read as a file)")
				}
				if err := os.Chmod(path, 0); err != nil {
					t.Fatal(err)
				}
				// a chmod changes neither size nor mtime: touch it so the
				// watcher looks again
				later := time.Now().Add(time.Second)
				if err := os.Chtimes(path, later, later); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, path string) {
				if err := os.Chmod(path, 0o600); err != nil {
					t.Fatal(err)
				}
			}},
	}
	paths := make([]string, len(cases))
	var sites []string
	for i := range cases {
		dir := filepath.Join(t.TempDir(), "vercel")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		paths[i] = filepath.Join(dir, "oidc-token")
		// No token yet: the short-lived one is written once Caddy runs.
		if err := os.WriteFile(paths[i], []byte("# not pulled yet\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		sites = append(sites, fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			file %s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s {
		header_up X-Test-Site %d
	}`, paths[i], gw.URL(), i))
	}
	p := startCaddy(t, caddyOptions{}, sites...)
	tc := newTestClient(t)

	// fileLines are the log lines about path with message msg.
	fileLines := func(msg, path string) []map[string]any {
		var out []map[string]any
		for _, e := range caddyLogEntries(p.Logs(), msg) {
			if e["file"] == path {
				out = append(out, e)
			}
		}
		return out
	}

	t.Run("group", func(t *testing.T) {
		for i, c := range cases {
			base, path := p.URLs[i], paths[i]
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				// checked: a 200 only with a token sent before its exp; a
				// 503 only after minExp, the exp of the token the proxy
				// is sure to have read.
				checked := func(minExp time.Time) response {
					t.Helper()
					sent := time.Now()
					res := tc.chat(t, base, "sk-placeholder")
					switch res.Status {
					case http.StatusOK:
						if exp, _ := v.expOf(lastRequestOf(t, gw, i).Credential); !sent.Before(exp) {
							t.Fatalf("a request sent %s after the exp of its token was forwarded", sent.Sub(exp))
						}
					case http.StatusServiceUnavailable:
						if time.Now().Before(minExp) {
							t.Fatalf("503 %s before the token read last expired: %s", time.Until(minExp), res.Body)
						}
					case http.StatusUnauthorized:
						// The proxy sent the token before its exp (checked in
						// the 200 case), but on a loaded machine it reached
						// the gateway after exp plus the fake's 1 s leeway.
						// Only a token close to its exp may be refused so.
						exp, _ := v.expOf(lastRequestOf(t, gw, i).Credential)
						if d := sent.Sub(exp); d < -5*time.Second || d > 5*time.Second {
							t.Fatalf("401 for a token %s from its exp: %s", d, res.Body)
						}
						t.Logf("the gateway saw the token after its exp (machine busy); not a proxy error")
					default:
						t.Fatalf("status %d: %s", res.Status, res.Body)
					}
					return res
				}

				tokA := v.Token(10 * time.Second)
				expA, _ := v.expOf(tokA)
				writeFileAtomic(t, path, tokA+"\n")
				eventually(t, waitTimeout, "the token in the file is used", func() string {
					if res := checked(time.Time{}); res.Status != http.StatusOK || lastRequestOf(t, gw, i).Credential != tokA {
						return fmt.Sprintf("status %d, or the gateway got another token", res.Status)
					}
					return ""
				})

				bad := len(fileLines("token file has no usable token", path))
				c.spoil(t, path)
				eventually(t, waitTimeout, "the broken file is noticed", func() string {
					lines := fileLines("token file has no usable token", path)
					if len(lines) <= bad {
						return "no new \"token file has no usable token\" line"
					}
					if msg, _ := lines[len(lines)-1]["error"].(string); !strings.Contains(msg, c.cause) {
						return fmt.Sprintf("the last line says %q, want %q", msg, c.cause)
					}
					return ""
				})
				// The token read last is still good: kept.
				if sent := time.Now(); sent.Before(expA.Add(-3 * time.Second)) {
					res := checked(v.usableUntil(tokA))
					if res.Status != http.StatusOK || lastRequestOf(t, gw, i).Credential != tokA {
						t.Fatalf("with the file broken and its last token valid for another %s: status %d, want 200 with that token: %s",
							time.Until(expA).Round(time.Millisecond), res.Status, res.Body)
					}
				} else {
					t.Logf("the machine is slow: the token expired before the broken file was noticed; not checking that it is kept")
				}
				// After its exp: 503 naming the file and the cause. The
				// reason is the source's last refresh error: when the token
				// expired before a refresh read the broken file (a slow
				// machine), only a later 503 names the cause.
				var res response
				eventually(t, waitTimeout, "503 naming the cause once the last token has expired", func() string {
					if res = checked(v.usableUntil(tokA)); res.Status != http.StatusServiceUnavailable {
						return fmt.Sprintf("status %d", res.Status)
					}
					if !loggedNoCredential(p, c.cause) {
						return fmt.Sprintf("a 503, but no log line of one naming %q", c.cause)
					}
					return ""
				})
				checkUnavailable(t, p, res, path)
				checkUnavailable(t, p, res, c.cause)

				// A good file again.
				if c.restore != nil {
					c.restore(t, path)
				}
				tokB := v.Token(time.Hour)
				writeFileAtomic(t, path, "VERCEL_OIDC_TOKEN="+tokB+"\n")
				eventually(t, waitTimeout, "the restored file's token is used", func() string {
					if res := tc.chat(t, base, "sk-placeholder"); res.Status != http.StatusOK {
						return fmt.Sprintf("status %d: %s", res.Status, res.Body)
					}
					if lastRequestOf(t, gw, i).Credential != tokB {
						return "the gateway got another token"
					}
					return ""
				})
				assertForwarded(t, lastRequestOf(t, gw, i), tokB, "oidc")

				reread := fileLines("token file re-read", path)
				if len(reread) != 2 {
					t.Errorf("%d \"token file re-read\" log lines, want 2 (one per good token written)", len(reread))
				}
				for _, e := range reread {
					if _, ok := e["expires"].(float64); !ok || e["used"] != true {
						t.Errorf("\"token file re-read\" line %v: want expires and used true", e)
					}
				}
			})
		}
	})
	for _, r := range gw.Requests() {
		if r.Status == http.StatusOK {
			continue
		}
		if late, ok := arrivedJustAfterExp(v, r); ok {
			t.Logf("the gateway saw a token %s after its exp (machine busy); not a proxy error", late)
			continue
		}
		t.Errorf("the gateway refused a forwarded token: %s", r.Reject)
	}
	p.stop()
	assertNoSecrets(t, "caddy's logs", p.Logs(), secretsOf(v)...)
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}

// lastRequestOf is the gateway's most recent request from site i (sites
// set X-Test-Site).
func lastRequestOf(t testing.TB, g *fakeGateway, i int) gatewayRequest {
	t.Helper()
	reqs := g.Requests()
	for j := len(reqs) - 1; j >= 0; j-- {
		if reqs[j].Header.Get("X-Test-Site") == fmt.Sprint(i) {
			return reqs[j]
		}
	}
	t.Fatalf("the gateway received no request from site %d", i)
	return gatewayRequest{}
}

// cuttingUpstream is an upstream that drops the connection when a request
// asks it to (X-Test-Cut): before any response, in the middle of a JSON
// body, or in the middle of an SSE stream. Other requests get a normal
// answer: a JSON completion, or a full stream.
func cuttingUpstream(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		cut := r.Header.Get("X-Test-Cut")
		if cut == "" {
			if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, ev := range chatCompletionEvents("openai/gpt-5") {
					io.WriteString(w, ev)
					w.(http.Flusher).Flush()
				}
				return
			}
			writeJSON(w, http.StatusOK, chatCompletion("openai/gpt-5"))
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		switch cut {
		case "mid-stream":
			ev := chatCompletionEvents("openai/gpt-5")[1]
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(ev), ev)
		case "mid-body":
			io.WriteString(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"id\":\"chatcmpl-cut\",\"choices\":[")
		case "before-headers":
		}
		buf.Flush()
		// a reset rather than an orderly close, as a crashing upstream
		if tcp, ok := conn.(*net.TCPConn); ok {
			tcp.SetLinger(0)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestUpstreamCuts: the upstream drops connections before answering, in
// the middle of a body, or in the middle of an SSE stream, many at once:
// the client sees an error (502, or a truncated body or stream), Caddy
// neither panics nor races, and the next requests work, for a static key
// and for an OIDC token (whose requests go through the replay wrapper).
func TestUpstreamCuts(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	up := cuttingUpstream(t)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "VERCEL_OIDC_TOKEN": v.Token(time.Hour)}},
		staticSite(up.URL), fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, up.URL))
	tc := newTestClient(t)
	streamBody := `{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`

	// request sends one request and reports whether it completed: a 200
	// with the whole body (a stream ending in [DONE]).
	request := func(base, cut string, stream bool) (complete bool, desc string) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		body := chatBody
		if stream {
			body = streamBody
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-placeholder")
		req.Header.Set("Content-Type", "application/json")
		if stream {
			req.Header.Set("Accept", "text/event-stream")
		}
		if cut != "" {
			req.Header.Set("X-Test-Cut", cut)
		}
		resp, err := tc.HTTP.Do(req)
		if err != nil {
			return false, "error: " + err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return false, fmt.Sprintf("status %d: %s", resp.StatusCode, b)
		}
		if stream {
			sr := &sseReader{r: bufio.NewReader(resp.Body)}
			var events []string
			for {
				ev, err := sr.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return false, fmt.Sprintf("stream broke after %d events: %v", len(events), err)
				}
				events = append(events, ev)
			}
			if len(events) == 0 || events[len(events)-1] != "data: [DONE]\n" {
				return false, fmt.Sprintf("stream of %d events without [DONE]", len(events))
			}
			return true, ""
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, fmt.Sprintf("body broke after %d bytes: %v", len(b), err)
		}
		if !strings.Contains(string(b), answerText) {
			return false, "incomplete body: " + string(b)
		}
		return true, ""
	}

	for i, base := range p.URLs {
		t.Run([]string{"static", "vercel_oidc"}[i], func(t *testing.T) {
			for _, c := range []struct {
				cut    string
				stream bool
			}{{"before-headers", false}, {"before-headers", true}, {"mid-body", false}, {"mid-stream", true}} {
				if complete, desc := request(base, c.cut, c.stream); complete {
					t.Errorf("cut %s: the client got a complete answer", c.cut)
				} else {
					t.Logf("cut %s: %s", c.cut, desc)
				}
				// The proxy is healthy: the next requests work.
				for _, stream := range []bool{false, true} {
					if complete, desc := request(base, "", stream); !complete {
						t.Fatalf("after cut %s, a normal request (stream %v): %s", c.cut, stream, desc)
					}
				}
			}

			// Many at once, cuts mixed with normal requests.
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures []string
			for j := range 60 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cut := []string{"", "before-headers", "mid-body", "mid-stream"}[j%4]
					stream := cut == "mid-stream" || (cut == "" && j%8 == 0)
					complete, desc := request(base, cut, stream)
					if complete != (cut == "") {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("cut %q: complete %v: %s", cut, complete, desc))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			for _, stream := range []bool{false, true} {
				if complete, desc := request(base, "", stream); !complete {
					t.Fatalf("after the burst, a normal request (stream %v): %s", stream, desc)
				}
			}
		})
	}
}

// TestConcurrentRequestsAtExpiry: a thousand requests arrive at the very
// second the cached token expires, while the refresh that started ahead of
// it (refresh_before) is still waiting for the mint API. They all wait for
// that one refresh (one mint call, never one per request) and all succeed
// with the fresh token: no 5xx, and no request forwarded with the expired
// token.
func TestConcurrentRequestsAtExpiry(t *testing.T) {
	t.Parallel()
	const n = 1000
	v := newFakeVercel(t)
	v.SetTTL(6 * time.Second)
	gw := newFakeGateway(t, v)
	// A thousand connections to the fake gateway at once can outlast
	// Caddy's 3 s dial timeout on a loaded machine: that would be the
	// fake's limit, not the proxy's, so Caddy may wait and retry. The
	// mint is held on purpose: no mint timeout may end it.
	site := strings.Replace(mintOnlySite(v.URL(), gw.URL(), "timeout 5m", "refresh_before 2s", "credential_wait 50s"),
		"reverse_proxy "+gw.URL(), "reverse_proxy "+gw.URL()+` {
		lb_try_duration 30s
		transport http {
			dial_timeout 30s
		}
	}`, 1)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, site)
	tc := newTestClient(t)

	// One connection per request, opened first (on a loaded machine that
	// takes a while); each request is written on its connection once the
	// token has expired. Raw connections keep the test's goroutines few
	// (the race detector allows 8128).
	addr := strings.TrimPrefix(p.URL, "http://")
	barrier := make(chan struct{})
	results := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, waitTimeout)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-barrier
			res, err := rawExchange(c, http.MethodPost, "/v1/chat/completions",
				map[string]string{"Authorization": "Bearer sk-placeholder"}, chatBody)
			if err == nil && (res.Status != http.StatusOK || !strings.Contains(string(res.Body), answerText)) {
				err = fmt.Errorf("status %d: %s", res.Status, res.Body)
			}
			results <- err
		}()
	}
	defer func() {
		select {
		case <-barrier:
		default:
			close(barrier) // on a failure before the barrier: let them go
		}
	}()

	if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("first request: status %d: %s", res.Status, res.Body)
	}
	tok1 := lastRequest(t, gw).Credential
	exp1, _ := v.expOf(tok1)
	before := len(gw.Requests())
	// From now on the mint API holds every call, and mints long-lived
	// tokens once it answers.
	held, release := v.Hold()
	defer release()
	v.SetTTL(time.Hour)
	select {
	case <-held:
	case <-time.After(waitTimeout):
		t.Fatal("the proxy did not refresh the token ahead of its exp")
	}
	if now := time.Now(); !now.Before(exp1) {
		t.Logf("the machine is slow: the refresh reached the mint API %s after the token's exp", now.Sub(exp1))
	}

	time.Sleep(time.Until(exp1))
	close(barrier)
	// The mint API answers a moment later: by then every request has
	// found the token expired.
	time.Sleep(300 * time.Millisecond)
	release()
	wg.Wait()
	close(results)
	failures := map[string]int{}
	for err := range results {
		if err != nil {
			failures[err.Error()]++
		}
	}
	for msg, count := range failures {
		t.Errorf("%d of %d requests failed: %s", count, n, msg)
	}

	reqs := gw.Requests()[before:]
	if len(reqs) != n {
		t.Errorf("the gateway got %d requests, want %d", len(reqs), n)
	}
	for _, r := range reqs {
		if r.Credential == tok1 {
			t.Errorf("a request arriving at or after the token's exp was forwarded with it (gateway: %d %s)", r.Status, r.Reject)
			break
		}
		if r.Status != http.StatusOK {
			t.Errorf("the gateway refused a forwarded token: %s", r.Reject)
			break
		}
	}
	if m := v.Mints(); len(m) != 2 {
		t.Errorf("%d mint calls, want 2: the first token and one refresh for all %d requests", len(m), n)
	}
	if c := v.MaxConcurrentMints(); c != 1 {
		t.Errorf("%d mint calls at once, want 1", c)
	}
	p.stop()
	if got := len(caddyLogEntries(p.Logs(), "credential refreshed")); got != 2 {
		t.Errorf("%d \"credential refreshed\" log lines, want 2 (one per mint)", got)
	}
	if got := len(caddyLogEntries(p.Logs(), "credential refresh failed")); got != 0 {
		t.Errorf("%d \"credential refresh failed\" log lines, want none", got)
	}
	assertNoSecrets(t, "caddy's logs", p.Logs(), secretsOf(v)...)
}
