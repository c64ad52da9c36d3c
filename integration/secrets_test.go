package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// secret is a value that must never appear in a log, a response or an
// adapted config.
type secret struct {
	what, value string
}

// secretsOf lists the fake Vercel's access token and every token it has
// signed so far.
func secretsOf(v *fakeVercel) []secret {
	s := []secret{{"the Vercel access token", v.AccessToken}}
	for i, it := range v.Issued() {
		s = append(s, secret{fmt.Sprintf("OIDC token #%d", i+1), it.Token})
	}
	return s
}

// assertNoSecrets fails if text contains any secret, or any 16
// characters of one: a log line that printed half a key or a JWT's
// signature would still leak it. (A JWT's header is the same in every
// token and not secret; its payload and signature are looked for.)
func assertNoSecrets(t testing.TB, where, text string, secrets ...secret) {
	t.Helper()
	const window = 16
	index := map[string]string{} // every window of every secret -> which secret
	for _, s := range secrets {
		parts := []string{s.value}
		if p := strings.Split(s.value, "."); len(p) == 3 {
			parts = p[1:]
		}
		for _, part := range parts {
			if len(part) < window {
				t.Fatalf("secret %s is too short to look for", s.what)
			}
			for i := 0; i+window <= len(part); i++ {
				index[part[i:i+window]] = s.what
			}
		}
	}
	found := map[string]bool{}
	for i := 0; i+window <= len(text); i++ {
		if what, ok := index[text[i:i+window]]; ok && !found[what] {
			found[what] = true
			t.Errorf("%s contain (part of) %s", where, what)
		}
	}
}

