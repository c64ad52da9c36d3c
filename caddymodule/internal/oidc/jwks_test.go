package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// inProcessJWKS makes c fetch every JWKS from doc() in process and
// returns the fetch counter.
func inProcessJWKS(c *Cache, doc func() (int, []byte)) *atomic.Int32 {
	rt, n := oidctest.InProcess(doc)
	c.SetTransport(rt)
	return n
}

// A valid token verifies, and the JWKS is fetched once for many
// verifications.
func TestJWKSVerifyFetchesOnce(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	c := NewCache()
	p := NewIssuerPolicy(jwks.URL, "")
	for i := range 20 {
		tok := oidctest.Sign(t, oidctest.Claims(jwks.URL, time.Now().Add(time.Hour)))
		var claims jwt.RegisteredClaims
		if err := c.Verify(context.Background(), tok, p, "", &claims); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if claims.Issuer != jwks.URL {
			t.Fatalf("claims not decoded: %+v", claims)
		}
	}
	if n := jwks.Fetches(); n != 1 {
		t.Errorf("JWKS fetched %d times for 20 verifications, want 1", n)
	}
}

// Forgeries and bad tokens are refused with a reason that never quotes
// the token.
func TestJWKSVerifyRefuses(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	c := NewCache()
	p := NewIssuerPolicy(jwks.URL, "")
	now := time.Now()
	good := func() jwt.MapClaims { return oidctest.Claims(jwks.URL, now.Add(time.Hour)) }
	with := func(k string, v any) jwt.MapClaims { c := good(); c[k] = v; return c }

	cases := map[string]struct {
		token string
		want  string
	}{
		"other key, same kid": {oidctest.SignWith(jwt.SigningMethodRS256, oidctest.OtherKey(), oidctest.Kid, good()), "signature is invalid"},
		"no kid":              {oidctest.SignWith(jwt.SigningMethodRS256, oidctest.Key(), "", good()), "no kid"},
		// golang-jwt reports a method outside WithValidMethods as an
		// invalid signature
		"alg none":            {oidctest.Unsigned(good()), "signature is invalid"},
		"RS384":               {oidctest.SignWith(jwt.SigningMethodRS384, oidctest.Key(), oidctest.Kid, good()), "signature is invalid"},
		"PS256":               {oidctest.SignWith(jwt.SigningMethodPS256, oidctest.Key(), oidctest.Kid, good()), "signature is invalid"},
		"expired":             {oidctest.Sign(t, with("exp", now.Add(-2*time.Minute).Unix())), "expired"},
		"no exp":              {oidctest.Sign(t, func() jwt.MapClaims { c := good(); delete(c, "exp"); return c }()), "exp"},
		"nbf beyond leeway":   {oidctest.Sign(t, with("nbf", now.Add(5*time.Minute).Unix())), "not valid yet"},
		"iat in the future":   {oidctest.Sign(t, with("iat", now.Add(5*time.Minute).Unix())), "issued in the future"},
		"other issuer":        {oidctest.Sign(t, with("iss", "https://oidc.vercel.com/acme")), "not a trusted issuer"},
		"garbage":             {"not-a-jwt", "malformed"},
		"bad signature bytes": {oidctest.Sign(t, good()) + "AAAA", "signature is invalid"},
	}
	for name, tok := range oidctest.HS256WithPublicKey(good()) {
		cases["HS256 with the public key ("+name+")"] = struct {
			token string
			want  string
		}{tok, "signature is invalid"}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var claims jwt.RegisteredClaims
			err := c.Verify(context.Background(), tc.token, p, "", &claims)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if len(tc.token) > 20 {
				oidctest.AssertNoToken(t, "error", err.Error(), tc.token, strings.Split(tc.token, ".")[1])
			}
		})
	}
	// within the 60s leeway: accepted
	for name, claims := range map[string]jwt.MapClaims{
		"expired 30s ago": with("exp", now.Add(-30*time.Second).Unix()),
		"nbf in 30s":      with("nbf", now.Add(30*time.Second).Unix()),
	} {
		if err := c.Verify(context.Background(), oidctest.Sign(t, claims), p, "", &jwt.RegisteredClaims{}); err != nil {
			t.Errorf("%s: refused within the leeway: %v", name, err)
		}
	}
}

