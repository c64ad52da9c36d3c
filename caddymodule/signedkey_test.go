package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
)

// Signed client keys: sk-aigw-<name>.<unpadded base64url HMAC-SHA256 of
// name under a client_key_secret>.

const (
	testClientSecret  = "correct-horse-battery-staple-42"
	testClientSecret2 = "rotated-secret-0123456789abcdef"
)

// A vector computed outside Go (the one internal/identity's format test
// holds the signing to):
//
//	printf 'sandbox-1' | openssl dgst -sha256 -hmac 'correct-horse-battery-staple-42' -binary | base64 | tr '+/' '-_' | tr -d '='
const testSignedKeyVector = "sk-aigw-sandbox-1.RCK1XCDitJSfZQLIMPm-Z4EB7WJmf2H1_4vAjgRgKzY"

func mustSign(t *testing.T, name, secret string) string {
	t.Helper()
	k, err := identity.SignKey(name, secret)
	if err != nil {
		t.Fatalf("signClientKey(%q): %v", name, err)
	}
	return k
}

// signedKeyHandler accepts keys signed with the given secrets (as
// placeholders, resolved at provision), and revokes the names in the
// returned file.
func signedKeyHandler(t *testing.T, secrets ...string) (*Handler, string) {
	t.Helper()
	revoked := writeFile(t, t.TempDir(), "revoked", "# revoked sandboxes\nmallory\n\n  eve  # left the team\n")
	var placeholders []string
	for i, s := range secrets {
		env := "AIGW_TEST_CLIENT_SECRET_" + string(rune('A'+i))
		t.Setenv(env, s)
		placeholders = append(placeholders, "{env."+env+"}")
	}
	h := provisionHandler(t, &Handler{
		CredentialsRaw:        []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeySecrets:      placeholders,
		ClientKeysRevokedFile: revoked,
	})
	return h, revoked
}

// sendKey sends key as the client key and returns the answer and
// whether the upstream was reached.
func sendKey(t *testing.T, h *Handler, key string) (*httptest.ResponseRecorder, any, bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer "+key)
	r, repl := withReplacer(r)
	var next recordingNext
	w := serve(t, h, r, next.handler())
	calls := next.calls()
	if len(calls) == 1 && calls[0].header.Get("Authorization") != "Bearer "+testStaticKey {
		t.Errorf("upstream Authorization %q", calls[0].header.Get("Authorization"))
	}
	client, _ := repl.Get("ai_gateway_auth.client")
	return w, client, len(calls) == 1
}

