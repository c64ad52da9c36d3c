package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // the storage option of the fleet golden file
)

// Golden Caddyfile -> JSON adapt tests: each testdata/adapt/*.caddytest
// holds a Caddyfile, a line "----------", and the JSON it adapts to.
// Rewrite the JSON halves after an intended change with
//
//	go test ./caddymodule -run TestCaddyfileAdaptGolden -update
var update = flag.Bool("update", false, "rewrite the golden files in testdata/adapt from the current output")

const goldenSeparator = "\n----------\n"

// adapt runs the Caddyfile adapter as `caddy adapt` does, with filename
// for error messages.
func adapt(t *testing.T, filename, body string) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	a := caddyconfig.GetAdapter("caddyfile")
	if a == nil {
		t.Fatal("caddyfile adapter not registered")
	}
	return a.Adapt([]byte(body), map[string]any{"filename": filename})
}

// adaptOK adapts body and fails on errors and warnings (a golden
// Caddyfile must be formatted as `caddy fmt` would).
func adaptOK(t *testing.T, filename, body string) []byte {
	t.Helper()
	out, warnings, err := adapt(t, filename, body)
	if err != nil {
		t.Fatalf("adapting %s: %v", filename, err)
	}
	for _, w := range warnings {
		t.Errorf("%s:%d: warning: %s: %s", filename, w.Line, w.Directive, w.Message)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	return pretty.Bytes()
}

func TestCaddyfileAdaptGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddytest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/adapt")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddytest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, wantJSON, ok := strings.Cut(string(raw), goldenSeparator)
			if !ok {
				t.Fatalf("%s: no %q line between the Caddyfile and the JSON", file, strings.TrimSpace(goldenSeparator))
			}
			got := adaptOK(t, file, caddyfileText+"\n")
			if *update {
				if err := os.WriteFile(file, []byte(caddyfileText+goldenSeparator+string(got)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(wantJSON) != strings.TrimSpace(string(got)) {
				t.Errorf("%s adapts to:\n%s\nwant:\n%s\n(run with -update if the change is intended)", file, got, wantJSON)
			}
		})
	}
}

// handlerNames lists the handlers of a route list in order, descending
// into subroutes (handle blocks).
func handlerNames(routes []any) []string {
	var names []string
	for _, r := range routes {
		route, _ := r.(map[string]any)
		handle, _ := route["handle"].([]any)
		for _, h := range handle {
			hm, _ := h.(map[string]any)
			name, _ := hm["handler"].(string)
			if name == "subroute" {
				sub, _ := hm["routes"].([]any)
				names = append(names, handlerNames(sub)...)
				continue
			}
			names = append(names, name)
		}
	}
	return names
}

