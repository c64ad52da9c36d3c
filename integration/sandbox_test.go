package integration

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// sandboxAudience is the forwardURL the test sandboxes' network policy
// names, with a path, as a forward URL may have.
const sandboxAudience = "https://ai-proxy.example.com/forward"

// sandboxClaims are the claims of a Vercel Sandbox OIDC token, as a
// forwardURL rule sends it in vercel-sandbox-oidc-token.
func sandboxClaims(v *fakeVercel, sandboxName string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":          v.Issuer(),
		"aud":          sandboxAudience,
		"sub":          fmt.Sprintf("owner:%s:project:%s:environment:%s", v.TeamSlug, v.ProjectName, v.Environment),
		"team_id":      v.TeamID,
		"project_id":   v.ProjectID,
		"sandbox_id":   "sbx_" + randomString(20),
		"sandbox_name": sandboxName,
		"iat":          now.Unix(),
		"nbf":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
		"jti":          randomString(16),
	}
}

// signSandboxToken signs claims with the fake Vercel's current key (the
// one its JWKS publishes) and kid, as oidc.vercel.com would.
func signSandboxToken(t testing.TB, v *fakeVercel, claims jwt.MapClaims) string {
	t.Helper()
	v.mu.Lock()
	k := v.keys[len(v.keys)-1]
	v.mu.Unlock()
	return signWith(t, jwt.SigningMethodRS256, k.kid, k.key, claims)
}

