// Package examples holds configurations that users copy. Its test checks
// that they still work with the code: every JSON file parses and points at
// the proxy, and every Caddyfile adapts and validates (provisions without
// starting) against this repository's module, offline.
package examples

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ai-gateway-auth/ai_gateway_auth/caddymodule"
)

// Dummy secrets: the examples read them from the environment. None of them
// may appear in an adapted config.
const (
	dummyAPIKey          = "dummy-ai-gateway-api-key-5b1f"
	dummyVercelToken     = "dummy-vercel-access-token-93ac"
	dummyClientKeySecret = "dummy-client-key-secret-e07d2c" // at least 16 bytes, as the module requires
	dummyRedisPassword   = "dummy-redis-password-41b8"
)

// exampleFiles lists every file under this directory except the tests
// and installed node_modules (grafana/check's), as slash paths relative
// to it.
func exampleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "node_modules" {
			return fs.SkipDir
		}
		if d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files = append(files, filepath.ToSlash(path))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestReadmeIndexesEveryExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range exampleFiles(t) {
		if f == "README.md" {
			continue
		}
		if !bytes.Contains(readme, []byte(f)) {
			t.Errorf("examples/README.md does not mention %s", f)
		}
	}
}

func TestJSONFilesParse(t *testing.T) {
	n := 0
	for _, f := range exampleFiles(t) {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		n++
		var v any
		if err := json.Unmarshal(readFile(t, f), &v); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if n == 0 {
		t.Fatal("no JSON example found")
	}
}

func TestOpenClawConfig(t *testing.T) {
	var cfg struct {
		Models struct {
			Providers map[string]struct {
				BaseURL string `json:"baseUrl"`
				APIKey  string `json:"apiKey"`
				API     string `json:"api"`
				Models  []struct {
					ID string `json:"id"`
				} `json:"models"`
			} `json:"providers"`
		} `json:"models"`
		Agents struct {
			Defaults struct {
				Model struct {
					Primary string `json:"primary"`
				} `json:"model"`
				Models map[string]struct {
					Params struct {
						Transport string `json:"transport"`
					} `json:"params"`
				} `json:"models"`
			} `json:"defaults"`
		} `json:"agents"`
	}
	decodeJSON(t, "openclaw/openclaw.json", &cfg)

	p, ok := cfg.Models.Providers["openai"]
	if !ok {
		t.Fatal("models.providers.openai is missing")
	}
	if p.BaseURL != "http://127.0.0.1:4000/v1" || p.APIKey != "sk-placeholder" {
		t.Errorf("openai provider: baseUrl %q, apiKey %q; want the proxy's http://127.0.0.1:4000/v1 and sk-placeholder", p.BaseURL, p.APIKey)
	}
	var refs []string
	for _, m := range p.Models {
		refs = append(refs, "openai/"+m.ID)
	}
	if !slices.Contains(refs, cfg.Agents.Defaults.Model.Primary) {
		t.Errorf("primary model %q is not one of the provider's models %v", cfg.Agents.Defaults.Model.Primary, refs)
	}
	for _, ref := range refs {
		m, ok := cfg.Agents.Defaults.Models[ref]
		if !ok || m.Params.Transport != "sse" {
			t.Errorf("agents.defaults.models[%q].params.transport should be \"sse\"", ref)
		}
	}
}

func TestPiModels(t *testing.T) {
	var cfg struct {
		Providers map[string]struct {
			BaseURL string `json:"baseUrl"`
			API     string `json:"api"`
			APIKey  string `json:"apiKey"`
			Models  []struct {
				ID string `json:"id"`
			} `json:"models"`
		} `json:"providers"`
	}
	decodeJSON(t, "pi/models.json", &cfg)
	if len(cfg.Providers) == 0 {
		t.Fatal("no provider")
	}
	for name, p := range cfg.Providers {
		want := map[string]string{
			"openai-completions": "http://127.0.0.1:4000/v1", // the OpenAI SDK appends /chat/completions
			"anthropic-messages": "http://127.0.0.1:4000",    // the Anthropic SDK appends /v1/messages
		}[p.API]
		if want == "" {
			t.Errorf("provider %s: unexpected api %q", name, p.API)
		} else if p.BaseURL != want {
			t.Errorf("provider %s (%s): baseUrl %q, want %q", name, p.API, p.BaseURL, want)
		}
		if p.APIKey != "sk-placeholder" {
			t.Errorf("provider %s: apiKey %q, want sk-placeholder", name, p.APIKey)
		}
		if len(p.Models) == 0 {
			t.Errorf("provider %s has no models", name)
		}
		for _, m := range p.Models {
			if !strings.Contains(m.ID, "/") {
				t.Errorf("provider %s: model id %q is not an AI Gateway id (creator/model)", name, m.ID)
			}
		}
	}
}

func TestClaudeCodeEnv(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	cmd := exec.Command(bash, "--noprofile", "--norc", "-euc",
		`. ./claude-code/env.sh; printf '%s\n%s\n%s\n' "$ANTHROPIC_BASE_URL" "$ANTHROPIC_AUTH_TOKEN" "${ANTHROPIC_API_KEY-unset}"`)
	cmd.Env = append(os.Environ(), "ANTHROPIC_API_KEY=sk-ant-real-key")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing env.sh: %v\n%s", err, out)
	}
	if got, want := string(out), "http://127.0.0.1:4000\nsk-placeholder\nunset\n"; got != want {
		t.Errorf("after sourcing env.sh: got\n%s\nwant\n%s", got, want)
	}
}

