package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// scrapeMetrics returns Caddy's /metrics as series -> value.
func scrapeMetrics(t *testing.T, p *caddyProc) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		f, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = f
	}
	return out
}

// sdkClients are the two SDKs pointed at the proxy with a client key,
// retries off (they would retry a 429), sending forged reporting headers.
func sdkClients(t *testing.T, base, key string) (openai.Client, anthropic.Client) {
	tc := newTestClient(t)
	oc := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey(key), option.WithHTTPClient(tc.HTTP),
		option.WithMaxRetries(0),
		option.WithHeader("ai-reporting-user", "someone-else"), option.WithHeader("AI-Reporting-Tags", "forged"))
	ac := anthropic.NewClient(aoption.WithBaseURL(base), aoption.WithAPIKey(key), aoption.WithHTTPClient(tc.HTTP),
		aoption.WithMaxRetries(0),
		aoption.WithHeader("Ai-Reporting-User", "someone-else"), aoption.WithHeader("ai_reporting_tags", "forged"))
	return oc, ac
}

// TestSpendPerClient: three sandboxes (signed keys) use every API the
// proxy meters, streamed and not, through the real SDKs. The gateway sees
// each request stamped with the sandbox's name and the configured tag,
// never the headers the client forged; the per-client token and cost
// counters in /metrics equal, exactly, the sums of what the gateway
// reported to each; the access log line carries the usage placeholders;
// the status route lists the clients.
func TestSpendPerClient(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.VaryUsage()
	secret := newClientKeySecret()
	logFile := filepath.Join(t.TempDir(), "access.log")
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret, "DEPLOY_ENV": "ci"}},
		fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		reporting {
			tags sandboxes {env.DEPLOY_ENV}
		}
	}
	reverse_proxy %s
	log {
		output file %s
		format json
	}
	log_append client {ai_gateway_auth.client}
	log_append input_tokens {ai_gateway_auth.usage.input_tokens}
	log_append output_tokens {ai_gateway_auth.usage.output_tokens}`, gw.URL(), logFile))

	ctx := t.Context()
	names := []string{"sandbox-a", "sandbox-b", "sandbox-c"}
	for i, name := range names {
		oc, ac := sdkClients(t, p.URL, signedClientKey(name, secret))
		prompt := strings.Repeat("Say hello. ", i*5+1) // a different usage per client
		for _, stream := range []bool{false, true} {
			chat := openai.ChatCompletionNewParams{Model: "openai/gpt-5",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}}
			resp := responses.ResponseNewParams{Model: "openai/gpt-5", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)}}
			msg := anthropic.MessageNewParams{Model: "anthropic/claude-sonnet-4", MaxTokens: 64,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))}}
			if !stream {
				if _, err := oc.Chat.Completions.New(ctx, chat, option.WithHeader("X-Test-Id", name+"-chat")); err != nil {
					t.Fatalf("%s chat: %v", name, err)
				}
				if r, err := oc.Responses.New(ctx, resp); err != nil || r.OutputText() != answerText {
					t.Fatalf("%s responses: %v", name, err)
				}
				if _, err := ac.Messages.New(ctx, msg); err != nil {
					t.Fatalf("%s messages: %v", name, err)
				}
				continue
			}
			chat.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			cs := oc.Chat.Completions.NewStreaming(ctx, chat)
			var acc openai.ChatCompletionAccumulator
			for cs.Next() {
				acc.AddChunk(cs.Current())
			}
			if err := cs.Err(); err != nil || acc.Usage.PromptTokens == 0 {
				t.Fatalf("%s chat stream: %v (usage %+v)", name, err, acc.Usage)
			}
			rs := oc.Responses.NewStreaming(ctx, resp)
			completed := false
			for rs.Next() {
				completed = completed || rs.Current().Type == "response.completed"
			}
			if err := rs.Err(); err != nil || !completed {
				t.Fatalf("%s responses stream: %v (completed %v)", name, err, completed)
			}
			ms := ac.Messages.NewStreaming(ctx, msg)
			var m anthropic.Message
			for ms.Next() {
				if err := m.Accumulate(ms.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := ms.Err(); err != nil {
				t.Fatalf("%s messages stream: %v", name, err)
			}
		}
	}

	// What the gateway reported, by the user it saw.
	type sums struct{ in, out, cost float64 }
	reported := map[string]*sums{}
	for _, r := range gw.Requests() {
		user := r.Header.Values("Ai-Reporting-User")
		if len(user) != 1 || r.Header.Get("Ai-Reporting-Tags") != "sandboxes,ci" || len(r.Header.Values("Ai-Reporting-Tags")) != 1 {
			t.Errorf("%s %s: gateway got ai-reporting-user %q, ai-reporting-tags %q; want the client's id and \"sandboxes,ci\"",
				r.Method, r.Path, user, r.Header.Values("Ai-Reporting-Tags"))
			continue
		}
		for k := range r.Header {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "ai-reporting-tags") && k != "Ai-Reporting-Tags" {
				t.Errorf("a forged %s reached the gateway", k)
			}
		}
		s := reported[user[0]]
		if s == nil {
			s = &sums{}
			reported[user[0]] = s
		}
		s.in += float64(r.Usage.Input)
		s.out += float64(r.Usage.Output)
		s.cost += r.Usage.Cost
	}
	metrics := scrapeMetrics(t, p)
	for _, name := range names {
		id := "key:" + name // reports, metrics and the status count by id
		want := reported[id]
		if want == nil || want.in == 0 {
			t.Fatalf("the gateway reported nothing for %s", id)
		}
		for series, v := range map[string]float64{
			`caddy_ai_gateway_auth_client_tokens_total{client="` + id + `",direction="input"}`:  want.in,
			`caddy_ai_gateway_auth_client_tokens_total{client="` + id + `",direction="output"}`: want.out,
			`caddy_ai_gateway_auth_client_cost_total{client="` + id + `"}`:                      want.cost,
			`caddy_ai_gateway_auth_client_requests_total{client="` + id + `"}`:                  6,
		} {
			// dollars are counted in nano-dollars, rounded per answer
			if got, ok := metrics[series]; !ok || math.Abs(got-v) > usdTolerance {
				t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
			}
		}
	}

	// The access log line of the first chat request shows its usage.
	var chatA gatewayRequest
	for _, r := range gw.Requests() {
		if r.Header.Get("X-Test-Id") == "sandbox-a-chat" {
			chatA = r
		}
	}
	eventually(t, waitTimeout, "the access log has the request", func() string {
		e := accessLogEntry(caddyLogEntries(readFileString(t, logFile), ""), "sandbox-a-chat")
		if e == nil {
			return "no entry yet"
		}
		if e["client"] != "sandbox-a" || e["input_tokens"] != float64(chatA.Usage.Input) || e["output_tokens"] != float64(chatA.Usage.Output) {
			return fmt.Sprintf("entry has client %v, input_tokens %v, output_tokens %v; want sandbox-a, %d, %d",
				e["client"], e["input_tokens"], e["output_tokens"], chatA.Usage.Input, chatA.Usage.Output)
		}
		return ""
	})

	resp, err := http.Get(p.Admin + "/ai_gateway_auth/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status struct {
		TopClientsToday []struct {
			Client       string `json:"client"`
			Requests     int    `json:"requests"`
			InputTokens  int    `json:"input_tokens"`
			OutputTokens int    `json:"output_tokens"`
		} `json:"top_clients_today"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	if len(status.TopClientsToday) != 3 || status.TopClientsToday[0].Client != "key:sandbox-c" ||
		float64(status.TopClientsToday[0].InputTokens) != reported["key:sandbox-c"].in {
		t.Errorf("status top_clients_today = %+v; want the three sandboxes, sandbox-c (the longest prompts) first", status.TopClientsToday)
	}
}

