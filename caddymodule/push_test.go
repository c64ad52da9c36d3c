package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// Token push: POST <path> with {"token":"<jwt>"} or the raw JWT, verified
// against the issuer's JWKS, for the expected team and project.

const testPushPath = "/ai-gateway-auth/token"

var pushEnvSeq atomic.Int32

// testIssuer is the iss of the tokens testOIDCToken signs.
const testIssuer = "https://oidc.vercel.com/acme"

// pushHandler provisions a handler whose vercel_oidc source accepts
// pushes issued by testIssuer, verified with keys from jwks (jwks_url),
// and starts with initial (if not empty) from an env variable.
func pushHandler(t *testing.T, jwks *oidctest.JWKS, initial string, edit func(*VercelOIDCSource)) *Handler {
	t.Helper()
	env := fmt.Sprintf("AIGW_TEST_PUSH_OIDC_%d", pushEnvSeq.Add(1))
	t.Setenv(env, initial)
	src := VercelOIDCSource{
		Env:  env,
		Push: &PushConfig{Path: testPushPath, Issuer: testIssuer, JWKSURL: jwks.JWKSURL(), Team: oidctest.Team, Project: oidctest.Project},
	}
	if edit != nil {
		edit(&src)
	}
	return provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(src)},
		ClientKeys:     []string{"sk-placeholder"},
	})
}

func push(t *testing.T, h *Handler, method string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, testPushPath, body)
	r, _ = withReplacer(r)
	return serve(t, h, r, neverNext(t))
}

func pushJSON(t *testing.T, h *Handler, token string) *httptest.ResponseRecorder {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"token": token})
	return push(t, h, http.MethodPost, bytes.NewReader(b))
}

// upstreamToken sends a client request through h and returns the bearer
// the upstream got ("" when there was none).
func upstreamToken(t *testing.T, h *Handler) string {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, _ = withReplacer(r)
	var next recordingNext
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next.handler()); err != nil {
		t.Fatal(err)
	}
	if calls := next.calls(); len(calls) == 1 {
		return strings.TrimPrefix(calls[0].header.Get("Authorization"), "Bearer ")
	}
	return ""
}

// A valid push is accepted (204) and used for the next requests, as JSON
// or as the raw JWT, with no client key.
func TestPushAccepted(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, "", nil)
	logs := observeLogs(h)
	if tok := upstreamToken(t, h); tok != "" {
		t.Fatalf("a token before any push: %.20s…", tok)
	}

	t1 := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	w := pushJSON(t, h, t1)
	if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("push: status %d: %s", w.Code, w.Body)
	}
	if w.Header().Get("Ai-Gateway-Auth-Token-Used") != "true" {
		t.Errorf("Ai-Gateway-Auth-Token-Used %q", w.Header().Get("Ai-Gateway-Auth-Token-Used"))
	}
	if got := upstreamToken(t, h); got != t1 {
		t.Errorf("upstream did not get the pushed token")
	}

	t2 := oidctest.OIDCToken(t, time.Now().Add(2*time.Hour))
	if w := push(t, h, http.MethodPost, strings.NewReader("\n"+t2+"\n")); w.Code != http.StatusNoContent {
		t.Fatalf("raw push: status %d: %s", w.Code, w.Body)
	}
	if got := upstreamToken(t, h); got != t2 {
		t.Errorf("upstream did not get the later pushed token")
	}
	if n := jwks.Fetches(); n != 1 {
		t.Errorf("JWKS fetched %d times for two pushes, want 1", n)
	}
	assertLogsClean(t, logs, t1, t2, strings.Split(t1, ".")[2])
	if logs.FilterMessage("token pushed").Len() != 2 {
		t.Error("pushes not logged")
	}
}

