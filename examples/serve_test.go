package examples

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// allCaddyfiles is every Caddyfile a user may copy: the examples and the
// repository's root Caddyfile.
func allCaddyfiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, f := range exampleFiles(t) {
		if strings.HasSuffix(f, ".Caddyfile") || filepath.Base(f) == "Caddyfile" {
			files = append(files, f)
		}
	}
	return append(files, "../Caddyfile")
}

// notLocal are the Caddyfiles that deliberately serve neither loopback
// nor a public HTTPS site, and why; their header must say so.
var notLocal = map[string]string{
	"fleet/Caddyfile": "load balancer",
}

// publicSite marks, in a Caddyfile's header, a site that is deliberately
// public HTTPS.
const publicSite = "public HTTPS site"

var (
	// siteLine is a site block's opening line (not the global options).
	siteLine = regexp.MustCompile(`(?m)^([^\s#{}].*?) \{$`)
	// localSite is the loopback address every local example serves: any
	// Host, plain HTTP, port 4000 (or a {$VAR:4000} that defaults to it).
	localSite = regexp.MustCompile(`^http://:(4000|\{\$[A-Z_]+:4000\})$`)
)

// header is a Caddyfile's leading comment, as one line of words.
func header(text string) string {
	var words []string
	for line := range strings.SplitSeq(text, "\n") {
		comment, ok := strings.CutPrefix(line, "#")
		if !ok {
			break
		}
		words = append(words, strings.Fields(comment)...)
	}
	return strings.Join(words, " ")
}

// localExamples sorts the Caddyfiles: those meant for local use, which
// must serve http://:4000 bound to 127.0.0.1 like the root Caddyfile, are
// returned; the others must be deliberately public HTTPS sites, or listed
// in notLocal, and say so in their header.
func localExamples(t *testing.T) []string {
	t.Helper()
	var local []string
	for _, f := range allCaddyfiles(t) {
		text := string(readFile(t, f))
		sites := siteLine.FindAllStringSubmatch(text, -1)
		if len(sites) == 0 {
			t.Errorf("%s: no site block", f)
			continue
		}
		hdr := header(text)
		switch {
		case notLocal[f] != "":
			if !strings.Contains(hdr, notLocal[f]) {
				t.Errorf("%s is neither on loopback nor a public HTTPS site; its header should say why (%s)", f, notLocal[f])
			}
		case strings.Contains(hdr, publicSite):
			for _, s := range sites {
				if addr := s[1]; strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, ":") || !strings.Contains(addr, ".") {
					t.Errorf("%s says it is a %s, but serves %q: a public HTTPS site has a hostname and no http://", f, publicSite, addr)
				}
			}
		default:
			local = append(local, f)
			if len(sites) != 1 || !localSite.MatchString(sites[0][1]) {
				t.Errorf("%s: a local example serves http://:4000 like the root Caddyfile (any Host, so that localhost works too), not %q; a deliberately public site says %q in its header", f, sites[0][1], publicSite)
				continue
			}
			_, block, _ := strings.Cut(text, sites[0][0]+"\n")
			if first := strings.TrimSpace(strings.SplitN(block, "\n", 2)[0]); first != "bind 127.0.0.1" {
				t.Errorf("%s: a local example's site block starts with `bind 127.0.0.1`, not %q", f, first)
			}
		}
	}
	return local
}

// upstreamSeen records what the fake AI Gateway received.
type upstreamSeen struct {
	mu   sync.Mutex
	auth []string
}

func (u *upstreamSeen) last() (string, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.auth) == 0 {
		return "", 0
	}
	return u.auth[len(u.auth)-1], len(u.auth)
}

