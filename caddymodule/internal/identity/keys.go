package identity

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// PlaceholderName is the client name (and id) reported for a literal
// client_key.
const PlaceholderName = "placeholder"

// keyDigest is a client key's SHA-256. Keys are looked up by digest, not
// by value: the lookup's timing can only reveal something about a digest,
// which says nothing usable about a key (no preimages), and comparing
// fixed-size digests hides the key's length. This keeps the check
// constant-time in the key, like subtle.ConstantTimeCompare, while
// costing O(1) for a file of thousands of keys.
type keyDigest [sha256.Size]byte

// KeySet maps accepted keys (by digest) to their clients.
type KeySet map[keyDigest]*Principal

// Keys is every accepted client key: the literal client_key values,
// the named keys of client_keys_file (swapped atomically on re-read) and
// keys signed with a client_key_secret; minus revoked names.
type Keys struct {
	// literal client_key values, compared one by one in constant time:
	// there are a few, and hashing each request's key would cost more.
	literal []string
	file    atomic.Pointer[KeySet]
	secrets [][]byte
	// the namespaces of the signed keys' ids (client_key_secrets_namespace);
	// the keys file's is applied when it is parsed
	signedNS string
	// signed caches verified signed keys (key -> *principal), so an HMAC
	// is computed once per key, not per request. Only valid keys are
	// stored, so its size is bounded by the clients that exist.
	signed  sync.Map
	revoked atomic.Pointer[map[string]struct{}]
}

// Why a client was refused: the start of the 401's message.
const (
	RejectMissing = "missing client key"
	RejectUnknown = "invalid client key"
	RejectRevoked = "revoked client key"
)

// NewKeys accepts the literal keys and the keys signed with one of
// secrets (whose clients get ids in namespace signedNS); the keys file
// and the revoked names are set apart, and may change.
func NewKeys(literal []string, secrets [][]byte, signedNS string) *Keys {
	return &Keys{literal: literal, secrets: secrets, signedNS: signedNS}
}

// SetFile replaces the keys of the keys file (ParseKeysFile's set).
func (ck *Keys) SetFile(set KeySet) { ck.file.Store(&set) }

// SetRevoked replaces the revoked names (ParseNameList's). Cached signed
// keys stay cached: revocation is checked per request.
func (ck *Keys) SetRevoked(names map[string]struct{}) { ck.revoked.Store(&names) }

// Signs reports whether signed keys are accepted (there is a secret).
func (ck *Keys) Signs() bool { return len(ck.secrets) > 0 }

// SecretsFingerprint identifies the set of secrets without revealing
// any (see the registry).
func (ck *Keys) SecretsFingerprint() string { return secretsFingerprint(ck.secrets) }

// Identify returns the client of key, or why it is refused (with the
// client when the key is valid but revoked, for the log).
func (ck *Keys) Identify(key string) (*Principal, string) {
	if key == "" {
		return nil, RejectMissing
	}
	if len(ck.secrets) > 0 && strings.HasPrefix(key, SignedKeyPrefix) {
		p, ok := ck.signed.Load(key)
		if !ok {
			n, valid := verifySignedKey(key, ck.secrets)
			if !valid {
				return nil, RejectUnknown
			}
			p, _ = ck.signed.LoadOrStore(key, KeyPrincipal(ck.signedNS, n))
		}
		return ck.unlessRevoked(p.(*Principal))
	}
	match := false
	for _, lit := range ck.literal {
		match = constantTimeEqual(key, lit) || match // no early exit
	}
	if match {
		return Placeholder, ""
	}
	if fs := ck.file.Load(); fs != nil {
		if p, ok := (*fs)[keyDigest(sha256.Sum256([]byte(key)))]; ok {
			return ck.unlessRevoked(p)
		}
	}
	return nil, RejectUnknown
}

// constantTimeEqual is subtle.ConstantTimeCompare for strings, without
// converting them to byte slices (which would allocate for long keys):
// its time depends on the lengths only, never on where the bytes differ.
func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

func (ck *Keys) unlessRevoked(p *Principal) (*Principal, string) {
	if rv := ck.revoked.Load(); rv != nil && len(*rv) > 0 {
		if _, revoked := (*rv)[p.nameString()]; revoked {
			return p, RejectRevoked
		}
	}
	return p, ""
}

// ParseKeysFile reads "name key" lines; blank lines and # comments
// are skipped. The clients' ids are in namespace ns. Errors carry the
// line number, never the key.
func ParseKeysFile(content []byte, ns string) (KeySet, error) {
	set := KeySet{}
	names := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(content))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"<name> <key>\", got %d fields", n, len(fields))
		}
		name, key := fields[0], fields[1]
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("line %d: name %q already used on line %d", n, name, prev)
		}
		names[name] = n
		d := keyDigest(sha256.Sum256([]byte(key)))
		if _, dup := set[d]; dup {
			return nil, fmt.Errorf("line %d: the key of %q is also another client's key", n, name)
		}
		set[d] = KeyPrincipal(ns, name)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return set, nil
}

// KeyFromRequest returns the key the client sent, from the first of
// Authorization: Bearer, x-api-key and api-key that has one (another
// Authorization scheme, e.g. Basic, is not a client key and is skipped). The map
// is read with canonical keys directly (as net/http stores them), which
// skips Header.Get's canonicalization on the hot path.
func KeyFromRequest(h http.Header) string {
	if v := FirstValue(h, "Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		if key := strings.TrimSpace(v[7:]); key != "" {
			return key
		}
	}
	if v := FirstValue(h, "X-Api-Key"); v != "" {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(FirstValue(h, "Api-Key"))
}

// FirstValue is the first value of a header by its canonical name, read
// from the map directly (no canonicalization on the hot path).
func FirstValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}