func serverRoutes(t *testing.T, adapted []byte) []any {
	t.Helper()
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []any `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.HTTP.Servers) != 1 {
		t.Fatalf("%d servers, want 1", len(cfg.Apps.HTTP.Servers))
	}
	for _, s := range cfg.Apps.HTTP.Servers {
		return s.Routes
	}
	return nil
}

// ai_gateway_auth runs before reverse_proxy whatever the order in the
// site block, with no `order` line, in handle blocks too; otherwise the
// credential swap could be bypassed.
func TestDirectiveOrderedBeforeReverseProxy(t *testing.T) {
	for name, body := range map[string]string{
		"site block": `:4000 {
	reverse_proxy https://ai-gateway.vercel.sh
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
	}
}
`,
		"handle block": `:4000 {
	handle /v1/* {
		reverse_proxy https://ai-gateway.vercel.sh
		ai_gateway_auth {
			credential static {env.AI_GATEWAY_API_KEY}
			client_key sk-placeholder
		}
	}
	respond 404
}
`,
		"with other handlers": `:4000 {
	header X-Served-By proxy
	reverse_proxy https://ai-gateway.vercel.sh
	rewrite * /v1{uri}
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
	}
}
`,
	} {
		t.Run(name, func(t *testing.T) {
			names := handlerNames(serverRoutes(t, adaptOK(t, "Caddyfile", body)))
			auth, proxy := -1, -1
			for i, n := range names {
				switch n {
				case "ai_gateway_auth":
					auth = i
				case "reverse_proxy":
					proxy = i
				}
			}
			if auth < 0 || proxy < 0 || auth > proxy {
				t.Errorf("handler order %v: ai_gateway_auth must come before reverse_proxy", names)
			}
		})
	}
}

// Secrets written as {env.X} stay placeholders in the adapted JSON (and so
// in the admin API's view of the config); they are resolved at provision.
func TestAdaptKeepsEnvPlaceholders(t *testing.T) {
	secrets := map[string]string{
		"AI_GATEWAY_API_KEY": "vck_secret_api_key_value",
		"VERCEL_TOKEN":       "vercel_secret_access_token",
		"VERCEL_PROJECT_ID":  "prj_secretproject",
		"VERCEL_TEAM_ID":     "team_secretteam",
		"VERCEL_OIDC_TOKEN":  "eyJsecret.eyJsecret.sig",
		"SANDBOX_KEY":        "sk-secret-sandbox-key",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	out := adaptOK(t, "Caddyfile", `:4000 {
	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
			mint {
				project {env.VERCEL_PROJECT_ID}
				team {env.VERCEL_TEAM_ID}
				access_token {env.VERCEL_TOKEN}
			}
		}
		client_key {env.SANDBOX_KEY}
	}
	reverse_proxy https://ai-gateway.vercel.sh
}
`)
	for k, v := range secrets {
		if bytes.Contains(out, []byte(v)) {
			t.Errorf("the value of %s is in the adapted JSON", k)
		}
	}
	for _, p := range []string{"{env.AI_GATEWAY_API_KEY}", "{env.VERCEL_PROJECT_ID}", "{env.VERCEL_TEAM_ID}", "{env.VERCEL_TOKEN}", "{env.SANDBOX_KEY}"} {
		if !bytes.Contains(out, []byte(p)) {
			t.Errorf("placeholder %s missing from the adapted JSON", p)
		}
	}
}

// The repository's default Caddyfile adapts cleanly, with the credential
// swap before the proxy.
func TestDefaultCaddyfileAdapts(t *testing.T) {
	body, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Skip("no ../Caddyfile:", err)
	}
	names := handlerNames(serverRoutes(t, adaptOK(t, "Caddyfile", string(body))))
	if len(names) < 2 || names[0] != "ai_gateway_auth" || names[len(names)-1] != "reverse_proxy" {
		t.Errorf("handler order %v", names)
	}
}

// Every Caddyfile error names the file and line and says what to do.
func TestCaddyfileErrors(t *testing.T) {
	const file = "Caddyfile.test"
	site := func(block string) string {
		// ai_gateway_auth is on line 2
		return ":4000 {\n\tai_gateway_auth" + block + "\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	okCreds := "\t\tcredential static {env.AI_GATEWAY_API_KEY}\n"
	okClient := "\t\tclient_key sk-placeholder\n"
	block := func(lines ...string) string { return " {\n" + strings.Join(lines, "") + "\t}" }
	oidc := func(lines ...string) string {
		return block(okClient, "\t\tcredential vercel_oidc {\n"+strings.Join(lines, "")+"\t\t}\n")
	}
	mint := func(lines ...string) string {
		return oidc("\t\t\tmint {\n" + strings.Join(lines, "") + "\t\t\t}\n")
	}
	okMint := "\t\t\t\tproject prj_x\n\t\t\t\taccess_token {env.VERCEL_TOKEN}\n"
	sandbox := func(lines ...string) string { // vercel_sandbox on line 4
		return block(okCreds, "\t\tvercel_sandbox {\n"+strings.Join(lines, "")+"\t\t}\n")
	}
	okSandbox := "\t\tvercel_sandbox {\n\t\t\taudience https://p.example/f\n\t\t\tteam team_x\n\t\t}\n"
	pushBlock := func(lines ...string) string { // push on line 5
		return oidc("\t\t\tpush /token {\n" + strings.Join(lines, "") + "\t\t\t}\n")
	}

	for _, tc := range []struct {
		name  string
		body  string
		line  int
		wants []string
	}{
		{"argument on the directive", site(" sk-placeholder" + block(okCreds, okClient)), 2,
			[]string{"ai_gateway_auth takes no arguments on its line, only a block; got 'sk-placeholder'"}},
		{"no credential", site(block(okClient)), 4,
			[]string{"needs at least one upstream credential", "add `credential static {env.AI_GATEWAY_API_KEY}` or `credential vercel_oidc`"}},
		{"no block at all", site(""), 2,
			[]string{"needs at least one upstream credential"}},
		{"no client auth", site(block(okCreds)), 4,
			[]string{"no client authentication", "add `client_key sk-placeholder`", "client_keys_file <path>"}},
		{"unknown option", site(block(okCreds, okClient, "\t\tclient_keyz sk\n")), 5,
			[]string{"unrecognized ai_gateway_auth option 'client_keyz'", "expected credential, client_key"}},
		{"client_key without keys", site(block(okCreds, "\t\tclient_key\n")), 4,
			[]string{"client_key needs at least one key, e.g. `client_key sk-placeholder`"}},
		{"client_keys_file without path", site(block(okCreds, "\t\tclient_keys_file\n")), 4,
			[]string{"client_keys_file needs a value"}},
		{"client_keys_file two paths", site(block(okCreds, "\t\tclient_keys_file /a /b\n")), 4,
			[]string{"client_keys_file takes one value; got another argument '/b'"}},
		{"client_keys_file twice", site(block(okCreds, "\t\tclient_keys_file /a\n", "\t\tclient_keys_file /b\n")), 5,
			[]string{"client_keys_file is already set to /a; give it once"}},
		{"credential_wait not a duration", site(block(okCreds, okClient, "\t\tcredential_wait soon\n")), 5,
			[]string{"credential_wait: 'soon' is not a positive duration (e.g. 5m, 30s)"}},
		{"credential_wait zero", site(block(okCreds, okClient, "\t\tcredential_wait 0s\n")), 5,
			[]string{"credential_wait: '0s' is not a positive duration"}},
		{"credential_wait negative", site(block(okCreds, okClient, "\t\tcredential_wait -1s\n")), 5,
			[]string{"is not a positive duration"}},
		{"credential without kind", site(block(okClient, "\t\tcredential\n")), 4,
			[]string{"credential needs a kind: `credential static <key>` or `credential vercel_oidc { ... }`"}},
		{"unknown credential kind", site(block(okClient, "\t\tcredential api_key sk\n")), 4,
			[]string{"unknown credential kind 'api_key' (expected static or vercel_oidc)"}},
		{"static without key", site(block(okClient, "\t\tcredential static\n")), 4,
			[]string{"credential static needs a key, e.g. `credential static {env.AI_GATEWAY_API_KEY}`"}},
		{"static two keys", site(block(okClient, "\t\tcredential static a b\n")), 4,
			[]string{"credential static takes one key; got another argument 'b'"}},
		{"static with a block", site(block(okClient, "\t\tcredential static k {\n\t\t\tfoo\n\t\t}\n")), 5,
			[]string{"credential static takes no block"}},
		{"vercel_oidc with arguments", site(block(okClient, "\t\tcredential vercel_oidc VERCEL_OIDC_TOKEN\n")), 4,
			[]string{"credential vercel_oidc takes a block, not arguments; got 'VERCEL_OIDC_TOKEN'"}},
		{"vercel_oidc unknown option", site(oidc("\t\t\tenvironment X\n")), 5,
			[]string{"unrecognized vercel_oidc option 'environment'", "(expected env, file, mint"}},
		{"env two variables", site(oidc("\t\t\tenv A B\n")), 5,
			[]string{"wrong argument count or unexpected line ending after 'B'"}},
		{"file without path", site(oidc("\t\t\tfile\n")), 5,
			[]string{"file needs a value"}},
		{"file two paths", site(oidc("\t\t\tfile /a /b\n")), 5,
			[]string{"file takes one value; got another argument '/b'"}},
		{"refresh_before bad", site(oidc("\t\t\trefresh_before 5 minutes\n")), 5,
			[]string{"refresh_before takes one value; got another argument 'minutes'"}},
		{"refresh_before not a duration", site(oidc("\t\t\trefresh_before early\n")), 5,
			[]string{"refresh_before: 'early' is not a positive duration (e.g. 5m, 30s)"}},
		{"mint with arguments", site(oidc("\t\t\tmint prj_x\n")), 5,
			[]string{"mint takes a block, not arguments; got 'prj_x'"}},
		{"mint twice", site(oidc("\t\t\tmint {\n"+okMint+"\t\t\t}\n", "\t\t\tmint {\n"+okMint+"\t\t\t}\n")), 9,
			[]string{"mint is already configured; give it once"}},
		{"mint without project", site(mint("\t\t\t\taccess_token {env.VERCEL_TOKEN}\n")), 7,
			[]string{"mint needs `project <id>`, e.g. `project {env.VERCEL_PROJECT_ID}`"}},
		{"mint without access_token", site(mint("\t\t\t\tproject prj_x\n")), 7,
			[]string{"mint needs `access_token <token>`, e.g. `access_token {env.VERCEL_TOKEN}`", "an OIDC token cannot mint another"}},
		{"mint unknown option", site(mint(okMint, "\t\t\t\tteam_id team_x\n")), 8,
			[]string{"unrecognized mint option 'team_id' (expected project, team, access_token, api or timeout)"}},
		{"mint project two values", site(mint("\t\t\t\tproject a b\n")), 6,
			[]string{"project takes one value; got another argument 'b'"}},
		{"mint api http", site(mint(okMint, "\t\t\t\tapi http://api.vercel.com\n")), 8,
			[]string{`mint api "http://api.vercel.com": http is only allowed on loopback; use https`}},
		{"mint api scheme", site(mint(okMint, "\t\t\t\tapi ftp://api.vercel.com\n")), 8,
			[]string{"scheme must be https"}},
		{"mint api with query", site(mint(okMint, "\t\t\t\tapi https://api.vercel.com?teamId=x\n")), 8,
			[]string{"give the base URL only"}},
		{"mint timeout", site(mint(okMint, "\t\t\t\ttimeout forever\n")), 8,
			[]string{"timeout: 'forever' is not a positive duration"}},

		// identity: signed keys, revocation, vercel_sandbox, allow_paths
		{"unknown option names the later options", site(block(okCreds, okClient, "\t\tclient_secret x\n")), 5,
			[]string{"client_key_secret, client_keys_revoked_file, vercel_sandbox, allow_paths, retry_body_limit, retry_memory_limit, credential_wait, reporting, limits, usage_metrics, allow_models, policy, catalog_file or gateway"}},
		{"no client auth names every way", site(block(okCreds, "\t\tallow_paths /v1/*\n")), 5,
			[]string{"no client authentication", "client_key_secret {env.CLIENT_KEY_SECRET}", "vercel_sandbox"}},
		{"client_key_secret without secret", site(block(okCreds, "\t\tclient_key_secret\n")), 4,
			[]string{"client_key_secret needs a secret, e.g. `client_key_secret {env.CLIENT_KEY_SECRET}`"}},
		// key source namespaces
		{"client_keys_file namespace without value", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tnamespace\n\t\t}\n")), 5,
			[]string{"namespace needs a value"}},
		{"client_keys_file namespace with a slash", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tnamespace tenant/2\n\t\t}\n")), 5,
			[]string{`namespace "tenant/2" may hold only A-Z, a-z, 0-9, '.', '_', ':' and '-'`}},
		{"client_keys_file namespace a placeholder", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tnamespace {env.NS}\n\t\t}\n")), 5,
			[]string{`namespace "{env.NS}" may hold only`, "no '/' or placeholder"}},
		{"client_keys_file namespace too long", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tnamespace "+strings.Repeat("n", 65)+"\n\t\t}\n")), 5,
			[]string{"must be 1 to 64 characters"}},
		{"client_keys_file namespace twice", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tnamespace a\n\t\t\tnamespace b\n\t\t}\n")), 6,
			[]string{"namespace is already set to a; give it once"}},
		{"client_keys_file unknown option", site(block(okCreds, "\t\tclient_keys_file /k {\n\t\t\tprefix a\n\t\t}\n")), 5,
			[]string{"unrecognized client_keys_file option 'prefix' (expected namespace)"}},
		{"client_key_secret namespace two values", site(block(okCreds, "\t\tclient_key_secret s {\n\t\t\tnamespace a b\n\t\t}\n")), 5,
			[]string{"namespace takes one value; got another argument 'b'"}},
		{"client_key_secret unknown option", site(block(okCreds, "\t\tclient_key_secret s {\n\t\t\tname a\n\t\t}\n")), 5,
			[]string{"unrecognized client_key_secret option 'name' (expected namespace)"}},
		{"client_key_secret lines name different namespaces", site(block(okCreds,
			"\t\tclient_key_secret new {\n\t\t\tnamespace tenant2\n\t\t}\n",
			"\t\tclient_key_secret old {\n\t\t\tnamespace tenant3\n\t\t}\n")), 8,
			[]string{"namespace tenant3 differs from tenant2, named on line 5", "one key source (rotation), with one namespace", "name the same namespace on each, or on one line only"}},
		{"client_keys_revoked_file without path", site(block(okCreds, okClient, "\t\tclient_keys_revoked_file\n")), 5,
			[]string{"client_keys_revoked_file needs a value"}},
		{"client_keys_revoked_file two paths", site(block(okCreds, okClient, "\t\tclient_keys_revoked_file /a /b\n")), 5,
			[]string{"client_keys_revoked_file takes one value; got another argument '/b'"}},
		{"client_keys_revoked_file twice", site(block(okCreds, okClient, "\t\tclient_keys_revoked_file /a\n", "\t\tclient_keys_revoked_file /b\n")), 6,
			[]string{"client_keys_revoked_file is already set to /a; give it once"}},
		{"vercel_sandbox with arguments", site(block(okCreds, "\t\tvercel_sandbox https://p.example/f\n")), 4,
			[]string{"vercel_sandbox takes a block, not arguments; got 'https://p.example/f'"}},
		{"vercel_sandbox unknown option", site(sandbox("\t\t\taud https://p.example/f\n")), 5,
			[]string{"unrecognized vercel_sandbox option 'aud' (expected audience, team, project, issuer, jwks_url or forwarded_host)"}},
		{"vercel_sandbox without audience", site(sandbox("\t\t\tteam team_x\n")), 6,
			[]string{"vercel_sandbox needs `audience <forwardURL>`"}},
		{"vercel_sandbox without team", site(sandbox("\t\t\taudience https://p.example/f\n", "\t\t\tproject prj_x\n")), 7,
			[]string{"vercel_sandbox needs at least one `team team_…`"}},
		{"vercel_sandbox empty block", site(sandbox()), 5,
			[]string{"vercel_sandbox needs `audience <forwardURL>`"}},
		{"vercel_sandbox team without value", site(sandbox("\t\t\taudience https://p.example/f\n", "\t\t\tteam\n")), 6,
			[]string{"team needs at least one value"}},
		{"vercel_sandbox project without value", site(sandbox("\t\t\tproject\n")), 5,
			[]string{"project needs at least one value"}},
		{"vercel_sandbox forwarded_host without value", site(sandbox("\t\t\tforwarded_host\n")), 5,
			[]string{"forwarded_host needs at least one value"}},
		{"vercel_sandbox audience two values", site(sandbox("\t\t\taudience https://a https://b\n")), 5,
			[]string{"audience takes one value; got another argument 'https://b'"}},
		{"vercel_sandbox issuer without value", site(sandbox("\t\t\tissuer\n")), 5,
			[]string{"issuer needs a value"}},
		{"vercel_sandbox jwks_url two values", site(sandbox("\t\t\tjwks_url a b\n")), 5,
			[]string{"jwks_url takes one value; got another argument 'b'"}},
		{"vercel_sandbox twice", site(block(okCreds, okSandbox, okSandbox)), 8,
			[]string{"vercel_sandbox is already configured; give it once"}},
		{"allow_paths without pattern", site(block(okCreds, okClient, "\t\tallow_paths\n")), 5,
			[]string{"allow_paths needs at least one path pattern, e.g. `allow_paths /v1/*`"}},
		{"allow_paths relative", site(block(okCreds, okClient, "\t\tallow_paths /v1/* v1/*\n")), 5,
			[]string{`allow_paths pattern "v1/*" must start with /`}},
		{"allow_paths inner star", site(block(okCreds, okClient, "\t\tallow_paths /v1/*/completions\n")), 5,
			[]string{`allow_paths pattern "/v1/*/completions": only a trailing * is supported`}},
		{"allow_paths model rule unquoted", site(block(okCreds, okClient, "\t\tallow_paths /v1/models/<model id>[/endpoints]\n")), 5,
			[]string{`allow_paths pattern "/v1/models/<model": a path has no <, >, [, ] or space; the model rule is written "/v1/models/<model id>[/endpoints]", quoted in a Caddyfile`}},
		// self-healing: retry_body_limit, push
		{"retry_body_limit not a size", site(block(okCreds, okClient, "\t\tretry_body_limit big\n")), 5,
			[]string{"retry_body_limit: 'big' is not a size up to 1GiB"}},
		{"retry_body_limit too large", site(block(okCreds, okClient, "\t\tretry_body_limit 2GiB\n")), 5,
			[]string{"retry_body_limit: '2GiB' is not a size up to 1GiB"}},
		{"retry_body_limit negative", site(block(okCreds, okClient, "\t\tretry_body_limit -1KiB\n")), 5,
			[]string{"retry_body_limit: '-1KiB' is not a size"}},
		{"retry_body_limit zero", site(block(okCreds, okClient, "\t\tretry_body_limit 0\n")), 5,
			[]string{"retry_body_limit must be positive (e.g. 1MiB)"}},
		{"retry_body_limit without value", site(block(okCreds, okClient, "\t\tretry_body_limit\n")), 5,
			[]string{"retry_body_limit needs a value"}},
		{"retry_memory_limit not a size", site(block(okCreds, okClient, "\t\tretry_memory_limit lots\n")), 5,
			[]string{"retry_memory_limit: 'lots' is not auto or a positive size up to 1TiB (e.g. 64MiB)"}},
		{"retry_memory_limit zero", site(block(okCreds, okClient, "\t\tretry_memory_limit 0\n")), 5,
			[]string{"retry_memory_limit: '0' is not auto or a positive size"}},
		{"retry_memory_limit without value", site(block(okCreds, okClient, "\t\tretry_memory_limit\n")), 5,
			[]string{"retry_memory_limit needs a value"}},
		{"retry_body_limit two values", site(block(okCreds, okClient, "\t\tretry_body_limit 1 MiB\n")), 5,
			[]string{"retry_body_limit takes one value; got another argument 'MiB'"}},
		{"push without path", site(oidc("\t\t\tpush\n")), 5,
			[]string{"push needs the path that accepts tokens, e.g. `push /ai-gateway-auth/token`"}},
		{"push relative path", site(oidc("\t\t\tpush ai-gateway-auth/token\n")), 5,
			[]string{"push needs the path that accepts tokens"}},
		{"push two paths", site(oidc("\t\t\tpush /a /b\n")), 5,
			[]string{"push takes one path; got another argument '/b'"}},
		{"push twice", site(oidc("\t\t\tpush /a\n", "\t\t\tpush /b\n")), 6,
			[]string{"push is already configured; give it once"}},
		{"push unknown option", site(pushBlock("\t\t\t\tsecret s3cr3t\n")), 6,
			[]string{"unrecognized push option 'secret' (expected issuer, jwks_url, team or project)"}},
		{"push issuer two values", site(pushBlock("\t\t\t\tissuer a b\n")), 6,
			[]string{"issuer takes one value; got another argument 'b'"}},
		{"push team without value", site(pushBlock("\t\t\t\tteam\n")), 6,
			[]string{"team needs a value"}},
		{"push project two values", site(pushBlock("\t\t\t\tproject a b\n")), 6,
			[]string{"project takes one value; got another argument 'b'"}},
		{"push jwks_url without value", site(pushBlock("\t\t\t\tjwks_url\n")), 6,
			[]string{"jwks_url needs a value"}},
		{"vercel_oidc unknown option names push", site(oidc("\t\t\tpushh /a\n")), 5,
			[]string{"unrecognized vercel_oidc option 'pushh' (expected env, file, mint, push, refresh_before, expiry_margin, forced_refresh_interval or share)"}},
		{"share takes no argument", site(oidc("\t\t\tshare yes\n")), 5,
			[]string{"wrong argument count"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adapt(t, file, tc.body)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.body)
			}
			msg := err.Error()
			for _, w := range tc.wants {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			m := regexp.MustCompile(`, at ` + regexp.QuoteMeta(file) + `:(\d+)`).FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("error %q does not name %s and a line", msg, file)
			}
			if want := strconv.Itoa(tc.line); m[1] != want {
				t.Errorf("error at line %s, want %d:\n%s\n%s", m[1], tc.line, numbered(tc.body), msg)
			}
		})
	}
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		b.WriteString(strconv.Itoa(i+1) + "  " + l + "\n")
	}
	return b.String()
}

