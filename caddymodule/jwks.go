package caddymodule

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
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
)

// Verification of Vercel-issued JWTs (pushed OIDC tokens, Sandbox
// forwardURL tokens): RS256 only, keys from the issuer's JWKS.

const (
	vercelOIDCHost = "oidc.vercel.com"
	// jwksRefetchFloor is the least time between two fetches of one JWKS,
	// so that tokens with made-up kids cannot make the proxy hammer it.
	jwksRefetchFloor = 30 * time.Second
	jwksFetchTimeout = 10 * time.Second
	jwtLeeway        = 60 * time.Second
)

// jwksCache holds the RSA keys of JWKS documents by URL. Keys are fetched
// on first use and again when a token names an unknown kid, at most once
// per jwksRefetchFloor per URL.
type jwksCache struct {
	client *http.Client
	group  singleflight.Group

	mu   sync.Mutex
	sets map[string]*jwksSet
}

type jwksSet struct {
	keys    map[string]*rsa.PublicKey
	fetched time.Time
	err     error
}

func newJWKSCache() *jwksCache {
	return &jwksCache{
		client: &http.Client{
			Timeout:       jwksFetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sets: map[string]*jwksSet{},
	}
}

// key returns the key kid of the JWKS at jwksURL, fetching the JWKS when
// it is not known yet or does not have kid (subject to the floor).
func (c *jwksCache) key(ctx context.Context, jwksURL, kid string) (*rsa.PublicKey, error) {
	c.mu.Lock()
	set := c.sets[jwksURL]
	c.mu.Unlock()
	if set != nil {
		if k, ok := set.keys[kid]; ok {
			return k, nil
		}
		if time.Since(set.fetched) < jwksRefetchFloor {
			if set.err != nil {
				return nil, fmt.Errorf("fetching JWKS %s: %v", jwksURL, set.err)
			}
			return nil, fmt.Errorf("no key %q in JWKS %s", kid, jwksURL)
		}
	}
	v, _, _ := c.group.Do(jwksURL, func() (any, error) {
		keys, err := c.fetch(ctx, jwksURL)
		s := &jwksSet{keys: keys, fetched: time.Now(), err: err}
		c.mu.Lock()
		if old := c.sets[jwksURL]; err != nil && old != nil {
			s.keys = old.keys // keep the keys we had through a failed fetch
		}
		c.sets[jwksURL] = s
		c.mu.Unlock()
		return s, nil
	})
	set = v.(*jwksSet)
	if k, ok := set.keys[kid]; ok {
		return k, nil
	}
	if set.err != nil {
		return nil, fmt.Errorf("fetching JWKS %s: %v", jwksURL, set.err)
	}
	return nil, fmt.Errorf("no key %q in JWKS %s", kid, jwksURL)
}

func (c *jwksCache) fetch(ctx context.Context, jwksURL string) (map[string]*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, errors.New(scrubURLError(err))
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

// issuerPolicy decides which issuers are trusted and where their keys are.
type issuerPolicy struct {
	// issuer, when set, is the only accepted iss; otherwise https on host
	// oidc.vercel.com, any path.
	issuer string
	// jwksURL, when set, overrides <iss>/.well-known/jwks.
	jwksURL string
}

// check returns the JWKS URL for iss, or why iss is not trusted. It runs
// before any fetch, so a token cannot make the proxy fetch from a host of
// its choosing.
func (p issuerPolicy) check(iss string) (string, error) {
	if p.issuer != "" {
		if strings.TrimRight(iss, "/") != strings.TrimRight(p.issuer, "/") {
			return "", fmt.Errorf("issuer %q is not the configured %q", iss, p.issuer)
		}
	} else {
		u, err := url.Parse(iss)
		if err != nil || u.Scheme != "https" || u.Host != vercelOIDCHost || u.User != nil || u.RawQuery != "" {
			return "", fmt.Errorf("issuer %q is not https://%s", iss, vercelOIDCHost)
		}
	}
	if p.jwksURL != "" {
		return p.jwksURL, nil
	}
	return strings.TrimRight(iss, "/") + "/.well-known/jwks", nil
}

// verify checks token's RS256 signature against its issuer's JWKS, its
// issuer, exp (required) and nbf with 60s leeway, and audience when aud
// is not empty, and decodes its claims into claims.
func (c *jwksCache) verify(ctx context.Context, token string, p issuerPolicy, aud string, claims jwt.Claims) error {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithLeeway(jwtLeeway),
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
		jwksURL, err := p.check(iss)
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
		return keyErr
	}
	if err != nil {
		return verifyError(err)
	}
	return nil
}

// verifyError turns golang-jwt's error into a short reason without the
// token.
func verifyError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("token is malformed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.New("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return errors.New("token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errors.New("token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("token audience is not the configured one")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("token lacks a required claim (exp)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errors.New("token is issued in the future")
	}
	// keyfunc errors (issuer, kid, JWKS) and method errors carry their
	// own reason; golang-jwt wraps them as "token is unverifiable: …".
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && errors.Is(err, jwt.ErrTokenUnverifiable) {
		msg = msg[i+2:]
	}
	return errors.New(msg)
}