// Valid keys pass and name the client; every other key is refused with
// 401 and never reaches the upstream.
func TestSignedKeys(t *testing.T) {
	h, _ := signedKeyHandler(t, testClientSecret)
	logs := observeLogs(h)

	for _, name := range []string{"sandbox-1", "a", strings.Repeat("Z", 128), "team_a-42"} {
		w, client, reached := sendKey(t, h, mustSign(t, name, testClientSecret))
		if w.Code != http.StatusOK || !reached || client != name {
			t.Errorf("%s: status %d, reached %v, client %v", name, w.Code, reached, client)
		}
	}

	valid := mustSign(t, "sandbox-1", testClientSecret)
	_, sig, _ := strings.Cut(valid, ".")
	flipped := []byte(sig)
	flipped[10] ^= 1
	longName := strings.Repeat("n", 129)
	longMAC := base64.RawURLEncoding.EncodeToString(hmacSHA256(longName, testClientSecret))
	for name, key := range map[string]string{
		"wrong signature":         "sk-aigw-sandbox-1." + string(flipped),
		"signature of other name": "sk-aigw-sandbox-2." + sig,
		"wrong secret":            mustSign(t, "sandbox-1", "some-other-secret-value-123"),
		"empty name":              "sk-aigw-." + base64.RawURLEncoding.EncodeToString(hmacSHA256("", testClientSecret)),
		"missing dot":             "sk-aigw-sandbox-1" + sig,
		"empty signature":         "sk-aigw-sandbox-1.",
		"non-base64 signature":    "sk-aigw-sandbox-1." + strings.Repeat("!", 43),
		"std base64 signature":    "sk-aigw-sandbox-1." + base64.RawStdEncoding.EncodeToString(hmacSHA256("sandbox-1", testClientSecret)),
		"padded signature":        "sk-aigw-sandbox-1." + base64.URLEncoding.EncodeToString(hmacSHA256("sandbox-1", testClientSecret)),
		"truncated signature":     valid[:len(valid)-1],
		"extra character":         valid + "A",
		"second dot":              "sk-aigw-sandbox.1." + sig,
		"name too long":           "sk-aigw-" + longName + "." + longMAC,
		"very long key":           "sk-aigw-" + strings.Repeat("x", 64*1024) + "." + sig,
		"prefix only":             "sk-aigw-",
		"other prefix":            "sk-aigx-sandbox-1." + sig,
		"upper-case prefix":       "SK-AIGW-sandbox-1." + sig,
		"name with slash":         "sk-aigw-a/b." + base64.RawURLEncoding.EncodeToString(hmacSHA256("a/b", testClientSecret)),
	} {
		t.Run(name, func(t *testing.T) {
			w, _, reached := sendKey(t, h, key)
			if w.Code != http.StatusUnauthorized || reached {
				t.Fatalf("status %d, upstream reached %v; want 401, not reached", w.Code, reached)
			}
			msg := assertErrorShape(t, w.Body.Bytes(), false, "authentication_error", "invalid_api_key")
			if !strings.HasPrefix(msg, "invalid client key") {
				t.Errorf("message %q", msg)
			}
			assertNotContains(t, "401 body", w.Body.String(), key, sig)
		})
	}
	assertLogsClean(t, logs, testClientSecret, sig)
}

// Several secrets (rotation): keys signed with either are accepted; a
// config without the old secret refuses the old keys.
func TestSignedKeysRotation(t *testing.T) {
	oldKey, newKey := mustSign(t, "alice", testClientSecret), mustSign(t, "alice", testClientSecret2)
	both, _ := signedKeyHandler(t, testClientSecret, testClientSecret2)
	for _, k := range []string{oldKey, newKey} {
		if w, client, reached := sendKey(t, both, k); w.Code != http.StatusOK || !reached || client != "alice" {
			t.Errorf("during rotation: status %d, client %v", w.Code, client)
		}
	}
	after, _ := signedKeyHandler(t, testClientSecret2)
	if w, _, _ := sendKey(t, after, newKey); w.Code != http.StatusOK {
		t.Errorf("new key after rotation: status %d", w.Code)
	}
	if w, _, reached := sendKey(t, after, oldKey); w.Code != http.StatusUnauthorized || reached {
		t.Errorf("old key after rotation: status %d", w.Code)
	}
}

// Revoked names are refused (signed keys and client_keys_file names
// alike), per request, also once a key has been accepted and cached;
// editing the file revokes and un-revokes without a reload.
func TestSignedKeysRevocation(t *testing.T) {
	h, revoked := signedKeyHandler(t, testClientSecret)
	mallory, alice := mustSign(t, "mallory", testClientSecret), mustSign(t, "alice", testClientSecret)

	for _, name := range []string{"mallory", "eve"} {
		w, _, reached := sendKey(t, h, mustSign(t, name, testClientSecret))
		if w.Code != http.StatusUnauthorized || reached {
			t.Fatalf("revoked %s: status %d, reached %v", name, w.Code, reached)
		}
		if msg := assertErrorShape(t, w.Body.Bytes(), false, "authentication_error", "invalid_api_key"); !strings.Contains(msg, "revoked") {
			t.Errorf("message %q does not say the key is revoked", msg)
		}
	}
	if w, _, _ := sendKey(t, h, alice); w.Code != http.StatusOK {
		t.Fatalf("alice: status %d", w.Code)
	}

	accepted := func(key string) bool { _, reason := h.keys.Identify(key); return reason == "" }
	rewrite := func(content string) {
		t.Helper()
		tmp := revoked + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, revoked); err != nil {
			t.Fatal(err)
		}
	}
	// revoke alice, whose key is cached as valid
	rewrite("mallory\nalice\n")
	eventually(t, "alice revoked", func() bool { return !accepted(alice) })
	if w, _, reached := sendKey(t, h, alice); w.Code != http.StatusUnauthorized || reached {
		t.Errorf("revoked alice: status %d", w.Code)
	}
	// un-revoke mallory
	rewrite("alice\n")
	eventually(t, "mallory un-revoked", func() bool { return accepted(mallory) })
	if w, client, _ := sendKey(t, h, mallory); w.Code != http.StatusOK || client != "mallory" {
		t.Errorf("un-revoked mallory: status %d, client %v", w.Code, client)
	}
	// an emptied file revokes nobody
	rewrite("")
	eventually(t, "alice un-revoked", func() bool { return accepted(alice) })
}