// A valid token that expires no later than the current one is verified
// (204) but not used.
func TestPushOlderTokenNotUsed(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	// one base time: a later time.Now() could be a second later, and a
	// token expiring a second after the current one is not older
	base := time.Now()
	current := oidctest.OIDCToken(t, base.Add(2*time.Hour))
	h := pushHandler(t, jwks, current, nil)
	used := pushesTotal.WithLabelValues("used")
	older := pushesTotal.WithLabelValues("older")
	u0, o0 := counterValue(used), counterValue(older)
	for _, exp := range []time.Duration{time.Hour, 2 * time.Hour} {
		w := pushJSON(t, h, oidctest.OIDCToken(t, base.Add(exp)))
		if w.Code != http.StatusNoContent || w.Header().Get("Ai-Gateway-Auth-Token-Used") != "false" {
			t.Errorf("older push: status %d, used %q", w.Code, w.Header().Get("Ai-Gateway-Auth-Token-Used"))
		}
	}
	if got := upstreamToken(t, h); got != current {
		t.Error("an older pushed token replaced the current one")
	}
	if counterValue(used) != u0 || counterValue(older)-o0 != 2 {
		t.Errorf("token_pushes_total: used +%v, older +%v; want +0, +2", counterValue(used)-u0, counterValue(older)-o0)
	}
}

// Every bad push is refused with its status and a JSON reason, and
// nothing changes: the upstream still gets the token from before.
func TestPushRefused(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	current := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	h := pushHandler(t, jwks, current, nil)
	logs := observeLogs(h)
	later := time.Now().Add(3 * time.Hour)
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := oidctest.OIDCClaims(later)
		edit(c)
		return c
	}
	tok := func(edit func(jwt.MapClaims)) string { return oidctest.Sign(t, claims(edit)) }
	asJSON := func(v string) string { return `{"token":"` + v + `"}` }

	type refusal struct {
		body   io.Reader
		status int
		code   string
		public string // in the response's message
		want   string // in the log line's reason
	}
	const (
		unverified = "the token could not be verified"
		otherOne   = "the token is not for this proxy's team and project"
	)
	cases := map[string]refusal{
		"signed by another key": {strings.NewReader(asJSON(oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), oidctest.Kid, oidctest.OIDCClaims(later)))),
			401, "invalid_token", unverified, "signature is invalid"},
		"unknown kid": {strings.NewReader(asJSON(oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), "kid-x", oidctest.OIDCClaims(later)))),
			401, "invalid_token", unverified, `no key "kid-x" in JWKS ` + jwks.JWKSURL()},
		// an empty signature part is not even a JWT's shape
		"alg none": {strings.NewReader(asJSON(oidctest.Unsigned(oidctest.OIDCClaims(later)))), 400, "invalid_request", "no JWT", "no JWT"},
		"alg none with a signature": {strings.NewReader(asJSON(oidctest.Unsigned(oidctest.OIDCClaims(later)) + "c2ln")),
			401, "invalid_token", unverified, "signature is invalid"},
		"expired": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() }))),
			401, "invalid_token", "the token has expired", "token has expired"},
		"expired within the leeway": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }))),
			401, "invalid_token", "the token has expired", "expired at"},
		"future nbf": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Minute).Unix() }))),
			401, "invalid_token", "the token is not valid yet", "not valid yet"},
		"untrusted issuer": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/acme" }))),
			401, "invalid_token", unverified, `issuer "https://evil.example/acme" is not a trusted issuer (` + testIssuer + ")"},
		"other project": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["project_id"] = "prj_other" }))),
			422, "unexpected_token", otherOne, `project "prj_other", not "` + oidctest.Team + `" "` + oidctest.Project + `"`},
		"other team": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["owner_id"] = "team_other" }))),
			422, "unexpected_token", otherOne, `owner "team_other"`},
		"long claims": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { c["owner_id"] = strings.Repeat("o", 5000) }))),
			422, "unexpected_token", otherOne, "(5000 bytes)"},
		"no project": {strings.NewReader(asJSON(tok(func(c jwt.MapClaims) { delete(c, "project_id") }))),
			422, "unexpected_token", otherOne, `project "", not`},
		"garbage":          {strings.NewReader("hello, world"), 400, "invalid_request", "no JWT", "no JWT"},
		"garbage JSON":     {strings.NewReader(`{"token":`), 400, "invalid_request", "not valid JSON", "not valid JSON"},
		"JSON without JWT": {strings.NewReader(`{"token":"abc"}`), 400, "invalid_request", "no JWT", "no JWT"},
		"JSON, other key":  {strings.NewReader(`{"jwt":"` + current + `"}`), 400, "invalid_request", "no JWT", "no JWT"},
		"empty body":       {strings.NewReader(""), 400, "invalid_request", "empty body", "empty body"},
		"blank body":       {strings.NewReader(" \n "), 400, "invalid_request", "empty body", "empty body"},
		"10 MiB body":      {bytes.NewReader(bytes.Repeat([]byte("a"), 10<<20)), 413, "payload_too_large", "larger than 64 KiB", "larger than"},
		"10 MiB chunked":   {unknownLength{bytes.NewReader(bytes.Repeat([]byte("a"), 10<<20))}, 413, "payload_too_large", "larger than 64 KiB", "larger than"},
	}
	// what a pusher must never be told: the configuration, or what it
	// sent, at length
	configured := []string{oidctest.Team, oidctest.Project, testIssuer, "acme", jwks.URL, strings.TrimPrefix(jwks.URL, "http://"),
		"/.well-known/jwks", "prj_other", "team_other", "kid-x", "evil", "ooooooooo"}
	refusedCounter := pushesTotal.WithLabelValues("refused")
	refused0 := counterValue(refusedCounter)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := push(t, h, http.MethodPost, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			msg := assertErrorShape(t, w.Body.Bytes(), false, "invalid_request_error", tc.code)
			if !strings.HasPrefix(msg, "token push refused: ") || !strings.Contains(msg, tc.public) {
				t.Errorf("message %q does not contain %q", msg, tc.public)
			}
			assertNotContains(t, "error body", w.Body.String(), configured...)
			reason := lastLogReason(t, logs, "token push refused")
			if !strings.Contains(reason, tc.want) {
				t.Errorf("log reason %q does not contain %q", reason, tc.want)
			}
			if len(reason) > 400 {
				t.Errorf("log reason is %d bytes: a client value is not cut short", len(reason))
			}
			if got := upstreamToken(t, h); got != current {
				t.Error("a refused push changed the token sent upstream")
			}
		})
	}
	if d := counterValue(refusedCounter) - refused0; d != float64(len(cases)) {
		t.Errorf("token_pushes_total{result=\"refused\"} grew by %v for %d refused pushes", d, len(cases))
	}
	assertLogsClean(t, logs, current, strings.Split(current, ".")[2])
}

