package identity

import (
	"net/http"
	"strings"
	"testing"
)

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
		signed, err := SignKey(name, secret)
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
				if s2, _ := SignKey(n, secret); s2 != key {
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
		key := KeyFromRequest(h)
		if key != strings.TrimSpace(key) {
			t.Fatalf("key %q has surrounding space", key)
		}
		fromHeaders := key == strings.TrimSpace(xAPIKey) || key == strings.TrimSpace(apiKey)
		if key != "" && !strings.HasPrefix(strings.ToLower(auth), "bearer ") && !fromHeaders {
			t.Fatalf("key %q taken from non-Bearer Authorization %q", key, auth)
		}
	})
}