func TestSystemdUnit(t *testing.T) {
	const path = "systemd/ai-gateway-auth.service"
	unit := string(readFile(t, path))
	for _, line := range []string{
		"ExecStart=/usr/local/bin/caddy run --config /etc/caddy/Caddyfile",
		"EnvironmentFile=/etc/ai-gateway-auth/env",
		"ProtectSystem=strict",
		"NoNewPrivileges=yes",
		"User=ai-gateway-auth",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).MatchString(unit) {
			t.Errorf("%s lacks the line %q", path, line)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found; skipping `systemd-analyze verify`")
		return
	}
	// verify insists that ExecStart's binary exists: point it at one that does.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "ai-gateway-auth.service")
	writeFile(t, copyPath, strings.ReplaceAll(unit, "/usr/local/bin/caddy", self))
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
	}
}

// testEnv is what the example Caddyfiles need to load offline: dummy
// secrets in the environment, and paths replaces the files they name
// with temporary ones.
type testEnv struct {
	paths *strings.Replacer
}

func exampleEnv(t *testing.T) testEnv {
	t.Helper()
	tmp := t.TempDir()
	keysFile := filepath.Join(tmp, "keys")
	writeFile(t, keysFile, "# name key\nsandbox-1 sk-test-0001\nsandbox-2 sk-test-0002\n")
	tokenFile := filepath.Join(tmp, "oidc-token")
	writeFile(t, tokenFile, "VERCEL_OIDC_TOKEN=\""+fakeJWT(t, time.Hour)+"\"\n")
	revokedFile := filepath.Join(tmp, "revoked")
	writeFile(t, revokedFile, "# revoked client names\nsandbox-2\n")
	paths := strings.NewReplacer(
		"/etc/ai-gateway-auth/keys", keysFile,
		"/etc/ai-gateway-auth/revoked", revokedFile,
		"/run/vercel/oidc-token", tokenFile,
	)

	// Caddy's storage (certificates, autosave) goes to a temporary place.
	t.Setenv("HOME", tmp)
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	t.Setenv("AI_GATEWAY_API_KEY", dummyAPIKey)
	t.Setenv("VERCEL_OIDC_TOKEN", fakeJWT(t, 30*time.Minute))
	t.Setenv("VERCEL_TOKEN", dummyVercelToken)
	t.Setenv("VERCEL_PROJECT_ID", "prj_example")
	t.Setenv("VERCEL_TEAM_ID", "team_example")
	t.Setenv("CLIENT_KEY_SECRET", dummyClientKeySecret)
	t.Setenv("LIMITS_REDIS_URL", "redis://:"+dummyRedisPassword+"@127.0.0.1:6379/0") // never dialled: Provision connects to nothing
	return testEnv{paths: paths}
}

// signedKey is the module's signed client key for name under secret.
func signedKey(name, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(name))
	return "sk-aigw-" + name + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestCaddyfilesValidate is `caddy adapt` + `caddy validate` on every
// example Caddyfile and on the repository's root Caddyfile, in process and
// offline, with dummy secrets in the environment and the files they name
// replaced by temporary ones.
func TestCaddyfilesValidate(t *testing.T) {
	paths := exampleEnv(t).paths
	files := allCaddyfiles(t)
	if len(files) < 8 {
		t.Fatalf("found %d Caddyfiles, want at least 8: %v", len(files), files)
	}

	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("the caddyfile adapter is not registered")
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			body := paths.Replace(string(readFile(t, file)))
			cfgJSON, warnings, err := adapter.Adapt([]byte(body), map[string]any{"filename": file})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("adapt warning: %s", w.String())
			}
			if !bytes.Contains(cfgJSON, []byte(`"handler":"ai_gateway_auth"`)) {
				t.Errorf("adapted config has no ai_gateway_auth handler")
			}
			for _, secret := range []string{dummyAPIKey, dummyVercelToken, dummyClientKeySecret, dummyRedisPassword} {
				if bytes.Contains(cfgJSON, []byte(secret)) {
					t.Errorf("adapted config contains a secret from the environment; use {env.X}, not {$X}")
				}
			}
			if err := authBeforeProxy(cfgJSON); err != nil {
				t.Error(err)
			}
			var cfg *caddy.Config
			if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
				t.Fatalf("decoding adapted config: %v", err)
			}
			if err := caddy.Validate(cfg); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}