// Concurrent pushes leave the token that expires last.
func TestPushConcurrentLatestWins(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, "", nil)
	const n = 30
	tokens := make([]string, n)
	base := time.Now().Add(time.Hour)
	for i := range tokens {
		tokens[i] = oidctest.OIDCToken(t, base.Add(time.Duration(i)*time.Minute))
	}
	order := rand.Perm(n)
	var wg sync.WaitGroup
	for _, i := range order {
		wg.Go(func() {
			b, _ := json.Marshal(map[string]string{"token": tokens[i]})
			r := httptest.NewRequest(http.MethodPost, testPushPath, bytes.NewReader(b))
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, neverNext(t)); err != nil || w.Code != http.StatusNoContent {
				t.Errorf("push %d: %v, status %d", i, err, w.Code)
			}
		})
	}
	wg.Wait()
	if got := upstreamToken(t, h); got != tokens[n-1] {
		t.Error("after concurrent pushes the token is not the one that expires last")
	}
}

// Only POST: other methods get 405 with Allow: POST, and never reach the
// upstream.
func TestPushMethodNotAllowed(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, "", nil)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
		w := push(t, h, m, nil)
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != http.MethodPost {
			t.Errorf("%s: status %d, Allow %q", m, w.Code, w.Header().Get("Allow"))
		}
	}
}

