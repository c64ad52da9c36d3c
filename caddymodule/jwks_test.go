package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Shared fixtures for the tests of Vercel-issued JWTs (jwks, sandbox,
// push): a second RSA key, signing with any key/kid/alg, and a loopback
// JWKS server that counts its fetches.

const testKid = "test-kid" // the kid signTestJWT uses

// otherSigningKey is a key the JWKS does not publish.
var otherSigningKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// signJWT signs claims with method and key, with kid if not empty. It
// panics on error, so that it can run in a handler goroutine.
func signJWT(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		panic(err)
	}
	return s
}

// unsignedJWT is an alg:none token (the classic forgery).
func unsignedJWT(claims jwt.MapClaims) string {
	return signJWT(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, testKid, claims)
}

// hs256WithPublicKey signs claims with HS256 using the published RSA
// public key as the HMAC secret (the classic key-confusion forgery), in
// every encoding an attacker could guess the verifier uses.
func hs256WithPublicKey(claims jwt.MapClaims) map[string]string {
	pub := &testSigningKey().PublicKey
	der := x509.MarshalPKCS1PublicKey(pub)
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return map[string]string{
		"pkcs1 der": signJWT(jwt.SigningMethodHS256, der, testKid, claims),
		"pkix pem":  signJWT(jwt.SigningMethodHS256, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), testKid, claims),
		"modulus":   signJWT(jwt.SigningMethodHS256, pub.N.Bytes(), testKid, claims),
	}
}

// jwksJSON is a JWKS document publishing keys by kid.
func jwksJSON(keys map[string]*rsa.PublicKey) []byte {
	type jwk struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
		N   string `json:"n"`
		E   string `json:"e"`
	}
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for kid, k := range keys {
		doc.Keys = append(doc.Keys, jwk{
			Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256",
			N: base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
		})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

// fakeJWKS serves a JWKS at /.well-known/jwks on 127.0.0.1 and counts
// the fetches. Its URL is usable as an issuer: <URL>/.well-known/jwks is
// the default JWKS location.
type fakeJWKS struct {
	*httptest.Server
	fetches atomic.Int32

	mu     sync.Mutex
	doc    []byte
	status int
}

func newFakeJWKS(t *testing.T) *fakeJWKS {
	t.Helper()
	f := &fakeJWKS{status: http.StatusOK}
	f.setKeys(map[string]*rsa.PublicKey{testKid: &testSigningKey().PublicKey})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks" {
			http.NotFound(w, r)
			return
		}
		f.fetches.Add(1)
		f.mu.Lock()
		doc, status := f.doc, f.status
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(doc)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeJWKS) setKeys(keys map[string]*rsa.PublicKey) {
	f.mu.Lock()
	f.doc = jwksJSON(keys)
	f.mu.Unlock()
}

func (f *fakeJWKS) jwksURL() string { return f.URL + "/.well-known/jwks" }

// roundTripFunc serves a client's requests in process: no sockets, so it
// runs inside a synctest bubble.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// inProcessJWKS makes c fetch every JWKS from doc() in process and
// returns the fetch counter.
func inProcessJWKS(c *jwksCache, doc func() (int, []byte)) *atomic.Int32 {
	var n atomic.Int32
	c.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		status, body := doc()
		return &http.Response{
			StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(string(body))), Request: r,
		}, nil
	})
	return &n
}

// jwtClaims are minimal verifiable claims issued by iss.
func jwtClaims(iss string, exp time.Time) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": iss, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix()}
}

// A valid token verifies, and the JWKS is fetched once for many
// verifications.
func TestJWKSVerifyFetchesOnce(t *testing.T) {
	jwks := newFakeJWKS(t)
	c := newJWKSCache()
	p := newIssuerPolicy(jwks.URL, "")
	for i := range 20 {
		tok := signTestJWT(t, jwtClaims(jwks.URL, time.Now().Add(time.Hour)))
		var claims jwt.RegisteredClaims
		if err := c.verify(context.Background(), tok, p, "", &claims); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if claims.Issuer != jwks.URL {
			t.Fatalf("claims not decoded: %+v", claims)
		}
	}
	if n := jwks.fetches.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times for 20 verifications, want 1", n)
	}
}

