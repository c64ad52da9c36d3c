package identity

import (
	"strings"
	"testing"
)

// Signed client keys: sk-aigw-<name>.<unpadded base64url HMAC-SHA256 of
// name under a client_key_secret>.

const testClientSecret = "correct-horse-battery-staple-42"

// A vector computed outside Go:
//
//	printf 'sandbox-1' | openssl dgst -sha256 -hmac 'correct-horse-battery-staple-42' -binary | base64 | tr '+/' '-_' | tr -d '='
const testSignedKeyVector = "sk-aigw-sandbox-1.RCK1XCDitJSfZQLIMPm-Z4EB7WJmf2H1_4vAjgRgKzY"

func mustSign(t *testing.T, name, secret string) string {
	t.Helper()
	k, err := SignKey(name, secret)
	if err != nil {
		t.Fatalf("SignKey(%q): %v", name, err)
	}
	return k
}

func TestSignClientKeyFormat(t *testing.T) {
	if got := mustSign(t, "sandbox-1", testClientSecret); got != testSignedKeyVector {
		t.Errorf("signClientKey = %s, want %s", got, testSignedKeyVector)
	}
	long := strings.Repeat("aZ9_-", 25) + "xyz" // 128 characters
	k := mustSign(t, long, testClientSecret)
	name, sig, ok := parseSignedKey(k)
	if !ok || name != long || len(sig) != 32 {
		t.Errorf("parseSignedKey(%s) = %q, %d bytes, %v", k, name, len(sig), ok)
	}
	for _, bad := range []string{"", "a b", "a.b", "a/b", "ä", strings.Repeat("a", 129), "sk-aigw-x.y"} {
		if k, err := SignKey(bad, testClientSecret); err == nil {
			t.Errorf("signClientKey(%q) = %s, want an error", bad, k)
		}
	}
	if k, err := SignKey("ok", ""); err == nil {
		t.Errorf("empty secret: %s", k)
	}
}

func TestParseNameList(t *testing.T) {
	got := ParseNameList([]byte("alice\n  bob  \n# carol\n\ndave # comment\r\n#\n"))
	if len(got) != 3 {
		t.Errorf("names %v, want alice, bob, dave", got)
	}
	for _, n := range []string{"alice", "bob", "dave"} {
		if _, ok := got[n]; !ok {
			t.Errorf("%s missing from %v", n, got)
		}
	}
}
