package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestValidateRequiresClientAuth: `caddy validate` rejects a config
// where anyone could use the proxy, and says where: the Caddyfile's name
// and the line of the ai_gateway_auth block.
func TestValidateRequiresClientAuth(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	config := `{
	admin off
}

http://127.0.0.1:4000 {
	bind 127.0.0.1
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
	}
	reverse_proxy https://ai-gateway.vercel.sh
}
`
	const blockFirst, blockLast = 7, 9 // the lines of the ai_gateway_auth block
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCaddyCommand(t, nil, "validate", "--config", path, "--adapter", "caddyfile")
	if err == nil {
		t.Fatalf("caddy validate accepted a config without client authentication:\n%s", out)
	}
	m := regexp.MustCompile(regexp.QuoteMeta(path) + `:(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the error does not name %s and a line:\n%s", path, out)
	}
	if line, _ := strconv.Atoi(m[1]); line < blockFirst || line > blockLast {
		t.Errorf("the error points at line %d, want the ai_gateway_auth block (lines %d-%d):\n%s", line, blockFirst, blockLast, out)
	}
	if !strings.Contains(out, "client_key") {
		t.Errorf("the error does not say how to fix it (client_key):\n%s", out)
	}
}

// TestShippedCaddyfile: the repository's default Caddyfile validates
// offline, with or without credentials in the environment, and `caddy
// adapt` keeps the API key a placeholder.
func TestShippedCaddyfile(t *testing.T) {
	t.Parallel()
	path, err := filepath.Abs("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{nil, {"AI_GATEWAY_API_KEY": newAPIKey()}} {
		if out, err := runCaddyCommand(t, env, "validate", "--config", path, "--adapter", "caddyfile"); err != nil {
			t.Errorf("caddy validate %s (env %v): %v\n%s", path, env != nil, err, out)
		}
	}
	key := newAPIKey()
	out, err := runCaddyCommand(t, map[string]string{"AI_GATEWAY_API_KEY": key}, "adapt", "--config", path, "--adapter", "caddyfile")
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	if !strings.Contains(out, "{env.AI_GATEWAY_API_KEY}") {
		t.Errorf("the adapted config does not keep {env.AI_GATEWAY_API_KEY}:\n%s", out)
	}
	assertNoSecrets(t, "caddy adapt's output", out, secret{"the API key", key})
}

// TestValidateMissingWatchedFile: a client keys or revocation file that
// does not exist at load fails `caddy validate` with its path and what to
// create, and nothing claims that something "read before" is kept: on the
// first load, nothing was.
func TestValidateMissingWatchedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for option, hint := range map[string]string{
		"client_keys_file":         "line per client", // the log escapes the quotes around <name> <key>
		"client_keys_revoked_file": "an empty file revokes no one",
	} {
		missing := filepath.Join(dir, option)
		path := filepath.Join(dir, option+".Caddyfile")
		config := `{
	admin off
}

http://127.0.0.1:4000 {
	bind 127.0.0.1
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		` + option + ` ` + missing + `
	}
	reverse_proxy https://ai-gateway.vercel.sh
}
`
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runCaddyCommand(t, map[string]string{"CLIENT_KEY_SECRET": "a-secret-of-at-least-16-bytes"},
			"validate", "--config", path, "--adapter", "caddyfile")
		if err == nil {
			t.Fatalf("%s: caddy validate accepted a missing %s:\n%s", option, missing, out)
		}
		if want := option + " " + missing + " does not exist; create it"; !strings.Contains(out, want) || !strings.Contains(out, hint) {
			t.Errorf("%s: the error does not say %q (%s):\n%s", option, want, hint, out)
		}
		if strings.Contains(out, "keeping what was read before") {
			t.Errorf("%s: the first load claims to keep what was read before:\n%s", option, out)
		}
	}
}
