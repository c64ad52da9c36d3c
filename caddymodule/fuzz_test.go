package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Fuzz tests: run each for a few seconds with
//
//	go test ./caddymodule -run '^$' -fuzz '^FuzzName$' -fuzztime 5s
//
// Seeds are below and in testdata/fuzz/<FuzzName>/.

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
