package integration

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fakeVercel is the part of the Vercel platform the proxy and the gateway
// talk to: the token API that mints OIDC tokens
// (POST /v1/projects/<project>/token?source=…&teamId=…, authenticated with
// a Vercel access token) and the issuer's JWKS (<iss>/.well-known/jwks).
// Its tokens look like real Vercel OIDC tokens: RS256 with a kid, iss
// https://oidc.vercel.com/<team_slug>, aud https://vercel.com/<team_slug>,
// sub owner:<team_slug>:project:<project>:environment:<env>, owner_id,
// project_id, environment, iat, nbf, exp.
type fakeVercel struct {
	t   testing.TB
	srv *httptest.Server

	TeamID, TeamSlug       string
	ProjectID, ProjectName string
	Environment            string
	AccessToken            string

	mu                    sync.Mutex
	keys                  []signingKey // all published in the JWKS; the last one signs
	ttl                   time.Duration
	status                int           // non-zero: the mint endpoint fails with it
	hold                  chan struct{} // non-nil: a mint waits until it is closed
	held                  chan struct{} // closed when a mint is waiting on hold
	mints                 []mintRecord  // every call to the mint endpoint
	inflight, maxInflight int           // concurrent mint calls, now and at most
	issued                []issuedToken // every token signed, minted or made by a test
}

type signingKey struct {
	kid string
	key *rsa.PrivateKey
}

type mintRecord struct {
	At     time.Time
	Status int
	Query  string
}

type issuedToken struct {
	Token  string
	Exp    time.Time
	Signed time.Time
}

// rsaKeys are generated once per test binary: RSA key generation is slow
// under -race, and each fake still gets its own kids and JWKS.
var (
	rsaKeysOnce sync.Once
	rsaKeys     []*rsa.PrivateKey
)

func testRSAKey(i int) *rsa.PrivateKey {
	rsaKeysOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i%len(rsaKeys)]
}

func newFakeVercel(t testing.TB) *fakeVercel {
	v := &fakeVercel{
		t:           t,
		TeamID:      "team_" + randomString(24),
		TeamSlug:    "acme-" + strings.ToLower(randomString(6)),
		ProjectID:   "prj_" + randomString(28),
		ProjectName: "sandbox-agents",
		Environment: "development",
		AccessToken: "vcp_" + randomString(40), // shaped like a Vercel access token
		ttl:         time.Hour,
		keys:        []signingKey{{kid: "kid-" + randomString(8), key: testRSAKey(0)}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/projects/{project}/token", v.mint)
	mux.HandleFunc("GET /{team}/.well-known/jwks", v.jwks)
	mux.HandleFunc("GET /.well-known/jwks", v.jwks)
	v.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		v.mu.Lock()
		if v.hold != nil {
			select {
			case <-v.hold:
			default:
				close(v.hold)
			}
		}
		v.mu.Unlock()
		v.srv.Close()
	})
	return v
}

// URL is the fake's base URL, for `mint { api … }`.
func (v *fakeVercel) URL() string { return v.srv.URL }

// Issuer is the iss of the tokens it signs.
func (v *fakeVercel) Issuer() string { return "https://oidc.vercel.com/" + v.TeamSlug }

// SetTTL sets the lifetime of minted tokens.
func (v *fakeVercel) SetTTL(d time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ttl = d
}

// SetFailing makes the mint endpoint answer with status (e.g. 500), or
// work again with 0: a Vercel API outage.
func (v *fakeVercel) SetFailing(status int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.status = status
}

// Hold makes mint calls wait until the returned release function is
// called; held is closed when the first held call arrives.
func (v *fakeVercel) Hold() (held <-chan struct{}, release func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.hold, v.held = make(chan struct{}), make(chan struct{})
	h := v.hold
	var once sync.Once
	return v.held, func() { once.Do(func() { close(h) }) }
}

// RotateKey starts signing with a new key (a new kid); the JWKS keeps
// publishing the old ones, as Vercel's does during a rotation.
func (v *fakeVercel) RotateKey() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys = append(v.keys, signingKey{kid: "kid-" + randomString(8), key: testRSAKey(len(v.keys))})
}

// Token signs a token that expires in ttl (negative: already expired),
// as the env variable or a pulled .env.local would hold it.
func (v *fakeVercel) Token(ttl time.Duration) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.signLocked(time.Now(), ttl)
}

