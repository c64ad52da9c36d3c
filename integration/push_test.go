package integration

import (
	"crypto/rsa"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// pushSite is a site block: a vercel_oidc source with an env token that
// accepts pushes at /ai-gateway-auth/token, verified against the fake
// Vercel's issuer and JWKS (over loopback) for its team and project.
func pushSite(v *fakeVercel, gw string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
			push /ai-gateway-auth/token {
				issuer   %s
				jwks_url %s/%s/.well-known/jwks
				team     %s
				project  %s
			}
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, v.Issuer(), v.URL(), v.TeamSlug, v.TeamID, v.ProjectID, gw)
}

const pushPath = "/ai-gateway-auth/token"

// forgeToken signs a token that looks like v's (expiring in ttl), with its
// claims changed by mutate, using key under kid: the fake Vercel's own key
// makes a token that verifies, any other key one that does not.
func forgeToken(t testing.TB, v *fakeVercel, ttl time.Duration, key *rsa.PrivateKey, kid string, mutate func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(v.Token(ttl), claims); err != nil {
		t.Fatal(err)
	}
	claims["jti"] = randomString(16)
	if mutate != nil {
		mutate(claims)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signingKey is the key the fake Vercel signs with now.
func (v *fakeVercel) currentKey() signingKey {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keys[len(v.keys)-1]
}

// TestTokenPush: a valid pushed token (JSON or raw) that expires later
// than the one in use is accepted and is what the gateway gets next; an
// older valid one is accepted but not used. Pushes that must be refused
// are, with the documented status and code, and change nothing, although
// each would expire later than the token in use: signed by another key,
// naming an unknown key, expired, from another issuer, for another
// project or team, garbage, empty, invalid JSON, 10 MiB, not a POST.
// Concurrent pushes leave the token that expires last in use.
func TestTokenPush(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	initial := v.Token(time.Hour)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"VERCEL_OIDC_TOKEN": initial}}, pushSite(v, gw.URL()))
	tc := newTestClient(t)
	var forged []secret // tokens signed here, searched for in the logs too

	push := func(t *testing.T, body string) response {
		t.Helper()
		return tc.do(t, http.MethodPost, p.URL+pushPath, nil, body)
	}
	// gatewayGets checks that the next request reaches the gateway with
	// want.
	gatewayGets := func(t *testing.T, want, what string) {
		t.Helper()
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("a request: status %d: %s", res.Status, res.Body)
		}
		r := lastRequest(t, gw)
		if r.Credential != want {
			t.Fatalf("the gateway did not get %s", what)
		}
		assertForwarded(t, r, want, "oidc")
	}
	accepted := func(t *testing.T, res response, used bool) {
		t.Helper()
		if res.Status != http.StatusNoContent {
			t.Fatalf("push: status %d, want 204: %s", res.Status, res.Body)
		}
		if got := res.Header.Get("Ai-Gateway-Auth-Token-Used"); got != fmt.Sprint(used) {
			t.Errorf("push: Ai-Gateway-Auth-Token-Used %q, want %v", got, used)
		}
	}

	gatewayGets(t, initial, "the env token")
	current := initial

	t.Run("valid", func(t *testing.T) {
		json := v.Token(2 * time.Hour)
		accepted(t, push(t, `{"token":"`+json+`"}`), true)
		gatewayGets(t, json, "the pushed token")
		raw := v.Token(3 * time.Hour)
		accepted(t, push(t, raw+"\n"), true)
		gatewayGets(t, raw, "the token pushed as a raw JWT")
		current = raw
		older := v.Token(150 * time.Minute)
		accepted(t, push(t, `{"token":"`+older+`"}`), false)
		gatewayGets(t, current, "the token in use, after a push of one that expires sooner")
	})

	t.Run("refused", func(t *testing.T) {
		k := v.currentKey()
		later := 4 * time.Hour // each would replace the token in use if it were accepted
		token := func(key *rsa.PrivateKey, kid string, mutate func(jwt.MapClaims)) string {
			s := forgeToken(t, v, later, key, kid, mutate)
			forged = append(forged, secret{"a forged token", s})
			return `{"token":"` + s + `"}`
		}
		for _, c := range []struct {
			name   string
			body   string
			status int
			code   string
		}{
			{"signed by another key", token(testRSAKey(1), k.kid, nil), http.StatusUnauthorized, "invalid_token"},
			{"unknown kid", token(testRSAKey(2), "kid-unknown", nil), http.StatusUnauthorized, "invalid_token"},
			{"expired", `{"token":"` + v.Token(-time.Hour) + `"}`, http.StatusUnauthorized, "invalid_token"},
			{"another issuer", token(k.key, k.kid, func(c jwt.MapClaims) { c["iss"] = "https://oidc.vercel.com/another-team" }), http.StatusUnauthorized, "invalid_token"},
			{"another project", token(k.key, k.kid, func(c jwt.MapClaims) { c["project_id"] = "prj_" + randomString(28) }), http.StatusUnprocessableEntity, "unexpected_token"},
			{"another team", token(k.key, k.kid, func(c jwt.MapClaims) { c["owner_id"] = "team_" + randomString(24) }), http.StatusUnprocessableEntity, "unexpected_token"},
			{"garbage", "this is not a token", http.StatusBadRequest, "invalid_request"},
			{"empty body", "", http.StatusBadRequest, "invalid_request"},
			{"invalid JSON", `{"token":`, http.StatusBadRequest, "invalid_request"},
			{"no token in JSON", `{"jwt":"x.y.z"}`, http.StatusBadRequest, "invalid_request"},
			{"10 MiB", `{"token":"` + strings.Repeat("a", 10<<20) + `"}`, http.StatusRequestEntityTooLarge, "payload_too_large"},
		} {
			res := push(t, c.body)
			if res.Status != c.status {
				t.Errorf("%s: status %d, want %d: %.300s", c.name, res.Status, c.status, res.Body)
			} else if got := res.Header.Get("X-Ai-Gateway-Auth-Error"); got != c.code {
				t.Errorf("%s: X-Ai-Gateway-Auth-Error %q, want %q", c.name, got, c.code)
			} else if e := decodeJSON[openAIError](t, res.Body); e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Errorf("%s: body %s, want an invalid_request_error with a message", c.name, res.Body)
			}
			gatewayGets(t, current, "the token in use, after a refused push ("+c.name+")")
		}
		res := tc.do(t, http.MethodGet, p.URL+pushPath, nil, "")
		if res.Status != http.StatusMethodNotAllowed || res.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET: status %d, Allow %q; want 405, POST", res.Status, res.Header.Get("Allow"))
		}
		gatewayGets(t, current, "the token in use, after a GET on the push path")
	})

	t.Run("concurrent", func(t *testing.T) {
		// Sixteen valid tokens, each expiring a minute after the one
		// before, pushed at once in random order.
		var tokens []string
		for i := range 16 {
			tokens = append(tokens, v.Token(5*time.Hour+time.Duration(i)*time.Minute))
		}
		latest := tokens[len(tokens)-1]
		rand.Shuffle(len(tokens), func(i, j int) { tokens[i], tokens[j] = tokens[j], tokens[i] })
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			mu    sync.Mutex
			used  int
			errs  []string
		)
		for _, tok := range tokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := tc.try(http.MethodPost, p.URL+pushPath, nil, `{"token":"`+tok+`"}`)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case res.Status != http.StatusNoContent:
					errs = append(errs, fmt.Sprintf("status %d: %s", res.Status, res.Body))
				case res.Header.Get("Ai-Gateway-Auth-Token-Used") == "true":
					used++
				}
			}()
		}
		close(start)
		wg.Wait()
		for _, e := range errs {
			t.Errorf("a concurrent push: %s", e)
		}
		if used == 0 {
			t.Error("no concurrent push was used")
		}
		gatewayGets(t, latest, "the pushed token that expires last")
	})

	assertNoSecrets(t, "responses", tc.Transcript(), append(secretsOf(v), forged...)...)
	assertNoSecrets(t, "Caddy's logs", p.Logs(), append(secretsOf(v), forged...)...)
}

