package caddymodule

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// runCommand runs `caddy ai-gateway-auth <args>` as caddycmd builds it
// (a cobra command named after the registered command, completed by its
// CobraFunc) and returns stdout, stderr and the error.
func runCommand(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	c, ok := caddycmd.Commands()["ai-gateway-auth"]
	if !ok {
		t.Fatal("the ai-gateway-auth command is not registered")
	}
	root := &cobra.Command{Use: c.Name + " " + c.Usage, Short: c.Short, Long: c.Long}
	c.CobraFunc(root)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errOut.String(), err
}

// The printed key is one line, and a proxy with the same secret accepts
// it as the named client.
func TestClientKeyCommand(t *testing.T) {
	t.Setenv("CLIENT_KEY_SECRET", "")
	out, _, err := runCommand(t, "client-key", "--secret", testClientSecret, "sandbox-1")
	if err != nil {
		t.Fatal(err)
	}
	if out != testSignedKeyVector+"\n" {
		t.Errorf("printed %q, want %q", out, testSignedKeyVector+"\n")
	}
	key := strings.TrimSpace(out)
	if p, reason := identity.NewKeys(nil, [][]byte{[]byte(testClientSecret)}, "").Identify(key); reason != "" || p.Name() != "sandbox-1" {
		t.Errorf("printed key does not verify: %v %q", p, reason)
	}
	h, _ := signedKeyHandler(t, testClientSecret)
	if w, client, _ := sendKey(t, h, key); w.Code != 200 || client != "sandbox-1" {
		t.Errorf("proxy refused the printed key: %d %v", w.Code, client)
	}
}

// The secret comes from CLIENT_KEY_SECRET when --secret is not given;
// --secret wins when both are.
func TestClientKeyCommandSecretSources(t *testing.T) {
	t.Setenv("CLIENT_KEY_SECRET", testClientSecret2)
	out, _, err := runCommand(t, "client-key", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, reason := identity.NewKeys(nil, [][]byte{[]byte(testClientSecret2)}, "").Identify(strings.TrimSpace(out)); reason != "" {
		t.Errorf("key %q not signed with CLIENT_KEY_SECRET", out)
	}
	out, _, err = runCommand(t, "client-key", "--secret="+testClientSecret, "alice")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out)
	if _, ok := signedBy(key, testClientSecret); !ok {
		t.Errorf("key %q not signed with --secret", key)
	}
	if _, ok := signedBy(key, testClientSecret2); ok {
		t.Error("--secret did not win over CLIENT_KEY_SECRET")
	}
}

func TestClientKeyCommandErrors(t *testing.T) {
	t.Setenv("CLIENT_KEY_SECRET", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"client-key", "alice"}, "no secret: set CLIENT_KEY_SECRET or pass --secret"},
		{[]string{"client-key", "--secret", "", "alice"}, "no secret"},
		{[]string{"client-key", "--secret", testClientSecret, "bad name"}, "name must be 1-128 characters"},
		{[]string{"client-key", "--secret", testClientSecret, strings.Repeat("a", 129)}, "name must be 1-128 characters"},
		{[]string{"client-key", "--secret", testClientSecret}, "accepts 1 arg(s), received 0"},
		{[]string{"client-key", "--secret", testClientSecret, "a", "b"}, "accepts 1 arg(s), received 2"},
	} {
		out, _, err := runCommand(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
		if strings.Contains(out, identity.SignedKeyPrefix) {
			t.Errorf("%q: printed a key despite the error: %q", tc.args, out)
		}
	}
}

// A short secret still gives a working key, with a warning on stderr.
func TestClientKeyCommandShortSecretWarns(t *testing.T) {
	t.Setenv("CLIENT_KEY_SECRET", "")
	out, errOut, err := runCommand(t, "client-key", "--secret", "fifteen-bytes!!", "alice")
	if err != nil {
		t.Fatalf("short secret refused: %v", err)
	}
	if name, ok := signedBy(strings.TrimSpace(out), "fifteen-bytes!!"); !ok || name != "alice" {
		t.Fatalf("printed key %q does not verify", out)
	}
	if !strings.Contains(errOut, "shorter than 16 bytes") {
		t.Fatalf("no warning on stderr: %q", errOut)
	}
}

// signedBy is the name of a key signed under secret, and whether it is
// one.
func signedBy(key, secret string) (string, bool) {
	p, reason := identity.NewKeys(nil, [][]byte{[]byte(secret)}, "").Identify(key)
	if reason != "" {
		return "", false
	}
	return p.Name().(string), true
}