// TestLocalCaddyfilesServeLoopback runs every Caddyfile meant for local
// use in this process, with its upstreams replaced by local fakes, and
// sends it an authenticated chat completion as a client on the same
// machine does: to 127.0.0.1, with Host localhost:<port> or
// 127.0.0.1:<port>. Each must reach the upstream with the proxy's
// credential and bring back its answer. (A site address that names a
// host answers a client that says another one with an empty 200.)
func TestLocalCaddyfilesServeLoopback(t *testing.T) {
	local := localExamples(t)
	if len(local) < 4 {
		t.Fatalf("found %d local Caddyfiles, want at least 4: %v", len(local), local)
	}

	env := exampleEnv(t)
	const answer = `{"id":"chatcmpl-example","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	seen := &upstreamSeen{}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.mu.Lock()
		seen.auth = append(seen.auth, r.Header.Get("Authorization"))
		seen.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer upstream.Close()
	vercel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"token": fakeJWT(t, time.Hour)})
	}))
	defer vercel.Close()

	// Redis that refuses at once: the fleet's limits count locally.
	t.Setenv("LIMITS_REDIS_URL", "redis://:"+dummyRedisPassword+"@"+freeAddr(t)+"/0")
	// fleet/local.Caddyfile takes its ports, storage and fakes from {$FLEET_*}.
	t.Setenv("FLEET_STORAGE", filepath.Join(t.TempDir(), "storage"))
	t.Setenv("FLEET_VERCEL_API", vercel.URL)
	t.Setenv("FLEET_UPSTREAM", upstream.URL)

	for _, file := range local {
		t.Run(file, func(t *testing.T) {
			site := freeAddr(t)
			_, port, _ := net.SplitHostPort(site)
			t.Setenv("FLEET_PORT", port)
			t.Setenv("TRY_PORT", port)
			t.Setenv("TRY_UPSTREAM", upstream.URL)
			body := env.paths.Replace(string(readFile(t, file)))
			body = strings.Replace(body, ":4000 {", ":"+port+" {", 1) // the site's port, nothing else
			body = strings.ReplaceAll(body, "reverse_proxy https://ai-gateway.vercel.sh", "reverse_proxy "+upstream.URL)
			if !strings.Contains(body, "\tgateway ") { // a metered block reads the catalog there: loopback only
				body = strings.ReplaceAll(body, "\tai_gateway_auth {\n", "\tai_gateway_auth {\n\t\tgateway "+upstream.URL+"\n")
			}
			cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": file})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			cfgJSON, err = isolated(cfgJSON, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := caddy.Load(cfgJSON, true); err != nil {
				t.Fatalf("load: %v", err)
			}
			defer caddy.Stop()

			key := clientKey(t, body)
			for _, host := range []string{"localhost:" + port, site} {
				_, before := seen.last()
				code, got, err := chat(site, host, key)
				if err != nil {
					t.Fatalf("Host %s: %v", host, err)
				}
				auth, after := seen.last()
				switch {
				case after == before && code == http.StatusOK && got == "":
					t.Errorf("Host %s: an empty 200 and nothing reached the upstream: the site address does not match this Host (serve http://:4000)", host)
				case code != http.StatusOK || got != answer:
					t.Errorf("Host %s: %d %q; want 200 and the upstream's answer", host, code, got)
				case after == before:
					t.Errorf("Host %s: the answer did not come from the upstream", host)
				case auth == "" || auth == "Bearer "+key:
					t.Errorf("Host %s: the upstream got Authorization %q, not the proxy's credential", host, auth)
				}
			}
		})
	}
}

// isolated turns the admin endpoint and the config's autosave off, so
// that the examples, which use Caddy's default admin address, do not
// collide with another Caddy here, and keeps Caddy's storage in dir
// unless the config names one.
func isolated(cfgJSON []byte, dir string) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, err
	}
	cfg["admin"] = map[string]any{"disabled": true, "config": map[string]any{"persist": false}}
	if cfg["storage"] == nil {
		cfg["storage"] = map[string]any{"module": "file_system", "root": dir}
	}
	return json.Marshal(cfg)
}

// clientKey is a key the Caddyfile accepts: its literal client_key, or a
// key signed with the dummy client_key_secret.
func clientKey(t *testing.T, caddyfile string) string {
	t.Helper()
	if m := regexp.MustCompile(`(?m)^\s*client_key (\S+)`).FindStringSubmatch(caddyfile); m != nil {
		return m[1]
	}
	if strings.Contains(caddyfile, "client_key_secret {env.CLIENT_KEY_SECRET}") {
		return signedKey("sandbox-1", dummyClientKeySecret)
	}
	t.Fatal("no client_key nor client_key_secret {env.CLIENT_KEY_SECRET}")
	return ""
}

// chat sends a non-streamed chat completion to addr with this Host and
// client key, as the OpenAI SDK does.
func chat(addr, host, key string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"openai/gpt-5","messages":[{"role":"user","content":"Say hi"}]}`))
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestUnsetVariablesAreNamed: the examples write ids as {env.X}, not
// {$X}, so that an unset variable fails the load with the placeholder
// named (with {$X} the option is left empty and the error names no
// variable).
func TestUnsetVariablesAreNamed(t *testing.T) {
	// these take ports, folders and the fakes' addresses from the scripts
	// that run them, as {$VAR:default} (read when the Caddyfile is)
	scripted := map[string]bool{"fleet/local.Caddyfile": true, "try/Caddyfile": true}
	for _, file := range allCaddyfiles(t) {
		if scripted[file] {
			continue
		}
		if strings.Contains(string(readFile(t, file)), "{$") {
			t.Errorf("%s uses {$X}; write {env.X}, so that an unset variable is named", file)
		}
	}
	env := exampleEnv(t)
	for file, unset := range map[string]string{
		"caddyfiles/push.Caddyfile":               "VERCEL_TEAM_ID",
		"caddyfiles/sandbox-forwardurl.Caddyfile": "VERCEL_TEAM_ID",
	} {
		t.Run(filepath.Base(file)+"/"+unset, func(t *testing.T) {
			t.Setenv(unset, "")
			err := validate(env.paths.Replace(string(readFile(t, file))), file)
			if want := "{env." + unset + "} resolved to nothing"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("with %s unset: %v; want an error saying %q", unset, err, want)
			}
		})
	}
}

// validate adapts a Caddyfile and validates (provisions) its config.
func validate(caddyfile, filename string) error {
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": filename})
	if err != nil {
		return err
	}
	var cfg *caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
		return err
	}
	return caddy.Validate(cfg)
}