// TestTokenPushOnly: a source whose only input is push has no credential
// until the first push (503, not a hang); a push makes requests work at
// once, with the pushed token.
func TestTokenPushOnly(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	site := strings.Replace(pushSite(v, gw.URL()), "env VERCEL_OIDC_TOKEN\n", "", 1)
	if strings.Contains(site, "env ") {
		t.Fatal("the site still has an env input")
	}
	p := startCaddy(t, caddyOptions{}, site)
	tc := newTestClient(t)

	res := tc.chat(t, p.URL, "sk-placeholder")
	if res.Status != http.StatusServiceUnavailable {
		t.Fatalf("before the first push: status %d, want 503: %s", res.Status, res.Body)
	}
	checkUnavailable(t, p, res, "")
	if n := len(gw.Requests()); n != 0 {
		t.Fatalf("the gateway got %d requests before the first push", n)
	}
	tok := v.Token(time.Hour)
	res = tc.do(t, http.MethodPost, p.URL+pushPath, nil, `{"token":"`+tok+`"}`)
	if res.Status != http.StatusNoContent || res.Header.Get("Ai-Gateway-Auth-Token-Used") != "true" {
		t.Fatalf("first push: status %d, used %q: %s", res.Status, res.Header.Get("Ai-Gateway-Auth-Token-Used"), res.Body)
	}
	if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("after the first push: status %d: %s", res.Status, res.Body)
	}
	assertForwarded(t, lastRequest(t, gw), tok, "oidc")
	st, _ := adminStatus(t, p)
	if !st.Healthy || len(st.Handlers) != 1 || len(st.Handlers[0].Sources) != 1 {
		t.Fatalf("status after the first push: %+v", st)
	}
	if src := st.Handlers[0].Sources[0]; !src.Usable || src.Expires == nil || src.LastError != "" {
		t.Errorf("the source after the first push: %+v, want usable with the pushed token's expiry and no error", src)
	} else if exp, _ := v.expOf(tok); !src.Expires.Equal(exp) {
		t.Errorf("status expires %v, want the pushed token's exp %v", src.Expires, exp)
	}
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}
