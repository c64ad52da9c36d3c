package credential

import (
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
)

// FuzzTokenFromFileContent: never panics; a found token is trimmed and
// a raw JWT file yields itself.
func FuzzTokenFromFileContent(f *testing.F) {
	f.Add("VERCEL_OIDC_TOKEN=\"aaa.bbb.ccc\"\n")
	f.Add("export VERCEL_OIDC_TOKEN='aaa.bbb.ccc' # pulled\nOTHER=1\n")
	f.Add("  eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln  \n")
	f.Add("# comment only\n=\n==\n\"\n")
	f.Fuzz(func(t *testing.T, content string) {
		tok, ok := tokenFromFileContent(content, "VERCEL_OIDC_TOKEN")
		if ok && tok != strings.TrimSpace(tok) {
			t.Fatalf("token %q not trimmed", tok)
		}
		if raw := strings.TrimSpace(content); oidc.LooksLikeJWT(raw) && (!ok || tok != raw) {
			t.Fatalf("raw JWT file not returned as is: %q -> %q", raw, tok)
		}
	})
}

// FuzzParseOIDCToken: never panics; an accepted token is unexpired and
// its credential never prints its value.
func FuzzParseOIDCToken(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOiJub3QtYS1udW1iZXIifQ.")
	f.Add("...")
	f.Fuzz(func(t *testing.T, token string) {
		now := time.Now()
		c, _, err := ParseToken(token, now)
		if err != nil {
			if strings.Contains(err.Error(), token) && len(token) > 8 {
				t.Fatalf("error %q quotes the token", err)
			}
			return
		}
		if !c.Usable(now) {
			t.Fatal("accepted a token that is not usable now")
		}
		if s := c.String(); len(token) > 8 && strings.Contains(s, token) {
			t.Fatalf("String() shows the token: %q", s)
		}
	})
}
