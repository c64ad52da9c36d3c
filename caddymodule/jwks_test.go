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
	p := issuerPolicy{issuer: jwks.URL}
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
	p := issuerPolicy{issuer: jwks.URL}
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
		"other issuer":        {signTestJWT(t, with("iss", "https://oidc.vercel.com/acme")), "is not the configured"},
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
// token cannot make the proxy fetch keys from a host of its choosing.
func TestJWKSUntrustedIssuerNotFetched(t *testing.T) {
	jwks := newFakeJWKS(t)
	c := newJWKSCache()
	for _, iss := range []string{
		jwks.URL, // trusted only when configured
		"http://oidc.vercel.com/acme",
		"https://oidc.vercel.com.evil.example/acme",
		"https://evil.example/oidc.vercel.com",
		"https://user@oidc.vercel.com/acme",
		"https://oidc.vercel.com:8443/acme",
		"https://oidc.vercel.com/acme?x=1",
		"",
	} {
		tok := signTestJWT(t, jwtClaims(iss, time.Now().Add(time.Hour)))
		if err := c.verify(context.Background(), tok, issuerPolicy{}, "", &jwt.RegisteredClaims{}); err == nil {
			t.Errorf("issuer %q accepted by the default policy", iss)
		}
	}
	if n := jwks.fetches.Load(); n != 0 {
		t.Errorf("JWKS fetched %d times for untrusted issuers", n)
	}
}

func TestIssuerPolicyCheck(t *testing.T) {
	for _, tc := range []struct {
		policy  issuerPolicy
		iss     string
		wantURL string // "": refused
	}{
		{issuerPolicy{}, "https://oidc.vercel.com", "https://oidc.vercel.com/.well-known/jwks"},
		{issuerPolicy{}, "https://oidc.vercel.com/acme", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{issuerPolicy{}, "https://oidc.vercel.com/acme/", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{issuerPolicy{}, "http://oidc.vercel.com/acme", ""},
		{issuerPolicy{}, "https://OIDC.vercel.com.evil/acme", ""},
		{issuerPolicy{}, "https://oidc.vercel.com@evil.example/", ""},
		{issuerPolicy{}, "oidc.vercel.com", ""},
		{issuerPolicy{jwksURL: "http://127.0.0.1:1/keys"}, "https://oidc.vercel.com/acme", "http://127.0.0.1:1/keys"},
		{issuerPolicy{jwksURL: "http://127.0.0.1:1/keys"}, "https://evil.example", ""},
		{issuerPolicy{issuer: "https://oidc.vercel.com/acme"}, "https://oidc.vercel.com/acme/", "https://oidc.vercel.com/acme/.well-known/jwks"},
		{issuerPolicy{issuer: "https://oidc.vercel.com/acme"}, "https://oidc.vercel.com/other", ""},
		{issuerPolicy{issuer: "https://oidc.vercel.com/acme"}, "https://oidc.vercel.com", ""},
		{issuerPolicy{issuer: "http://127.0.0.1:8080", jwksURL: "http://127.0.0.1:8080/k"}, "http://127.0.0.1:8080", "http://127.0.0.1:8080/k"},
	} {
		got, err := tc.policy.check(tc.iss)
		if tc.wantURL == "" {
			if err == nil {
				t.Errorf("%+v.check(%q) = %q, want refused", tc.policy, tc.iss, got)
			}
			continue
		}
		if err != nil || got != tc.wantURL {
			t.Errorf("%+v.check(%q) = %q, %v; want %q", tc.policy, tc.iss, got, err, tc.wantURL)
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
		p := issuerPolicy{}
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
			return c.verify(context.Background(), tok, issuerPolicy{}, "", &jwt.RegisteredClaims{})
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
	err := c.verify(context.Background(), tok, issuerPolicy{jwksURL: redirect.URL + "/jwks"}, "", &jwt.RegisteredClaims{})
	if err == nil {
		t.Error("token verified with keys from a redirect target")
	}
	if n := jwks.fetches.Load(); n != 0 {
		t.Errorf("redirect followed (%d fetches)", n)
	}
}
