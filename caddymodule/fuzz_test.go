package caddymodule

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Fuzz tests: run each for a few seconds with
//
//	go test ./caddymodule -run '^$' -fuzz '^FuzzName$' -fuzztime 5s
//
// Seeds are below and in testdata/fuzz/<FuzzName>/.

// FuzzSignedKey: parsing never panics, a key round-trips through
// signClientKey/verifySignedKey, and only the right secret accepts it.
func FuzzSignedKey(f *testing.F) {
	f.Add("sandbox-1", "0123456789abcdef0123", "sk-aigw-sandbox-1.abc")
	f.Add("", "secret-secret-secret", "sk-aigw-.")
	f.Add(strings.Repeat("a", 129), "s", "sk-aigw-x.!!!!")
	f.Add("x_y-Z9", "k", "sk-aigw-x_y-Z9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, name, secret, key string) {
		if n, _, ok := parseSignedKey(key); ok && !validClientName(n) {
			t.Fatalf("parseSignedKey accepted invalid name %q", n)
		}
		signed, err := signClientKey(name, secret)
		if err != nil {
			if validClientName(name) && secret != "" {
				t.Fatalf("signClientKey(%q) failed: %v", name, err)
			}
			return
		}
		got, ok := verifySignedKey(signed, [][]byte{[]byte(secret)})
		if !ok || got != name {
			t.Fatalf("own key refused: %q -> %q %v", name, got, ok)
		}
		if _, ok := verifySignedKey(signed, [][]byte{[]byte(secret + "x")}); ok {
			t.Fatal("key accepted under another secret")
		}
		if key != signed {
			if n, ok := verifySignedKey(key, [][]byte{[]byte(secret)}); ok && n != name {
				// a different key verifying under the same secret must be
				// for a different name with its own valid signature
				if s2, _ := signClientKey(n, secret); s2 != key {
					t.Fatalf("forged key %q accepted as %q", key, n)
				}
			}
		}
	})
}

// FuzzClientKeyFromRequest: extraction never panics and never returns
// a key with surrounding space or one from a non-Bearer Authorization.
func FuzzClientKeyFromRequest(f *testing.F) {
	f.Add("Bearer sk-placeholder", "", "")
	f.Add("bearer   sk-x  ", "k", "")
	f.Add("Basic dXNlcjpwYXNz", "sk-from-x-api-key", "")
	f.Add("", "", "sk-api-key")
	f.Add("Bearer", "", "")
	f.Fuzz(func(t *testing.T, auth, xAPIKey, apiKey string) {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		if xAPIKey != "" {
			h.Set("X-Api-Key", xAPIKey)
		}
		if apiKey != "" {
			h.Set("Api-Key", apiKey)
		}
		key := clientKeyFromRequest(h)
		if key != strings.TrimSpace(key) {
			t.Fatalf("key %q has surrounding space", key)
		}
		fromHeaders := key == strings.TrimSpace(xAPIKey) || key == strings.TrimSpace(apiKey)
		if key != "" && !strings.HasPrefix(strings.ToLower(auth), "bearer ") && !fromHeaders {
			t.Fatalf("key %q taken from non-Bearer Authorization %q", key, auth)
		}
	})
}

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
		c, _, err := parseOIDCToken(token, now)
		if err != nil {
			if strings.Contains(err.Error(), token) && len(token) > 8 {
				t.Fatalf("error %q quotes the token", err)
			}
			return
		}
		if !c.usable(now) {
			t.Fatal("accepted a token that is not usable now")
		}
		if s := c.String(); len(token) > 8 && strings.Contains(s, token) {
			t.Fatalf("String() shows the token: %q", s)
		}
	})
}

// FuzzCaddyfile: the ai_gateway_auth parser never panics, and an
// accepted block always has a credential and client authentication.
func FuzzCaddyfile(f *testing.F) {
	f.Add("ai_gateway_auth {\n credential static {env.K}\n client_key sk-placeholder\n}")
	f.Add("ai_gateway_auth {\n credential vercel_oidc {\n  env\n  file /x\n  mint {\n   project p\n   access_token {env.T}\n  }\n  refresh_before 1m\n  push /p {\n   team team_x\n  }\n }\n client_keys_file /k\n}")
	f.Add("ai_gateway_auth {\n credential static k\n vercel_sandbox {\n  audience https://a/b\n  team team_1 team_2\n }\n allow_paths /v1/* /x\n retry_body_limit 2MiB\n}")
	f.Add("ai_gateway_auth arg {\n}")
	f.Add("ai_gateway_auth {\n credential\n}")
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if len(h.CredentialsRaw) == 0 || !h.hasClientAuth() {
			t.Fatalf("accepted a config without credential or client auth: %q", input)
		}
	})
}