// Forgeries and bad tokens are refused with a reason that never quotes
// the token.
func TestJWKSVerifyRefuses(t *testing.T) {
	jwks := newFakeJWKS(t)
	c := newJWKSCache()
	p := newIssuerPolicy(jwks.URL, "")
	now := time.Now()
	good := func() jwt.MapClaims { return jwtClaims(jwks.URL, now.Add(time.Hour)) }
	with := func(k string, v any) jwt.MapClaims { c := good(); c[k] = v; return c }

	cases := map[string]struct {
		token string
		want  string
	}{
		"other key, same kid": {signJWT(jwt.SigningMethodRS256, otherSigningKey(), testKid, good()), "signature is invalid"},
		"no kid":              {signJWT(jwt.SigningMethodRS256, testSigningKey(), "", good()), "no kid"},
		// golang-jwt reports a method outside WithValidMethods as an
		// invalid signature
		"alg none":            {unsignedJWT(good()), "signature is invalid"},
		"RS384":               {signJWT(jwt.SigningMethodRS384, testSigningKey(), testKid, good()), "signature is invalid"},
		"PS256":               {signJWT(jwt.SigningMethodPS256, testSigningKey(), testKid, good()), "signature is invalid"},
		"expired":             {signTestJWT(t, with("exp", now.Add(-2*time.Minute).Unix())), "expired"},
		"no exp":              {signTestJWT(t, func() jwt.MapClaims { c := good(); delete(c, "exp"); return c }()), "exp"},
		"nbf beyond leeway":   {signTestJWT(t, with("nbf", now.Add(5*time.Minute).Unix())), "not valid yet"},
		"iat in the future":   {signTestJWT(t, with("iat", now.Add(5*time.Minute).Unix())), "issued in the future"},
		"other issuer":        {signTestJWT(t, with("iss", "https://oidc.vercel.com/acme")), "not a trusted issuer"},
		"garbage":             {"not-a-jwt", "malformed"},
		"bad signature bytes": {signTestJWT(t, good()) + "AAAA", "signature is invalid"},
	}
	for name, tok := range hs256WithPublicKey(good()) {
		cases["HS256 with the public key ("+name+")"] = struct {
			token string
			want  string
		}{tok, "signature is invalid"}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var claims jwt.RegisteredClaims
			err := c.verify(context.Background(), tc.token, p, "", &claims)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if len(tc.token) > 20 {
				assertNotContains(t, "error", err.Error(), tc.token, strings.Split(tc.token, ".")[1])
			}
		})
	}
	// within the 60s leeway: accepted
	for name, claims := range map[string]jwt.MapClaims{
		"expired 30s ago": with("exp", now.Add(-30*time.Second).Unix()),
		"nbf in 30s":      with("nbf", now.Add(30*time.Second).Unix()),
	} {
		if err := c.verify(context.Background(), signTestJWT(t, claims), p, "", &jwt.RegisteredClaims{}); err != nil {
			t.Errorf("%s: refused within the leeway: %v", name, err)
		}
	}
}

// An issuer the policy does not trust is refused before any fetch: a
// token cannot make the proxy fetch keys from a URL of its choosing, nor
// from any path on oidc.vercel.com that the configuration does not name.
func TestJWKSUntrustedIssuerNotFetched(t *testing.T) {
	jwks := newFakeJWKS(t)
	c := newJWKSCache()
	// what a vercel_sandbox block with `team team_a` and keys at jwks
	// trusts by default
	p := newIssuerPolicy("", jwks.jwksURL(), vercelIssuer("team_a"))
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
		tok := signTestJWT(t, jwtClaims(iss, time.Now().Add(time.Hour)))
		err := c.verify(context.Background(), tok, p, "", &jwt.RegisteredClaims{})
		if err == nil {
			t.Errorf("issuer %.80q accepted", iss)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("issuer %.80q: the reason is %d bytes long: the issuer is not cut short", iss, len(err.Error()))
		}
	}
	if n := jwks.fetches.Load(); n != 0 {
		t.Errorf("JWKS fetched %d times for untrusted issuers", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sets) != 0 {
		t.Errorf("%d JWKS cache entries after untrusted issuers only", len(c.sets))
	}
}

