package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Attacker-shaped inputs for token verification: keyless requests with
// ever-new issuers and kids must cost no outbound fetch and no memory,
// refusals must not reveal the configuration, and push-only sources for
// different projects must never share a token.

// countingProxy is an HTTPS proxy on 127.0.0.1 that refuses every
// CONNECT and records its target. Caddy, started with HTTPS_PROXY
// pointing at it, sends it every outbound https request (a JWKS fetch
// from oidc.vercel.com): nothing leaves the machine, and every fetch the
// proxy attempts is counted.
type countingProxy struct {
	*httptest.Server
	mu      sync.Mutex
	targets []string
}

func newCountingProxy(t testing.TB) *countingProxy {
	cp := &countingProxy{}
	cp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		cp.targets = append(cp.targets, r.Method+" "+r.Host)
		cp.mu.Unlock()
		http.Error(w, "no outbound requests in tests", http.StatusForbidden)
	}))
	t.Cleanup(cp.Close)
	return cp
}

// Targets are the requests the proxy was asked to make so far.
func (cp *countingProxy) Targets() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.targets...)
}

// unsignedToken is a JWT with the given header and claims and 256 random
// bytes for a signature: what an attacker without a key sends.
func unsignedToken(header, claims map[string]any) string {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sig := make([]byte, 256)
	rand.Read(sig)
	return enc(header) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// heapInuse is Caddy's HeapInuse right after a garbage collection, from
// the admin endpoint's heap profile.
func heapInuse(t testing.TB, p *caddyProc) uint64 {
	t.Helper()
	var n uint64
	for range 2 { // the second collection also frees what the first one's finalizers released
		res, err := newTestClient(t).try(http.MethodGet, p.Admin+"/debug/pprof/heap?gc=1&debug=1", nil, "")
		if err != nil || res.Status != http.StatusOK {
			t.Fatalf("GET /debug/pprof/heap: %v %d", err, res.Status)
		}
		found := false
		sc := bufio.NewScanner(bytes.NewReader(res.Body))
		sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
				if n, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64); err != nil {
					t.Fatal(err)
				}
				found = true
			}
		}
		if !found {
			t.Fatal("no HeapInuse in the heap profile")
		}
	}
	return n
}