// The expected team and project default to the mint block's, then to
// those of the token the source has; with neither, pushes are refused.
func TestPushExpectationDefaults(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	other := func(c jwt.MapClaims) { c["project_id"] = "prj_other"; c["owner_id"] = "team_other" }
	later := time.Now().Add(2 * time.Hour)

	// from mint (never called: the env token is fresh)
	h := pushHandler(t, jwks, oidctest.OIDCToken(t, time.Now().Add(time.Hour)), func(s *VercelOIDCSource) {
		s.Push.Team, s.Push.Project = "", ""
		s.Mint = &MintConfig{Project: "prj_other", Team: "team_other", AccessToken: "x", API: "http://127.0.0.1:1"}
	})
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later)); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("mint's project: push for another project: status %d", w.Code)
	}
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later, other)); w.Code != http.StatusNoContent {
		t.Errorf("mint's project: matching push: status %d: %s", w.Code, w.Body)
	}

	// a mint block naming its project and team by name/slug (allowed
	// there) gives nothing to compare the token's ids with: the current
	// token's ids are used
	h = pushHandler(t, jwks, oidctest.OIDCToken(t, time.Now().Add(time.Hour)), func(s *VercelOIDCSource) {
		s.Push.Team, s.Push.Project = "", ""
		s.Mint = &MintConfig{Project: "my-app", Team: "acme", AccessToken: "x", API: "http://127.0.0.1:1"}
	})
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later)); w.Code != http.StatusNoContent {
		t.Errorf("mint by slug: matching push: status %d: %s", w.Code, w.Body)
	}
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later.Add(time.Hour), other)); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("mint by slug: push for another project: status %d", w.Code)
	}

	// from the current token
	h = pushHandler(t, jwks, oidctest.OIDCToken(t, time.Now().Add(time.Hour)), func(s *VercelOIDCSource) {
		s.Push.Team, s.Push.Project = "", ""
	})
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later, other)); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("current token's project: push for another: status %d", w.Code)
	}
	if w := pushJSON(t, h, oidctest.OIDCToken(t, later)); w.Code != http.StatusNoContent {
		t.Errorf("current token's project: matching push: status %d: %s", w.Code, w.Body)
	}

	// nothing to compare with: the log says what to set, the client
	// only that its token cannot be checked
	h = pushHandler(t, jwks, "", func(s *VercelOIDCSource) { s.Push.Team, s.Push.Project = "", "" })
	logs := observeLogs(h)
	w := pushJSON(t, h, oidctest.OIDCToken(t, later))
	if w.Code != http.StatusUnprocessableEntity || strings.Contains(w.Body.String(), "set push") {
		t.Errorf("no expectation: status %d: %s", w.Code, w.Body)
	}
	if reason := lastLogReason(t, logs, "token push refused"); !strings.Contains(reason, "set push { team") {
		t.Errorf("no expectation: log reason %q", reason)
	}
	if got := upstreamToken(t, h); got != "" {
		t.Error("an unchecked push was used")
	}
}

// A configured issuer is the only one accepted, its keys at
// <iss>/.well-known/jwks by default (a loopback issuer in this test).
func TestPushConfiguredIssuer(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, "", func(s *VercelOIDCSource) { s.Push.Issuer, s.Push.JWKSURL = jwks.URL, "" })
	own := func(c jwt.MapClaims) { c["iss"] = jwks.URL }
	if w := pushJSON(t, h, oidctest.OIDCToken(t, time.Now().Add(time.Hour), own)); w.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	// the default issuer is not accepted when another is configured
	if w := pushJSON(t, h, oidctest.OIDCToken(t, time.Now().Add(2*time.Hour))); w.Code != http.StatusUnauthorized {
		t.Errorf("token of another issuer: status %d", w.Code)
	}
}

// Only the exact push path takes pushes (TestPushAccepted shows it needs
// no client key and is outside allow_paths): a path under it, or the
// push path with a client key on another handler, is an ordinary
// request.
func TestPushPathRouting(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, oidctest.OIDCToken(t, time.Now().Add(time.Hour)), nil)
	tok := oidctest.OIDCToken(t, time.Now().Add(2*time.Hour))
	r := httptest.NewRequest(http.MethodPost, testPushPath+"/x", strings.NewReader(tok))
	r, _ = withReplacer(r)
	if w := serve(t, h, r, neverNext(t)); w.Code != http.StatusUnauthorized {
		t.Errorf("a path under the push path: status %d, want the client check's 401", w.Code)
	}
	// with a client key it is a request like any other: outside allow_paths
	r = httptest.NewRequest(http.MethodPost, testPushPath+"/x", strings.NewReader(tok))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, _ = withReplacer(r)
	if w := serve(t, h, r, neverNext(t)); w.Code != http.StatusForbidden {
		t.Errorf("a path under the push path, with a client key: status %d, want 403", w.Code)
	}
	// a handler without push forwards the push path like any other path
	other := staticHandler(t)
	r = httptest.NewRequest(http.MethodPost, testPushPath, strings.NewReader(tok))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, _ = withReplacer(r)
	if w := serve(t, other, r, neverNext(t)); w.Code != http.StatusForbidden {
		t.Errorf("push path on a handler without push: status %d, want 403", w.Code)
	}
	if got := upstreamToken(t, h); got == tok {
		t.Error("a token sent to the wrong path was used")
	}
}

