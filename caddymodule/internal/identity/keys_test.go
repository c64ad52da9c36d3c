package identity

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
)

func TestClientKeyFromRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header map[string][]string
		want   string
	}{
		{"bearer", map[string][]string{"Authorization": {"Bearer sk-a"}}, "sk-a"},
		{"bearer lower case", map[string][]string{"Authorization": {"bearer sk-a"}}, "sk-a"},
		{"bearer upper case", map[string][]string{"Authorization": {"BEARER sk-a"}}, "sk-a"},
		{"bearer extra spaces", map[string][]string{"Authorization": {"Bearer   sk-a  "}}, "sk-a"},
		{"x-api-key", map[string][]string{"X-Api-Key": {"sk-b"}}, "sk-b"},
		{"x-api-key spaces", map[string][]string{"X-Api-Key": {" sk-b "}}, "sk-b"},
		{"api-key", map[string][]string{"Api-Key": {"sk-c"}}, "sk-c"},
		{"none", map[string][]string{"Content-Type": {"application/json"}}, ""},
		{"bearer wins over x-api-key", map[string][]string{"Authorization": {"Bearer sk-a"}, "X-Api-Key": {"sk-b"}}, "sk-a"},
		{"x-api-key wins over api-key", map[string][]string{"X-Api-Key": {"sk-b"}, "Api-Key": {"sk-c"}}, "sk-b"},
		{"all three", map[string][]string{"Authorization": {"Bearer sk-a"}, "X-Api-Key": {"sk-b"}, "Api-Key": {"sk-c"}}, "sk-a"},
		{"empty x-api-key falls to api-key", map[string][]string{"X-Api-Key": {""}, "Api-Key": {"sk-c"}}, "sk-c"},
		{"first of several values", map[string][]string{"X-Api-Key": {"sk-b", "sk-other"}}, "sk-b"},
		// A non-Bearer Authorization carries no client key.
		{"basic alone", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}}, ""},
		{"basic then x-api-key", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}, "X-Api-Key": {"sk-x"}}, "sk-x"},
		{"bearer without key", map[string][]string{"Authorization": {"Bearer"}}, ""},
		{"bearer with only spaces", map[string][]string{"Authorization": {"Bearer    "}}, ""},
		{"bearerish prefix", map[string][]string{"Authorization": {"Bearersk-a"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeyFromRequest(http.Header(tc.header)); got != tc.want {
				t.Errorf("clientKeyFromRequest = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseClientKeysFile(t *testing.T) {
	set, err := ParseKeysFile([]byte(`# sandboxes
alice   sk-alice-1

	bob	sk-bob-2   
# carol sk-carol
`), "")
	if err != nil {
		t.Fatalf("parseClientKeysFile: %v", err)
	}
	if len(set) != 2 {
		t.Errorf("got %d keys, want 2", len(set))
	}
	if p, ok := set[keyDigest(sha256.Sum256([]byte("sk-alice-1")))]; !ok || p.name != "alice" || p.id != "key:alice" {
		t.Errorf("alice's key maps to %v, %v", p, ok)
	}
	if p, ok := set[keyDigest(sha256.Sum256([]byte("sk-bob-2")))]; !ok || p.name != "bob" || p.id != "key:bob" {
		t.Errorf("bob's key maps to %v, %v", p, ok)
	}
	if _, ok := set[keyDigest(sha256.Sum256([]byte("sk-carol")))]; ok {
		t.Error("a commented-out key is accepted")
	}

	if set, err := ParseKeysFile(nil, ""); err != nil || len(set) != 0 {
		t.Errorf("empty file: %v keys, err %v", len(set), err)
	}
}

func TestParseClientKeysFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
		secrets       []string
	}{
		{
			"one field", "alice sk-alice\nbob\n",
			[]string{"line 2", `want "<name> <key>"`, "got 1 fields"}, nil,
		},
		{
			"three fields", "# c\n\nalice sk-alice extra-secret-part\n",
			[]string{"line 3", "got 3 fields"}, []string{"sk-alice", "extra-secret-part"},
		},
		{
			"duplicate name", "alice sk-one\nbob sk-two\nalice sk-three\n",
			[]string{"line 3", `name "alice" already used on line 1`}, []string{"sk-one", "sk-three"},
		},
		{
			"duplicate key", "alice sk-shared-secret\nbob sk-shared-secret\n",
			[]string{"line 2", `the key of "bob" is also another client's key`}, []string{"sk-shared-secret"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeysFile([]byte(tc.content), "")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, sec := range tc.secrets {
				if strings.Contains(err.Error(), sec) {
					t.Errorf("the error names a key: %s", err)
				}
			}
		})
	}
}

// Identify accepts exactly the literal keys, the keys of the file and
// the keys signed with a secret, naming the client, and nothing else;
// revoked names are refused with their client; keys compare exactly.
func TestIdentify(t *testing.T) {
	set, err := ParseKeysFile([]byte("alice sk-alice\nbob sk-bob\n"), "tenant2")
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeys([]string{"sk-placeholder", "sk-second"}, [][]byte{[]byte(testClientSecret)}, "")
	k.SetFile(set)
	signed := mustSign(t, "sandbox-1", testClientSecret)
	for _, tc := range []struct {
		key    string
		name   any    // nil: refused
		id     any    // with name
		reason string // with a refusal
	}{
		{"sk-placeholder", PlaceholderName, PlaceholderName, ""},
		{"sk-second", PlaceholderName, PlaceholderName, ""},
		{"sk-alice", "alice", "key:tenant2/alice", ""},
		{"sk-bob", "bob", "key:tenant2/bob", ""},
		{signed, "sandbox-1", "key:sandbox-1", ""},
		{"", nil, nil, RejectMissing},
		{"sk-placeholde", nil, nil, RejectUnknown},
		{"sk-placeholder ", nil, nil, RejectUnknown},
		{"SK-PLACEHOLDER", nil, nil, RejectUnknown},
		{"alice", nil, nil, RejectUnknown}, // a name is not a key
		{signed[:len(signed)-1] + "A", nil, nil, RejectUnknown},
	} {
		p, reason := k.Identify(tc.key)
		if tc.name == nil {
			if reason != tc.reason || p != nil {
				t.Errorf("Identify(%q) = %v, %q; want refused: %q", tc.key, p, reason, tc.reason)
			}
			continue
		}
		if reason != "" || p.Name() != tc.name || p.ID() != tc.id {
			t.Errorf("Identify(%q) = %v, %q; want %v (%v)", tc.key, p, reason, tc.name, tc.id)
		}
	}
	k.SetRevoked(ParseNameList([]byte("bob\nsandbox-1\n")))
	for _, key := range []string{"sk-bob", signed} {
		if p, reason := k.Identify(key); reason != RejectRevoked || p == nil {
			t.Errorf("Identify(%q) after revocation = %v, %q; want the client, refused as revoked", key, p, reason)
		}
	}
	if p, reason := k.Identify("sk-alice"); reason != "" || p.Name() != "alice" {
		t.Errorf("alice was revoked with bob: %v %q", p, reason)
	}
}