// TestHostileSandboxIssuers: 2,000 keyless sandbox requests, each a token
// naming a fresh 6 KiB issuer path on oidc.vercel.com and a random kid,
// to a real Caddy with a vercel_sandbox block on its default issuer
// policy (keys from oidc.vercel.com, through a counting proxy): every one
// is refused with a short generic 403, none makes Caddy fetch anything,
// and Caddy's heap does not grow with them (the old policy fetched and
// kept about 13 KiB per request). Made-up kids at the one trusted issuer
// cost at most one fetch per refetch floor (30 s).
func TestHostileSandboxIssuers(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	proxy := newCountingProxy(t)
	p := startCaddy(t, caddyOptions{Env: map[string]string{
		"AI_GATEWAY_API_KEY": apiKey,
		"HTTPS_PROXY":        proxy.URL,
	}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		vercel_sandbox {
			audience %s
			team     %s
		}
	}
	reverse_proxy %s`, sandboxAudience, v.TeamID, gw.URL()))

	claims := func(iss string) map[string]any {
		c := sandboxClaims(v, "agent-hostile")
		c["iss"] = iss
		return c
	}
	var (
		mu       sync.Mutex
		failures []string
	)
	// send sends n tokens made by token(i) from 4 clients at once.
	send := func(n int, token func(i int) (tok, echo string)) {
		tc := newTestClient(t)
		var wg sync.WaitGroup
		next := make(chan int)
		for range 4 {
			wg.Go(func() {
				for i := range next {
					tok, echo := token(i)
					res, err := tc.try(http.MethodPost, p.URL+"/forward/v1/chat/completions", forwardedHeaders(tok, "/v1/chat/completions"), chatBody)
					var fail string
					switch {
					case err != nil:
						fail = err.Error()
					case res.Status != http.StatusForbidden || res.Header.Get("X-Ai-Gateway-Auth-Error") != "sandbox_rejected":
						fail = fmt.Sprintf("status %d: %.200s", res.Status, res.Body)
					case len(res.Body) > 512 || bytes.Contains(res.Body, []byte(echo)):
						fail = fmt.Sprintf("a %d-byte body echoing what the client sent: %.200s", len(res.Body), res.Body)
					}
					if fail != "" {
						mu.Lock()
						failures = append(failures, fail)
						mu.Unlock()
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	freshIssuer := func(i int) (string, string) {
		path := fmt.Sprintf("%06d-%s", i, strings.Repeat(randomString(64), 96)) // 6 KiB, new every time
		kid := "kid-" + randomString(32)
		return unsignedToken(map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid},
			claims("https://oidc.vercel.com/"+path)), path[:64]
	}

	send(100, freshIssuer) // warm up whatever is allocated once
	before := heapInuse(t, p)
	const n = 2000
	send(n, freshIssuer)
	after := heapInuse(t, p)
	if targets := proxy.Targets(); len(targets) != 0 {
		t.Errorf("%d outbound requests for %d tokens with issuers the config does not name, want none: %.5q",
			len(targets), n+100, targets)
	}
	// A linear growth of 13 KiB per request would be 26 MiB; the bound
	// leaves room for the runtime's own noise.
	const bound = 8 << 20
	if after > before && after-before > bound {
		t.Errorf("Caddy's heap in use grew by %d KiB over %d hostile requests (%d -> %d), bound %d KiB",
			(after-before)>>10, n, before, after, bound>>10)
	}
	t.Logf("heap in use: %d KiB before, %d KiB after %d requests with fresh issuers", before>>10, after>>10, n)

	// The trusted issuer, https://oidc.vercel.com/<team id>, with made-up
	// kids: its JWKS is fetched (and fails here: the proxy refuses), then
	// not again within the floor, however many kids arrive.
	start := time.Now()
	send(300, func(int) (string, string) {
		kid := "kid-" + randomString(40)
		return unsignedToken(map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid},
			claims("https://oidc.vercel.com/"+v.TeamID)), kid
	})
	floors := int(time.Since(start)/(30*time.Second)) + 1 // floors begun while they were sent
	targets := proxy.Targets()
	if len(targets) == 0 || len(targets) > floors {
		t.Errorf("%d outbound requests for 300 made-up kids at the trusted issuer, want 1 to %d (one per refetch floor)", len(targets), floors)
	}
	for _, tg := range targets {
		if tg != "CONNECT oidc.vercel.com:443" {
			t.Errorf("an outbound request to %q, want only oidc.vercel.com", tg)
		}
	}

	for i, f := range failures {
		if i == 5 {
			t.Errorf("… and %d more", len(failures)-5)
			break
		}
		t.Error(f)
	}
	if n := len(gw.Requests()); n != 0 {
		t.Errorf("the gateway got %d requests, want none", n)
	}
	p.stop()
	for _, e := range caddyLogEntries(p.Logs(), "request forbidden") {
		if r, _ := e["reason"].(string); len(r) > 400 {
			t.Errorf("a %d-byte \"request forbidden\" reason: what the client sent is not cut short: %.200s", len(r), r)
			break
		}
	}
}

// TestRefusalsNameNoConfig: every way a sandbox request (403
// sandbox_rejected, path_not_allowed) or a push (400, 401, 405, 413, 422)
// can be refused is answered with a stable code and a generic message
// that names nothing of the configuration (team, project, issuer, JWKS
// URL, forward URL, paths, addresses) and does not echo the client's
// values; the log line gives the whole reason.
func TestRefusalsNameNoConfig(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, v, apiKey)
	jwksURL := v.URL() + "/" + v.TeamSlug + "/.well-known/jwks"
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}},
		fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		vercel_sandbox {
			audience %s
			team     %s
			project  %s
			jwks_url %s
		}
	}
	reverse_proxy %s`, sandboxAudience, v.TeamID, v.ProjectID, jwksURL, gw.URL()),
		fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			push /ai-gateway-auth/token {
				issuer   %s
				jwks_url %s
				team     %s
				project  %s
			}
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, v.Issuer(), jwksURL, v.TeamID, v.ProjectID, gw.URL()))
	sandboxSite, pushSite := p.URLs[0], p.URLs[1]
	host := strings.TrimPrefix(v.URL(), "http://")
	configStrings := []string{v.TeamID, v.TeamSlug, v.ProjectID, v.Issuer(), "oidc.vercel.com", v.URL(), host, jwksURL,
		"/.well-known/jwks", sandboxAudience, "ai-proxy.example.com", "/ai-gateway-auth/token", "AI_GATEWAY_API_KEY",
		gw.URL(), strings.TrimPrefix(gw.URL(), "http://")}
	tc := newTestClient(t)
	k := v.currentKey()
	teamIssuer := "https://oidc.vercel.com/" + v.TeamID // what `team` implies
	sandboxToken := func(mutate func(jwt.MapClaims)) string {
		c := sandboxClaims(v, "agent-probe")
		c["iss"] = teamIssuer
		if mutate != nil {
			mutate(c)
		}
		return signWith(t, jwt.SigningMethodRS256, k.kid, k.key, c)
	}
	// the default issuer policy accepts the team's issuer
	if res := tc.do(t, http.MethodPost, sandboxSite+"/forward", forwardedHeaders(sandboxToken(nil), "/v1/chat/completions"), chatBody); res.Status != http.StatusOK {
		t.Fatalf("a valid sandbox token from %s: status %d: %s", teamIssuer, res.Status, res.Body)
	}

	intruderTeam, intruderProject := "team_"+randomString(24), "prj_"+randomString(28)
	longPath := "/v2/" + strings.Repeat("p", 3000)
	type refusal struct {
		name   string
		res    response
		status int
		code   string
		reason string // in the log line
		echo   string // a client value the body must not repeat
	}
	sandbox := func(name string, tok string, headers map[string]string, status int, code, reason, echo string) refusal {
		h := forwardedHeaders(tok, "/v1/chat/completions")
		for k, val := range headers {
			h[k] = val
		}
		return refusal{name, tc.do(t, http.MethodPost, sandboxSite+"/forward", h, chatBody), status, code, reason, echo}
	}
	push := func(name, method, body string, status int, code, reason, echo string) refusal {
		return refusal{name, tc.do(t, method, pushSite+"/ai-gateway-auth/token", nil, body), status, code, reason, echo}
	}
	forged := func(mutate func(jwt.MapClaims)) string {
		return `{"token":"` + forgeToken(t, v, 2*time.Hour, k.key, k.kid, mutate) + `"}`
	}
	cases := []refusal{
		sandbox("sandbox: another team", sandboxToken(func(c jwt.MapClaims) { c["team_id"] = intruderTeam }), nil,
			403, "sandbox_rejected", "team \""+intruderTeam+"\" is not allowed", intruderTeam),
		sandbox("sandbox: another project", sandboxToken(func(c jwt.MapClaims) { c["project_id"] = intruderProject }), nil,
			403, "sandbox_rejected", "project \""+intruderProject+"\" is not allowed", intruderProject),
		sandbox("sandbox: the team slug's issuer", sandboxToken(func(c jwt.MapClaims) { c["iss"] = v.Issuer() }), nil,
			403, "sandbox_rejected", "not a trusted issuer", v.TeamSlug),
		sandbox("sandbox: unknown kid", signWith(t, jwt.SigningMethodRS256, "kid-unknown-"+randomString(8), k.key, sandboxClaims(v, "x")), nil,
			403, "sandbox_rejected", "", "kid-unknown"),
		sandbox("sandbox: unknown kid at the team issuer", func() string {
			c := sandboxClaims(v, "x")
			c["iss"] = teamIssuer
			return signWith(t, jwt.SigningMethodRS256, "kid-unknown-"+randomString(8), k.key, c)
		}(), nil, 403, "sandbox_rejected", "in JWKS "+jwksURL, "kid-unknown"),
		sandbox("sandbox: wrong audience", sandboxToken(func(c jwt.MapClaims) { c["aud"] = "https://elsewhere.example/x" }), nil,
			403, "sandbox_rejected", "audience", "elsewhere"),
		sandbox("sandbox: expired", sandboxToken(func(c jwt.MapClaims) {
			c["exp"], c["iat"], c["nbf"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
		}), nil, 403, "sandbox_rejected", "expired", ""),
		sandbox("sandbox: forwarded host", sandboxToken(nil), map[string]string{"Vercel-Forwarded-Host": "evil-" + randomString(12) + ".example"},
			403, "sandbox_rejected", "forwarded host", "evil-"),
		sandbox("sandbox: a long path outside allow_paths", sandboxToken(nil), map[string]string{"Vercel-Forwarded-Path": longPath},
			403, "path_not_allowed", "path /v2/ppp", "pppppppppp"),
		push("push: another project", http.MethodPost, forged(func(c jwt.MapClaims) { c["project_id"] = intruderProject }),
			422, "unexpected_token", `not "`+v.TeamID+`" "`+v.ProjectID+`"`, intruderProject),
		push("push: another team", http.MethodPost, forged(func(c jwt.MapClaims) { c["owner_id"] = intruderTeam }),
			422, "unexpected_token", v.ProjectID, intruderTeam),
		push("push: another issuer", http.MethodPost, forged(func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/" + intruderTeam }),
			401, "invalid_token", "not a trusted issuer ("+v.Issuer()+")", intruderTeam),
		push("push: unknown kid", http.MethodPost, `{"token":"`+forgeToken(t, v, 2*time.Hour, k.key, "kid-unknown-push", nil)+`"}`,
			401, "invalid_token", "in JWKS "+jwksURL, "kid-unknown"),
		push("push: expired", http.MethodPost, `{"token":"`+v.Token(-time.Hour)+`"}`, 401, "invalid_token", "expired", ""),
		push("push: garbage", http.MethodPost, "garbage "+strings.Repeat("g", 1000), 400, "invalid_request", "no JWT", "gggggggggg"),
		push("push: too large", http.MethodPost, strings.Repeat("a", 100<<10), 413, "payload_too_large", "64 KiB", "aaaaaaaaaa"),
		push("push: GET", http.MethodGet, "", 405, "method_not_allowed", "", ""),
	}
	for _, c := range cases {
		if c.res.Status != c.status || c.res.Header.Get("X-Ai-Gateway-Auth-Error") != c.code {
			t.Errorf("%s: status %d, code %q; want %d %s: %.300s", c.name, c.res.Status, c.res.Header.Get("X-Ai-Gateway-Auth-Error"), c.status, c.code, c.res.Body)
			continue
		}
		if e := decodeJSON[openAIError](t, c.res.Body); e.Error.Code == nil || *e.Error.Code != c.code || e.Error.Message == "" {
			t.Errorf("%s: body %s, want code %s and a message", c.name, c.res.Body, c.code)
		}
		if len(c.res.Body) > 512 {
			t.Errorf("%s: a %d-byte error body", c.name, len(c.res.Body))
		}
		for _, s := range append(configStrings, c.echo) {
			if s != "" && strings.Contains(string(c.res.Body), s) {
				t.Errorf("%s: the body names %q: %s", c.name, s, c.res.Body)
			}
		}
	}
	if n := len(gw.Requests()); n != 1 {
		t.Errorf("the gateway got %d requests, want 1 (the valid sandbox token)", n)
	}

	// the operator learns why, from the log
	p.stop()
	var reasons []string
	for _, msg := range []string{"request forbidden", "token push refused"} {
		for _, e := range caddyLogEntries(p.Logs(), msg) {
			r, _ := e["reason"].(string)
			if len(r) > 400 {
				t.Errorf("a %d-byte %q reason: what the client sent is not cut short: %.200s", len(r), msg, r)
			}
			reasons = append(reasons, r)
		}
	}
	for _, c := range cases {
		if c.reason == "" {
			continue
		}
		found := false
		for _, r := range reasons {
			found = found || strings.Contains(r, c.reason)
		}
		if !found {
			t.Errorf("%s: no log line gives the reason %q", c.name, c.reason)
		}
	}
}

// sameTeamOtherProject is a fake Vercel for another project of v's team:
// same team, issuer and signing keys, its own project id, so that its
// gateway accepts that project's tokens only.
func sameTeamOtherProject(t testing.TB, v *fakeVercel) *fakeVercel {
	o := newFakeVercel(t)
	o.TeamID, o.TeamSlug = v.TeamID, v.TeamSlug
	v.mu.Lock()
	keys := append([]signingKey(nil), v.keys...)
	v.mu.Unlock()
	o.mu.Lock()
	o.keys = keys
	o.mu.Unlock()
	return o
}

// TestPushOnlySitesIsolated: two sites in one Caddyfile, each with a
// push-only vercel_oidc source for another project of the same team (the
// same issuer and JWKS). A token pushed for project A is used by site A
// only: site B answers 503 without contacting its gateway, refuses A's
// token when it is pushed there, and forwards only the token pushed for
// project B.
func TestPushOnlySitesIsolated(t *testing.T) {
	t.Parallel()
	va := newFakeVercel(t)
	vb := sameTeamOtherProject(t, va)
	gwA, gwB := newFakeGateway(t, va), newFakeGateway(t, vb)
	site := func(project string, gw *fakeGateway) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			push /ai-gateway-auth/token {
				issuer   %s
				jwks_url %s/%s/.well-known/jwks
				team     %s
				project  %s
			}
		}
		client_key sk-placeholder
		credential_wait 1s
	}
	reverse_proxy %s`, va.Issuer(), va.URL(), va.TeamSlug, va.TeamID, project, gw.URL())
	}
	p := startCaddy(t, caddyOptions{}, site(va.ProjectID, gwA), site(vb.ProjectID, gwB))
	siteA, siteB := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)
	push := func(base, tok string) response {
		return tc.do(t, http.MethodPost, base+pushPath, nil, `{"token":"`+tok+`"}`)
	}

	tokA := va.Token(time.Hour)
	if res := push(siteA, tokA); res.Status != http.StatusNoContent {
		t.Fatalf("push of project A's token to site A: status %d: %s", res.Status, res.Body)
	}
	if res := tc.chat(t, siteA, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("site A after its push: status %d: %s", res.Status, res.Body)
	}
	assertForwarded(t, lastRequest(t, gwA), tokA, "oidc")
	if res := tc.chat(t, siteB, "sk-placeholder"); res.Status != http.StatusServiceUnavailable {
		t.Errorf("site B after a push to site A: status %d, want 503: %s", res.Status, res.Body)
	}
	if res := push(siteB, tokA); res.Status != http.StatusUnprocessableEntity {
		t.Errorf("push of project A's token to site B: status %d, want 422: %s", res.Status, res.Body)
	}
	if res := tc.chat(t, siteB, "sk-placeholder"); res.Status != http.StatusServiceUnavailable {
		t.Errorf("site B after A's token was pushed to it: status %d, want 503: %s", res.Status, res.Body)
	}
	for _, r := range gwB.Requests() {
		if r.Credential == tokA {
			t.Fatal("site B forwarded the token pushed for project A")
		}
	}
	if n := len(gwB.Requests()); n != 0 {
		t.Fatalf("site B's gateway got %d requests before site B had a token", n)
	}

	tokB := vb.Token(2 * time.Hour)
	if res := push(siteB, tokB); res.Status != http.StatusNoContent {
		t.Fatalf("push of project B's token to site B: status %d: %s", res.Status, res.Body)
	}
	if res := tc.chat(t, siteB, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("site B after its push: status %d: %s", res.Status, res.Body)
	}
	assertForwarded(t, lastRequest(t, gwB), tokB, "oidc")
	if res := tc.chat(t, siteA, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("site A after a push to site B: status %d: %s", res.Status, res.Body)
	}
	assertForwarded(t, lastRequest(t, gwA), tokA, "oidc")
	assertNoSecrets(t, "responses", tc.Transcript(), append(secretsOf(va), secretsOf(vb)...)...)
}
