// Package oidc owns the verification of Vercel-issued JWTs (pushed OIDC
// tokens, Vercel Sandbox forwardURL tokens): RS256 only, keys from the
// issuer's JWKS, cached ([Cache]); which issuers are trusted and where
// their keys are ([IssuerPolicy]); and the reading of a Vercel OIDC
// token's claims without verifying it ([UnverifiedClaims]), for tokens
// the proxy is given by its own configuration.
//
// It never fetches from a URL a token chose: every key URL comes from the
// configuration (or from a token the configuration supplied). It never
// logs, never caches a token, and never says more to a client than a
// [Problem]: its errors' texts are for the log, with every value a token
// carried cut short.
package oidc

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
)

const (
	vercelOIDCHost = "oidc.vercel.com"
	// vercelOIDCIssuer is Vercel's global issuer; team issuers are paths
	// under it.
	vercelOIDCIssuer = "https://" + vercelOIDCHost
	// jwksRefetchFloor is the least time between two fetches of one JWKS,
	// so that tokens with made-up kids cannot make the proxy hammer it.
	jwksRefetchFloor = 30 * time.Second
	jwksFetchTimeout = 10 * time.Second
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 60 * time.Second
	// jwksMaxURLs bounds the cache: only configured issuers reach it, so
	// the bound is a second line of defence, not a working limit.
	jwksMaxURLs = 64
	// jwksMaxKeys bounds the keys kept from one JWKS document.
	jwksMaxKeys = 64
)

// Cache holds the RSA keys of JWKS documents by URL. Keys are fetched
// on first use and again when a token names an unknown kid, at most once
// per jwksRefetchFloor per URL, one fetch per URL at a time (so no more
// at once than there are configured issuers). At most jwksMaxURLs documents are
// kept (the least recently used goes first), and a failure is kept only
// for the floor unless the URL gave keys before.
type Cache struct {
	client *http.Client
	group  singleflight.Group

	mu   sync.Mutex
	sets map[string]*jwksSet
}

// jwksSet is one fetch's outcome; immutable once stored, except used.
type jwksSet struct {
	keys    map[string]*rsa.PublicKey
	fetched time.Time
	err     error
	used    time.Time // guarded by jwksCache.mu
}

// NewCache returns an empty cache whose client follows no redirect and
// gives up on a fetch after 10 s.
func NewCache() *Cache {
	return &Cache{
		client: &http.Client{
			Timeout:       jwksFetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sets: map[string]*jwksSet{},
	}
}

// Len is how many JWKS documents the cache holds (failures included).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sets)
}

// SetTransport replaces the transport of the cache's client (an
// in-process JWKS in tests). Call it before the first verification.
func (c *Cache) SetTransport(rt http.RoundTripper) { c.client.Transport = rt }

// key returns the key kid of the JWKS at jwksURL, fetching the JWKS when
// it is not known yet or does not have kid (subject to the floor).
func (c *Cache) key(ctx context.Context, jwksURL, kid string) (*rsa.PublicKey, error) {
	if set := c.lookup(jwksURL); set != nil {
		if k, ok := set.keys[kid]; ok {
			return k, nil
		}
		if time.Since(set.fetched) < jwksRefetchFloor {
			return nil, set.missing(jwksURL, kid)
		}
	}
	v, _, _ := c.group.Do(jwksURL, func() (any, error) {
		// a caller that waited for the previous flight finds its result
		if s := c.lookup(jwksURL); s != nil && time.Since(s.fetched) < jwksRefetchFloor {
			return s, nil
		}
		keys, err := c.fetch(ctx, jwksURL)
		s := &jwksSet{keys: keys, fetched: time.Now(), err: err}
		c.store(jwksURL, s)
		return s, nil
	})
	set := v.(*jwksSet)
	if k, ok := set.keys[kid]; ok {
		return k, nil
	}
	return nil, set.missing(jwksURL, kid)
}

// missing is why set has no key kid.
func (s *jwksSet) missing(jwksURL, kid string) error {
	if s.err != nil {
		return fmt.Errorf("fetching JWKS %s: %v", jwksURL, s.err)
	}
	return fmt.Errorf("no key %s in JWKS %s", safetext.Quoted(kid), jwksURL)
}