// An issuer the policy does not trust is refused before any fetch: a
// token cannot make the proxy fetch keys from a URL of its choosing, nor
// from any path on oidc.vercel.com that the configuration does not name.
func TestJWKSUntrustedIssuerNotFetched(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	c := NewCache()
	// what a vercel_sandbox block with `team team_a` and keys at jwks
	// trusts by default
	p := NewIssuerPolicy("", jwks.JWKSURL(), VercelIssuer("team_a"))
	for _, iss := range []string{
		jwks.URL, // trusted only when configured
		"https://oidc.vercel.com",
		"https://oidc.vercel.com/acme",
		"https://oidc.vercel.com/team_b",
		"https://oidc.vercel.com/team_a/x",
		"https://oidc.vercel.com/team_a_",
		"https://oidc.vercel.com/" + strings.Repeat("x", 6000),
		"http://oidc.vercel.com/team_a",
		"https://oidc.vercel.com.evil.example/team_a",
		"https://evil.example/oidc.vercel.com",
		"https://user@oidc.vercel.com/team_a",
		"https://oidc.vercel.com:8443/team_a",
		"https://oidc.vercel.com/team_a?x=1",
		"",
	} {
		tok := oidctest.Sign(t, oidctest.Claims(iss, time.Now().Add(time.Hour)))
		err := c.Verify(context.Background(), tok, p, "", &jwt.RegisteredClaims{})
		if err == nil {
			t.Errorf("issuer %.80q accepted", iss)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("issuer %.80q: the reason is %d bytes long: the issuer is not cut short", iss, len(err.Error()))
		}
	}
	if n := jwks.Fetches(); n != 0 {
		t.Errorf("JWKS fetched %d times for untrusted issuers", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sets) != 0 {
		t.Errorf("%d JWKS cache entries after untrusted issuers only", len(c.sets))
	}
}

func TestIssuerPolicyCheck(t *testing.T) {
	teams := NewIssuerPolicy("", "", VercelIssuer("team_a"), VercelIssuer("team_b"))
	global := NewIssuerPolicy("", "", VercelIssuer(""))
	current := "https://oidc.vercel.com/acme"
	withCurrent := NewIssuerPolicy("", "", VercelIssuer(""))
	withCurrent.Current = func() string { return current }
	for _, tc := range []struct {
		name    string
		policy  IssuerPolicy
		iss     string
		wantURL string // "": refused
	}{
		{"team issuer", teams, "https://oidc.vercel.com/team_a", "https://oidc.vercel.com/team_a/.well-known/jwks"},
		{"the other team", teams, "https://oidc.vercel.com/team_b/", "https://oidc.vercel.com/team_b/.well-known/jwks"},
		{"an unconfigured team", teams, "https://oidc.vercel.com/team_c", ""},
		{"the global issuer, not configured", teams, "https://oidc.vercel.com", ""},
		{"a path under a team", teams, "https://oidc.vercel.com/team_a/x", ""},
		{"http", teams, "http://oidc.vercel.com/team_a", ""},
		{"another host", teams, "https://OIDC.vercel.com.evil/team_a", ""},
		{"userinfo", teams, "https://oidc.vercel.com@evil.example/team_a", ""},
		{"empty", teams, "", ""},
		{"global", global, "https://oidc.vercel.com", "https://oidc.vercel.com/.well-known/jwks"},
		{"global with slash", global, "https://oidc.vercel.com/", "https://oidc.vercel.com/.well-known/jwks"},
		{"global only", global, "https://oidc.vercel.com/acme", ""},
		{"current token's issuer", withCurrent, "https://oidc.vercel.com/acme", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{"not the current token's issuer", withCurrent, "https://oidc.vercel.com/other", ""},
		{"jwks_url override", NewIssuerPolicy("", "http://127.0.0.1:1/keys", VercelIssuer("team_a")), "https://oidc.vercel.com/team_a", "http://127.0.0.1:1/keys"},
		{"jwks_url does not widen", NewIssuerPolicy("", "http://127.0.0.1:1/keys", VercelIssuer("team_a")), "https://oidc.vercel.com/team_b", ""},
		{"explicit issuer", NewIssuerPolicy("https://oidc.vercel.com/acme", "", VercelIssuer("team_a")), "https://oidc.vercel.com/acme/", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{"explicit issuer is the only one", NewIssuerPolicy("https://oidc.vercel.com/acme", "", VercelIssuer("team_a")), "https://oidc.vercel.com/team_a", ""},
		{"explicit loopback issuer", NewIssuerPolicy("http://127.0.0.1:8080", "http://127.0.0.1:8080/k"), "http://127.0.0.1:8080", "http://127.0.0.1:8080/k"},
		{"no issuer at all", IssuerPolicy{}, "https://oidc.vercel.com", ""},
	} {
		got, err := tc.policy.Check(tc.iss)
		if tc.wantURL == "" {
			if err == nil {
				t.Errorf("%s: check(%q) = %q, want refused", tc.name, tc.iss, got)
			}
			continue
		}
		if err != nil || got != tc.wantURL {
			t.Errorf("%s: check(%q) = %q, %v; want %q", tc.name, tc.iss, got, err, tc.wantURL)
		}
	}
	// the current token's issuer is trusted only on oidc.vercel.com
	for _, cur := range []string{"https://evil.example", "http://oidc.vercel.com/acme", "https://oidc.vercel.com/a/b", "https://oidc.vercel.com/a?b"} {
		current = cur
		if got, err := withCurrent.Check(cur); err == nil {
			t.Errorf("current token's issuer %q trusted (%q)", cur, got)
		}
	}
}

// A token with an unknown kid makes the cache fetch the JWKS again (key
// rotation), but at most once per jwksRefetchFloor: made-up kids cannot
// make the proxy hammer the issuer. Runs on synctest's fake clock with
// the JWKS served in process.
func TestJWKSUnknownKidRefetchFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		keys := map[string]*rsa.PublicKey{"k1": &oidctest.Key().PublicKey}
		c := NewCache()
		fetches := inProcessJWKS(c, func() (int, []byte) {
			mu.Lock()
			defer mu.Unlock()
			return http.StatusOK, oidctest.JWKSDocument(keys)
		})
		const iss = "https://oidc.vercel.com/acme"
		p := NewIssuerPolicy("", "", iss)
		verify := func(key *rsa.PrivateKey, kid string) error {
			tok := oidctest.SignWith(jwt.SigningMethodRS256, key, kid, oidctest.Claims(iss, time.Now().Add(time.Hour)))
			return c.Verify(context.Background(), tok, p, "", &jwt.RegisteredClaims{})
		}
		wantFetches := func(want int32) {
			t.Helper()
			if n := fetches.Load(); n != want {
				t.Fatalf("%d JWKS fetches, want %d", n, want)
			}
		}

		if err := verify(oidctest.Key(), "k1"); err != nil {
			t.Fatal(err)
		}
		wantFetches(1)

		// the issuer rotates in k2; within the floor a k2 token is
		// refused without a fetch, however many arrive
		mu.Lock()
		keys["k2"] = &oidctest.OtherKey().PublicKey
		mu.Unlock()
		for range 50 {
			if err := verify(oidctest.OtherKey(), "k2"); err == nil || !strings.Contains(err.Error(), `no key "k2"`) {
				t.Fatalf("k2 within the floor: %v", err)
			}
		}
		wantFetches(1)
		if err := verify(oidctest.Key(), "k1"); err != nil { // known kids still work
			t.Fatal(err)
		}

		time.Sleep(jwksRefetchFloor + time.Second)
		if err := verify(oidctest.OtherKey(), "k2"); err != nil {
			t.Fatalf("k2 after the floor: %v", err)
		}
		wantFetches(2)
		if err := verify(oidctest.OtherKey(), "k2"); err != nil {
			t.Fatal(err)
		}
		wantFetches(2)

		// a made-up kid: one fetch per floor at most
		for range 50 {
			if verify(oidctest.Key(), "made-up") == nil {
				t.Fatal("made-up kid accepted")
			}
		}
		wantFetches(2) // k2's fetch was less than a floor ago
		time.Sleep(jwksRefetchFloor + time.Second)
		for range 50 {
			if verify(oidctest.Key(), "made-up") == nil {
				t.Fatal("made-up kid accepted")
			}
		}
		wantFetches(3)
	})
}

