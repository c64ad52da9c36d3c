package examples

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// modelID finds AI Gateway model ids (creator/model). An OpenClaw model
// reference puts its provider in front (openai/anthropic/...); the id is
// what follows.
var modelID = regexp.MustCompile(`(?:openai/)?((?:anthropic|openai|google|xai|meta|mistral|deepseek|alibaba|moonshotai|zai)/[a-z0-9][a-z0-9.\-]*)`)

// TestModelIDs: every model id in the examples and in the main README is
// one of models.txt, the one place where model ids are chosen.
func TestModelIDs(t *testing.T) {
	var allowed []string
	for line := range strings.SplitSeq(string(readFile(t, "models.txt")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			allowed = append(allowed, line)
		}
	}
	if len(allowed) == 0 {
		t.Fatal("models.txt lists no model")
	}
	files := append(exampleFiles(t), "../README.md")
	used := map[string]bool{}
	for _, f := range files {
		if f == "models.txt" {
			continue
		}
		text := string(readFile(t, f))
		for _, m := range modelID.FindAllStringSubmatchIndex(text, -1) {
			if start := m[0]; start > 0 && strings.ContainsRune("/.-_:@", rune(text[start-1])) ||
				start > 0 && (text[start-1] >= 'a' && text[start-1] <= 'z') {
				continue // part of a URL or a longer name (github.com/openai/openai-go)
			}
			id := text[m[2]:m[3]]
			if strings.HasPrefix(id, "openai/openai-go") || strings.HasPrefix(id, "anthropic/anthropic-sdk") {
				continue
			}
			if !slices.Contains(allowed, id) {
				t.Errorf("%s names model %q, which is not in models.txt (%v)", f, id, allowed)
			}
			used[id] = true
		}
	}
	for _, f := range []string{"pi/models.json", "openclaw/openclaw.json", "claude-code/env.sh"} {
		if !modelID.Match(readFile(t, f)) {
			t.Errorf("%s names no model id", f)
		}
	}
	for _, id := range allowed {
		if !used[id] {
			t.Errorf("models.txt lists %s, which no example uses", id)
		}
	}
}

// TestGrafanaDashboard: the dashboard JSON loads, has the panels the
// operators asked for, and every query names only metrics that the module
// really exports: the names come from the /metrics of a Caddy running in
// this process with the module (a minted OIDC token, a limit, metering),
// after it has served requests, not from a list written here.
func TestGrafanaDashboard(t *testing.T) {
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	decodeJSON(t, "grafana/ai-gateway-auth-dashboard.json", &dash)
	if len(dash.Panels) < 6 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	exported := exportedMetrics(t)
	used := map[string]bool{}
	name := regexp.MustCompile(`caddy_ai_gateway_auth_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := name.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no metric of the module", p.Title, q.Expr)
			}
			for _, n := range names {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
				if !exported[n] && !exported[base] {
					t.Errorf("panel %q: %s is not a metric the module exports (it exports %v)", p.Title, n, slices.Sorted(maps.Keys(exported)))
				}
				used[base] = true
			}
		}
	}
	for _, want := range []string{ // what the issue asks the dashboard to show
		"caddy_ai_gateway_auth_credential_expiry_seconds", "caddy_ai_gateway_auth_credential_refreshes_total",
		"caddy_ai_gateway_auth_requests_total", "caddy_ai_gateway_auth_client_tokens_total",
		"caddy_ai_gateway_auth_client_requests_total", "caddy_ai_gateway_auth_limit_refusals_total",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	if !strings.Contains(string(readFile(t, "grafana/prometheus.yml")), "metrics_path: /metrics") {
		t.Error("grafana/prometheus.yml does not scrape /metrics")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// exportedMetrics runs Caddy with the module in this process, sends it a
// metered request, one over a limit and one with a wrong key, and returns
// the metric families on its admin /metrics.
func exportedMetrics(t *testing.T) map[string]bool {
	tmp := t.TempDir()
	t.Setenv("HOME", tmp)
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"cost":0.001}}`)
	}))
	defer upstream.Close()
	vercel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"token": fakeJWT(t, time.Hour)})
	}))
	defer vercel.Close()
	admin, site := freeAddr(t), freeAddr(t)
	cf := fmt.Sprintf(`{
	admin %s
	persist_config off
}
http://%s {
	bind 127.0.0.1
	ai_gateway_auth {
		credential vercel_oidc {
			mint {
				project      prj_example
				team         team_example
				access_token dummy-vercel-access-token
				api          %s
			}
		}
		client_key sk-placeholder
		limits {
			requests_per_minute 1
		}
		usage_metrics
	}
	reverse_proxy %s
}
`, admin, site, vercel.URL, upstream.URL)
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "dashboard-test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	for _, key := range []string{"sk-placeholder", "sk-placeholder", "sk-wrong"} { // forwarded, limited, rejected
		req, _ := http.NewRequest(http.MethodPost, "http://"+site+"/v1/chat/completions", strings.NewReader(`{"model":"openai/gpt-5"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	families := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "caddy_ai_gateway_auth_") {
			families[f[2]] = true
		}
	}
	if len(families) == 0 {
		t.Fatalf("no caddy_ai_gateway_auth_ metric on /metrics")
	}
	return families
}
