package integration

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestModelLookupSDK: the official SDKs look a model up with its id's
// slash escaped, as one path segment (openai-go's Models.Get(ctx,
// "openai/gpt-5") sends GET /v1/models/openai%2Fgpt-5, and so does
// anthropic-sdk-go's). Through a real Caddy, that passes allow_paths and
// reaches AI Gateway as /v1/models/openai/gpt-5, the form it documents;
// the SDK gets the model. Under an allowlist, a model not allowed gets
// 403 model_not_allowed in every spelling and the gateway is not asked;
// an escape anywhere else is 403 path_not_allowed.
func TestModelLookupSDK(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.Faithful()
	site := func(extra string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
		%s
	}
	reverse_proxy %s`, extra, gw.URL())
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}},
		site(""), site("allow_models openai/* anthropic/claude-haiku-*"))
	openURL, limitedURL := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)
	oc := func(base string) *openai.Client {
		c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("sk-placeholder"),
			option.WithHTTPClient(tc.HTTP), option.WithMaxRetries(0))
		return &c
	}
	ac := func(base string) *anthropic.Client {
		c := anthropic.NewClient(aoption.WithBaseURL(base), aoption.WithAPIKey("sk-placeholder"),
			aoption.WithHTTPClient(tc.HTTP), aoption.WithMaxRetries(0))
		return &c
	}
	ctx := t.Context()
	// reached fails unless the gateway's last request was GET path, as
	// sent (the slash not escaped), with the proxy's credential
	reached := func(t *testing.T, path string) {
		t.Helper()
		r := lastRequest(t, gw)
		assertForwarded(t, r, apiKey, "api-key")
		if r.Method != http.MethodGet || r.EscapedPath != path {
			t.Errorf("the gateway got %s %q, want GET %q", r.Method, r.EscapedPath, path)
		}
	}

	for name, base := range map[string]string{"no allowlist": openURL, "allowlist": limitedURL} {
		t.Run(name, func(t *testing.T) {
			m, err := oc(base).Models.Get(ctx, "openai/gpt-5")
			if err != nil {
				t.Fatalf("openai-go Models.Get: %v", err)
			}
			if m.ID != "openai/gpt-5" || m.OwnedBy != "openai" || m.Object != "model" {
				t.Errorf("openai-go Models.Get: %+v", m)
			}
			reached(t, "/v1/models/openai/gpt-5")
			am, err := ac(base).Models.Get(ctx, "anthropic/claude-haiku-4.5", anthropic.ModelGetParams{})
			if err != nil {
				t.Fatalf("anthropic-sdk-go Models.Get: %v", err)
			}
			if am.ID != "anthropic/claude-haiku-4.5" {
				t.Errorf("anthropic-sdk-go Models.Get: %+v", am)
			}
			reached(t, "/v1/models/anthropic/claude-haiku-4.5")
		})
	}

	// no allowlist: the gateway decides, and answers a model it lacks 404
	_, err := oc(openURL).Models.Get(ctx, "nosuch/model")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Type != "model_not_found" {
		t.Errorf("an unknown model: %v; want the gateway's 404 model_not_found", err)
	}
	if r := lastRequest(t, gw); r.EscapedPath != "/v1/models/nosuch/model" || r.Status != http.StatusNotFound {
		t.Errorf("an unknown model: the gateway got %q and answered %d", r.EscapedPath, r.Status)
	}
	if _, err := oc(openURL).Models.Get(ctx, "anthropic/claude-sonnet-4"); err != nil {
		t.Errorf("no allowlist, anthropic/claude-sonnet-4: %v", err)
	}

	// under the allowlist: refused in the SDK's spelling, the gateway not asked
	before := len(gw.Requests())
	_, err = oc(limitedURL).Models.Get(ctx, "anthropic/claude-sonnet-4")
	wantModelNotAllowed(t, err, "anthropic/claude-sonnet-4")
	_, err = ac(limitedURL).Models.Get(ctx, "anthropic/claude-sonnet-4", anthropic.ModelGetParams{})
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusForbidden || aErr.Response.Header.Get("X-Ai-Gateway-Auth-Error") != "model_not_allowed" ||
		!strings.Contains(aErr.RawJSON(), `"permission_error"`) || !strings.Contains(aErr.RawJSON(), `\"anthropic/claude-sonnet-4\"`) {
		t.Errorf("anthropic-sdk-go, a model not allowed: %v; want 403 model_not_allowed, a permission_error naming the model", err)
	}
	gatewayUntouched(t, gw, before, "an SDK lookup of a model not allowed")

	// every spelling, raw on the request line
	auth := map[string]string{"Authorization": "Bearer sk-placeholder"}
	for _, c := range []struct {
		target   string
		code     string // the refusal's code, "" for the gateway's answer
		upstream string // the path the gateway gets, when it is asked
	}{
		{"/v1/models/openai%2Fgpt-5", "", "/v1/models/openai/gpt-5"},
		{"/v1/models/openai%2fgpt-5", "", "/v1/models/openai/gpt-5"},
		{"/v1/models/openai%2Fgpt-5/endpoints", "", "/v1/models/openai/gpt-5/endpoints"},
		{"/v1/models/openai/gpt-5/endpoints", "", "/v1/models/openai/gpt-5/endpoints"},
		{"/v1/models/anthropic%2Fclaude-haiku-4.5", "", "/v1/models/anthropic/claude-haiku-4.5"},
		{"/v1/models/anthropic%2Fclaude-sonnet-4", "model_not_allowed", ""},
		{"/v1/models/anthropic%2fclaude-sonnet-4/endpoints", "model_not_allowed", ""},
		{"/v1/models/anthropic/claude-sonnet-4", "model_not_allowed", ""},
		{"/v1/models/anthropic/claude-sonnet-4/endpoints", "model_not_allowed", ""},
		{"/v1/models/Anthropic%2Fclaude-haiku-4.5", "model_not_allowed", ""}, // ids are case-sensitive
		{"/v1/models/OPENAI%2FGPT-5", "model_not_allowed", ""},
		{"/v1/models/openai/endpoints", "model_not_allowed", ""}, // the endpoints of the model "openai", or the model openai/endpoints
		{"/v1/models/anthropic%252Fclaude-sonnet-4", "path_not_allowed", ""},
		{"/v1/models/anthropic%252fclaude-haiku-4.5", "path_not_allowed", ""},
		{"/v1/models/anthropic%2Fclaude-sonnet-4%2Fendpoints", "path_not_allowed", ""},
		{"/v1/models/openai%2Fgpt-5/extra", "path_not_allowed", ""},
		{"/v1/models/openai%2Fgpt-5%2Fx", "path_not_allowed", ""},
		{"/v1/models/a/b%2Fc", "path_not_allowed", ""},
		{"/v1/models/..%2Fcredits", "path_not_allowed", ""},
		{"/v1/models/openai%2F..", "path_not_allowed", ""},
		{"/v1/models/openai%2F%2e%2e", "path_not_allowed", ""},
		{"/v1/models/%2Fcredits", "path_not_allowed", ""},
		{"/v1/models%2Fopenai%2Fgpt-5", "path_not_allowed", ""},
		{"/v1/chat%2Fcompletions", "path_not_allowed", ""},
	} {
		before := len(gw.Requests())
		res := sendRawRequest(t, limitedURL, http.MethodGet, c.target, auth, "")
		if c.code != "" {
			if res.Status != http.StatusForbidden || res.Header.Get("X-Ai-Gateway-Auth-Error") != c.code {
				t.Errorf("%s: %d %q %s; want 403 %s", c.target, res.Status, res.Header.Get("X-Ai-Gateway-Auth-Error"), res.Body, c.code)
			}
			gatewayUntouched(t, gw, before, c.target)
			continue
		}
		if res.Status != http.StatusOK {
			t.Errorf("%s: %d %s; want the gateway's 200", c.target, res.Status, res.Body)
			continue
		}
		reached(t, c.upstream)
	}
}
