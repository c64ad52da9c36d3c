package caddymodule

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
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
			if got := clientKeyFromRequest(http.Header(tc.header)); got != tc.want {
				t.Errorf("clientKeyFromRequest = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseClientKeysFile(t *testing.T) {
	set, err := parseClientKeysFile([]byte(`# sandboxes
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
	if p, ok := set[keyDigest(sha256Sum("sk-alice-1"))]; !ok || p.name != "alice" || p.id != "key:alice" {
		t.Errorf("alice's key maps to %v, %v", p, ok)
	}
	if p, ok := set[keyDigest(sha256Sum("sk-bob-2"))]; !ok || p.name != "bob" || p.id != "key:bob" {
		t.Errorf("bob's key maps to %v, %v", p, ok)
	}
	if _, ok := set[keyDigest(sha256Sum("sk-carol"))]; ok {
		t.Error("a commented-out key is accepted")
	}

	if set, err := parseClientKeysFile(nil, ""); err != nil || len(set) != 0 {
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
			_, err := parseClientKeysFile([]byte(tc.content), "")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			assertNotContains(t, "error", err.Error(), tc.secrets...)
		})
	}
}

// identify accepts exactly the literal keys and the keys of the file,
// naming the client, and nothing else.
func TestIdentify(t *testing.T) {
	t.Setenv("AIGW_TEST_CLIENT_KEY", "sk-from-env")
	t.Setenv("AIGW_TEST_EMPTY_CLIENT_KEY", "")
	dir := t.TempDir()
	keysFile := writeFile(t, dir, "keys", "alice sk-alice\nbob sk-bob\n")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("vck_static")},
		ClientKeys:     []string{"sk-placeholder", "sk-second", "{env.AIGW_TEST_CLIENT_KEY}", "{env.AIGW_TEST_EMPTY_CLIENT_KEY}"},
		ClientKeysFile: keysFile,
	})

	for _, tc := range []struct {
		key  string
		want any // nil: refused
	}{
		{"sk-placeholder", placeholderClient},
		{"sk-second", placeholderClient},
		{"sk-from-env", placeholderClient},
		{"sk-alice", "alice"},
		{"sk-bob", "bob"},
		{"", nil},
		{"{env.AIGW_TEST_CLIENT_KEY}", nil}, // the placeholder itself is not a key
		{"{env.AIGW_TEST_EMPTY_CLIENT_KEY}", nil},
		{"sk-placeholde", nil},
		{"sk-placeholder ", nil},
		{"SK-PLACEHOLDER", nil},
		{"alice", nil}, // a name is not a key
		{"sk-carol", nil},
	} {
		p, reason := h.keys.identify(tc.key)
		accepted := reason == ""
		if tc.want == nil {
			if accepted {
				t.Errorf("identify(%q) accepted as %v", tc.key, p.name)
			}
			continue
		}
		if !accepted || p.name != tc.want {
			t.Errorf("identify(%q) = %v, %q; want %v", tc.key, p, reason, tc.want)
		}
	}
}

// The keys file is re-read when it changes; an unusable new version keeps
// the keys read before.
func TestClientKeysFileReload(t *testing.T) {
	dir := t.TempDir()
	keysFile := writeFile(t, dir, "keys", "alice sk-alice\n")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("vck_static")},
		ClientKeysFile: keysFile,
	})
	accepts := func(key string) bool { _, reason := h.keys.identify(key); return reason == "" }
	if !accepts("sk-alice") {
		t.Fatal("sk-alice not accepted")
	}

	// a rewrite replaces the set: bob in, alice out
	writeFile(t, dir, "keys.tmp", "bob sk-bob-new\n")
	if err := os.Rename(dir+"/keys.tmp", keysFile); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sk-bob-new accepted after the keys file changed", func() bool { return accepts("sk-bob-new") })
	if accepts("sk-alice") {
		t.Error("sk-alice still accepted after removal from the keys file")
	}

	// a broken version, and then a deleted file, keep the previous keys
	// (checked over many poll intervals: this cannot fail on a slow
	// machine, it can only miss a regression there)
	// (renamed into place: a watcher may catch an in-place rewrite half
	// done, e.g. empty, which is a valid file with no keys)
	writeFile(t, dir, "keys.tmp", "bob sk-bob-new\nbroken line with three\n")
	if err := os.Rename(dir+"/keys.tmp", keysFile); err != nil {
		t.Fatal(err)
	}
	stillAccepted(t, accepts, "sk-bob-new")
	if err := os.Remove(keysFile); err != nil {
		t.Fatal(err)
	}
	stillAccepted(t, accepts, "sk-bob-new")

	// then a good version is picked up again
	writeFile(t, dir, "keys", "carol sk-carol-long-key\n")
	eventually(t, "sk-carol accepted", func() bool { return accepts("sk-carol-long-key") })
	if accepts("sk-bob-new") {
		t.Error("sk-bob-new still accepted")
	}
}

func stillAccepted(t *testing.T, accepts func(string) bool, key string) {
	t.Helper()
	for range 30 {
		if !accepts(key) {
			t.Fatalf("%s no longer accepted after the keys file became unusable", key)
		}
		time.Sleep(filewatch.Interval)
	}
}

// A keys file that is unusable at provision is a config error naming the
// file and the line, never a key.
func TestClientKeysFileProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	missing := dir + "/does-not-exist"
	err := tryProvisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("vck_static")},
		ClientKeysFile: missing,
	})
	if err == nil || !strings.Contains(err.Error(), "client_keys_file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing keys file: error %v, want one naming client_keys_file and %s", err, missing)
	}

	bad := writeFile(t, dir, "bad", "alice sk-dup-secret\nbob sk-dup-secret\n")
	err = tryProvisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("vck_static")},
		ClientKeysFile: bad,
	})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("duplicate key: error %v, want one naming %s and line 2", err, bad)
	} else {
		assertNotContains(t, "error", err.Error(), "sk-dup-secret")
	}
}