// authBeforeProxy checks in the adapted JSON that on every server, each
// reverse_proxy handler comes after an ai_gateway_auth handler on the way
// to it (in the same route list, or in an enclosing one).
func authBeforeProxy(cfgJSON []byte) error {
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []any `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return err
	}
	var walk func(routes []any, authSeen bool) error
	walk = func(routes []any, authSeen bool) error {
		for _, r := range routes {
			route, _ := r.(map[string]any)
			handlers, _ := route["handle"].([]any)
			for _, h := range handlers {
				handler, _ := h.(map[string]any)
				switch handler["handler"] {
				case "ai_gateway_auth":
					authSeen = true
				case "reverse_proxy":
					if !authSeen {
						return errors.New("a reverse_proxy handler runs before any ai_gateway_auth handler")
					}
				}
				if sub, ok := handler["routes"].([]any); ok {
					if err := walk(sub, authSeen); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for name, srv := range cfg.Apps.HTTP.Servers {
		if err := walk(srv.Routes, false); err != nil {
			return fmt.Errorf("server %s: %v", name, err)
		}
	}
	return nil
}

// fakeJWT is an unsigned token with Vercel OIDC claims that expires in ttl:
// enough for the proxy to read its expiry.
func fakeJWT(t *testing.T, ttl time.Duration) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	return enc(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "example"}) + "." +
		enc(map[string]any{
			"iss":        "https://oidc.vercel.com/example",
			"aud":        "https://vercel.com/example",
			"sub":        "owner:example:project:example:environment:development",
			"owner_id":   "team_example",
			"project_id": "prj_example",
			"iat":        now.Unix(),
			"nbf":        now.Unix(),
			"exp":        now.Add(ttl).Unix(),
		}) + "." + base64.RawURLEncoding.EncodeToString([]byte("not-a-signature"))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// decodeJSON decodes a JSON example into v, which names only the fields
// the test checks.
func decodeJSON(t *testing.T, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAgentExamplesMatchRootCaddyfile: the agent settings above assume the
// proxy of the root Caddyfile, on 127.0.0.1:4000 with the key
// sk-placeholder.
func TestAgentExamplesMatchRootCaddyfile(t *testing.T) {
	root := string(readFile(t, filepath.Join("..", "Caddyfile")))
	for _, re := range []string{
		`(?m)^\S*:4000 \{$`,
		`(?m)^\s*bind 127\.0\.0\.1$`,
		`(?m)^\s*client_key( \S+)* sk-placeholder( \S+)*$`,
	} {
		if !regexp.MustCompile(re).MatchString(root) {
			t.Errorf("the root Caddyfile no longer matches %s; update the agent examples and this test", re)
		}
	}
}

// TestDashboardExamples checks that the TypeScript examples, which cannot
// be compiled here, agree with the Caddyfiles they go with and with the
// module's formats.
func TestDashboardExamples(t *testing.T) {
	// Push: the cron entry runs the route, which POSTs {"token"} to the
	// path that push.Caddyfile accepts.
	var vercel struct {
		Crons []struct {
			Path     string `json:"path"`
			Schedule string `json:"schedule"`
		} `json:"crons"`
	}
	decodeJSON(t, "push/vercel.json", &vercel)
	if len(vercel.Crons) != 1 {
		t.Fatalf("push/vercel.json: want one cron entry, got %d", len(vercel.Crons))
	}
	route := "push/app" + vercel.Crons[0].Path + "/route.ts"
	routeTS := string(readFile(t, route))
	for _, want := range []string{
		`import { getVercelOidcToken } from "@vercel/oidc";`,
		`export async function GET(`, // Vercel Cron sends GET
		`method: "POST"`,
		`JSON.stringify({ token })`,
		`"ai-gateway-auth-token-used"`,
		"Bearer ${cronSecret}",
	} {
		if !strings.Contains(routeTS, want) {
			t.Errorf("%s lacks %q", route, want)
		}
	}
	m := regexp.MustCompile(`(?m)^\s*push (/\S*) \{$`).FindStringSubmatch(string(readFile(t, "caddyfiles/push.Caddyfile")))
	if m == nil {
		t.Fatal("caddyfiles/push.Caddyfile has no `push <path> {` line")
	}
	pushURL := "https://ai-proxy.example.com" + m[1]
	for _, f := range []string{route, "push/README.md"} {
		if !strings.Contains(string(readFile(t, f)), pushURL) {
			t.Errorf("%s does not name the push URL %s of push.Caddyfile", f, pushURL)
		}
	}

	// forwardURL: the sandbox's forward URL is the proxy's audience.
	forwardTS := string(readFile(t, "sandbox/forwardurl-sandbox.ts"))
	fm := regexp.MustCompile(`const FORWARD_URL = "([^"]+)";`).FindStringSubmatch(forwardTS)
	am := regexp.MustCompile(`(?m)^\s*audience (\S+)$`).FindStringSubmatch(string(readFile(t, "caddyfiles/sandbox-forwardurl.Caddyfile")))
	if fm == nil || am == nil {
		t.Fatal("cannot find FORWARD_URL in sandbox/forwardurl-sandbox.ts or audience in sandbox-forwardurl.Caddyfile")
	}
	if strings.TrimRight(fm[1], "/") != strings.TrimRight(am[1], "/") {
		t.Errorf("FORWARD_URL %s is not the vercel_sandbox audience %s", fm[1], am[1])
	}
	if !strings.Contains(forwardTS, `"ai-gateway.vercel.sh": [{ forwardURL: FORWARD_URL }]`) {
		t.Error("sandbox/forwardurl-sandbox.ts does not forward ai-gateway.vercel.sh to FORWARD_URL")
	}

	// Signed keys: the documented test vector is the module's format,
	// sk-aigw-<name>.<unpadded base64url HMAC-SHA256(name)>.
	keyTS := string(readFile(t, "sandbox/client-key.ts"))
	for _, want := range []string{`createHmac("sha256", secret).update(name).digest("base64url")`, "`sk-aigw-${name}.${sig}`"} {
		if !strings.Contains(keyTS, want) {
			t.Errorf("sandbox/client-key.ts lacks %q", want)
		}
	}
	vm := regexp.MustCompile(`signClientKey\("([^"]+)", "([^"]+)"\)\s*//\s*=== "([^"]+)"`).FindStringSubmatch(keyTS)
	if vm == nil {
		t.Fatal("sandbox/client-key.ts has no test vector")
	}
	mac := hmac.New(sha256.New, []byte(vm[2]))
	mac.Write([]byte(vm[1]))
	if want := "sk-aigw-" + vm[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); vm[3] != want {
		t.Errorf("sandbox/client-key.ts test vector is %s, want %s", vm[3], want)
	}
	signedTS := string(readFile(t, "sandbox/signed-key-sandbox.ts"))
	for _, want := range []string{"OPENAI_BASE_URL: `${proxy}/v1`", "ANTHROPIC_BASE_URL: proxy", "OPENAI_API_KEY: key", "ANTHROPIC_AUTH_TOKEN: key"} {
		if !strings.Contains(signedTS, want) {
			t.Errorf("sandbox/signed-key-sandbox.ts lacks %q", want)
		}
	}
}

// TestExampleHeadersSayWhatToCreate: a file that must exist when the
// config loads (client keys, revocations) is created by a command in the
// example's header, so that copying an example and running it does not
// fail on a file nobody said to make.
func TestExampleHeadersSayWhatToCreate(t *testing.T) {
	mustExist := regexp.MustCompile(`(?m)^\s*(client_keys_file|client_keys_revoked_file)\s+(\S+)\s*$`)
	creates := regexp.MustCompile(`\binstall\b|\btouch\b|>|\bcp\b|\bmv\b`)
	files, err := filepath.Glob("caddyfiles/*.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range files {
		text := string(readFile(t, file))
		var header []string
		for line := range strings.SplitSeq(text, "\n") {
			if !strings.HasPrefix(line, "#") {
				break
			}
			header = append(header, line)
		}
		for _, m := range mustExist.FindAllStringSubmatch(text, -1) {
			checked++
			if !slices.ContainsFunc(header, func(l string) bool { return strings.Contains(l, m[2]) && creates.MatchString(l) }) {
				t.Errorf("%s: %s %s must exist when Caddy starts, but no command in the header creates it", file, m[1], m[2])
			}
		}
	}
	if checked == 0 {
		t.Fatal("no example names a file that must exist: the test checks nothing")
	}
}
