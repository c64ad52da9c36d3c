package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// policiesExtra is an ai_gateway_auth block's policies: every client may
// use the Haiku models and one request a minute; alice (a trusted agent)
// any OpenAI or Anthropic model and three a minute; carol any model (so
// she may upload audio, whose model the proxy cannot read).
const policiesExtra = `allow_models anthropic/claude-haiku-*
		limits {
			requests_per_minute 1
		}
		policy trusted {
			clients key:alice
			allow_models openai/* anthropic/*
			limits {
				requests_per_minute 3
			}
		}
		policy open {
			clients key:carol
			allow_models **
		}`

// policyClient is an OpenAI SDK client of the proxy at url with the
// signed key of name.
func policyClient(t *testing.T, url, name, secret string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(url+"/v1/"),
		option.WithAPIKey(signedClientKey(name, secret)),
		option.WithHTTPClient(newTestClient(t).HTTP),
		option.WithMaxRetries(0),
	)
}

// listedModels is what GET /v1/models lists for a client, through the SDK.
func listedModels(t *testing.T, c openai.Client) []string {
	t.Helper()
	page, err := c.Models.List(t.Context())
	if err != nil {
		t.Fatalf("listing models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

// wantModelNotAllowed fails unless err is the SDK's 403 with code
// model_not_allowed and a message naming model.
func wantModelNotAllowed(t *testing.T, err error, model string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v is not the SDK's API error", err)
	}
	if apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "model_not_allowed" || !strings.Contains(apiErr.Message, `"`+model+`"`) {
		t.Fatalf("got %d %q %q; want 403 model_not_allowed naming %q", apiErr.StatusCode, apiErr.Code, apiErr.Message, model)
	}
}

// GET /v1/models per client: two clients, two policies, each sees what
// its policy allows (filtered from AI Gateway's list as it streams), and
// a model it may not use cannot be looked up either.
func TestPoliciesModelList(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetCatalog(defaultCatalog())
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, policiesExtra)
	alice, bob := policyClient(t, p.URL, "alice", secret), policyClient(t, p.URL, "bob", secret)

	if got := listedModels(t, alice); !slices.Equal(got, []string{"openai/gpt-5", "anthropic/claude-sonnet-4", "anthropic/claude-haiku-4.5", "openai/text-embedding-3-small"}) {
		t.Errorf("alice (trusted) lists %q", got)
	}
	if got := listedModels(t, bob); !slices.Equal(got, []string{"anthropic/claude-haiku-4.5"}) {
		t.Errorf("bob (the block's allow_models) lists %q", got)
	}
	// a lookup through the SDK (which escapes the id's slash)
	before := len(gw.Requests())
	_, err := bob.Models.Get(t.Context(), "openai/gpt-5")
	wantModelNotAllowed(t, err, "openai/gpt-5")
	gatewayUntouched(t, gw, before, "a model lookup of a model not allowed")
	if m, err := alice.Models.Get(t.Context(), "openai/gpt-5"); err != nil || m.ID != "openai/gpt-5" {
		t.Errorf("alice's lookup of openai/gpt-5: %+v, %v", m, err)
	}
	if n := len(gw.Requests()); n != before+1 || gw.Requests()[n-1].EscapedPath != "/v1/models/openai/gpt-5" {
		t.Errorf("alice's lookup did not reach the gateway as /v1/models/openai/gpt-5")
	}
	for client, want := range map[string]string{"key:alice": "trusted", "key:bob": "", "key:carol": "open"} {
		res := newTestClient(t).do(t, http.MethodGet, p.Admin+"/ai_gateway_auth/status?client="+url.QueryEscape(client), nil, "")
		var status struct {
			Handlers []struct {
				Policies     []string `json:"policies"`
				ClientPolicy *string  `json:"client_policy"`
			} `json:"handlers"`
		}
		if err := json.Unmarshal(res.Body, &status); err != nil || len(status.Handlers) != 1 {
			t.Fatalf("status: %v: %s", err, res.Body)
		}
		if h := status.Handlers[0]; !slices.Equal(h.Policies, []string{"trusted", "open"}) || h.ClientPolicy == nil || *h.ClientPolicy != want {
			t.Errorf("status for %s: %s", client, res.Body)
		}
	}
	if !strings.Contains(p.Logs(), `"client":"bob","policy":""`) {
		t.Errorf("the refusal's log line does not name bob and the block's settings:\n%s", tail(p.Logs(), 10))
	}
}

// A multipart upload (whose model field the proxy does not read) is
// refused under an allowlist, and passes for a client allowed any model.
func TestPoliciesUploads(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, policiesExtra)
	upload := func(name string) *http.Response {
		body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nopenai/gpt-4o-transcribe\r\n--b--\r\n"
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/audio/transcriptions", strings.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		req.Header.Set("Authorization", "Bearer "+signedClientKey(name, secret))
		res, err := newTestClient(t).HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	before := len(gw.Requests())
	if res := upload("bob"); res.StatusCode != http.StatusForbidden || res.Header.Get("X-Ai-Gateway-Auth-Error") != "model_not_allowed" {
		t.Errorf("bob's upload: %d %q", res.StatusCode, res.Header.Get("X-Ai-Gateway-Auth-Error"))
	}
	gatewayUntouched(t, gw, before, "an upload under an allowlist")
	upload("carol")
	if n := len(gw.Requests()); n != before+1 || gw.Requests()[n-1].Path != "/v1/audio/transcriptions" {
		t.Errorf("carol's upload (allow_models **) did not reach the gateway")
	}
}

// A policy's limits replace the block's: bob has the block's one request
// a minute, alice her policy's three; and with reservations, a token
// budget of the policy's decides whether a request's worst case fits.
func TestPoliciesLimitsReplaceTheBlocks(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, policiesExtra)
	served := func(name string) int {
		c := policyClient(t, p.URL, name, secret)
		n := 0
		for range 5 {
			_, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
				Model:    "anthropic/claude-haiku-4.5",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
			})
			var apiErr *openai.Error
			switch {
			case err == nil:
				n++
			case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests:
			default:
				t.Fatalf("%s: %v", name, err)
			}
		}
		return n
	}
	if got := served("bob"); got != 1 {
		t.Errorf("bob (the block's limits) was served %d of 5; want 1", got)
	}
	if got := served("alice"); got != 3 {
		t.Errorf("alice (policy trusted's limits) was served %d of 5; want 3", got)
	}

	// tokens: the block's budget fits a 1000-token cap, policy tight's does not
	p2, secret2 := signedKeysProxy(t, gw.URL(), apiKey, `limits {
			tokens_per_day 1_000_000
		}
		policy tight {
			clients key:dave
			limits {
				tokens_per_day 500
			}
		}`)
	capped := func(name string) error {
		c := policyClient(t, p2.URL, name, secret2)
		_, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
			Model:               "openai/gpt-5",
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
			MaxCompletionTokens: openai.Int(1000),
		})
		return err
	}
	if err := capped("bob"); err != nil {
		t.Errorf("bob (the block's tokens_per_day 1000000): %v", err)
	}
	var apiErr *openai.Error
	if err := capped("dave"); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "tokens_per_day_exceeded" {
		t.Errorf("dave (policy tight's tokens_per_day 500) with a 1000-token cap: %v; want 429 tokens_per_day_exceeded", err)
	}
}

