package integration

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// TestLimitsUSDPerDay: `usd_per_day` and `usd_per_month` through a real
// Caddy with the real SDKs, the faithful gateway and its catalog.
// Anthropic messages whose answers carry no cost (priced from the
// catalog) count toward the budget until the next one's worst case does
// not fit; then the Anthropic SDK gets a rate limit error, and an OpenAI
// chat completion whose cap alone does not fit gets
// usd_per_day_exceeded with a message that tells the agent to lower its
// cap, Retry-After until midnight UTC; the gateway never sees those
// requests, and the proxy counted what the gateway billed. Under
// usd_per_month, the refusal is usd_per_month_exceeded with Retry-After
// until the 1st.
func TestLimitsUSDPerDay(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's cost could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetOutputTokens(64)
	gw.SetCostMode("/v1/messages", costAbsent)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "gateway "+gw.URL()+"\n\t\tlimits {\n\t\t\tusd_per_day 0.005\n\t\t}")
	waitCatalog(t, p, signedClientKey("warm-up", secret), chatBody)
	// the warm-up's worst case (the catalog's max_tokens) is over the
	// budget: it is refused once the catalog is read
	refusedBefore := scrapeMetrics(t, p)[`caddy_ai_gateway_auth_limit_refusals_total{limit="usd_per_day"}`]
	ctx := t.Context()
	oc, ac := sdkClients(t, p.URL, signedClientKey("budget", secret))
	// about $0.001 each: 30 input tokens at $3/M, 64 output at $15/M
	msg := anthropic.MessageNewParams{Model: "anthropic/claude-sonnet-4", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}
	// a worst case of $0.01: its cap alone is over the day's budget
	chat := openai.ChatCompletionNewParams{Model: "openai/gpt-5", MaxCompletionTokens: openai.Int(1000),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}

	var err error
	served := 0
	for ; served < 10; served++ {
		if _, err = ac.Messages.New(ctx, msg); err != nil {
			break
		}
	}
	var ae *anthropic.Error
	if !errors.As(err, &ae) || served < 3 {
		t.Fatalf("after %d messages: %v, want an *anthropic.Error after at least 3", served, err)
	}
	if ae.StatusCode != http.StatusTooManyRequests || ae.Type() != "rate_limit_error" || ae.Response.Header.Get("Retry-After") == "" {
		t.Errorf("got %d %q Retry-After %q; want 429 rate_limit_error with Retry-After", ae.StatusCode, ae.Type(), ae.Response.Header.Get("Retry-After"))
	}
	before := len(gw.Requests())
	untilMidnight := func() float64 {
		now := time.Now().UTC()
		return now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now).Seconds()
	}
	_, err = oc.Chat.Completions.New(ctx, chat)
	var oe *openai.Error
	if !errors.As(err, &oe) {
		t.Fatalf("over usd_per_day: got %v, want an *openai.Error", err)
	}
	ra, raErr := strconv.Atoi(oe.Response.Header.Get("Retry-After"))
	t.Logf("the OpenAI SDK surfaced: status %d, type %q, code %q, Retry-After %q: %s", oe.StatusCode, oe.Type, oe.Code, oe.Response.Header.Get("Retry-After"), oe.Message)
	if oe.StatusCode != http.StatusTooManyRequests || oe.Type != "rate_limit_error" || oe.Code != "usd_per_day_exceeded" ||
		raErr != nil || math.Abs(float64(ra)-untilMidnight()) > 30 || !strings.Contains(oe.Message, "send it with a lower output cap") {
		t.Errorf("got %d %q %q Retry-After %q (%q); want 429 rate_limit_error usd_per_day_exceeded, Retry-After about %.0f s (midnight UTC), a message to lower the cap",
			oe.StatusCode, oe.Type, oe.Code, oe.Response.Header.Get("Retry-After"), oe.Message, untilMidnight())
	}
	gatewayUntouched(t, gw, before, "over usd_per_day")

	var billed float64
	for _, r := range gw.Billed() {
		if r.Path == "/v1/messages" {
			billed += r.Billed.Cost + r.Billed.Surcharge
		}
	}
	metrics := scrapeMetrics(t, p)
	if got := metrics[`caddy_ai_gateway_auth_limit_refusals_total{limit="usd_per_day"}`] - refusedBefore; got != 2 {
		t.Errorf(`limit_refusals_total{limit="usd_per_day"} grew by %v, want 2`, got)
	}
	if got := metrics[`caddy_ai_gateway_auth_client_cost_total{client="key:budget"}`]; billed > 0.005 || math.Abs(got-billed) > usdTolerance {
		t.Errorf(`client_cost_total{client="key:budget"} = %v, want the %v billed, at most 0.005`, got, billed)
	}

	t.Run("usd_per_month", func(t *testing.T) {
		now := time.Now().UTC()
		first := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		if first.Sub(now) < 2*time.Minute {
			t.Skip("the month ends within 2 minutes")
		}
		pm, secret := signedKeysProxy(t, gw.URL(), apiKey, "gateway "+gw.URL()+"\n\t\tlimits {\n\t\t\tusd_per_month 0.003\n\t\t}")
		waitCatalog(t, pm, signedClientKey("warm-up", secret), chatBody)
		_, ac := sdkClients(t, pm.URL, signedClientKey("monthly", secret))
		var err error
		for range 10 {
			if _, err = ac.Messages.New(ctx, msg); err != nil {
				break
			}
		}
		var ae *anthropic.Error
		if !errors.As(err, &ae) {
			t.Fatalf("never refused: %v", err)
		}
		ra, raErr := strconv.Atoi(ae.Response.Header.Get("Retry-After"))
		want := time.Until(first).Seconds()
		if ae.StatusCode != http.StatusTooManyRequests || ae.Response.Header.Get("X-Ai-Gateway-Auth-Error") != "usd_per_month_exceeded" ||
			raErr != nil || math.Abs(float64(ra)-want) > 60 {
			t.Errorf("got %d %q Retry-After %q; want 429 usd_per_month_exceeded, Retry-After about %.0f s (the 1st, 00:00 UTC)",
				ae.StatusCode, ae.Response.Header.Get("X-Ai-Gateway-Auth-Error"), ae.Response.Header.Get("Retry-After"), want)
		}
	})
}
