package caddymodule

import (
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