// caddy validate refuses a policy no client can match, a glob no model of
// the catalog matches, and an unknown option, each with its file and
// line.
func TestPoliciesValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	catalog := filepath.Join(dir, "models.json")
	if err := os.WriteFile(catalog, []byte(`{"object":"list","data":[{"id":"openai/gpt-5"},{"id":"anthropic/claude-haiku-4.5"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, lines string
		line        int
		want        string
	}{
		{"sandbox policy without vercel_sandbox", "policy web {\n\t\tclients sandbox:team_acme/prj_web/*\n\t}", 5, "policy web can match no client"},
		{"typo in a glob", "catalog_file " + catalog + "\n\tallow_models anthropic/claude-hiaku-*", 6, `anthropic/claude-hiaku-*\" matches no model of the catalog`},
		{"unknown option", "policy a {\n\t\tclients placeholder\n\t\tmodels openai/*\n\t}", 7, "unrecognized policy option 'models'"},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".Caddyfile")
		cf := fmt.Sprintf(":4000 {\nai_gateway_auth {\n\tcredential static {env.AI_GATEWAY_API_KEY}\n\tclient_key sk-placeholder\n\t%s\n}\nreverse_proxy 127.0.0.1:9\n}\n", c.lines)
		if err := os.WriteFile(file, []byte(cf), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runCaddyCommand(t, map[string]string{"AI_GATEWAY_API_KEY": "vck_x"}, "validate", "--adapter", "caddyfile", "--config", file)
		if err == nil || !strings.Contains(out, c.want) || !strings.Contains(out, fmt.Sprintf("%s:%d", file, c.line)) {
			t.Errorf("%s: caddy validate: %v\n%s\nwant %q at %s:%d", c.name, err, out, c.want, file, c.line)
		}
	}
}