// A failed JWKS fetch keeps the keys fetched before; the failure is the
// reason given for an unknown kid, and it is not retried within the floor.
func TestJWKSFailedFetchKeepsKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var status atomic.Int32
		status.Store(http.StatusOK)
		c := NewCache()
		fetches := inProcessJWKS(c, func() (int, []byte) {
			return int(status.Load()), oidctest.JWKSDocument(map[string]*rsa.PublicKey{oidctest.Kid: &oidctest.Key().PublicKey})
		})
		const iss = "https://oidc.vercel.com/acme"
		verify := func(kid string) error {
			tok := oidctest.SignWith(jwt.SigningMethodRS256, oidctest.Key(), kid, oidctest.Claims(iss, time.Now().Add(time.Hour)))
			return c.Verify(context.Background(), tok, NewIssuerPolicy("", "", iss), "", &jwt.RegisteredClaims{})
		}
		if err := verify(oidctest.Kid); err != nil {
			t.Fatal(err)
		}
		status.Store(http.StatusInternalServerError)
		time.Sleep(jwksRefetchFloor + time.Second)
		if err := verify("unknown"); err == nil || !strings.Contains(err.Error(), "500") {
			t.Errorf("unknown kid while the JWKS fails: %v, want the fetch error", err)
		}
		if n := fetches.Load(); n != 2 {
			t.Fatalf("%d fetches, want 2", n)
		}
		if err := verify(oidctest.Kid); err != nil {
			t.Errorf("known kid refused after a failed fetch: %v", err)
		}
		if err := verify("unknown"); err == nil || !strings.Contains(err.Error(), "500") {
			t.Errorf("unknown kid within the floor after a failure: %v", err)
		}
		if n := fetches.Load(); n != 2 {
			t.Errorf("%d fetches, want 2: a failed fetch was retried within the floor", n)
		}
	})
}