func (v *fakeVercel) signLocked(now time.Time, ttl time.Duration) string {
	k := v.keys[len(v.keys)-1]
	iat := now
	if ttl < 0 {
		iat = now.Add(2 * ttl) // an old token, long expired
	}
	exp := now.Add(ttl)
	claims := jwt.MapClaims{
		"iss":         v.Issuer(),
		"aud":         "https://vercel.com/" + v.TeamSlug,
		"sub":         fmt.Sprintf("owner:%s:project:%s:environment:%s", v.TeamSlug, v.ProjectName, v.Environment),
		"owner":       v.TeamSlug,
		"owner_id":    v.TeamID,
		"project":     v.ProjectName,
		"project_id":  v.ProjectID,
		"environment": v.Environment,
		"scope":       fmt.Sprintf("owner:%s:project:%s:environment:%s", v.TeamSlug, v.ProjectName, v.Environment),
		"iat":         iat.Unix(),
		"nbf":         iat.Unix(),
		// exp in whole seconds, like every JWT: round up so that a token
		// never lives shorter than asked.
		"exp": exp.Add(time.Second - 1).Truncate(time.Second).Unix(),
		"jti": randomString(16), // two tokens signed in the same second still differ
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.key)
	if err != nil {
		panic(err)
	}
	v.issued = append(v.issued, issuedToken{Token: s, Exp: time.Unix(claims["exp"].(int64), 0), Signed: now})
	return s
}

// usableUntil is when the proxy stops sending token: its exp less the
// expiry margin, by default the smaller of 5s and a tenth of its
// lifetime (iat to exp, in the JWT's whole seconds).
func (v *fakeVercel) usableUntil(token string) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, it := range v.issued {
		if it.Token == token {
			iat := time.Unix(it.Signed.Unix(), 0)
			return it.Exp.Add(-min(5*time.Second, it.Exp.Sub(iat)/10))
		}
	}
	return time.Time{}
}

func (v *fakeVercel) mint(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	hold, held := v.hold, v.held
	v.inflight++
	v.maxInflight = max(v.maxInflight, v.inflight)
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.inflight--
		v.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-held:
		default:
			close(held)
		}
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	status, body := v.mintLocked(r)
	v.mints = append(v.mints, mintRecord{At: time.Now(), Status: status, Query: r.URL.RawQuery})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func (v *fakeVercel) mintLocked(r *http.Request) (int, any) {
	apiError := func(status int, code, msg string) (int, any) {
		return status, map[string]any{"error": map[string]string{"code": code, "message": msg}}
	}
	if r.Header.Get("Authorization") != "Bearer "+v.AccessToken {
		return apiError(http.StatusForbidden, "forbidden", "Not authorized")
	}
	if p := r.PathValue("project"); p != v.ProjectID && p != v.ProjectName {
		return apiError(http.StatusNotFound, "not_found", "Project not found")
	}
	q := r.URL.Query()
	if team := q.Get("teamId"); team != v.TeamID && team != v.TeamSlug {
		return apiError(http.StatusForbidden, "forbidden", "Not authorized: wrong team")
	}
	if q.Get("source") == "" {
		return apiError(http.StatusBadRequest, "bad_request", "source is required")
	}
	if r.ContentLength > 0 {
		return apiError(http.StatusBadRequest, "bad_request", "no body expected")
	}
	if v.status != 0 {
		return apiError(v.status, "internal_server_error", "An unexpected internal error occurred")
	}
	return http.StatusOK, map[string]string{"token": v.signLocked(time.Now(), v.ttl)}
}

func (v *fakeVercel) jwks(w http.ResponseWriter, r *http.Request) {
	if team := r.PathValue("team"); team != "" && team != v.TeamSlug {
		http.NotFound(w, r)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var keys []map[string]string
	for _, k := range v.keys {
		pub := k.key.PublicKey
		keys = append(keys, map[string]string{
			"kty": "RSA",
			"use": "sig",
			"alg": "RS256",
			"kid": k.kid,
			"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// Mints returns every call to the mint endpoint so far.
func (v *fakeVercel) Mints() []mintRecord {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]mintRecord(nil), v.mints...)
}

// MaxConcurrentMints is the most mint calls that were ever in progress at
// once.
func (v *fakeVercel) MaxConcurrentMints() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.maxInflight
}

// Issued returns every token signed so far.
func (v *fakeVercel) Issued() []issuedToken {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]issuedToken(nil), v.issued...)
}

// expOf is the exp of a token this fake signed.
func (v *fakeVercel) expOf(token string) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, it := range v.issued {
		if it.Token == token {
			return it.Exp, true
		}
	}
	return time.Time{}, false
}

func randomString(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