// TestNoSecretLeaks runs the proxy at debug level with access logs, with
// every kind of credential in play (a static API key, an env OIDC token,
// minted tokens and the access token that mints them, a failing mint, an
// expired token, a key the gateway rejects), drives successful, streamed,
// rejected and unavailable requests through it, and then searches Caddy's
// whole output, every response (headers and bodies), the admin API's view
// of the config and `caddy adapt`'s output for those secrets.
func TestNoSecretLeaks(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	v.SetTTL(4 * time.Second)
	down := newFakeVercel(t) // the same project, but its API is down
	down.AccessToken, down.TeamID, down.ProjectID = v.AccessToken, v.TeamID, v.ProjectID
	down.SetFailing(http.StatusBadGateway)
	apiKey, revokedKey := newAPIKey(), newAPIKey()
	gwStatic := newFakeGateway(t, nil, apiKey) // does not know revokedKey
	gwOIDC := newFakeGateway(t, v)
	// Used first, then minted ones; long enough to outlast a slow start.
	envTok := v.Token(20 * time.Second)
	expiredTok := v.Token(-time.Hour)

	env := mintEnv(v)
	env["AI_GATEWAY_API_KEY"] = apiKey
	env["REVOKED_API_KEY"] = revokedKey
	env["VERCEL_OIDC_TOKEN"] = envTok
	env["EXPIRED_OIDC_TOKEN"] = expiredTok
	sites := []string{
		// a static key
		fmt.Sprintf(`	log
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gwStatic.URL()),
		// an env token, then minted ones
		fmt.Sprintf(`	log
	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
			%s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, mintBlock(v.URL()), gwOIDC.URL()),
		// an expired env token and a failing mint: 503
		fmt.Sprintf(`	log
	ai_gateway_auth {
		credential vercel_oidc {
			env EXPIRED_OIDC_TOKEN
			%s
		}
		client_key sk-placeholder
		credential_wait 2s
	}
	reverse_proxy %s`, mintBlock(down.URL()), gwOIDC.URL()),
		// a key the gateway rejects: its 401 goes back to the client
		fmt.Sprintf(`	log
	ai_gateway_auth {
		credential static {env.REVOKED_API_KEY}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gwStatic.URL()),
	}
	p := startCaddy(t, caddyOptions{Env: env, Debug: true}, sites...)
	staticURL, oidcURL, downURL, revokedURL := p.URLs[0], p.URLs[1], p.URLs[2], p.URLs[3]
	tc := newTestClient(t)
	stream := `{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	messages := `{"model":"anthropic/claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	traffic := func(base string) {
		tc.chat(t, base, "sk-placeholder")
		tc.chat(t, base, "sk-wrong")
		tc.chat(t, base, "")
		tc.do(t, http.MethodPost, base+"/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-placeholder"}, stream)
		tc.do(t, http.MethodPost, base+"/v1/messages?beta=true", map[string]string{"X-Api-Key": "sk-placeholder", "Anthropic-Version": "2023-06-01"}, messages)
		tc.do(t, http.MethodPost, base+"/v1/messages", map[string]string{"X-Api-Key": "sk-wrong", "Anthropic-Version": "2023-06-01"}, messages)
		tc.do(t, http.MethodGet, base+"/v1/models", map[string]string{"Api-Key": "sk-placeholder"}, "")
	}

	traffic(staticURL)
	if res := tc.chat(t, staticURL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("static site: status %d: %s", res.Status, res.Body)
	}
	// The OIDC site until it has sent the env token and two minted ones.
	eventually(t, waitTimeout, "the env token and two minted tokens are used", func() string {
		traffic(oidcURL)
		used := map[string]bool{}
		for _, r := range gwOIDC.Requests() {
			used[r.Credential] = true
		}
		minted := 0
		for _, it := range v.Issued() {
			if it.Token != envTok && used[it.Token] {
				minted++
			}
		}
		if !used[envTok] || minted < 2 {
			return fmt.Sprintf("env token used: %v, minted tokens used: %d", used[envTok], minted)
		}
		return ""
	})
	traffic(downURL)
	if res := tc.chat(t, downURL, "sk-placeholder"); res.Status != http.StatusServiceUnavailable {
		t.Errorf("site with a failing mint: status %d, want 503: %s", res.Status, res.Body)
	}
	traffic(revokedURL)
	if res := tc.chat(t, revokedURL, "sk-placeholder"); res.Status != http.StatusUnauthorized {
		t.Errorf("site with a key the gateway rejects: status %d, want the gateway's 401: %s", res.Status, res.Body)
	}
	tc.do(t, http.MethodGet, p.Admin+"/config/", nil, "")
	tc.do(t, http.MethodGet, p.Admin+"/ai_gateway_auth/status", nil, "")

	// secretsOf(v) has the env tokens (v signed them), the minted ones and
	// the access token.
	secrets := append(secretsOf(v),
		secret{"the static API key", apiKey},
		secret{"the rejected static API key", revokedKey},
	)
	// They were really in flight: the gateways got them.
	got := map[string]bool{}
	for _, r := range append(gwStatic.Requests(), gwOIDC.Requests()...) {
		got[r.Credential] = true
	}
	if !got[apiKey] || !got[revokedKey] || !got[envTok] {
		t.Errorf("the gateways did not get every credential (static %v, rejected %v, env token %v)", got[apiKey], got[revokedKey], got[envTok])
	}

	transcript := tc.Transcript()
	if !strings.Contains(transcript, answerText) || !strings.Contains(transcript, "invalid_api_key") || !strings.Contains(transcript, "vercel_oidc") {
		t.Fatal("the transcript lacks successful, rejected or unavailable responses: the search would prove little")
	}
	assertNoSecrets(t, "responses (headers, bodies, the admin API)", transcript, secrets...)

	p.stop() // flush everything, shutdown messages included
	logs := p.Logs()
	for _, want := range []string{`"level":"debug"`, `"logger":"http.log.access`, "vercel_oidc"} {
		if !strings.Contains(logs, want) {
			t.Errorf("caddy's logs lack %q: the search would prove little", want)
		}
	}
	assertNoSecrets(t, "caddy's logs", logs, secrets...)

	out, err := runCaddyCommand(t, env, "adapt", "--config", p.Caddyfile, "--adapter", "caddyfile", "--pretty")
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	for _, placeholder := range []string{"{env.AI_GATEWAY_API_KEY}", "{env.VERCEL_TOKEN}", "{env.REVOKED_API_KEY}"} {
		if !strings.Contains(out, placeholder) {
			t.Errorf("caddy adapt's output lacks %s", placeholder)
		}
	}
	assertNoSecrets(t, "caddy adapt's output", out, secrets...)
}
