// Package oidctest is for tests only: the fixtures of Vercel-issued JWTs
// that the tests of the oidc, credential and identity packages and of the
// module share. A test RSA key and a second one the JWKS does not
// publish, tokens signed with either (and the classic forgeries), Vercel
// OIDC claims for a test team and project, and a JWKS served on loopback
// or in process, counting its fetches.
//
// It never runs in the proxy: only _test.go files import it. Keys are
// made once per test binary.
package oidctest

import (
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
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The team and project of the test OIDC tokens (ids, as Vercel's claims
// carry them).
const (
	Team    = "team_testteam"
	Project = "prj_testproject"
)

// Kid is the key id Sign puts in a token's header and NewJWKS publishes
// Key under.
const Kid = "test-kid"

// Key signs every test token (RS256, as Vercel does).
var Key = sync.OnceValue(func() *rsa.PrivateKey { return newKey() })

// OtherKey is a key the JWKS does not publish.
var OtherKey = sync.OnceValue(func() *rsa.PrivateKey { return newKey() })

func newKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

// Sign signs claims with RS256, Key and Kid, like a Vercel token.
func Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = Kid
	s, err := tok.SignedString(Key())
	if err != nil {
		t.Fatalf("signing test JWT: %v", err)
	}
	return s
}

// SignWith signs claims with method and key, with kid if not empty. It
// panics on error, so that it can run in a handler goroutine.
func SignWith(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
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

// Unsigned is an alg:none token (the classic forgery).
func Unsigned(claims jwt.MapClaims) string {
	return SignWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, Kid, claims)
}

// HS256WithPublicKey signs claims with HS256 using the published RSA
// public key as the HMAC secret (the classic key-confusion forgery), in
// every encoding an attacker could guess the verifier uses.
func HS256WithPublicKey(claims jwt.MapClaims) map[string]string {
	pub := &Key().PublicKey
	der := x509.MarshalPKCS1PublicKey(pub)
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return map[string]string{
		"pkcs1 der": SignWith(jwt.SigningMethodHS256, der, Kid, claims),
		"pkix pem":  SignWith(jwt.SigningMethodHS256, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), Kid, claims),
		"modulus":   SignWith(jwt.SigningMethodHS256, pub.N.Bytes(), Kid, claims),
	}
}

// Claims are minimal verifiable claims issued by iss, expiring at exp.
func Claims(iss string, exp time.Time) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": iss, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix()}
}

// OIDCClaims are Vercel-like OIDC claims expiring at exp, issued now, for
// Team and Project.
func OIDCClaims(exp time.Time) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":         "https://oidc.vercel.com/acme",
		"aud":         "https://vercel.com/acme",
		"sub":         "owner:acme:project:demo:environment:development",
		"owner_id":    Team,
		"project_id":  Project,
		"environment": "development",
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         exp.Unix(),
	}
}

// OIDCToken is a signed Vercel-like OIDC token expiring at exp (second
// precision, as in a JWT). edit, if given, changes the claims.
func OIDCToken(t testing.TB, exp time.Time, edit ...func(jwt.MapClaims)) string {
	t.Helper()
	c := OIDCClaims(exp)
	for _, e := range edit {
		e(c)
	}
	return Sign(t, c)
}

// JWKSDocument is a JWKS document publishing keys by kid.
func JWKSDocument(keys map[string]*rsa.PublicKey) []byte {
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

// JWKS serves a JWKS at /.well-known/jwks on 127.0.0.1 and counts the
// fetches. Its URL is usable as an issuer: <URL>/.well-known/jwks is the
// default JWKS location.
type JWKS struct {
	*httptest.Server
	fetches atomic.Int32

	mu  sync.Mutex
	doc []byte
}

// NewJWKS starts a JWKS publishing Key under Kid, closed at the end of
// the test.
func NewJWKS(t *testing.T) *JWKS {
	t.Helper()
	f := &JWKS{}
	f.SetKeys(map[string]*rsa.PublicKey{Kid: &Key().PublicKey})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks" {
			http.NotFound(w, r)
			return
		}
		f.fetches.Add(1)
		f.mu.Lock()
		doc := f.doc
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(f.Close)
	return f
}

// SetKeys makes the JWKS publish keys by kid from now on.
func (f *JWKS) SetKeys(keys map[string]*rsa.PublicKey) {
	f.mu.Lock()
	f.doc = JWKSDocument(keys)
	f.mu.Unlock()
}

// Fetches is how many times the JWKS was fetched.
func (f *JWKS) Fetches() int32 { return f.fetches.Load() }

// JWKSURL is where the keys are: <URL>/.well-known/jwks.
func (f *JWKS) JWKSURL() string { return f.URL + "/.well-known/jwks" }

// RoundTripFunc serves a client's requests in process: no sockets, so it
// runs inside a synctest bubble.
type RoundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip implements http.RoundTripper.
func (f RoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// InProcess is a transport that answers every request with doc() in
// process, and the counter of its requests.
func InProcess(doc func() (int, []byte)) (http.RoundTripper, *atomic.Int32) {
	var n atomic.Int32
	return RoundTripFunc(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		status, body := doc()
		return &http.Response{
			StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(string(body))), Request: r,
		}, nil
	}), &n
}

// AssertNoToken fails the test if s (an error, a log line: what) holds
// any of tokens, or a part of one given among them.
func AssertNoToken(t testing.TB, what, s string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if tok != "" && strings.Contains(s, tok) {
			t.Errorf("%s contains a token (%.12s…): %s", what, tok, s)
		}
	}
}

// ForwardURL is the forwardURL of the test sandboxes' network policy:
// the aud of their tokens.
const ForwardURL = "https://proxy.example.com/forward"

// SandboxClaims are the claims of a Vercel Sandbox token issued by iss
// for Team and Project, for ForwardURL, valid for an hour.
func SandboxClaims(iss string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":          iss,
		"aud":          ForwardURL,
		"sub":          "owner:acme:project:demo:environment:production",
		"team_id":      Team,
		"project_id":   Project,
		"sandbox_id":   "sbx_0123456789",
		"sandbox_name": "agent-7",
		"iat":          now.Unix(),
		"nbf":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
	}
}
