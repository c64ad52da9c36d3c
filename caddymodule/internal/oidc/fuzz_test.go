package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerifyHostileToken: a keyless token with any issuer and kid (and
// any raw token) never panics, never verifies, makes no fetch unless its
// issuer is one the configuration names, leaves at most that one JWKS in
// the cache, and is refused with a reason of bounded length.
func FuzzVerifyHostileToken(f *testing.F) {
	f.Add("https://oidc.vercel.com/team_a", "test-kid", "a.b.c")
	f.Add("https://oidc.vercel.com/team_a/", "made-up", "eyJhbGciOiJub25lIn0.e30.")
	f.Add("https://oidc.vercel.com/"+strings.Repeat("x", 6000), strings.Repeat("k", 3000), "")
	f.Add("https://oidc.vercel.com/team_a?x=1", "", "...")
	f.Add("https://oidc.vercel.com/team_a#f", "kid\x00\"\\", "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln")
	f.Add("https://user@oidc.vercel.com/team_a", "k", "")
	f.Add("https://oidc.vercel.com/%74eam_a", "k", "")
	f.Fuzz(func(t *testing.T, iss, kid, raw string) {
		const trusted = "https://oidc.vercel.com/team_a"
		c := NewCache()
		fetches := inProcessJWKS(c, keyDoc)
		p := NewIssuerPolicy("", "", trusted)
		header, _ := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid})
		claims, _ := json.Marshal(map[string]any{"iss": iss, "exp": time.Now().Add(time.Hour).Unix()})
		tok := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims) + ".c2lnbmF0dXJl"
		for i, token := range []string{tok, raw} {
			err := c.Verify(context.Background(), token, p, "", &jwt.RegisteredClaims{})
			if err == nil {
				t.Fatalf("a keyless token verified: %q", token)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("a %d-byte reason: client values are not cut short", len(err.Error()))
			}
			if i == 0 && strings.TrimRight(iss, "/") != trusted && fetches.Load() > 0 {
				t.Fatalf("issuer %.80q made the cache fetch", iss)
			}
		}
		if n := cachedURLs(c); n > 1 {
			t.Fatalf("%d JWKS documents cached; the configuration names one", n)
		}
	})
}
