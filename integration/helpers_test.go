package integration

import (
	"fmt"
	"strings"
	"testing"
)

// The set-ups the tests share: a credential minted from the fake Vercel
// API, a proxy that takes signed client keys, a fleet of instances on one
// storage. Each test still writes its own site around them, so that what
// it configures stays in view.

// mintEnv is the environment mintBlock's placeholders read: the fake
// Vercel API's project, team and access token.
func mintEnv(v *fakeVercel) map[string]string {
	return map[string]string{
		"VERCEL_PROJECT_ID": v.ProjectID,
		"VERCEL_TEAM_ID":    v.TeamID,
		"VERCEL_TOKEN":      v.AccessToken,
	}
}

// mintBlock is the mint block of a `credential vercel_oidc` that mints
// from the Vercel API at api with mintEnv's variables; extra lines
// (timeout 5m) go at its end. It is indented to sit in a credential block
// of a site's ai_gateway_auth: put it after three tabs.
func mintBlock(api string, extra ...string) string {
	return mintBlockFor("{env.VERCEL_PROJECT_ID}", "{env.VERCEL_TEAM_ID}", "{env.VERCEL_TOKEN}", api, extra...)
}

// mintBlockFor is mintBlock with the project, team and access token
// given (literal values or other placeholders).
func mintBlockFor(project, team, accessToken, api string, extra ...string) string {
	var b strings.Builder
	b.WriteString("mint {\n")
	for _, line := range append([]string{
		"project      " + project,
		"team         " + team,
		"access_token " + accessToken,
		"api          " + api,
	}, extra...) {
		b.WriteString("\t\t\t\t" + line + "\n")
	}
	b.WriteString("\t\t\t}")
	return b.String()
}

// signedKeysProxy runs a Caddy whose site takes signed client keys and
// sends the static API key apiKey to upstream (a fake gateway's URL, or
// another reverse_proxy target), with extra lines in its ai_gateway_auth
// block; it returns the proxy and the key secret (signedClientKey signs
// with it).
func signedKeysProxy(t *testing.T, upstream, apiKey, extra string) (*caddyProc, string) {
	t.Helper()
	secret := newClientKeySecret()
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret}},
		fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		%s
	}
	reverse_proxy %s`, extra, upstream))
	return p, secret
}

// fleetStorage is the global option that makes instances share Caddy's
// file_system storage at dir.
func fleetStorage(dir string) string { return fmt.Sprintf("\tstorage file_system %s\n", dir) }

// startFleet runs n Caddy instances of site, each with its own listener,
// admin endpoint and data dir, with opts and sharing the file_system
// storage at dir (added to opts.Global).
func startFleet(t *testing.T, n int, dir string, opts caddyOptions, site string) []*caddyProc {
	t.Helper()
	opts.Global = fleetStorage(dir) + opts.Global
	fleet := make([]*caddyProc, n)
	for i := range fleet {
		fleet[i] = startCaddy(t, opts, site)
	}
	return fleet
}