// TestLimitsWithSDKs: over requests_per_minute or tokens_per_day, the
// real SDKs get a rate limit error they understand (status 429, the
// rate_limit_error type, Retry-After), the gateway never sees the
// request, and the refusals are counted by limit.
func TestLimitsWithSDKs(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey) // every answer: 10 input + 6 output tokens
	secret := newClientKeySecret()
	site := func(limits string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		limits {
			%s
		}
	}
	reverse_proxy %s`, limits, gw.URL())
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret}},
		site("requests_per_minute 2"), site("tokens_per_day 58\n\t\t\tdefault_max_tokens 10"))
	ctx := t.Context()
	chat := openai.ChatCompletionNewParams{Model: "openai/gpt-5", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	msg := anthropic.MessageNewParams{Model: "anthropic/claude-sonnet-4", MaxTokens: 8,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}

	checkOpenAI := func(t *testing.T, err error, code string) {
		t.Helper()
		var e *openai.Error
		if !errors.As(err, &e) {
			t.Fatalf("got %v, want an *openai.Error", err)
		}
		if e.StatusCode != http.StatusTooManyRequests || e.Type != "rate_limit_error" || e.Code != code || e.Response.Header.Get("Retry-After") == "" {
			t.Errorf("got %d %q %q Retry-After %q; want 429 rate_limit_error %s with Retry-After",
				e.StatusCode, e.Type, e.Code, e.Response.Header.Get("Retry-After"), code)
		}
		if code == "tokens_per_day_exceeded" && !strings.Contains(e.Message, "send it with a lower output cap (max_tokens)") {
			t.Errorf("the message does not tell the agent to lower its cap: %q", e.Message)
		}
	}
	checkAnthropic := func(t *testing.T, err error) {
		t.Helper()
		var e *anthropic.Error
		if !errors.As(err, &e) {
			t.Fatalf("got %v, want an *anthropic.Error", err)
		}
		if e.StatusCode != http.StatusTooManyRequests || e.Type() != "rate_limit_error" || e.Response.Header.Get("Retry-After") == "" {
			t.Errorf("got %d %q Retry-After %q; want 429 rate_limit_error with Retry-After", e.StatusCode, e.Type(), e.Response.Header.Get("Retry-After"))
		}
	}

	t.Run("requests_per_minute", func(t *testing.T) {
		oc, _ := sdkClients(t, p.URLs[0], signedClientKey("rpm-openai", secret))
		_, ac := sdkClients(t, p.URLs[0], signedClientKey("rpm-anthropic", secret))
		for i := 1; i <= 2; i++ {
			if _, err := oc.Chat.Completions.New(ctx, chat); err != nil {
				t.Fatalf("openai request %d: %v", i, err)
			}
			if _, err := ac.Messages.New(ctx, msg); err != nil {
				t.Fatalf("anthropic request %d: %v", i, err)
			}
		}
		before := len(gw.Requests())
		_, err := oc.Chat.Completions.New(ctx, chat)
		checkOpenAI(t, err, "requests_per_minute_exceeded")
		stream := ac.Messages.NewStreaming(ctx, msg)
		for stream.Next() {
		}
		checkAnthropic(t, stream.Err())
		gatewayUntouched(t, gw, before, "over requests_per_minute")
	})

	tpdRefusals := 2.0
	t.Run("tokens_per_day", func(t *testing.T) {
		if nearUTCMidnight(time.Now()) {
			tpdRefusals = 0
			t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
		}
		oc, ac := sdkClients(t, p.URLs[1], signedClientKey("tpd", secret))
		// each reserves its body's bytes / 4 plus its cap (10 by default,
		// 8 for the Anthropic one: 27 and 39 tokens) and is charged 16
		if _, err := oc.Chat.Completions.New(ctx, chat); err != nil { // 0 + 27 fit in 58
			t.Fatal(err)
		}
		if _, err := ac.Messages.New(ctx, msg); err != nil { // 16 + 39 fit
			t.Fatal(err)
		}
		// 32 spent: neither 27 nor 39 fits what is left
		before := len(gw.Requests())
		_, err := oc.Chat.Completions.New(ctx, chat)
		checkOpenAI(t, err, "tokens_per_day_exceeded")
		_, err = ac.Messages.New(ctx, msg)
		checkAnthropic(t, err)
		gatewayUntouched(t, gw, before, "over tokens_per_day")
	})

	metrics := scrapeMetrics(t, p)
	for series, want := range map[string]float64{
		`caddy_ai_gateway_auth_limit_refusals_total{limit="requests_per_minute"}`: 2,
		`caddy_ai_gateway_auth_limit_refusals_total{limit="tokens_per_day"}`:      tpdRefusals,
		`caddy_ai_gateway_auth_requests_total{outcome="limited"}`:                 2 + tpdRefusals,
	} {
		if got := metrics[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// nearUTCMidnight reports whether now is within 2 minutes of a UTC
// midnight, when a check of the day's tokens on the real clock could see
// the day change between its requests.
func nearUTCMidnight(now time.Time) bool {
	since := now.UTC().Sub(now.UTC().Truncate(24 * time.Hour))
	return since < 2*time.Minute || since > 24*time.Hour-2*time.Minute
}

func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}