func TestPushConfigErrors(t *testing.T) {
	for name, paths := range map[string][2]string{
		"relative path": {"ai-gateway-auth/token", ""},
		"same path":     {testPushPath, testPushPath},
	} {
		var raws []json.RawMessage
		for i, p := range paths {
			if p == "" {
				continue
			}
			raws = append(raws, oidcSourceJSON(VercelOIDCSource{Env: fmt.Sprintf("AIGW_TEST_PUSH_CFG_%d", i), Push: &PushConfig{Path: p}}))
		}
		err := tryProvisionHandler(t, &Handler{CredentialsRaw: raws, ClientKeys: []string{"sk-placeholder"}})
		if err == nil || !strings.Contains(err.Error(), "push path") {
			t.Errorf("%s: Provision() = %v", name, err)
		}
	}
}

// Placeholders in push are resolved at provision.
func TestPushConfigPlaceholders(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	t.Setenv("AIGW_TEST_PUSH_TEAM", oidctest.Team)
	t.Setenv("AIGW_TEST_PUSH_PROJECT", oidctest.Project)
	t.Setenv("AIGW_TEST_PUSH_JWKS", jwks.JWKSURL())
	h := pushHandler(t, jwks, "", func(s *VercelOIDCSource) {
		s.Push.Team, s.Push.Project, s.Push.JWKSURL = "{env.AIGW_TEST_PUSH_TEAM}", "{env.AIGW_TEST_PUSH_PROJECT}", "{env.AIGW_TEST_PUSH_JWKS}"
	})
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	if w := pushJSON(t, h, tok); w.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if w := pushJSON(t, h, oidctest.OIDCToken(t, time.Now().Add(2*time.Hour), func(c jwt.MapClaims) { c["project_id"] = "prj_other" })); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("other project: status %d", w.Code)
	}
}

// A source with only push does not read VERCEL_OIDC_TOKEN: until the
// first push, requests get a 503 (the log says why); then the pushed
// token is used.
func TestPushOnlySource(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	t.Setenv("VERCEL_OIDC_TOKEN", oidctest.OIDCToken(t, time.Now().Add(3*time.Hour)))
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{
			Push: &PushConfig{Path: testPushPath, Issuer: testIssuer, JWKSURL: jwks.JWKSURL(), Team: oidctest.Team, Project: oidctest.Project},
		})},
		ClientKeys:     []string{"sk-placeholder"},
		CredentialWait: caddyDuration(time.Minute),
	})
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer sk-placeholder")
	r, _ = withReplacer(r)
	logs := observeLogs(h)
	w := serve(t, h, r, neverNext(t))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("before a push: status %d: %s", w.Code, w.Body)
	}
	if l := logs.FilterMessage("no upstream credential").All(); len(l) != 1 || !strings.Contains(fmt.Sprint(l[0].ContextMap()), "only accepts pushed tokens") {
		t.Errorf("before a push: log %v, want the reason", l)
	}
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	if w := pushJSON(t, h, tok); w.Code != http.StatusNoContent {
		t.Fatalf("push: status %d: %s", w.Code, w.Body)
	}
	if got := upstreamToken(t, h); got != tok {
		t.Error("the pushed token is not used")
	}
}