// abortedSince waits until the gateway recorded the request the proxy
// aborted before its body ended (the fake records it once it sees the
// body break off, which may be after the client got its answer), and
// fails if any request after the first before came whole.
func abortedSince(t *testing.T, gw *fakeGateway, before int) {
	t.Helper()
	eventually(t, waitTimeout, "the gateway records the aborted request", func() string {
		if n := len(gw.Requests()) - before; n != 1 {
			return fmt.Sprintf("%d requests", n)
		}
		return ""
	})
	if r := gw.Requests()[before]; r.BodyErr == "" || r.Ran {
		t.Errorf("the gateway got the request whole (ran: %v)", r.Ran)
	}
}

// completedSince counts the requests the gateway got whole (the body
// ended: inference could run) after the first before.
func completedSince(gw *fakeGateway, before int) int {
	n := 0
	for _, r := range gw.Requests()[before:] {
		if r.BodyErr == "" {
			n++
		}
	}
	return n
}

// The model check through the real SDKs: a model the client's policy
// does not allow is refused 403 model_not_allowed and never runs, also
// when `model` comes after 256 KiB of messages (the upstream request is
// aborted unfinished) and when it is only a fallback; an allowed model
// passes; a generation body without a model is refused.
func TestPoliciesModelCheck(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, `allow_models anthropic/claude-haiku-*
		policy trusted {
			clients key:alice
			allow_models openai/* anthropic/*
		}`)
	bob, alice := policyClient(t, p.URL, "bob", secret), policyClient(t, p.URL, "alice", secret)
	ctx := t.Context()
	chat := func(c openai.Client, model string, opts ...option.RequestOption) error {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
		}, opts...)
		return err
	}

	t.Run("disallowed model", func(t *testing.T) {
		before := len(gw.Requests())
		wantModelNotAllowed(t, chat(bob, "openai/gpt-5"), "openai/gpt-5")
		if n := completedSince(gw, before); n != 0 {
			t.Errorf("the gateway got %d complete requests", n)
		}
	})
	t.Run("allowed model", func(t *testing.T) {
		if err := chat(bob, "anthropic/claude-haiku-4.5"); err != nil {
			t.Fatal(err)
		}
		if err := chat(alice, "openai/gpt-5"); err != nil {
			t.Fatal(err)
		}
		// usage per model and policy
		if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_model_tokens_total{direction="input",model="openai/gpt-5",policy="trusted"}`); got <= 0 {
			t.Errorf("model_tokens_total of alice's openai/gpt-5 = %v", got)
		}
		if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_model_tokens_total{direction="input",model="anthropic/claude-haiku-4.5",policy=""}`); got <= 0 {
			t.Errorf("model_tokens_total of bob's anthropic/claude-haiku-4.5 = %v", got)
		}
	})
	t.Run("model after 256 KiB of messages", func(t *testing.T) {
		big := strings.Repeat("a", 256<<10)
		body := `{"messages":[{"role":"user","content":"` + big + `"}],"model":"openai/gpt-5"}`
		before := len(gw.Requests())
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+signedClientKey("bob", secret))
		req.Header.Set("Content-Type", "application/json")
		res, err := newTestClient(t).HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || res.Header.Get("X-Ai-Gateway-Auth-Error") != "model_not_allowed" {
			t.Errorf("got %d %q; want 403 model_not_allowed", res.StatusCode, res.Header.Get("X-Ai-Gateway-Auth-Error"))
		}
		abortedSince(t, gw, before)
		// and through the SDK, which writes messages before model
		before = len(gw.Requests())
		_, err = bob.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "openai/gpt-5",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(big)},
		})
		wantModelNotAllowed(t, err, "openai/gpt-5")
		abortedSince(t, gw, before)
	})
	t.Run("fallback not allowed", func(t *testing.T) {
		before := len(gw.Requests())
		err := chat(bob, "anthropic/claude-haiku-4.5", option.WithJSONSet("providerOptions",
			map[string]any{"gateway": map[string]any{"models": []string{"anthropic/claude-haiku-4.5", "openai/gpt-5"}}}))
		wantModelNotAllowed(t, err, "openai/gpt-5")
		if n := completedSince(gw, before); n != 0 {
			t.Errorf("the gateway got %d complete requests", n)
		}
	})
	t.Run("no model", func(t *testing.T) {
		before := len(gw.Requests())
		err := chat(bob, "", option.WithJSONDel("model"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "model_not_allowed" || !strings.Contains(apiErr.Message, "names no model") {
			t.Errorf("a body without model: %v", err)
		}
		gatewayUntouched(t, gw, before, "a body without model")
	})
	t.Run("model spelled twice or otherwise", func(t *testing.T) {
		for _, body := range []string{
			`{"model":"anthropic/claude-haiku-4.5","messages":[],"model":"openai/gpt-5"}`,
			`{"model":"anthropic/claude-haiku-4.5","Model":"openai/gpt-5","messages":[]}`,
			`{"m\u006fdel":"openai/gpt-5","messages":[]}`,
		} {
			before := len(gw.Requests())
			res := newTestClient(t).do(t, http.MethodPost, p.URL+"/v1/chat/completions",
				map[string]string{"Authorization": "Bearer " + signedClientKey("bob", secret), "Content-Type": "application/json"}, body)
			if res.Status != http.StatusBadRequest || res.Header.Get("X-Ai-Gateway-Auth-Error") != "invalid_request_body" {
				t.Errorf("%s: %d %s", body, res.Status, res.Body)
			}
			gatewayUntouched(t, gw, before, body)
		}
	})
	t.Run("model list unreadable", func(t *testing.T) {
		// a list that breaks off after its data began is cut short, never
		// passed on unfiltered (before, it would be answered 502: the
		// handler's unit test)
		gw.SetCatalogFailure(catalogMalformed)
		_, err := bob.Models.List(t.Context())
		if err == nil {
			t.Error("a model list cut short: no error")
		}
		var apiErr *openai.Error
		gw.SetCatalogFailure(catalogError) // an error answer passes as it is
		if _, err = bob.Models.List(t.Context()); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusInternalServerError {
			t.Errorf("the gateway's error answer: %v", err)
		}
	})
	t.Run("anthropic SDK", func(t *testing.T) {
		c := anthropic.NewClient(
			aoption.WithBaseURL(p.URL),
			aoption.WithAPIKey(signedClientKey("bob", secret)),
			aoption.WithHTTPClient(newTestClient(t).HTTP),
			aoption.WithMaxRetries(0),
		)
		before := len(gw.Requests())
		_, err := c.Messages.New(ctx, anthropic.MessageNewParams{
			Model: "anthropic/claude-sonnet-4", MaxTokens: 100,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello"))},
		})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || apiErr.Type() != "permission_error" ||
			!strings.Contains(apiErr.Message, `"anthropic/claude-sonnet-4"`) {
			t.Errorf("Anthropic SDK: got %v; want a 403 permission_error naming the model", err)
		}
		if n := completedSince(gw, before); n != 0 {
			t.Errorf("the gateway got %d complete requests", n)
		}
		if _, err := c.Messages.New(ctx, anthropic.MessageNewParams{
			Model: "anthropic/claude-haiku-4.5", MaxTokens: 100,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello"))},
		}); err != nil {
			t.Errorf("an allowed model: %v", err)
		}
	})
}

// The access log names each request's policy ({ai_gateway_auth.policy}
// with log_append), "" for the block's own settings.
func TestPoliciesAccessLog(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	secret := newClientKeySecret()
	logFile := filepath.Join(t.TempDir(), "access.log")
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret}},
		fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		allow_models anthropic/*
		policy trusted {
			clients key:alice
			allow_models openai/* anthropic/*
		}
	}
	reverse_proxy %s
	log {
		output file %s
		format json
	}
	log_append policy {ai_gateway_auth.policy}`, gw.URL(), logFile))
	tc := newTestClient(t)
	for _, name := range []string{"alice", "bob"} {
		tc.do(t, http.MethodGet, p.URL+"/v1/models", map[string]string{"Authorization": "Bearer " + signedClientKey(name, secret), "X-Test-Id": name}, "")
	}
	var entries []map[string]any
	eventually(t, waitTimeout, "two access log entries", func() string {
		b, _ := os.ReadFile(logFile)
		if entries = caddyLogEntries(string(b), "handled request"); len(entries) < 2 {
			return fmt.Sprintf("%d entries", len(entries))
		}
		return ""
	})
	for name, want := range map[string]string{"alice": "trusted", "bob": ""} {
		e := accessLogEntry(entries, name)
		if e == nil || e["policy"] != want {
			t.Errorf("%s's access log entry: policy %v; want %q", name, e["policy"], want)
		}
	}
}
