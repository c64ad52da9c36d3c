package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// Signed client keys: sk-aigw-<name>.<sig>, where sig is the unpadded
// base64url HMAC-SHA256 of name under a client_key_secret. A dashboard can
// give every sandbox its own key without registering it anywhere; the
// name identifies (and can revoke) the sandbox.

const (
	// SignedKeyPrefix starts every signed key.
	SignedKeyPrefix = "sk-aigw-"
	// MaxNameLen is the longest name of a signed key's client.
	MaxNameLen   = 128
	signatureLen = 43 // base64url of 32 bytes, unpadded
	// MinSecretLen is the shortest client_key_secret accepted
	// without a warning.
	MinSecretLen = 16
)

// SignKey returns the signed key for name under secret.
func SignKey(name, secret string) (string, error) {
	if !validClientName(name) {
		return "", errors.New("name must be 1-128 characters of A-Z, a-z, 0-9, _ and -")
	}
	if secret == "" {
		return "", errors.New("the secret is empty")
	}
	return SignedKeyPrefix + name + "." + base64.RawURLEncoding.EncodeToString(keyMAC(name, secret)), nil
}

func keyMAC(name, secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(name))
	return m.Sum(nil)
}

// parseSignedKey splits a key of the signed form into name and signature
// bytes; ok is false for anything malformed.
func parseSignedKey(key string) (name string, sig []byte, ok bool) {
	rest, found := strings.CutPrefix(key, SignedKeyPrefix)
	if !found {
		return "", nil, false
	}
	name, enc, found := strings.Cut(rest, ".")
	if !found || !validClientName(name) || len(enc) != signatureLen {
		return "", nil, false
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(sig) != sha256.Size {
		return "", nil, false
	}
	return name, sig, true
}

// verifySignedKey returns the key's name if its signature is valid under
// one of secrets (several, so a secret can be rotated).
func verifySignedKey(key string, secrets [][]byte) (string, bool) {
	name, sig, ok := parseSignedKey(key)
	if !ok {
		return "", false
	}
	valid := false
	for _, secret := range secrets {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(name))
		if hmac.Equal(m.Sum(nil), sig) {
			valid = true // no early exit: every secret costs the same
		}
	}
	return name, valid
}

func validClientName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseNameList reads one name per line (# comments, blank lines
// skipped), as in client_keys_revoked_file.
func ParseNameList(content []byte) map[string]struct{} {
	names := map[string]struct{}{}
	for _, line := range strings.Split(string(content), "\n") {
		line = strings.TrimSpace(line)
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line != "" {
			names[line] = struct{}{}
		}
	}
	return names
}