func TestIssuerPolicyCheck(t *testing.T) {
	teams := newIssuerPolicy("", "", vercelIssuer("team_a"), vercelIssuer("team_b"))
	global := newIssuerPolicy("", "", vercelIssuer(""))
	current := "https://oidc.vercel.com/acme"
	withCurrent := newIssuerPolicy("", "", vercelIssuer(""))
	withCurrent.current = func() string { return current }
	for _, tc := range []struct {
		name    string
		policy  issuerPolicy
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
		{"jwks_url override", newIssuerPolicy("", "http://127.0.0.1:1/keys", vercelIssuer("team_a")), "https://oidc.vercel.com/team_a", "http://127.0.0.1:1/keys"},
		{"jwks_url does not widen", newIssuerPolicy("", "http://127.0.0.1:1/keys", vercelIssuer("team_a")), "https://oidc.vercel.com/team_b", ""},
		{"explicit issuer", newIssuerPolicy("https://oidc.vercel.com/acme", "", vercelIssuer("team_a")), "https://oidc.vercel.com/acme/", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{"explicit issuer is the only one", newIssuerPolicy("https://oidc.vercel.com/acme", "", vercelIssuer("team_a")), "https://oidc.vercel.com/team_a", ""},
		{"explicit loopback issuer", newIssuerPolicy("http://127.0.0.1:8080", "http://127.0.0.1:8080/k"), "http://127.0.0.1:8080", "http://127.0.0.1:8080/k"},
		{"no issuer at all", issuerPolicy{}, "https://oidc.vercel.com", ""},
	} {
		got, err := tc.policy.check(tc.iss)
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
		if got, err := withCurrent.check(cur); err == nil {
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
		keys := map[string]*rsa.PublicKey{"k1": &testSigningKey().PublicKey}
		c := newJWKSCache()
		fetches := inProcessJWKS(c, func() (int, []byte) {
			mu.Lock()
			defer mu.Unlock()
			return http.StatusOK, jwksJSON(keys)
		})
		const iss = "https://oidc.vercel.com/acme"
		p := newIssuerPolicy("", "", iss)
		verify := func(key *rsa.PrivateKey, kid string) error {
			tok := signJWT(jwt.SigningMethodRS256, key, kid, jwtClaims(iss, time.Now().Add(time.Hour)))
			return c.verify(context.Background(), tok, p, "", &jwt.RegisteredClaims{})
		}
		wantFetches := func(want int32) {
			t.Helper()
			if n := fetches.Load(); n != want {
				t.Fatalf("%d JWKS fetches, want %d", n, want)
			}
		}

		if err := verify(testSigningKey(), "k1"); err != nil {
			t.Fatal(err)
		}
		wantFetches(1)

		// the issuer rotates in k2; within the floor a k2 token is
		// refused without a fetch, however many arrive
		mu.Lock()
		keys["k2"] = &otherSigningKey().PublicKey
		mu.Unlock()
		for range 50 {
			if err := verify(otherSigningKey(), "k2"); err == nil || !strings.Contains(err.Error(), `no key "k2"`) {
				t.Fatalf("k2 within the floor: %v", err)
			}
		}
		wantFetches(1)
		if err := verify(testSigningKey(), "k1"); err != nil { // known kids still work
			t.Fatal(err)
		}

		time.Sleep(jwksRefetchFloor + time.Second)
		if err := verify(otherSigningKey(), "k2"); err != nil {
			t.Fatalf("k2 after the floor: %v", err)
		}
		wantFetches(2)
		if err := verify(otherSigningKey(), "k2"); err != nil {
			t.Fatal(err)
		}
		wantFetches(2)

		// a made-up kid: one fetch per floor at most
		for range 50 {
			if verify(testSigningKey(), "made-up") == nil {
				t.Fatal("made-up kid accepted")
			}
		}
		wantFetches(2) // k2's fetch was less than a floor ago
		time.Sleep(jwksRefetchFloor + time.Second)
		for range 50 {
			if verify(testSigningKey(), "made-up") == nil {
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
		c := newJWKSCache()
		fetches := inProcessJWKS(c, func() (int, []byte) {
			return int(status.Load()), jwksJSON(map[string]*rsa.PublicKey{testKid: &testSigningKey().PublicKey})
		})
		const iss = "https://oidc.vercel.com/acme"
		verify := func(kid string) error {
			tok := signJWT(jwt.SigningMethodRS256, testSigningKey(), kid, jwtClaims(iss, time.Now().Add(time.Hour)))
			return c.verify(context.Background(), tok, newIssuerPolicy("", "", iss), "", &jwt.RegisteredClaims{})
		}
		if err := verify(testKid); err != nil {
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
		if err := verify(testKid); err != nil {
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
	good := jwksJSON(map[string]*rsa.PublicKey{"good": &testSigningKey().PublicKey})
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
	smallKey := jwksJSON(map[string]*rsa.PublicKey{"small": &small.PublicKey})
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

	c := newJWKSCache()
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
	if keys["good"] != nil && (keys["good"].N.Cmp(testSigningKey().N) != 0 || keys["good"].E != testSigningKey().E) {
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
	jwks := newFakeJWKS(t)
	redirect := httptest.NewServer(http.RedirectHandler(jwks.jwksURL(), http.StatusFound))
	defer redirect.Close()
	c := newJWKSCache()
	tok := signTestJWT(t, jwtClaims("https://oidc.vercel.com/acme", time.Now().Add(time.Hour)))
	err := c.verify(context.Background(), tok, newIssuerPolicy("", redirect.URL+"/jwks", "https://oidc.vercel.com/acme"), "", &jwt.RegisteredClaims{})
	if err == nil {
		t.Error("token verified with keys from a redirect target")
	}
	if n := jwks.fetches.Load(); n != 0 {
		t.Errorf("redirect followed (%d fetches)", n)
	}
}

// keyDoc is a JWKS document with the test key under testKid.
func keyDoc() (int, []byte) {
	return http.StatusOK, jwksJSON(map[string]*rsa.PublicKey{testKid: &testSigningKey().PublicKey})
}

func cachedURLs(c *jwksCache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sets)
}

// The cache holds at most jwksMaxURLs documents, evicting the least
// recently used: a URL in use keeps its keys (no refetch), an evicted one
// is fetched again when it is next needed.
func TestJWKSCacheBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newJWKSCache()
		fetches := inProcessJWKS(c, keyDoc)
		url := func(i int) string { return fmt.Sprintf("https://oidc.vercel.com/team_%d/.well-known/jwks", i) }
		get := func(i int) {
			t.Helper()
			if _, err := c.key(context.Background(), url(i), testKid); err != nil {
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
		c := newJWKSCache()
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
			if _, err := c.key(context.Background(), bad, testKid); err == nil || !strings.Contains(err.Error(), "404") {
				t.Fatalf("failing JWKS: %v", err)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("%d fetches within the floor, want 1", n)
		}
		time.Sleep(jwksRefetchFloor)
		failing.Store(false)
		if _, err := c.key(context.Background(), "https://oidc.vercel.com/team_ok/.well-known/jwks", testKid); err != nil {
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
		c := newJWKSCache()
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
		if _, err := c.key(context.Background(), b, testKid); err != nil {
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
		c := newJWKSCache()
		inProcessJWKS(c, keyDoc)
		kid := strings.Repeat("k", 10000)
		_, err := c.key(context.Background(), "https://oidc.vercel.com/team_a/.well-known/jwks", kid)
		if err == nil || len(err.Error()) > 300 || !strings.Contains(err.Error(), "10000 bytes") {
			t.Errorf("reason for a 10000-byte kid: %.400v", err)
		}
	})
}
