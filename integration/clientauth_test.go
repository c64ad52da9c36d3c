package integration

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestUnauthorizedClients: a missing or wrong client key gets a 401 in the
// shape the client's SDK parses (OpenAI's, or Anthropic's on
// /v1/messages), the SDKs report it as an authentication error, and the
// gateway never hears of the request.
func TestUnauthorizedClients(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, staticSite(gw.URL()))
	tc := newTestClient(t)

	keys := []struct {
		name   string
		header map[string]string
	}{
		{"missing", nil},
		{"wrong bearer", map[string]string{"Authorization": "Bearer sk-wrong"}},
		{"wrong x-api-key", map[string]string{"X-Api-Key": "sk-wrong"}},
		{"wrong api-key", map[string]string{"Api-Key": "sk-wrong"}},
		{"basic auth", map[string]string{"Authorization": "Basic c2stcGxhY2Vob2xkZXI6"}},
		{"the gateway's own key", map[string]string{"Authorization": "Bearer " + apiKey}},
		{"right key in a wrong scheme", map[string]string{"Authorization": "Token sk-placeholder"}},
	}
	for _, k := range keys {
		t.Run("openai/"+k.name, func(t *testing.T) {
			res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", k.header,
				`{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`)
			if res.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", res.Status, res.Body)
			}
			e := decodeJSON[openAIError](t, res.Body)
			if e.Error.Type != "authentication_error" || e.Error.Code == nil || *e.Error.Code != "invalid_api_key" || !strings.Contains(e.Error.Message, "key") {
				t.Errorf("body %s, want an OpenAI authentication_error with code invalid_api_key and a message about the key", res.Body)
			}
		})
		t.Run("anthropic/"+k.name, func(t *testing.T) {
			h := map[string]string{"Anthropic-Version": "2023-06-01"}
			for name, val := range k.header {
				h[name] = val
			}
			res := tc.do(t, http.MethodPost, p.URL+"/v1/messages?beta=true", h,
				`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
			if res.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", res.Status, res.Body)
			}
			e := decodeJSON[anthropicError](t, res.Body)
			if e.Type != "error" || e.Error.Type != "authentication_error" || !strings.Contains(e.Error.Message, "key") {
				t.Errorf("body %s, want an Anthropic authentication_error with a message about the key", res.Body)
			}
		})
	}

	t.Run("openai sdk", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey("sk-wrong"),
			option.WithHTTPClient(tc.HTTP), option.WithMaxRetries(0))
		params := openai.ChatCompletionNewParams{
			Model:    "openai/gpt-5",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		}
		_, err := client.Chat.Completions.New(t.Context(), params)
		checkOpenAIAuthError(t, err)
		stream := client.Chat.Completions.NewStreaming(t.Context(), params)
		for stream.Next() {
			t.Error("got a chunk from a rejected stream")
		}
		checkOpenAIAuthError(t, stream.Err())
		stream.Close()
	})

	t.Run("anthropic sdk", func(t *testing.T) {
		client := anthropic.NewClient(aoption.WithBaseURL(p.URL), aoption.WithAPIKey("sk-wrong"),
			aoption.WithHTTPClient(tc.HTTP), aoption.WithMaxRetries(0))
		params := anthropic.MessageNewParams{
			Model:     "anthropic/claude-sonnet-4",
			MaxTokens: 64,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		}
		_, err := client.Messages.New(t.Context(), params)
		checkAnthropicAuthError(t, err)
		stream := client.Messages.NewStreaming(t.Context(), params)
		for stream.Next() {
			t.Error("got an event from a rejected stream")
		}
		checkAnthropicAuthError(t, stream.Err())
		stream.Close()
	})

	// Last, after every subtest above has run.
	if reqs := gw.Requests(); len(reqs) != 0 {
		t.Errorf("the gateway received %d requests from unauthorized clients, want none", len(reqs))
	}
}

func checkOpenAIAuthError(t *testing.T, err error) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want an *openai.Error", err)
	}
	if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Type != "authentication_error" || apiErr.Code != "invalid_api_key" {
		t.Errorf("got status %d type %q code %q, want 401 authentication_error invalid_api_key", apiErr.StatusCode, apiErr.Type, apiErr.Code)
	}
}

func checkAnthropicAuthError(t *testing.T, err error) {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want an *anthropic.Error", err)
	}
	if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Type() != "authentication_error" || apiErr.Message == "" {
		t.Errorf("got status %d type %q message %q, want 401 authentication_error with a message", apiErr.StatusCode, apiErr.Type(), apiErr.Message)
	}
}

// TestClientKeysFile: named keys from client_keys_file are accepted and
// reported in {ai_gateway_auth.client}; the file is re-read when it
// changes, so a removed key stops working and an added one starts, with no
// reload.
func TestClientKeysFile(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	keysFile := filepath.Join(t.TempDir(), "keys")
	alice, bob, carol := "sk-alice-"+randomString(20), "sk-bob-"+randomString(20), "sk-carol-"+randomString(20)
	if err := os.WriteFile(keysFile, []byte(fmt.Sprintf("# sandboxes\nalice %s\n\nbob   %s\n", alice, bob)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_keys_file %s
	}
	reverse_proxy %s {
		header_up X-Test-Client {ai_gateway_auth.client}
	}`, keysFile, gw.URL()))
	tc := newTestClient(t)

	expect := func(key string, status int, client string) string {
		res := tc.chat(t, p.URL, key)
		if res.Status != status {
			return fmt.Sprintf("key of %s: status %d, want %d: %s", client, res.Status, status, res.Body)
		}
		if status == http.StatusOK {
			r := lastRequest(t, gw)
			assertForwarded(t, r, apiKey, "api-key")
			if got := r.Header.Get("X-Test-Client"); got != client {
				return fmt.Sprintf("{ai_gateway_auth.client} is %q, want %q", got, client)
			}
		}
		return ""
	}
	for _, c := range []struct {
		key    string
		status int
		name   string
	}{{alice, 200, "alice"}, {bob, 200, "bob"}, {carol, 401, "carol"}, {"sk-placeholder", 401, "placeholder"}} {
		if msg := expect(c.key, c.status, c.name); msg != "" {
			t.Fatal(msg)
		}
	}

	// alice leaves, carol joins. Replaced with a rename: a file rewritten
	// in place can be read half-written, and an empty keys file is a valid
	// file with no keys.
	writeFileAtomic(t, keysFile, fmt.Sprintf("bob %s\ncarol %s\n", bob, carol))
	eventually(t, waitTimeout, "the rewritten keys file is used", func() string {
		if msg := expect(bob, 200, "bob"); msg != "" {
			t.Fatal(msg) // bob's key is in both versions: it must never fail
		}
		if msg := expect(carol, 200, "carol"); msg != "" {
			return msg
		}
		return expect(alice, 401, "alice")
	})
}