// Names of client_keys_file are revoked by the same file.
func TestRevokedFileAppliesToKeysFile(t *testing.T) {
	dir := t.TempDir()
	h := provisionHandler(t, &Handler{
		CredentialsRaw:        []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeysFile:        writeFile(t, dir, "keys", "alice sk-alice-file-key\nbob sk-bob-file-key\n"),
		ClientKeysRevokedFile: writeFile(t, dir, "revoked", "bob\n"),
	})
	if w, client, _ := sendKey(t, h, "sk-alice-file-key"); w.Code != http.StatusOK || client != "alice" {
		t.Errorf("alice: %d %v", w.Code, client)
	}
	if w, _, reached := sendKey(t, h, "sk-bob-file-key"); w.Code != http.StatusUnauthorized || reached {
		t.Errorf("revoked bob: %d", w.Code)
	}
}

// Without a client_key_secret, a key of the signed form is just an
// unknown key; literal keys still work next to secrets.
func TestSignedKeysNeedASecret(t *testing.T) {
	h := staticHandler(t)
	if w, _, reached := sendKey(t, h, testSignedKeyVector); w.Code != http.StatusUnauthorized || reached {
		t.Errorf("signed key without a secret: status %d", w.Code)
	}
	t.Setenv("AIGW_TEST_SECRET_MIX", testClientSecret)
	mixed := provisionHandler(t, &Handler{
		CredentialsRaw:   []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:       []string{"sk-placeholder"},
		ClientKeySecrets: []string{"{env.AIGW_TEST_SECRET_MIX}"},
	})
	for key, want := range map[string]any{testSignedKeyVector: "sandbox-1", "sk-placeholder": "placeholder"} {
		if w, client, _ := sendKey(t, mixed, key); w.Code != http.StatusOK || client != want {
			t.Errorf("%s: status %d, client %v", key, w.Code, client)
		}
	}
}

func TestSignedKeyConfigErrors(t *testing.T) {
	t.Setenv("AIGW_TEST_SHORT_SECRET", "too-short")
	t.Setenv("AIGW_TEST_EMPTY_SECRET", "")
	err := tryProvisionHandler(t, &Handler{
		CredentialsRaw:   []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeySecrets: []string{"{env.AIGW_TEST_SHORT_SECRET}"},
	})
	if err != nil {
		// short secrets are warned about, not refused: a weak secret must
		// not stop a proxy from starting
		t.Errorf("short secret refused: %v", err)
	}
	err = tryProvisionHandler(t, &Handler{
		CredentialsRaw:   []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeySecrets: []string{"{env.AIGW_TEST_EMPTY_SECRET}"},
	})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("only an empty secret: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "no-such-file")
	err = tryProvisionHandler(t, &Handler{
		CredentialsRaw:        []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:            []string{"sk-placeholder"},
		ClientKeysRevokedFile: missing,
	})
	if err == nil || !strings.Contains(err.Error(), "client_keys_revoked_file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing revoked file: %v", err)
	}
}

// hmacSHA256 is a signed key's MAC of name under secret, computed apart
// from the code under test.
func hmacSHA256(name, secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(name))
	return m.Sum(nil)
}
