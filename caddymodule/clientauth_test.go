package caddymodule

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
)

// The keys file is re-read when it changes; an unusable new version keeps
// the keys read before.
func TestClientKeysFileReload(t *testing.T) {
	dir := t.TempDir()
	keysFile := writeFile(t, dir, "keys", "alice sk-alice\n")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("vck_static")},
		ClientKeysFile: keysFile,
	})
	accepts := func(key string) bool { _, reason := h.keys.Identify(key); return reason == "" }
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

// A handler accepts exactly the literal keys (placeholders resolved) and the keys of the file,
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
		{"sk-placeholder", identity.PlaceholderName},
		{"sk-second", identity.PlaceholderName},
		{"sk-from-env", identity.PlaceholderName},
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
		p, reason := h.keys.Identify(tc.key)
		accepted := reason == ""
		if tc.want == nil {
			if accepted {
				t.Errorf("identify(%q) accepted as %v", tc.key, p.Name())
			}
			continue
		}
		if !accepted || p.Name() != tc.want {
			t.Errorf("identify(%q) = %v, %q; want %v", tc.key, p, reason, tc.want)
		}
	}
}