// Keys that are not RSA signing keys of at least 2048 bits are ignored; a
// JWKS with none is an error, as is a document that is not a JWKS.
func TestJWKSDocumentParsing(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := oidctest.JWKSDocument(map[string]*rsa.PublicKey{"good": &oidctest.Key().PublicKey})
	var goodDoc struct{ Keys []map[string]any }
	if err := json.Unmarshal(good, &goodDoc); err != nil {
		t.Fatal(err)
	}
	gk := goodDoc.Keys[0]
	jwk := func(edit func(map[string]any)) map[string]any {
		k := map[string]any{}
		for a, b := range gk {
			k[a] = b
		}
		edit(k)
		return k
	}
	smallKey := oidctest.JWKSDocument(map[string]*rsa.PublicKey{"small": &small.PublicKey})
	var smallDoc struct{ Keys []map[string]any }
	if err := json.Unmarshal(smallKey, &smallDoc); err != nil {
		t.Fatal(err)
	}
	mixed, _ := json.Marshal(map[string]any{"keys": []any{
		jwk(func(k map[string]any) { k["kid"] = "enc"; k["use"] = "enc" }),
		jwk(func(k map[string]any) { k["kid"] = "ec"; k["kty"] = "EC" }),
		jwk(func(k map[string]any) { k["kid"] = "bad-n"; k["n"] = "!!!" }),
		smallDoc.Keys[0],
		jwk(func(k map[string]any) { k["kid"] = "no-use"; delete(k, "use") }),
		gk,
	}})

	c := NewCache()
	var body []byte
	var status int
	inProcessJWKS(c, func() (int, []byte) { return status, body })

	status, body = http.StatusOK, mixed
	keys, err := c.fetch(context.Background(), "https://oidc.vercel.com/.well-known/jwks")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys["good"] == nil || keys["no-use"] == nil {
		t.Errorf("usable keys %v, want good and no-use only", keys)
	}
	if keys["good"] != nil && (keys["good"].N.Cmp(oidctest.Key().N) != 0 || keys["good"].E != oidctest.Key().E) {
		t.Error("key decoded wrongly")
	}

	for name, tc := range map[string]struct {
		status int
		body   string
		want   string
	}{
		"only a small key": {200, string(smallKey), "no usable RSA signing key"},
		"empty":            {200, `{"keys":[]}`, "no usable RSA signing key"},
		"not JSON":         {200, `<html>`, "not a JWKS document"},
		"not found":        {404, `{}`, "404"},
	} {
		status, body = tc.status, []byte(tc.body)
		if _, err := c.fetch(context.Background(), "https://oidc.vercel.com/.well-known/jwks"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

// The JWKS client does not follow redirects: keys come from the URL the
// policy chose, not wherever that URL points.
func TestJWKSNoRedirects(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	redirect := httptest.NewServer(http.RedirectHandler(jwks.JWKSURL(), http.StatusFound))
	defer redirect.Close()
	c := NewCache()
	tok := oidctest.Sign(t, oidctest.Claims("https://oidc.vercel.com/acme", time.Now().Add(time.Hour)))
	err := c.Verify(context.Background(), tok, NewIssuerPolicy("", redirect.URL+"/jwks", "https://oidc.vercel.com/acme"), "", &jwt.RegisteredClaims{})
	if err == nil {
		t.Error("token verified with keys from a redirect target")
	}
	if n := jwks.Fetches(); n != 0 {
		t.Errorf("redirect followed (%d fetches)", n)
	}
}

// keyDoc is a JWKS document with the test key under testKid.
func keyDoc() (int, []byte) {
	return http.StatusOK, oidctest.JWKSDocument(map[string]*rsa.PublicKey{oidctest.Kid: &oidctest.Key().PublicKey})
}

func cachedURLs(c *Cache) int { return c.Len() }

// The cache holds at most jwksMaxURLs documents, evicting the least
// recently used: a URL in use keeps its keys (no refetch), an evicted one
// is fetched again when it is next needed.
func TestJWKSCacheBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCache()
		fetches := inProcessJWKS(c, keyDoc)
		url := func(i int) string { return fmt.Sprintf("https://oidc.vercel.com/team_%d/.well-known/jwks", i) }
		get := func(i int) {
			t.Helper()
			if _, err := c.key(context.Background(), url(i), oidctest.Kid); err != nil {
				t.Fatalf("url %d: %v", i, err)
			}
		}
		get(0)
		for i := 1; i < 3*jwksMaxURLs; i++ {
			time.Sleep(time.Millisecond) // distinct use times on the fake clock
			get(i)
			get(0) // in use all along
			if n := cachedURLs(c); n > jwksMaxURLs {
				t.Fatalf("%d documents cached, bound %d", n, jwksMaxURLs)
			}
		}
		if n := fetches.Load(); n != 3*jwksMaxURLs {
			t.Errorf("%d fetches, want %d: the URL in use was evicted and fetched again", n, 3*jwksMaxURLs)
		}
		before := fetches.Load()
		get(1) // long evicted
		if fetches.Load() != before+1 {
			t.Error("an evicted URL was not fetched again")
		}
	})
}

