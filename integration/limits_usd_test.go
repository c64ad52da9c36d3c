package integration

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// TestLimitsUSDPerDay: `usd_per_day` through a real Caddy with the real
// SDKs. The fake gateway reports a cost of $0.02 on every chat
// completion and none on Anthropic messages: messages count nothing
// toward the budget, three chat completions ($0.06) pass it (the third
// was under when sent), and then both SDKs get a rate limit error with
// Retry-After until midnight UTC and, for OpenAI, the code
// usd_per_day_exceeded; the gateway never sees those requests.
func TestLimitsUSDPerDay(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's cost could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetUsage(fakeUsage{Input: 10, Output: 6, Cost: 0.02})
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "limits {\n\t\t\tusd_per_day 0.05\n\t\t}")
	ctx := t.Context()
	oc, ac := sdkClients(t, p.URL, signedClientKey("budget", secret))
	chat := openai.ChatCompletionNewParams{Model: "openai/gpt-5", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	msg := anthropic.MessageNewParams{Model: "anthropic/claude-sonnet-4", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}

	for i := range 5 {
		if _, err := ac.Messages.New(ctx, msg); err != nil {
			t.Fatalf("message %d (no cost reported): %v", i+1, err)
		}
	}
	for i := range 3 {
		if _, err := oc.Chat.Completions.New(ctx, chat); err != nil {
			t.Fatalf("chat completion %d ($%.2f spent before it): %v", i+1, 0.02*float64(i), err)
		}
	}
	before := len(gw.Requests())
	untilMidnight := func() float64 {
		now := time.Now().UTC()
		return now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now).Seconds()
	}
	_, err := oc.Chat.Completions.New(ctx, chat)
	var oe *openai.Error
	if !errors.As(err, &oe) {
		t.Fatalf("over usd_per_day: got %v, want an *openai.Error", err)
	}
	ra, raErr := strconv.Atoi(oe.Response.Header.Get("Retry-After"))
	t.Logf("the OpenAI SDK surfaced: status %d, type %q, code %q, Retry-After %q", oe.StatusCode, oe.Type, oe.Code, oe.Response.Header.Get("Retry-After"))
	if oe.StatusCode != http.StatusTooManyRequests || oe.Type != "rate_limit_error" || oe.Code != "usd_per_day_exceeded" ||
		raErr != nil || math.Abs(float64(ra)-untilMidnight()) > 30 {
		t.Errorf("got %d %q %q Retry-After %q; want 429 rate_limit_error usd_per_day_exceeded, Retry-After about %.0f s (midnight UTC)",
			oe.StatusCode, oe.Type, oe.Code, oe.Response.Header.Get("Retry-After"), untilMidnight())
	}
	_, err = ac.Messages.New(ctx, msg)
	var ae *anthropic.Error
	if !errors.As(err, &ae) {
		t.Fatalf("over usd_per_day: got %v, want an *anthropic.Error", err)
	}
	if ae.StatusCode != http.StatusTooManyRequests || ae.Type() != "rate_limit_error" || ae.Response.Header.Get("Retry-After") == "" {
		t.Errorf("got %d %q Retry-After %q; want 429 rate_limit_error with Retry-After", ae.StatusCode, ae.Type(), ae.Response.Header.Get("Retry-After"))
	}
	gatewayUntouched(t, gw, before, "over usd_per_day")

	metrics := scrapeMetrics(t, p)
	if got := metrics[`caddy_ai_gateway_auth_limit_refusals_total{limit="usd_per_day"}`]; got != 2 {
		t.Errorf(`limit_refusals_total{limit="usd_per_day"} = %v, want 2`, got)
	}
	if got := metrics[`caddy_ai_gateway_auth_client_cost_total{client="key:budget"}`]; math.Abs(got-0.06) > 1e-9 {
		t.Errorf(`client_cost_total{client="key:budget"} = %v, want 0.06`, got)
	}
}