// Without an explicit issuer, a push is accepted only from the issuers
// the configuration implies (the global issuer, the push and mint teams,
// the current token's issuer), and an untrusted one is refused before
// any fetch. The policy is checked directly: the keys of an implied
// issuer are at <iss>/.well-known/jwks on oidc.vercel.com, which a test
// does not reach.
func TestPushDefaultIssuers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		initial  bool // an env token issued by testIssuer
		edit     func(*VercelOIDCSource)
		accepted []string
		refused  []string
	}{
		{"push team only", false, nil,
			[]string{"https://oidc.vercel.com", "https://oidc.vercel.com/" + oidctest.Team},
			[]string{testIssuer, "https://oidc.vercel.com/team_other", "https://oidc.vercel.com/" + oidctest.Team + "/x", "https://oidc.vercel.com/" + strings.Repeat("x", 3000)}},
		{"mint team slug", false, func(s *VercelOIDCSource) {
			s.Mint = &MintConfig{Project: oidctest.Project, Team: "acme", AccessToken: "x", API: "http://127.0.0.1:1"}
		}, []string{testIssuer, "https://oidc.vercel.com"}, []string{"https://oidc.vercel.com/other"}},
		{"mint team id", false, func(s *VercelOIDCSource) {
			s.Push.Team = ""
			s.Mint = &MintConfig{Project: oidctest.Project, Team: oidctest.Team, AccessToken: "x", API: "http://127.0.0.1:1"}
		}, []string{"https://oidc.vercel.com/" + oidctest.Team}, []string{testIssuer}},
		{"the current token's issuer", true, nil,
			[]string{testIssuer, "https://oidc.vercel.com"}, []string{"https://oidc.vercel.com/other"}},
		{"explicit issuer", true, func(s *VercelOIDCSource) { s.Push.Issuer = "https://oidc.vercel.com/" + oidctest.Team },
			[]string{"https://oidc.vercel.com/" + oidctest.Team}, []string{"https://oidc.vercel.com", testIssuer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jwks := oidctest.NewJWKS(t)
			initial := ""
			if tc.initial {
				initial = oidctest.OIDCToken(t, time.Now().Add(time.Hour))
			}
			h := pushHandler(t, jwks, initial, func(s *VercelOIDCSource) {
				s.Push.Issuer, s.Push.JWKSURL = "", ""
				if tc.edit != nil {
					tc.edit(s)
				}
			})
			exp := time.Now().Add(2 * time.Hour)
			for _, iss := range tc.refused {
				exp = exp.Add(time.Minute)
				w := pushJSON(t, h, oidctest.OIDCToken(t, exp, func(c jwt.MapClaims) { c["iss"] = iss }))
				if w.Code != http.StatusUnauthorized {
					t.Errorf("issuer %.60s: status %d, want 401", iss, w.Code)
				}
			}
			if n := jwks.Fetches(); n != 0 {
				t.Errorf("%d JWKS fetches for untrusted issuers", n)
			}
			// the fake counts only its own URL: the refusal must come from
			// the policy, before any fetch from anywhere
			policy := h.pushes[testPushPath].policy
			for _, iss := range tc.refused {
				if u, err := policy.Check(iss); err == nil {
					t.Errorf("issuer %.60s trusted (keys at %s), want it refused before any fetch", iss, u)
				}
			}
			for _, iss := range tc.accepted {
				if got, err := policy.Check(iss); err != nil || got != strings.TrimRight(iss, "/")+"/.well-known/jwks" {
					t.Errorf("issuer %s: JWKS %q, %v; want it trusted, keys at <iss>/.well-known/jwks", iss, got, err)
				}
			}
		})
	}
}

