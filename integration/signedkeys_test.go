package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// signedClientKey computes a signed client key the way the README
// describes it to a dashboard author: sk-aigw-<name>.<unpadded base64url
// HMAC-SHA256 of name under secret>. It is written here from the spec,
// not taken from the module, so that the two are checked against each
// other.
func signedClientKey(name, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(name))
	return "sk-aigw-" + name + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newClientKeySecret is a random secret of the length the README suggests
// (`openssl rand -base64 32` gives 44 characters).
func newClientKeySecret() string { return randomString(44) }

// gatewayUntouched fails if the gateway received any request after the
// first `before` ones (len(gw.Requests()) taken before the refusal).
func gatewayUntouched(t testing.TB, gw *fakeGateway, before int, what string) {
	t.Helper()
	if n := len(gw.Requests()); n != before {
		t.Errorf("%s: the gateway received %d request(s), want none", what, n-before)
	}
}

// TestSignedClientKeys: keys signed with a client_key_secret are accepted
// and name the client; a wrong signature, a key made with another secret,
// a malformed key and a revoked client are refused with 401 and never
// reach the gateway; editing client_keys_revoked_file revokes and
// un-revokes without a reload; with two secrets (a rotation), keys signed
// with either are valid, and once the old secret is removed its keys stop
// working. Each refusal is one "client rejected" log line without the key.
func TestSignedClientKeys(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	oldSecret, newSecret, otherSecret := newClientKeySecret(), newClientKeySecret(), newClientKeySecret()
	revokedFile := filepath.Join(t.TempDir(), "revoked")
	if err := os.WriteFile(revokedFile, []byte("# cut off\nsandbox-revoked   # compromised\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := func(secrets string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret %s
		client_keys_revoked_file %s
	}
	reverse_proxy %s {
		header_up X-Test-Client {ai_gateway_auth.client}
	}`, secrets, revokedFile, gw.URL())
	}
	env := map[string]string{
		"AI_GATEWAY_API_KEY":    apiKey,
		"CLIENT_KEY_SECRET":     oldSecret,
		"CLIENT_KEY_SECRET_NEW": newSecret,
	}
	// Site 0 during a rotation (both secrets); site 1 after it (new only).
	p := startCaddy(t, caddyOptions{Env: env},
		site("{env.CLIENT_KEY_SECRET} {env.CLIENT_KEY_SECRET_NEW}"), site("{env.CLIENT_KEY_SECRET_NEW}"))
	rotating, rotated := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)

	// accepted sends a chat with key and checks that the gateway got it
	// with the proxy's credential, naming client.
	accepted := func(t testing.TB, base, key, client string) string {
		t.Helper()
		before := len(gw.Requests())
		res := tc.chat(t, base, key)
		if res.Status != http.StatusOK {
			return fmt.Sprintf("key of %s: status %d, want 200: %s", client, res.Status, res.Body)
		}
		if n := len(gw.Requests()); n != before+1 {
			return fmt.Sprintf("key of %s: the gateway got %d requests, want 1", client, n-before)
		}
		r := lastRequest(t, gw)
		assertForwarded(t, r, apiKey, "api-key")
		if got := r.Header.Get("X-Test-Client"); got != client {
			return fmt.Sprintf("{ai_gateway_auth.client} is %q, want %q", got, client)
		}
		if strings.Contains(fmt.Sprint(r.Header), key) {
			return "the signed client key reached the gateway"
		}
		return ""
	}
	// refused sends key to a path unique to this case (the client check
	// comes before the path check, so any path gets the 401) and checks
	// the 401, its message, and that the gateway heard nothing.
	refusals := map[string]string{} // path -> expected reason, for the log check
	refused := func(t testing.TB, base, key, path, reason string) string {
		t.Helper()
		before := len(gw.Requests())
		res := tc.do(t, http.MethodPost, base+path, map[string]string{"Authorization": "Bearer " + key}, chatBody)
		gatewayUntouched(t, gw, before, path)
		if res.Status != http.StatusUnauthorized {
			return fmt.Sprintf("%s: status %d, want 401: %s", path, res.Status, res.Body)
		}
		e := decodeJSON[openAIError](t, res.Body)
		if e.Error.Type != "authentication_error" || e.Error.Code == nil || *e.Error.Code != "invalid_api_key" ||
			!strings.HasPrefix(e.Error.Message, reason) {
			return fmt.Sprintf("%s: body %s, want an authentication_error starting with %q", path, res.Body, reason)
		}
		if res.Header.Get("X-Ai-Gateway-Auth-Error") != "invalid_api_key" {
			return fmt.Sprintf("%s: X-Ai-Gateway-Auth-Error is %q", path, res.Header.Get("X-Ai-Gateway-Auth-Error"))
		}
		refusals[path] = reason
		return ""
	}
	must := func(msg string) {
		t.Helper()
		if msg != "" {
			t.Fatal(msg)
		}
	}

	alice := signedClientKey("alice", oldSecret)
	bob := signedClientKey("bob_2", newSecret)
	t.Run("valid", func(t *testing.T) {
		must(accepted(t, rotating, alice, "alice"))
		must(accepted(t, rotating, bob, "bob_2"))
		must(accepted(t, rotated, bob, "bob_2"))
		// The other ways a client sends its key.
		before := len(gw.Requests())
		for _, h := range []map[string]string{{"X-Api-Key": alice}, {"Api-Key": alice}} {
			if res := tc.do(t, http.MethodGet, rotating+"/v1/models", h, ""); res.Status != http.StatusOK {
				t.Errorf("key in %v: status %d: %s", h, res.Status, res.Body)
			}
		}
		if n := len(gw.Requests()); n != before+2 {
			t.Errorf("the gateway got %d requests, want 2", n-before)
		}
		// The longest name allowed.
		long := strings.Repeat("n", 128)
		must(accepted(t, rotating, signedClientKey(long, newSecret), long))
	})

	t.Run("refused", func(t *testing.T) {
		sig := func(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }
		flipped := []byte(alice)
		if flipped[len(flipped)-2] == 'A' {
			flipped[len(flipped)-2] = 'B'
		} else {
			flipped[len(flipped)-2] = 'A'
		}
		for _, c := range []struct{ name, key string }{
			{"another name's signature", "sk-aigw-alice." + sig(bob)},
			{"name swapped", "sk-aigw-mallory." + sig(alice)},
			{"tampered signature", string(flipped)},
			{"another secret", signedClientKey("alice", otherSecret)},
			{"no signature", "sk-aigw-alice"},
			{"empty signature", "sk-aigw-alice."},
			{"padded signature", alice + "="},
			{"name too long", signedClientKey(strings.Repeat("n", 129), oldSecret)},
			{"bad character in name", signedClientKey("al.ice", oldSecret)},
			{"the secret itself", oldSecret},
		} {
			path := "/v1/refused/" + strings.ReplaceAll(c.name, " ", "-")
			if msg := refused(t, rotating, c.key, path, "invalid client key"); msg != "" {
				t.Errorf("%s: %s", c.name, msg)
			}
		}
		// After the rotation, keys of the old secret are invalid.
		if msg := refused(t, rotated, alice, "/v1/refused/old-secret-after-rotation", "invalid client key"); msg != "" {
			t.Error(msg)
		}
		if msg := refused(t, rotating, "", "/v1/refused/missing", "missing client key"); msg != "" {
			t.Error(msg)
		}
	})

	t.Run("revocation", func(t *testing.T) {
		revoked := signedClientKey("sandbox-revoked", newSecret)
		must(refused(t, rotating, revoked, "/v1/refused/revoked", "revoked client key"))
		must(refused(t, rotated, revoked, "/v1/refused/revoked-too", "revoked client key"))
		res := tc.chat(t, rotating, revoked)
		if e := decodeJSON[openAIError](t, res.Body); !strings.Contains(e.Error.Message, "revoked") {
			t.Errorf("a revoked client's 401 does not say it was revoked: %s", res.Body)
		}

		// Un-revoked by editing the file, and alice revoked instead.
		writeFileAtomic(t, revokedFile, "# cut off\nalice\n")
		eventually(t, waitTimeout, "the edited revocation list is used", func() string {
			if msg := accepted(t, rotating, revoked, "sandbox-revoked"); msg != "" {
				return msg
			}
			before := len(gw.Requests())
			if res := tc.chat(t, rotating, alice); res.Status != http.StatusUnauthorized {
				return fmt.Sprintf("alice: status %d, want 401 now that she is revoked", res.Status)
			}
			gatewayUntouched(t, gw, before, "revoked alice")
			return ""
		})
		// bob was never revoked: never refused through the edits.
		must(accepted(t, rotating, bob, "bob_2"))

		// An unreadable revocation list keeps the names read before.
		if err := os.Remove(revokedFile); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitTimeout, "the removal of the revocation file is noticed", func() string {
			for _, l := range caddyLogEntries(p.Logs(), "file unusable; keeping what was read before") {
				if l["option"] == "client_keys_revoked_file" && l["file"] == revokedFile {
					return ""
				}
			}
			return "no log line about the unusable revocation file yet"
		})
		before := len(gw.Requests())
		if res := tc.chat(t, rotating, alice); res.Status != http.StatusUnauthorized {
			t.Errorf("alice after the revocation file disappeared: status %d, want 401 (the names read before stay revoked)", res.Status)
		}
		gatewayUntouched(t, gw, before, "revoked alice, file gone")
	})

	// The log: one "client rejected" line per refusal, with the reason and
	// the path, and no key or secret anywhere in Caddy's output.
	p.stop()
	lines := caddyLogEntries(p.Logs(), "client rejected")
	for path, reason := range refusals {
		var n int
		for _, l := range lines {
			if l["path"] == path {
				n++
				if l["reason"] != reason || l["remote_ip"] != "127.0.0.1" || l["method"] != http.MethodPost {
					t.Errorf("log line for %s: %v, want reason %q, remote_ip and method", path, l, reason)
				}
				// A revoked client is named, so that the operator sees who
				// is still trying; an unverified key names no one.
				if want := map[bool]any{true: "sandbox-revoked", false: nil}[reason == "revoked client key"]; l["client"] != want {
					t.Errorf("log line for %s: client %#v, want %#v", path, l["client"], want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d \"client rejected\" log lines for %s, want 1", n, path)
		}
	}
	secrets := []secret{
		{"the old client key secret", oldSecret}, {"the new client key secret", newSecret},
		{"the API key", apiKey}, {"alice's key signature", alice[strings.IndexByte(alice, '.')+1:]},
		{"bob's key signature", bob[strings.IndexByte(bob, '.')+1:]},
	}
	assertNoSecrets(t, "caddy's logs", p.Logs(), secrets...)
	assertNoSecrets(t, "responses", tc.Transcript(), secrets...)
}

// TestClientKeyCommand: `caddy ai-gateway-auth client-key <name>`, run with
// the built binary, prints the key the README's formula gives, with the
// secret from CLIENT_KEY_SECRET or from --secret (which wins), and a
// running proxy with that secret accepts it. Without a usable secret or
// with a bad name it fails and says why, without echoing the secret; a
// short secret gets a warning.
func TestClientKeyCommand(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	envSecret, flagSecret := newClientKeySecret(), newClientKeySecret()
	p := startCaddy(t, caddyOptions{Env: map[string]string{
		"AI_GATEWAY_API_KEY": apiKey, "S1": envSecret, "S2": flagSecret,
	}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.S1} {env.S2}
	}
	reverse_proxy %s {
		header_up X-Test-Client {ai_gateway_auth.client}
	}`, gw.URL()))
	tc := newTestClient(t)

	keyFrom := func(out string) string {
		var keys []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "sk-aigw-") {
				keys = append(keys, strings.TrimSpace(line))
			}
		}
		if len(keys) != 1 {
			t.Fatalf("want one key in the output, got %d:\n%s", len(keys), out)
		}
		return keys[0]
	}
	for _, c := range []struct {
		what   string
		env    map[string]string
		args   []string
		name   string
		secret string
	}{
		{"secret from CLIENT_KEY_SECRET", map[string]string{"CLIENT_KEY_SECRET": envSecret}, nil, "sandbox-42", envSecret},
		{"secret from --secret", nil, []string{"--secret", flagSecret}, "sandbox_7", flagSecret},
		{"--secret wins over the env", map[string]string{"CLIENT_KEY_SECRET": envSecret}, []string{"--secret=" + flagSecret}, "Sandbox-A", flagSecret},
	} {
		t.Run(c.what, func(t *testing.T) {
			args := append([]string{"ai-gateway-auth", "client-key"}, c.args...)
			out, err := runCaddyCommand(t, c.env, append(args, c.name)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			key := keyFrom(out)
			if want := signedClientKey(c.name, c.secret); key != want {
				t.Fatalf("printed %q, want %q (HMAC-SHA256 of the name, base64url, no padding)", key, want)
			}
			before := len(gw.Requests())
			res := tc.chat(t, p.URL, key)
			if res.Status != http.StatusOK {
				t.Fatalf("the proxy refused the printed key: status %d: %s", res.Status, res.Body)
			}
			if len(gw.Requests()) != before+1 {
				t.Fatal("the request did not reach the gateway")
			}
			r := lastRequest(t, gw)
			assertForwarded(t, r, apiKey, "api-key")
			if got := r.Header.Get("X-Test-Client"); got != c.name {
				t.Errorf("{ai_gateway_auth.client} is %q, want %q", got, c.name)
			}
		})
	}

	// A short secret works, with a warning that does not echo it.
	short := "too-short-secret"[:15]
	out, err := runCaddyCommand(t, map[string]string{"CLIENT_KEY_SECRET": short}, "ai-gateway-auth", "client-key", "sandbox-1")
	if err != nil {
		t.Fatalf("a short secret: %v\n%s", err, out)
	}
	if key := keyFrom(out); key != signedClientKey("sandbox-1", short) {
		t.Errorf("a short secret: printed %q, want %q", key, signedClientKey("sandbox-1", short))
	}
	if !strings.Contains(out, "warning") || !strings.Contains(out, "shorter than 16") {
		t.Errorf("a short secret: no warning about its length:\n%s", out)
	}
	if strings.Contains(out, short) {
		t.Errorf("the warning echoes the secret:\n%s", out)
	}

	for _, c := range []struct {
		what string
		env  map[string]string
		args []string
		want string
	}{
		{"no secret", nil, []string{"sandbox-1"}, "CLIENT_KEY_SECRET"},
		{"bad name", map[string]string{"CLIENT_KEY_SECRET": envSecret}, []string{"sandbox 1!"}, "A-Z"},
		{"no name", map[string]string{"CLIENT_KEY_SECRET": envSecret}, nil, "arg"},
	} {
		t.Run("fails/"+c.what, func(t *testing.T) {
			out, err := runCaddyCommand(t, c.env, append([]string{"ai-gateway-auth", "client-key"}, c.args...)...)
			if err == nil {
				t.Fatalf("succeeded, want an error:\n%s", out)
			}
			if strings.Contains(out, "sk-aigw-") {
				t.Errorf("printed a key although it failed:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("the error does not mention %q:\n%s", c.want, out)
			}
			if strings.Contains(out, envSecret) {
				t.Errorf("the error echoes the secret:\n%s", out)
			}
		})
	}
}