func (c *Cache) lookup(jwksURL string) *jwksSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sets[jwksURL]
	if s != nil {
		s.used = time.Now()
	}
	return s
}

// store keeps s as the JWKS at jwksURL (with the keys from before if the
// fetch failed), drops failures older than the floor for URLs that never
// gave keys, and evicts the least recently used documents beyond
// jwksMaxURLs.
func (c *Cache) store(jwksURL string, s *jwksSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.sets[jwksURL]; s.err != nil && old != nil {
		s.keys = old.keys // keep the keys we had through a failed fetch
	}
	s.used = s.fetched
	c.sets[jwksURL] = s
	for u, e := range c.sets {
		if e.keys == nil && s.fetched.Sub(e.fetched) >= jwksRefetchFloor {
			delete(c.sets, u)
		}
	}
	for len(c.sets) > jwksMaxURLs {
		var oldest string
		for u, e := range c.sets {
			if u != jwksURL && (oldest == "" || e.used.Before(c.sets[oldest].used)) {
				oldest = u
			}
		}
		delete(c.sets, oldest)
	}
}

func (c *Cache) fetch(ctx context.Context, jwksURL string) (map[string]*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, errors.New(safetext.TransportError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, errors.New("not a JWKS document")
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if len(keys) == jwksMaxKeys {
			break
		}
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, errN := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.N, "="))
		e, errE := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.E, "="))
		if errN != nil || errE != nil || len(e) > 4 || len(n) < 256 {
			continue // malformed, or shorter than 2048 bits
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS has no usable RSA signing key")
	}
	return keys, nil
}

// IssuerPolicy decides which issuers are trusted and where their keys
// are. Every key URL comes from the configuration (or from a token the
// configuration supplied), never from a token being verified: a client
// cannot make the proxy fetch from, or keep anything for, a URL it chose.
// (AnyVercelIssuer widens the accepted iss values, not the key URLs.)
type IssuerPolicy struct {
	// issuers are the accepted iss values, without a trailing slash.
	issuers []string
	// Current, when set, names one more accepted issuer at the time of
	// the check: the iss of the token a source already holds. Only an
	// issuer on https://oidc.vercel.com is taken from it.
	Current func() string
	// jwksURL, when set, overrides <iss>/.well-known/jwks.
	jwksURL string
	// AnyVercelIssuer trusts any https://oidc.vercel.com[/<one segment>]
	// issuer too. Only with jwksURL set: the keys then come from that one
	// configured URL whatever the iss, so a client-chosen path causes no
	// fetch and no cache entry, and the signature (Vercel's key) plus the
	// caller's own claim checks decide.
	AnyVercelIssuer bool
}

// NewIssuerPolicy trusts issuer alone when it is set, else the
// defaults, each without a trailing slash and once.
func NewIssuerPolicy(issuer, jwksURL string, defaults ...string) IssuerPolicy {
	p := IssuerPolicy{jwksURL: jwksURL}
	if issuer != "" {
		defaults = []string{issuer}
	}
	for _, iss := range defaults {
		if iss = strings.TrimRight(iss, "/"); iss != "" && !slices.Contains(p.issuers, iss) {
			p.issuers = append(p.issuers, iss)
		}
	}
	return p
}

// VercelIssuer is the issuer of Vercel tokens whose iss path is team (a
// team id or slug); the global issuer for "".
func VercelIssuer(team string) string {
	if team == "" {
		return vercelOIDCIssuer
	}
	return vercelOIDCIssuer + "/" + team
}