// With jwks_url set (and no issuer), the documented default holds: a push
// from https://oidc.vercel.com or any one-segment path under it (a team
// slug, say) is accepted, since the keys come from the configured URL
// whatever the iss: a client-chosen path causes no fetch of its own and
// leaves nothing behind. Other hosts, deeper or odd paths are refused, and
// the token must still be for the team and project.
func TestPushDefaultIssuersPinnedJWKS(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	h := pushHandler(t, jwks, "", func(s *VercelOIDCSource) { s.Push.Issuer = "" })
	exp := time.Now().Add(2 * time.Hour)
	for _, iss := range []string{"https://oidc.vercel.com", "https://oidc.vercel.com/acme", "https://oidc.vercel.com/" + oidctest.Team, testIssuer} {
		exp = exp.Add(time.Minute)
		if w := pushJSON(t, h, oidctest.OIDCToken(t, exp, func(c jwt.MapClaims) { c["iss"] = iss })); w.Code != http.StatusNoContent {
			t.Errorf("issuer %s: status %d, want 204: %s", iss, w.Code, w.Body)
		}
	}
	for _, iss := range []string{"https://evil.example/acme", "http://oidc.vercel.com/acme", "https://oidc.vercel.com/acme/x",
		"https://oidc.vercel.com/" + strings.Repeat("x", 3000)} {
		exp = exp.Add(time.Minute)
		if w := pushJSON(t, h, oidctest.OIDCToken(t, exp, func(c jwt.MapClaims) { c["iss"] = iss })); w.Code != http.StatusUnauthorized {
			t.Errorf("issuer %.60s: status %d, want 401", iss, w.Code)
		}
	}
	exp = exp.Add(time.Minute)
	other := oidctest.OIDCToken(t, exp, func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/acme"; c["project_id"] = "prj_other" })
	if w := pushJSON(t, h, other); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("a token for another project: status %d, want 422", w.Code)
	}
	// 1,000 fresh issuer paths: the keys come from the one configured URL
	before := jwks.Fetches()
	for i := range 1000 {
		iss := fmt.Sprintf("https://oidc.vercel.com/p%d", i)
		pushJSON(t, h, oidctest.OIDCToken(t, exp, func(c jwt.MapClaims) { c["iss"] = iss }))
	}
	if n := jwks.Fetches() - before; n > 1 {
		t.Errorf("%d JWKS fetches for 1,000 issuer paths, want at most 1", n)
	}
}

// Push-only sources for different projects (or different issuers) keep
// separate tokens: a token pushed for one project is never sent upstream
// by the other's handler. Sources with the same settings still share one
// (a reload keeps the token).
func TestPushStateIsolated(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	pushOnly := func(path, project, issuer string) *Handler {
		return provisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{
				Push: &PushConfig{Path: path, Issuer: issuer, JWKSURL: jwks.JWKSURL(), Team: oidctest.Team, Project: project},
			})},
			ClientKeys:     []string{"sk-placeholder"},
			CredentialWait: caddyDuration(time.Millisecond),
		})
	}
	a := pushOnly(testPushPath, oidctest.Project, testIssuer)
	b := pushOnly(testPushPath, "prj_other", testIssuer)
	otherIssuer := pushOnly(testPushPath, oidctest.Project, "https://oidc.vercel.com/"+oidctest.Team)
	sameAsA := pushOnly("/another/path", oidctest.Project, testIssuer)

	tokA := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	if w := pushJSON(t, a, tokA); w.Code != http.StatusNoContent {
		t.Fatalf("push to a: status %d: %s", w.Code, w.Body)
	}
	if got := upstreamToken(t, a); got != tokA {
		t.Fatal("a does not send the token pushed to it")
	}
	if got := upstreamToken(t, b); got != "" {
		t.Error("the handler for another project sends the token pushed for a")
	}
	if got := upstreamToken(t, otherIssuer); got != "" {
		t.Error("the handler trusting another issuer sends the token pushed for a")
	}
	if got := upstreamToken(t, sameAsA); got != tokA {
		t.Error("a handler with a's settings (but another push path) does not share a's token")
	}
	if w := pushJSON(t, b, tokA); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("a's token pushed to b: status %d, want 422", w.Code)
	}
	tokB := oidctest.OIDCToken(t, time.Now().Add(2*time.Hour), func(c jwt.MapClaims) { c["project_id"] = "prj_other" })
	if w := pushJSON(t, b, tokB); w.Code != http.StatusNoContent {
		t.Fatalf("push to b: status %d: %s", w.Code, w.Body)
	}
	if got := upstreamToken(t, b); got != tokB {
		t.Error("b does not send the token pushed to it")
	}
	if got := upstreamToken(t, a); got != tokA {
		t.Error("a's token changed after a push to b")
	}
}