// A failed fetch for a URL that never gave keys is kept only for the
// floor (so that it is not retried sooner), then dropped: failures do not
// pile up.
func TestJWKSFailuresNotKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCache()
		var failing atomic.Bool
		failing.Store(true)
		fetches := inProcessJWKS(c, func() (int, []byte) {
			if failing.Load() {
				return http.StatusNotFound, []byte(`{}`)
			}
			return keyDoc()
		})
		const bad = "https://oidc.vercel.com/team_gone/.well-known/jwks"
		for range 10 {
			if _, err := c.key(context.Background(), bad, oidctest.Kid); err == nil || !strings.Contains(err.Error(), "404") {
				t.Fatalf("failing JWKS: %v", err)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("%d fetches within the floor, want 1", n)
		}
		time.Sleep(jwksRefetchFloor)
		failing.Store(false)
		if _, err := c.key(context.Background(), "https://oidc.vercel.com/team_ok/.well-known/jwks", oidctest.Kid); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		_, kept := c.sets[bad]
		c.mu.Unlock()
		if kept {
			t.Error("a failure older than the floor, for a URL that never gave keys, is still cached")
		}
		if n := cachedURLs(c); n != 1 {
			t.Errorf("%d documents cached, want 1", n)
		}
	})
}

// The refetch floor holds per URL: made-up kids for one configured JWKS
// cost that URL one fetch per floor, and do not stop another URL's
// first fetch.
func TestJWKSRefetchFloorPerURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCache()
		fetches := inProcessJWKS(c, keyDoc)
		const a, b = "https://oidc.vercel.com/team_a/.well-known/jwks", "https://oidc.vercel.com/team_b/.well-known/jwks"
		for i := range 100 {
			if _, err := c.key(context.Background(), a, fmt.Sprintf("made-up-%d", i)); err == nil {
				t.Fatal("made-up kid accepted")
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("%d fetches for 100 made-up kids within the floor, want 1", n)
		}
		if _, err := c.key(context.Background(), b, oidctest.Kid); err != nil {
			t.Fatalf("another URL within the first one's floor: %v", err)
		}
		if n := fetches.Load(); n != 2 {
			t.Fatalf("%d fetches, want 2", n)
		}
		time.Sleep(jwksRefetchFloor)
		for i := range 100 {
			c.key(context.Background(), a, fmt.Sprintf("made-up-again-%d", i))
		}
		if n := fetches.Load(); n != 3 {
			t.Errorf("%d fetches, want 3: one more for the first URL after its floor", n)
		}
	})
}

// A refused kid is named in the reason cut short, whatever its length.
func TestJWKSLongKidCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCache()
		inProcessJWKS(c, keyDoc)
		kid := strings.Repeat("k", 10000)
		_, err := c.key(context.Background(), "https://oidc.vercel.com/team_a/.well-known/jwks", kid)
		if err == nil || len(err.Error()) > 300 || !strings.Contains(err.Error(), "10000 bytes") {
			t.Errorf("reason for a 10000-byte kid: %.400v", err)
		}
	})
}
