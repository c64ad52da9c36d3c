package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// policySite is a site whose ai_gateway_auth block (line 2) holds a
// static credential and a client_key (lines 3, 4), then lines.
func policySite(lines ...string) string {
	return ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n" +
		strings.Join(lines, "") + "\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
}

const testCatalog = `{"object":"list","data":[{"id":"openai/gpt-5","pricing":{"input":"0.00000125"}},` +
	`{"id":"openai/gpt-5-mini"},{"id":"anthropic/claude-haiku-4.5"},{"id":"anthropic/claude-sonnet-4.5"}]}`

// caddy validate refuses what is wrong in policies, with the file and
// the line, and says what to do.
func TestPolicyCaddyfileErrors(t *testing.T) {
	const file = "Caddyfile.test"
	catalog := writeFile(t, t.TempDir(), "models.json", testCatalog)
	for _, tc := range []struct {
		name  string
		body  string
		line  int
		wants []string
	}{
		{"unknown policy option", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tallow_model openai/*\n\t\t}\n"), 7,
			[]string{"unrecognized policy option 'allow_model'", "expected clients, allow_models, limits or reporting"}},
		{"policy without clients", policySite("\t\tpolicy a {\n\t\t\tallow_models openai/*\n\t\t}\n"), 7,
			[]string{"policy a has no clients", "add `clients <glob...>`"}},
		{"policy without name", policySite("\t\tpolicy {\n\t\t\tclients placeholder\n\t\t}\n"), 5,
			[]string{"policy needs a name and a block"}},
		{"duplicate policy", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t}\n\t\tpolicy a {\n\t\t\tclients key:*\n\t\t}\n"), 8,
			[]string{"policy a is already defined"}},
		{"bad policy name", policySite("\t\tpolicy a.b {\n\t\t\tclients placeholder\n\t\t}\n"), 7,
			[]string{`policy name "a.b" may hold only A-Z, a-z, 0-9, '_' and '-'`}},
		{"bad clients glob", policySite("\t\tpolicy a {\n\t\t\tclients key:[ab]\n\t\t}\n"), 6,
			[]string{"policy a: clients:", "which is no wildcard here"}},
		{"clients glob of no kind", policySite("\t\tpolicy a {\n\t\t\tclients alice\n\t\t}\n"), 7,
			[]string{`clients glob "alice" can match no client id`}},
		{"bad block allow_models", policySite("\t\tallow_models openai/gpt-5\n", "\t\tallow_models openai/gpt?5\n"), 6,
			[]string{"allow_models: glob", `holds '?'`}},
		{"allow_models without globs", policySite("\t\tallow_models\n"), 5,
			[]string{"allow_models needs at least one glob"}},
		{"bad policy allow_models", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tallow_models openai/gpt?5\n\t\t}\n"), 7,
			[]string{"policy a: allow_models: glob", `holds '?'`}},
		{"redis in a policy's limits", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tlimits {\n\t\t\t\trequests_per_minute 5\n\t\t\t\tredis redis://127.0.0.1:6379\n\t\t\t}\n\t\t}\n"), 10,
			[]string{"policy a: limits: redis, max_clients and default_max_tokens are the block's only"}},
		{"limits twice", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tlimits {\n\t\t\t\trequests_per_minute 5\n\t\t\t}\n\t\t\tlimits {\n\t\t\t\trequests_per_minute 5\n\t\t\t}\n\t\t}\n"), 10,
			[]string{"policy a: limits is already configured"}},
		{"sandbox glob without vercel_sandbox", policySite("\t\tpolicy web {\n\t\t\tclients sandbox:team_acme/prj_web/*\n\t\t}\n"), 5,
			[]string{"policy web can match no client", `clients glob "sandbox:team_acme/prj_web/*": no client of the kinds configured has such an id`,
				"this block's clients are placeholder", "fix its clients globs"}},
		{"key glob without key source", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t}\n\t\tpolicy b {\n\t\t\tclients key:alice\n\t\t}\n"), 8,
			[]string{"policy b can match no client", `"key:alice"`}},
		{"shadowed by an earlier policy", policySite("\t\tclient_keys_file /k\n\t\tpolicy all {\n\t\t\tclients key:**\n\t\t}\n\t\tpolicy alice {\n\t\t\tclients key:alice\n\t\t}\n"), 9,
			[]string{"policy alice can match no client", `every client it matches is matched first by "key:**" of policy all`}},
		{"glob not in the catalog", policySite("\t\tcatalog_file " + catalog + "\n\t\tallow_models openai/* anthropic/claude-hiaku-*\n"), 6,
			[]string{`allow_models: "anthropic/claude-hiaku-*" matches no model of the catalog`, "fix the glob"}},
		{"policy glob not in the catalog", policySite("\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tallow_models openai/gpt-5/*\n\t\t}\n\t\tcatalog_file " + catalog + "\n"), 7,
			[]string{`policy a: allow_models: "openai/gpt-5/*" matches no model`}},
		{"catalog file missing", policySite("\t\tcatalog_file /nonexistent/models.json\n"), 5,
			[]string{"catalog_file: open /nonexistent/models.json"}},
		{"limits with a store and no limit, no policy limits", policySite("\t\tlimits {\n\t\t\tredis redis://127.0.0.1:6379\n\t\t}\n\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t}\n"), 5,
			[]string{"limits sets no limit, only where to count", "or a policy with limits"}},
		{"empty limits", policySite("\t\tlimits {\n\t\t}\n"), 6,
			[]string{"limits needs at least one of"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adapt(t, file, tc.body)
			if err == nil {
				t.Fatalf("adapted without error:\n%s", numbered(tc.body))
			}
			msg := err.Error()
			for _, w := range tc.wants {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if tc.line > 0 && !strings.Contains(msg, fmt.Sprintf("%s:%d", file, tc.line)) {
				t.Errorf("error %q does not name %s:%d\n%s", msg, file, tc.line, numbered(tc.body))
			}
		})
	}
}

// A block whose policies set the limits may name only where to count
// them (a fleet's Redis): its policies' clients are counted there.
func TestPolicyLimitsInTheBlocksRedis(t *testing.T) {
	out := adaptOK(t, "Caddyfile", policySite(
		"\t\tlimits {\n\t\t\tredis {env.LIMITS_REDIS_URL}\n\t\t}\n",
		"\t\tpolicy a {\n\t\t\tclients placeholder\n\t\t\tlimits {\n\t\t\t\ttokens_per_day 5000\n\t\t\t}\n\t\t}\n",
	))
	if s := string(out); !strings.Contains(s, `"redis": "{env.LIMITS_REDIS_URL}"`) || !strings.Contains(s, `"tokens_per_day": 5000`) {
		t.Fatalf("the block's redis or the policy's limit is missing:\n%s", out)
	}
	if err := (&Limits{Redis: "redis://127.0.0.1:6379"}).checkWith(true); err != nil {
		t.Fatalf("a store-only limits block under policies with limits: %v", err)
	}
	if err := (&Limits{Redis: "redis://127.0.0.1:6379"}).check(); err == nil {
		t.Fatal("a store-only limits block without policy limits passed")
	}
}

// A valid policies block adapts to the JSON the docs describe, and a
// catalog that knows every glob passes.
func TestPolicyCaddyfileAdapts(t *testing.T) {
	catalog := writeFile(t, t.TempDir(), "models.json", testCatalog)
	out := adaptOK(t, "Caddyfile", policySite(
		"\t\tcatalog_file "+catalog+"\n",
		"\t\tallow_models openai/gpt-5-mini anthropic/claude-haiku-*\n",
		"\t\tlimits {\n\t\t\tusd_per_day 2\n\t\t}\n",
		"\t\tclient_keys_file /keys\n",
		"\t\tpolicy trusted {\n\t\t\tclients key:alice placeholder\n\t\t\tallow_models openai/* anthropic/*\n",
		"\t\t\tlimits {\n\t\t\t\tusd_per_day 50\n\t\t\t}\n\t\t\treporting {\n\t\t\t\ttags trusted\n\t\t\t}\n\t\t}\n",
		"\t\tpolicy bots {\n\t\t\tclients key:bot-*\n\t\t}\n",
	))
	for _, want := range []string{
		`"allow_models": [` + "\n\t\t\t\t\t\t\t\t\t\t\"openai/gpt-5-mini\"",
		`"name": "trusted"`, `"clients": [`, `"usd_per_day": 50`, `"tags": [`, `"name": "bots"`, `"catalog_file": "` + catalog + `"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted JSON lacks %s:\n%s", want, out)
		}
	}
}

// policyFor: the first policy whose clients match, what it leaves out
// from the block; without policies, the block's settings.
func TestPolicyFor(t *testing.T) {
	var h Handler
	if err := json.Unmarshal([]byte(`{
		"client_keys": ["sk-placeholder"], "client_keys_file": "KEYS",
		"allow_models": ["openai/gpt-5-mini"],
		"limits": {"requests_per_minute": 5},
		"reporting": {},
		"policies": [
			{"name": "trusted", "clients": ["key:alice", "placeholder"], "allow_models": ["openai/*"], "limits": {"requests_per_minute": 50}},
			{"name": "open", "clients": ["key:carol"], "allow_models": ["**"]},
			{"name": "tagged", "clients": ["key:*"], "reporting": {"tags": ["bots"]}}
		]}`), &h); err != nil {
		t.Fatal(err)
	}
	h.ClientKeysFile = writeFile(t, t.TempDir(), "keys", "alice sk-alice-0123456789abcdef\nbob sk-bob-0123456789abcdef01\n")
	h.CredentialsRaw = append(h.CredentialsRaw, staticSourceJSON("sk-upstream"))
	provisionHandler(t, &h)
	def := h.policies.def
	for _, c := range []struct {
		client              *identity.Principal
		name                string
		model, notModel     string
		rpm                 int
		blockReporter, open bool
	}{
		{identity.KeyPrincipal("", "alice"), "trusted", "openai/gpt-5", "anthropic/x", 50, true, false},
		{identity.KeyPrincipal("", "bob"), "tagged", "openai/gpt-5-mini", "openai/gpt-5", 5, false, false},
	} {
		p := h.policyFor(c.client)
		if p.name != c.name || !p.models.Allows(c.model) || p.models.Allows(c.notModel) || p.limits.RequestsPerMinute != c.rpm ||
			(p.reporter == def.reporter) != c.blockReporter {
			t.Errorf("%v: policy %+v", c.client.ID(), p)
		}
	}
	if def.name != "" || def.limits.RequestsPerMinute != 5 || !def.models.Allows("openai/gpt-5-mini") || def.models.Allows("openai/gpt-5") {
		t.Errorf("the block's settings: %+v", def)
	}
	if p := h.policies.byName["open"]; p.models != nil || p.check != nil {
		t.Errorf("allow_models ** is no allowlist: %+v", p)
	}
	// a policy's limits and reporting turn metering on without the block's
	var h2 Handler
	if err := json.Unmarshal([]byte(`{"client_keys": ["sk-placeholder"],
		"policies": [{"name": "p", "clients": ["placeholder"], "limits": {"requests_per_minute": 1}}]}`), &h2); err != nil {
		t.Fatal(err)
	}
	h2.CredentialsRaw = append(h2.CredentialsRaw, staticSourceJSON("sk-upstream"))
	provisionHandler(t, &h2)
	if h2.spend == nil || !h2.spend.limited || h2.policies.def.limits != nil || h2.policyFor(identity.KeyPrincipal("", "x")).limits != nil {
		t.Errorf("a policy's limits alone: spend %+v", h2.spend)
	}
}

// Provision (JSON configs) refuses what the Caddyfile adapter refuses.
func TestPolicyProvisionErrors(t *testing.T) {
	catalog := writeFile(t, t.TempDir(), "models.json", testCatalog)
	for _, c := range []struct{ json, want string }{
		{`"policies": [{"name": "a", "clients": ["sandbox:**"]}]`, "policy a can match no client"},
		{`"policies": [{"name": "a", "clients": ["placeholder"]}, {"name": "a", "clients": ["placeholder"]}]`, "a policy of that name comes earlier"},
		{`"policies": [{"name": "a", "clients": []}]`, "policy a: no clients"},
		{`"policies": [{"name": "a", "clients": ["placeholder"], "limits": {"requests_per_minute": 1, "max_clients": 100}}]`, "max_clients and default_max_tokens are the block's only"},
		{`"allow_models": ["openai/gpt 5"]`, "allow_models: glob"},
		{`"allow_models": ["openai/gpt-6*"], "catalog_file": "` + filepath.ToSlash(catalog) + `"`, `"openai/gpt-6*" matches no model`},
	} {
		var h Handler
		if err := json.Unmarshal([]byte(`{"client_keys": ["sk-placeholder"], `+c.json+`}`), &h); err != nil {
			t.Fatal(err)
		}
		h.CredentialsRaw = append(h.CredentialsRaw, staticSourceJSON("sk-upstream"))
		err := tryProvisionHandler(t, &h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Provision = %v; want %q", c.json, err, c.want)
		}
	}
}

// The model check hooks: the model and every fallback, a missing model
// where the endpoint needs one.
func TestModelCheckHooks(t *testing.T) {
	ap := &activePolicy{name: "p"}
	ap.models, _ = newModels("allow_models", []string{"openai/*", "anthropic/claude-haiku-*"})
	ap.buildChecks()
	chat, other := ap.modelCheck("/v1/chat/completions"), ap.modelCheck("/v1/custom")
	for _, c := range []struct {
		f         jsonbody.Fields
		check     func(jsonbody.Fields) error
		wantError string
	}{
		{jsonbody.Fields{Model: "openai/gpt-5", HasModel: true}, chat, ""},
		{jsonbody.Fields{Model: "anthropic/claude-sonnet-4.5", HasModel: true}, chat, `model "anthropic/claude-sonnet-4.5" is not allowed`},
		{jsonbody.Fields{Model: "gpt-5", HasModel: true}, chat, "AI Gateway model ids name their provider"},
		{jsonbody.Fields{Model: "openai/gpt-5", HasModel: true, Fallbacks: []string{"anthropic/claude-haiku-4.5", "anthropic/claude-opus-4"}}, chat,
			`fallback model "anthropic/claude-opus-4" is not allowed`},
		{jsonbody.Fields{}, chat, "the request names no model"},
		{jsonbody.Fields{}, other, ""},
		{jsonbody.Fields{Fallbacks: []string{"x/y"}}, other, `fallback model "x/y"`},
		{jsonbody.Fields{Model: "x/y", HasModel: true}, other, `model "x/y" is not allowed`},
	} {
		err := c.check(c.f)
		if c.wantError == "" && err != nil || c.wantError != "" && (err == nil || !strings.Contains(err.Error(), c.wantError)) {
			t.Errorf("%+v: %v; want %q", c.f, err, c.wantError)
		}
	}
	none := &activePolicy{}
	none.buildChecks()
	if none.modelCheck("/v1/chat/completions") != nil {
		t.Error("no allowlist: a check")
	}
	r, _ := http.NewRequest(http.MethodPost, "http://x/v1/audio/transcriptions", nil)
	if ref := checkRequestModel(r, "c", ap); ref == nil || ref.status != 403 || ref.code != "model_not_allowed" {
		t.Errorf("multipart under an allowlist: %+v", ref)
	}
	if ref := checkRequestModel(r, "c", none); ref != nil {
		t.Errorf("multipart without an allowlist: %+v", ref)
	}
	for path, refused := range map[string]bool{"/v1/models/openai/gpt-5": false, "/v1/models/anthropic/claude-opus-4": true,
		"/v1/models/anthropic/claude-opus-4/endpoints": true, "/v1/models": false,
		// the SDKs' spelling names the same model
		"/v1/models/openai%2Fgpt-5": false, "/v1/models/openai%2fgpt-5/endpoints": false,
		"/v1/models/anthropic%2Fclaude-opus-4": true, "/v1/models/anthropic%2Fclaude-opus-4/endpoints": true,
		// ids are case-sensitive, as in a body
		"/v1/models/OpenAI/gpt-5": true, "/v1/models/OpenAI%2Fgpt-5": true,
		// <x>/endpoints: the model x's endpoints, or the model x/endpoints; both must be allowed
		"/v1/models/openai/endpoints": true, "/v1/models/openai%2Fendpoints": true,
		"/v1/models/anthropic/claude-haiku-4.5/endpoints": false} {
		r, _ := http.NewRequest(http.MethodGet, "http://x"+path, nil)
		if ref := checkRequestModel(r, "c", ap); (ref != nil) != refused {
			t.Errorf("%s: %+v", path, ref)
		}
	}
}

// The model label is capped: beyond maxModelLabels ids, models count as
// "other"; an id no allowlist could admit is "other" at once; no model is
// "none".
func TestModelLabelsCapped(t *testing.T) {
	old := maxModelLabels
	t.Cleanup(func() { maxModelLabels = old })
	modelLabels.mu.Lock()
	given := len(modelLabels.models)
	modelLabels.mu.Unlock()
	maxModelLabels = given + 2
	a, b := modelSeriesFor("p", "cap/a"), modelSeriesFor("p", "cap/b")
	over := modelSeriesFor("p", "cap/c")
	if a == b || a == over || b == over {
		t.Fatal("the first ids under the cap share a series")
	}
	if modelSeriesFor("p", "cap/d") != over || modelSeriesFor("p", "bad id") != over || modelSeriesFor("p", "other") != over {
		t.Error("ids over the cap, or invalid, do not share the other series")
	}
	if modelSeriesFor("p", "cap/a") != a || modelSeriesFor("q", "cap/a") == a {
		t.Error("series are not per (policy, model)")
	}
	if modelSeriesFor("p", "") == over {
		t.Error("no model counts as other")
	}
}

// A model the gateway's catalog does not list takes no label of its
// own: a client naming made-up ids cannot use up the cap.
func TestModelLabelListedOnly(t *testing.T) {
	catalog, err := gateway.ParseCatalog(strings.NewReader(pricingCatalogJSON))
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]string{
		"anthropic/claude-haiku-4.5": "anthropic/claude-haiku-4.5",
		"made/up-1":                  otherClientLabel,
		"":                           "",
	} {
		if got := listedModel(catalog, model); got != want {
			t.Errorf("listedModel(%q) = %q, want %q", model, got, want)
		}
	}
	if got := listedModel(nil, "made/up-1"); got != "made/up-1" {
		t.Errorf("without a catalog: %q", got)
	}
}

// The model list as the handler filters it: models not allowed taken
// out, an unreadable list answered 502 while nothing went out and cut
// short after, an error answer passed as it is, a client without an
// allowlist served the list untouched.
func TestModelListFiltered(t *testing.T) {
	var h Handler
	if err := json.Unmarshal([]byte(`{"client_keys": ["sk-placeholder"], "allow_models": ["anthropic/*"]}`), &h); err != nil {
		t.Fatal(err)
	}
	h.CredentialsRaw = append(h.CredentialsRaw, staticSourceJSON("sk-upstream"))
	provisionHandler(t, &h)
	upstream := func(status int, body string) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			_, err := w.Write([]byte(body))
			return err
		})
	}
	list := func(next caddyhttp.Handler) (*httptest.ResponseRecorder, any) {
		r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r, _ = withReplacer(r)
		w := httptest.NewRecorder()
		var panicked any
		func() {
			defer func() { panicked = recover() }()
			_ = h.ServeHTTP(w, r, next)
		}()
		return w, panicked
	}
	w, _ := list(upstream(200, testCatalog))
	if w.Code != 200 || w.Body.String() != `{"object":"list","data":[{"id":"anthropic/claude-haiku-4.5"},{"id":"anthropic/claude-sonnet-4.5"}]}` ||
		w.Header().Get("Content-Length") != "" {
		t.Errorf("filtered list: %d %s %q", w.Code, w.Body, w.Header().Get("Content-Length"))
	}
	if w, _ := list(upstream(200, "<html>")); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "model_list_unreadable") {
		t.Errorf("unreadable list: %d %s", w.Code, w.Body)
	}
	if w, p := list(upstream(200, `{"data":[{"id":"anthropic/x"},`)); p != http.ErrAbortHandler || strings.Contains(w.Body.String(), "model_list_unreadable") {
		t.Errorf("a list cut short: %v %d %s", p, w.Code, w.Body)
	}
	if w, _ := list(upstream(500, `{"error":{"message":"down"}}`)); w.Code != 500 || w.Body.String() != `{"error":{"message":"down"}}` {
		t.Errorf("an error answer: %d %s", w.Code, w.Body)
	}
}