// Unit-level parse through a Dispenser: every option lands in its field.
func TestUnmarshalCaddyfileFields(t *testing.T) {
	d := caddyfile.NewTestDispenser(`ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		credential vercel_oidc {
			env
			file /run/vercel/oidc-token
			mint {
				project prj_x
				team team_x
				access_token {env.VERCEL_TOKEN}
				api http://127.0.0.1:9999
				timeout 3s
			}
			refresh_before 10m
		}
		credential vercel_oidc
		client_key a b
		client_key c
		client_keys_file /etc/keys
		credential_wait 2s
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.ClientKeys, ","); got != "a,b,c" {
		t.Errorf("client keys %q", got)
	}
	if h.ClientKeysFile != "/etc/keys" || h.CredentialWait != caddyDuration(2e9) {
		t.Errorf("client_keys_file %q, credential_wait %v", h.ClientKeysFile, h.CredentialWait)
	}
	if len(h.CredentialsRaw) != 3 {
		t.Fatalf("%d credentials, want 3", len(h.CredentialsRaw))
	}
	var static map[string]any
	if err := json.Unmarshal(h.CredentialsRaw[0], &static); err != nil {
		t.Fatal(err)
	}
	if static["source"] != "static" || static["key"] != "{env.AI_GATEWAY_API_KEY}" || len(static) != 2 {
		t.Errorf("static: %s", h.CredentialsRaw[0])
	}
	var oidc struct {
		Source string `json:"source"`
		VercelOIDCSource
	}
	if err := json.Unmarshal(h.CredentialsRaw[1], &oidc); err != nil {
		t.Fatal(err)
	}
	want := VercelOIDCSource{
		Env: "VERCEL_OIDC_TOKEN", File: "/run/vercel/oidc-token", RefreshBefore: caddyDuration(600e9),
		Mint: &MintConfig{Project: "prj_x", Team: "team_x", AccessToken: "{env.VERCEL_TOKEN}", API: "http://127.0.0.1:9999", Timeout: caddyDuration(3e9)},
	}
	if oidc.Source != "vercel_oidc" || oidc.Env != want.Env || oidc.File != want.File || oidc.RefreshBefore != want.RefreshBefore ||
		oidc.Mint == nil || *oidc.Mint != *want.Mint {
		t.Errorf("vercel_oidc: %s", h.CredentialsRaw[1])
	}
	if got := string(h.CredentialsRaw[2]); got != `{"source":"vercel_oidc"}` {
		t.Errorf("bare vercel_oidc: %s", got)
	}
}
