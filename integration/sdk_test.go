package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// staticSite is a site block: the proxy with a static API key in front of
// the gateway at gw.
func staticSite(gw string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gw)
}

// mintSite is a site block: the proxy minting OIDC tokens from the fake
// Vercel API, after a static credential whose variable is unset.
func mintSite(v *fakeVercel, gw string, extra string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		credential vercel_oidc {
			%s
			%s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, mintBlock(v.URL()), extra, gw)
}

func newAPIKey() string { return "vck_" + randomString(48) } // shaped like an AI Gateway API key

// TestOpenAISDK drives the proxy with the official OpenAI Go SDK using
// sk-placeholder as its key: the static API key, listed first, is what the
// gateway gets (even though an OIDC token is available too), for plain,
// streamed and GET requests.
func TestOpenAISDK(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, v, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{
		"AI_GATEWAY_API_KEY": apiKey,
		"VERCEL_OIDC_TOKEN":  v.Token(3600e9),
	}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gw.URL()))
	tc := newTestClient(t)
	client := openai.NewClient(
		option.WithBaseURL(p.URL+"/v1/"),
		option.WithAPIKey("sk-placeholder"),
		option.WithHTTPClient(tc.HTTP),
		option.WithMaxRetries(0),
	)
	ctx := t.Context()
	params := openai.ChatCompletionNewParams{
		Model:    "openai/gpt-5",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
	}

	t.Run("non-streaming", func(t *testing.T) {
		res, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Choices) != 1 || res.Choices[0].Message.Content != answerText {
			t.Fatalf("got %+v, want one choice saying %q", res.Choices, answerText)
		}
		r := lastRequest(t, gw)
		if r.Path != "/v1/chat/completions" {
			t.Errorf("gateway got path %q", r.Path)
		}
		assertForwarded(t, r, apiKey, "api-key")
	})

	t.Run("streaming", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, params)
		defer stream.Close()
		var text strings.Builder
		chunks := 0
		for stream.Next() {
			chunks++
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != answerText || chunks != len(streamWords)+2 {
			t.Fatalf("streamed %d chunks saying %q, want %d saying %q", chunks, text.String(), len(streamWords)+2, answerText)
		}
		assertForwarded(t, lastRequest(t, gw), apiKey, "api-key")
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 2 || page.Data[0].ID != "openai/gpt-5" {
			t.Fatalf("got models %+v", page.Data)
		}
		r := lastRequest(t, gw)
		if r.Method != "GET" || r.Path != "/v1/models" {
			t.Errorf("gateway got %s %s", r.Method, r.Path)
		}
		assertForwarded(t, r, apiKey, "api-key")
	})
}

// TestAnthropicSDK drives the proxy with the official Anthropic Go SDK
// using sk-placeholder, both as a bearer token and as x-api-key (as pi and
// OpenClaw send it): the empty static credential is skipped and the
// gateway gets a freshly minted Vercel OIDC token, which it verifies
// against the fake Vercel's JWKS.
func TestAnthropicSDK(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, mintSite(v, gw.URL(), ""))
	tc := newTestClient(t)
	client := anthropic.NewClient(
		aoption.WithBaseURL(p.URL),
		aoption.WithAPIKey("sk-placeholder"),
		aoption.WithHTTPClient(tc.HTTP),
		aoption.WithMaxRetries(0),
	)
	ctx := t.Context()
	params := anthropic.MessageNewParams{
		Model:     "anthropic/claude-sonnet-4",
		MaxTokens: 1024,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello"))},
	}
	xAPIKeyOnly := []aoption.RequestOption{aoption.WithHeaderDel("Authorization"), aoption.WithHeader("X-Api-Key", "sk-placeholder")}

	checkMinted := func(t *testing.T) {
		t.Helper()
		r := lastRequest(t, gw)
		if r.Path != "/v1/messages" {
			t.Errorf("gateway got path %q", r.Path)
		}
		if _, ok := v.expOf(r.Credential); !ok {
			t.Errorf("gateway got a credential the fake Vercel API did not mint")
		}
		assertForwarded(t, r, r.Credential, "oidc")
		mints := v.Mints()
		if len(mints) == 0 || mints[0].Status != 200 {
			t.Errorf("mint calls: %+v, want a successful one", mints)
		}
	}

	for _, tc := range []struct {
		name string
		opts []aoption.RequestOption
	}{
		{"bearer", nil},
		{"x-api-key", xAPIKeyOnly},
	} {
		t.Run("non-streaming/"+tc.name, func(t *testing.T) {
			msg, err := client.Messages.New(ctx, params, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg.Content) != 1 || msg.Content[0].Text != answerText {
				t.Fatalf("got content %+v, want %q", msg.Content, answerText)
			}
			checkMinted(t)
		})
		t.Run("streaming/"+tc.name, func(t *testing.T) {
			stream := client.Messages.NewStreaming(ctx, params, tc.opts...)
			defer stream.Close()
			var msg anthropic.Message
			events := 0
			for stream.Next() {
				events++
				if err := msg.Accumulate(stream.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if len(msg.Content) != 1 || msg.Content[0].Text != answerText || events != len(streamWords)+5 {
				t.Fatalf("got %d events, content %+v; want %d events saying %q", events, msg.Content, len(streamWords)+5, answerText)
			}
			checkMinted(t)
		})
	}
}