// isVercelIssuer reports whether iss is https://oidc.vercel.com or one
// plain path segment under it.
func isVercelIssuer(iss string) bool {
	rest, ok := strings.CutPrefix(strings.TrimRight(iss, "/"), vercelOIDCIssuer)
	if !ok || rest == "" {
		return ok
	}
	if rest[0] != '/' || len(rest) == 1 || len(rest) > 129 {
		return false
	}
	for _, ch := range rest[1:] {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// Check returns the JWKS URL for iss, or why iss is not trusted. It runs
// before any fetch.
func (p IssuerPolicy) Check(iss string) (string, error) {
	want := strings.TrimRight(iss, "/")
	trusted := want != "" && slices.Contains(p.issuers, want)
	if !trusted && want != "" && p.Current != nil {
		cur := strings.TrimRight(p.Current(), "/")
		trusted = cur == want && isVercelIssuer(cur)
	}
	if !trusted && p.AnyVercelIssuer && p.jwksURL != "" {
		trusted = isVercelIssuer(want)
	}
	if !trusted {
		return "", fmt.Errorf("issuer %s is not a trusted issuer (%s)", safetext.Quoted(iss), strings.Join(p.issuers, ", "))
	}
	if p.jwksURL != "" {
		return p.jwksURL, nil
	}
	return want + "/.well-known/jwks", nil
}

// Problem is what a client may be told about a refused token: a
// category, never a value.
type Problem int

const (
	// ProblemUnverified is a token malformed, forged, from an untrusted
	// issuer or with an unknown kid, or whose keys are unavailable.
	ProblemUnverified Problem = iota
	// ProblemExpired is a token whose exp is past, beyond the leeway.
	ProblemExpired
	// ProblemNotYetValid is a token whose nbf or iat is in the future.
	ProblemNotYetValid
	// ProblemWrongAudience is a token whose aud is not the one expected.
	ProblemWrongAudience
)

// tokenError is a token verify refused: the problem for the client's
// message, the whole reason (client values cut short) for the log.
type tokenError struct {
	problem Problem
	reason  string
}

func (e *tokenError) Error() string { return e.reason }

// ProblemOf is err's problem; ProblemUnverified for any other error.
func ProblemOf(err error) Problem {
	if te, ok := errors.AsType[*tokenError](err); ok {
		return te.problem
	}
	return ProblemUnverified
}

// Verify checks token's RS256 signature against its issuer's JWKS, its
// issuer, exp (required) and nbf with 60s leeway, and audience when aud
// is not empty, and decodes its claims into claims.
func (c *Cache) Verify(ctx context.Context, token string, p IssuerPolicy, aud string, claims jwt.Claims) error {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithLeeway(Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if aud != "" {
		opts = append(opts, jwt.WithAudience(aud))
	}
	var keyErr error // the keyfunc's own reason, whole (issuer, kid, JWKS URL)
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		iss, err := t.Claims.GetIssuer()
		if err != nil {
			return nil, err
		}
		jwksURL, err := p.Check(iss)
		if err == nil {
			kid, _ := t.Header["kid"].(string)
			if kid == "" {
				err = errors.New("token has no kid")
			} else {
				var key *rsa.PublicKey
				if key, err = c.key(ctx, jwksURL, kid); err == nil {
					return key, nil
				}
			}
		}
		keyErr = err
		return nil, err
	})
	if keyErr != nil {
		return &tokenError{problem: ProblemUnverified, reason: keyErr.Error()}
	}
	if err != nil {
		return verifyError(err)
	}
	return nil
}

// verifyError turns golang-jwt's error into a short reason without the
// token, and its problem.
func verifyError(err error) error {
	problem, reason := ProblemUnverified, ""
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenExpired):
		problem, reason = ProblemExpired, "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		problem, reason = ProblemNotYetValid, "token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		problem, reason = ProblemWrongAudience, "token audience is not the configured one"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		reason = "token lacks a required claim (exp)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		problem, reason = ProblemNotYetValid, "token is issued in the future"
	default:
		// method errors and the like carry their own reason; golang-jwt
		// wraps them as "token is unverifiable: …". Cut short: the
		// token's header and claims are the client's.
		reason = err.Error()
		if i := strings.LastIndex(reason, ": "); i >= 0 && errors.Is(err, jwt.ErrTokenUnverifiable) {
			reason = reason[i+2:]
		}
		reason = safetext.Clipped(reason)
	}
	return &tokenError{problem: problem, reason: reason}
}
