// Package benchtoken makes Vercel-OIDC-shaped JWTs for the benchmarks.
// The module reads only exp (and owner_id/project_id) without checking
// the signature, so the token is signed with a throwaway RSA key: RS256
// keeps its size close to a real one (~1 KB).
package benchtoken

import (
	"crypto/rand"
	"crypto/rsa"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// New returns a token that expires after ttl; jti labels it, so the fake
// upstream can tell which token a request carried.
func New(jti string, ttl time.Duration) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss":         "https://oidc.vercel.com/bench-team",
		"aud":         "https://vercel.com/bench-team",
		"sub":         "owner:bench-team:project:bench:environment:development",
		"owner_id":    "team_bench",
		"project_id":  "prj_bench",
		"environment": "development",
		"jti":         jti,
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         now.Add(ttl).Unix(),
	})
	tok.Header["kid"] = "bench"
	return tok.SignedString(key)
}