func signWith(t testing.TB, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sandboxSite is a site block accepting forwardURL requests from the fake
// Vercel's team and project, with a static API key upstream.
func sandboxSite(v *fakeVercel, gw, extra string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		vercel_sandbox {
			audience %s
			team     team_someoneelse %s
			project  %s
			issuer   %s
			jwks_url %s/%s/.well-known/jwks
		}
		%s
	}
	reverse_proxy %s {
		header_up X-Test-Client {ai_gateway_auth.client}
	}`, sandboxAudience, v.TeamID, v.ProjectID, v.Issuer(), v.URL(), v.TeamSlug, extra, gw)
}

// forwardedHeaders are the headers a forwardURL rule adds to a sandbox's
// request for https://ai-gateway.vercel.sh<path>.
func forwardedHeaders(token, path string) map[string]string {
	return map[string]string{
		"Vercel-Sandbox-Oidc-Token": token,
		"Vercel-Forwarded-Host":     "ai-gateway.vercel.sh",
		"Vercel-Forwarded-Scheme":   "https",
		"Vercel-Forwarded-Port":     "443",
		"Vercel-Forwarded-Path":     path,
		// what the sandbox's SDK sends: a placeholder key
		"Authorization": "Bearer sk-placeholder",
	}
}

// readAdminMetric reads one sample (name with its labels, exactly as
// exposed) from the Prometheus endpoint of Caddy's admin API; a metric
// that is not exposed (yet) reads as 0.
func readAdminMetric(t testing.TB, p *caddyProc, sample string) float64 {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on the admin API: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestVercelSandbox: forwardURL requests whose vercel-sandbox-oidc-token
// verifies (RS256 by the issuer's JWKS key, iss, aud = the forwardURL,
// team, project, time claims with 60 s leeway) go to the configured
// gateway with the proxy's credential, on the path the sandbox meant, with
// no vercel-* header and no sandbox token; every way a token can be wrong,
// and a forwarded host other than AI Gateway, gets 403 JSON and never
// reaches the gateway; a request without the token is an ordinary
// client-key request; a verified token is cached, so 50 requests with one
// token cost one RSA verification.
func TestVercelSandbox(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}},
		sandboxSite(v, gw.URL(), "client_key sk-placeholder"), // sandboxes and keyed clients
		sandboxSite(v, gw.URL(), ""))                          // sandboxes only
	both, sandboxOnly := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)
	var tokens []secret      // every sandbox token sent, for the leak checks
	var wantReasons []string // reasons the log must give for the refusals
	token := func(claims jwt.MapClaims) string {
		s := signSandboxToken(t, v, claims)
		tokens = append(tokens, secret{"sandbox token " + strconv.Itoa(len(tokens)+1), s})
		return s
	}

	// checkForwarded checks what the gateway got for a sandbox request.
	checkForwarded := func(t testing.TB, r gatewayRequest, sandbox, path, query string) {
		t.Helper()
		assertForwarded(t, r, apiKey, "api-key")
		if r.Path != path || r.RawQuery != query {
			t.Errorf("the gateway got %s?%s, want %s?%s", r.Path, r.RawQuery, path, query)
		}
		if got := r.Header.Get("X-Test-Client"); got != sandbox {
			t.Errorf("{ai_gateway_auth.client} is %q, want the sandbox name %q", got, sandbox)
		}
		for name := range r.Header {
			if strings.HasPrefix(strings.ToLower(name), "vercel-") {
				t.Errorf("the gateway got the header %s", name)
			}
		}
		for _, tok := range tokens {
			if strings.Contains(fmt.Sprint(r.Header), tok.value[strings.LastIndexByte(tok.value, '.')+1:]) {
				t.Errorf("the gateway got %s", tok.what)
			}
		}
	}

	t.Run("valid", func(t *testing.T) {
		tok := token(sandboxClaims(v, "agent-blue"))
		for _, base := range []string{both, sandboxOnly} {
			// The forwardURL has a path: the request arrives on
			// /forward/v1/…, and vercel-forwarded-path names the real one.
			before := len(gw.Requests())
			res := tc.do(t, http.MethodPost, base+"/forward/v1/chat/completions?beta=true",
				forwardedHeaders(tok, "/v1/chat/completions?beta=true"), chatBody)
			if res.Status != http.StatusOK {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			if len(gw.Requests()) != before+1 {
				t.Fatal("the gateway did not get exactly one request")
			}
			checkForwarded(t, lastRequest(t, gw), "agent-blue", "/v1/chat/completions", "beta=true")
		}

		// The forwarded path's query is used when the request has none.
		res := tc.do(t, http.MethodGet, both+"/forward", forwardedHeaders(tok, "/v1/models?limit=2"), "")
		if res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		checkForwarded(t, lastRequest(t, gw), "agent-blue", "/v1/models", "limit=2")

		// Without vercel-forwarded-*: the request path is used as is.
		h := map[string]string{"Vercel-Sandbox-Oidc-Token": tok}
		if res := tc.do(t, http.MethodGet, sandboxOnly+"/v1/models", h, ""); res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		checkForwarded(t, lastRequest(t, gw), "agent-blue", "/v1/models", "")

		// The forwarded host is compared without case and port.
		h = forwardedHeaders(tok, "/v1/models")
		h["Vercel-Forwarded-Host"] = "AI-Gateway.Vercel.sh:443"
		if res := tc.do(t, http.MethodGet, both+"/forward", h, ""); res.Status != http.StatusOK {
			t.Fatalf("forwarded host in capitals with a port: status %d: %s", res.Status, res.Body)
		}

		// No sandbox_name: the client is named after sandbox_id; and the
		// 60 s leeway, both ways.
		c := sandboxClaims(v, "")
		delete(c, "sandbox_name")
		c["exp"] = time.Now().Add(-30 * time.Second).Unix()
		c["iat"] = time.Now().Add(-time.Hour).Unix()
		c["nbf"] = time.Now().Add(-time.Hour).Unix()
		if res := tc.do(t, http.MethodGet, both+"/forward", forwardedHeaders(token(c), "/v1/models"), ""); res.Status != http.StatusOK {
			t.Fatalf("token expired 30 s ago (within the leeway): status %d: %s", res.Status, res.Body)
		}
		checkForwarded(t, lastRequest(t, gw), c["sandbox_id"].(string), "/v1/models", "")
		c = sandboxClaims(v, "early")
		c["nbf"] = time.Now().Add(30 * time.Second).Unix()
		c["iat"] = time.Now().Add(30 * time.Second).Unix()
		if res := tc.do(t, http.MethodGet, both+"/forward", forwardedHeaders(token(c), "/v1/models"), ""); res.Status != http.StatusOK {
			t.Fatalf("token valid from 30 s from now (within the leeway): status %d: %s", res.Status, res.Body)
		}
	})

	t.Run("refused", func(t *testing.T) {
		claims := func(mutate func(jwt.MapClaims)) jwt.MapClaims {
			c := sandboxClaims(v, "agent-red")
			mutate(c)
			return c
		}
		v.mu.Lock()
		kid := v.keys[len(v.keys)-1].kid
		v.mu.Unlock()
		pubDER, err := x509.MarshalPKIXPublicKey(&testRSAKey(0).PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
		noneTok := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, sandboxClaims(v, "agent-red"))
			tok.Header["kid"] = kid
			s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		valid := token(sandboxClaims(v, "agent-red"))

		for _, c := range []struct {
			name   string
			token  string
			header map[string]string // extra headers
			reason string            // in the log line's reason, never in the 403's message
		}{
			{"signed by another key", signWith(t, jwt.SigningMethodRS256, kid, testRSAKey(1), sandboxClaims(v, "agent-red")), nil, "signature is invalid"},
			{"unknown kid", signWith(t, jwt.SigningMethodRS256, "kid-unknown", testRSAKey(1), sandboxClaims(v, "agent-red")), nil, "no key"},
			{"no kid", signWith(t, jwt.SigningMethodRS256, "", testRSAKey(0), sandboxClaims(v, "agent-red")), nil, "kid"},
			{"wrong audience", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["aud"] = "https://other-proxy.example.com/forward" })), nil, "audience"},
			{"audience of the gateway", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["aud"] = "https://vercel.com/" + v.TeamSlug })), nil, "audience"},
			{"expired beyond the leeway", signSandboxToken(t, v, claims(func(c jwt.MapClaims) {
				c["exp"] = time.Now().Add(-2 * time.Minute).Unix()
				c["iat"], c["nbf"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			})), nil, "expired"},
			{"not valid yet beyond the leeway", signSandboxToken(t, v, claims(func(c jwt.MapClaims) {
				c["nbf"] = time.Now().Add(5 * time.Minute).Unix()
			})), nil, "not valid yet"},
			{"no exp", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { delete(c, "exp") })), nil, "exp"},
			{"another team", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["team_id"] = "team_" + randomString(24) })), nil, "team"},
			{"another project", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["project_id"] = "prj_" + randomString(28) })), nil, "project"},
			{"another issuer", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/someone-else" })), nil, `issuer "https://oidc.vercel.com/someone-else" is not a trusted issuer`},
			{"no sandbox", signSandboxToken(t, v, claims(func(c jwt.MapClaims) { delete(c, "sandbox_id"); delete(c, "sandbox_name") })), nil, "sandbox_id"},
			{"alg none", noneTok(), nil, "signature is invalid"},
			{"HS256 with the public key as secret", signWith(t, jwt.SigningMethodHS256, kid, pubPEM, sandboxClaims(v, "agent-red")), nil, "signature is invalid"},
			{"not a JWT", "not-a-jwt", nil, "malformed"},
			{"forbidden forwarded host", valid, map[string]string{"Vercel-Forwarded-Host": "evil.example.com"}, `forwarded host "evil.example.com"`},
			{"a long forwarded host", valid, map[string]string{"Vercel-Forwarded-Host": strings.Repeat("evil", 2000) + ".example.com"}, "(8012 bytes)"},
			{"forbidden forwarded host with a port", valid, map[string]string{"Vercel-Forwarded-Host": "evil.example.com:443"}, "forwarded host"},
			{"gateway host as a suffix", valid, map[string]string{"Vercel-Forwarded-Host": "ai-gateway.vercel.sh.evil.example.com"}, "forwarded host"},
		} {
			for _, base := range []string{both, sandboxOnly} {
				before := len(gw.Requests())
				h := forwardedHeaders(c.token, "/v1/chat/completions")
				for k, val := range c.header {
					h[k] = val
				}
				res := tc.do(t, http.MethodPost, base+"/forward/v1/chat/completions", h, chatBody)
				gatewayUntouched(t, gw, before, c.name)
				if res.Status != http.StatusForbidden {
					t.Errorf("%s: status %d, want 403: %s", c.name, res.Status, res.Body)
					continue
				}
				e := decodeJSON[openAIError](t, res.Body)
				if e.Error.Type != "permission_error" || e.Error.Code == nil || *e.Error.Code != "sandbox_rejected" ||
					!slices.Contains(sandboxRefusals, e.Error.Message) {
					t.Errorf("%s: body %s, want a permission_error sandbox_rejected with a generic message", c.name, res.Body)
				}
				wantReasons = append(wantReasons, c.reason)
				if res.Header.Get("X-Ai-Gateway-Auth-Error") != "sandbox_rejected" || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
					t.Errorf("%s: headers %v", c.name, res.Header)
				}
			}
		}
		// Anthropic's shape for an Anthropic SDK (it sends anthropic-version).
		h := forwardedHeaders(signSandboxToken(t, v, claims(func(c jwt.MapClaims) { c["team_id"] = "team_x" })), "/v1/messages")
		h["Anthropic-Version"] = "2023-06-01"
		res := tc.do(t, http.MethodPost, both+"/forward/v1/messages", h,
			`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
		if e := decodeJSON[anthropicError](t, res.Body); res.Status != http.StatusForbidden || e.Type != "error" || e.Error.Type != "permission_error" {
			t.Errorf("/v1/messages with another team's token: status %d, body %s", res.Status, res.Body)
		}
		// A verified token with a path outside allow_paths.
		before := len(gw.Requests())
		if res := tc.do(t, http.MethodGet, both+"/forward", forwardedHeaders(valid, "/v1/../admin"), ""); res.Status != http.StatusForbidden ||
			res.Header.Get("X-Ai-Gateway-Auth-Error") != "path_not_allowed" {
			t.Errorf("forwarded path /v1/../admin: status %d: %s", res.Status, res.Body)
		}
		if res := tc.do(t, http.MethodGet, both+"/v1/models", forwardedHeaders(valid, "/admin"), ""); res.Status != http.StatusForbidden ||
			res.Header.Get("X-Ai-Gateway-Auth-Error") != "path_not_allowed" {
			t.Errorf("forwarded path /admin: status %d: %s", res.Status, res.Body)
		}
		gatewayUntouched(t, gw, before, "forwarded paths outside allow_paths")
	})

	t.Run("no token", func(t *testing.T) {
		before := len(gw.Requests())
		h := forwardedHeaders("", "/v1/chat/completions")
		delete(h, "Vercel-Sandbox-Oidc-Token")
		delete(h, "Authorization")
		for _, base := range []string{both, sandboxOnly} {
			res := tc.do(t, http.MethodPost, base+"/forward/v1/chat/completions", h, chatBody)
			if res.Status != http.StatusUnauthorized || res.Header.Get("X-Ai-Gateway-Auth-Error") != "invalid_api_key" {
				t.Errorf("no token, no key: status %d, want 401: %s", res.Status, res.Body)
			}
			res = tc.chat(t, base, "sk-wrong")
			if res.Status != http.StatusUnauthorized {
				t.Errorf("no token, wrong key: status %d, want 401: %s", res.Status, res.Body)
			}
		}
		if res := tc.chat(t, sandboxOnly, "sk-placeholder"); res.Status != http.StatusUnauthorized {
			t.Errorf("a site with no client key accepted sk-placeholder: status %d", res.Status)
		}
		gatewayUntouched(t, gw, before, "requests without a sandbox token")
		// The site that also has a client key serves keyed clients.
		if res := tc.chat(t, both, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("sk-placeholder without a sandbox token: status %d: %s", res.Status, res.Body)
		}
		if got := lastRequest(t, gw).Header.Get("X-Test-Client"); got != "placeholder" {
			t.Errorf("{ai_gateway_auth.client} is %q, want placeholder", got)
		}
	})

	t.Run("one verification per token", func(t *testing.T) {
		const metric = "caddy_ai_gateway_auth_sandbox_token_verifications_total"
		const n = 50
		tok := token(sandboxClaims(v, "agent-busy"))
		m0 := readAdminMetric(t, p, metric)
		before := len(gw.Requests())
		// One request first, then the other 49 at once: they all find the
		// token in the cache.
		if res := tc.do(t, http.MethodPost, both+"/forward/v1/chat/completions", forwardedHeaders(tok, "/v1/chat/completions"), chatBody); res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n - 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := tc.try(http.MethodPost, both+"/forward/v1/chat/completions", forwardedHeaders(tok, "/v1/chat/completions"), chatBody)
				if err == nil && res.Status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", res.Status, res.Body)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if got := len(gw.Requests()) - before; got != n {
			t.Errorf("the gateway got %d requests, want %d", got, n)
		}
		if m0 == 0 {
			t.Errorf("%s was 0 before this test's token, after the earlier subtests verified tokens: is it exposed?", metric)
		}
		if d := readAdminMetric(t, p, metric) - m0; d != 1 {
			t.Errorf("%d requests with one token cost %v verifications, want 1", n, d)
		}
		// Another token is another verification.
		if res := tc.do(t, http.MethodGet, both+"/forward", forwardedHeaders(token(sandboxClaims(v, "agent-busy")), "/v1/models"), ""); res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		if d := readAdminMetric(t, p, metric) - m0; d != 2 {
			t.Errorf("a second token: %v verifications in all, want 2", d)
		}
	})

	assertNoSecrets(t, "responses", tc.Transcript(), tokens...)
	p.stop()
	assertNoSecrets(t, "caddy's logs", p.Logs(), tokens...)
	// Each refusal is one log line, with the whole reason (client values
	// cut short) and no token.
	forbidden := caddyLogEntries(p.Logs(), "request forbidden")
	if want := strings.Count(tc.Transcript(), " -> 403 "); len(forbidden) != want || want == 0 {
		t.Errorf("%d \"request forbidden\" log lines, want one per 403 (%d)", len(forbidden), want)
	}
	var reasons []string
	for _, e := range forbidden {
		r, _ := e["reason"].(string)
		if r == "" || e["remote_ip"] != "127.0.0.1" || e["method"] == nil {
			t.Errorf("\"request forbidden\" line %v: want reason, remote_ip and method", e)
		}
		if len(r) > 400 {
			t.Errorf("a \"request forbidden\" reason is %d bytes: a client value is not cut short", len(r))
		}
		reasons = append(reasons, r)
	}
	for _, want := range wantReasons {
		if !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("no \"request forbidden\" log line gives the reason %q", want)
		}
	}
}

// sandboxRefusals are the messages a refused sandbox may get: categories,
// never a configured value or what its token carried.
var sandboxRefusals = []string{
	"the sandbox token could not be verified",
	"the sandbox token has expired",
	"the sandbox token is not valid yet",
	"the sandbox token is not for this proxy's forward URL",
	"the sandbox's team or project may not use this proxy",
	"the sandbox token names no sandbox",
	"the request was forwarded for a host this proxy does not serve",
}
