package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestBodyAttributionIsTheProxys: with reporting, a sandbox that writes
// someone else into its body (Chat Completions' user,
// providerOptions.gateway.user, .tags and .quotaEntityId) reaches AI
// Gateway as itself; everything else in the body passes as sent. A body
// that spells one of them otherwise (escaped, in capitals) is refused and
// the gateway never sees it. (Before, a request from alice with
// "user":"bob" arrived saying bob, and with "us\u0065r":"bob" too.)
func TestBodyAttributionIsTheProxys(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "reporting {\n\t\t\ttags sandboxes\n\t\t}")
	tc := newTestClient(t)
	alice := map[string]string{"Authorization": "Bearer " + signedClientKey("alice", secret)}
	body := `{"model":"openai/gpt-5","user":"bob","messages":[{"role":"user","content":"hi"}],"providerOptions":{"gateway":{"order":["bedrock"],"user":"bob","tags":["team-b"],"quotaEntityId":"api_key_of_bob"}}}`
	if res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", alice, body); res.Status != http.StatusOK {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	r := lastRequest(t, gw)
	if r.Read.User != "key:alice" {
		t.Errorf("the gateway read user %v, want alice's id: %s", r.Read.User, r.Body)
	}
	if g := r.Read.Gateway; g["user"] != "key:alice" || g["tags"] != nil || g["quotaEntityId"] != nil {
		t.Errorf("the gateway read providerOptions.gateway %v, want user key:alice and no tags nor quotaEntityId", g)
	}
	if !strings.Contains(string(r.Body), `"order":["bedrock"]`) {
		t.Errorf("providerOptions.gateway.order changed: %s", r.Body)
	}
	if r.Header.Get("Ai-Reporting-User") != "key:alice" {
		t.Errorf("ai-reporting-user %q", r.Header.Get("Ai-Reporting-User"))
	}

	before := len(gw.Requests())
	for _, body := range []string{
		`{"model":"openai/gpt-5","us\u0065r":"bob","messages":[]}`,
		`{"model":"openai/gpt-5","USER":"bob","messages":[]}`,
		`{"model":"openai/gpt-5","messages":[],"providerOptions":{"gateway":{"QuotaEntityId":"api_key_of_bob"}}}`,
	} {
		res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", alice, body)
		if res.Status != http.StatusBadRequest || res.Header.Get("X-Ai-Gateway-Auth-Error") != "invalid_request_body" {
			t.Errorf("%s: status %d: %s", body, res.Status, res.Body)
		}
	}
	if n := len(gw.Requests()); n != before {
		t.Errorf("the gateway got %d of the refused bodies", n-before)
	}
}

// TestTokensPerDayHoldsAgainstClients: tokens_per_day holds for a
// client that streams without asking for usage (the openai-go SDK's
// default; it still gets a well-formed stream with no extra chunk), one
// that asks for gzip, and one that hangs up right after the
// finish_reason chunk, before the usage chunk. Each is counted exactly
// what the gateway reported, and refused once over its day's tokens.
// (Before, the first and the last counted 0 tokens and were never
// refused.) A client that hangs up mid-stream is charged an estimate.
func TestTokensPerDayHoldsAgainstClients(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.VaryUsage()
	const perDay = 60 // a few requests' worth (usage: 5-101 input, 2-14 output tokens)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t}", perDay))
	tc := newTestClient(t)
	key := func(name string) string { return signedClientKey(name, secret) }

	// reported sums what the gateway reported for a client's requests.
	reported := func(name string) (sum int) {
		for _, r := range gw.Requests() {
			if r.Header.Get("X-Test-Client") == name {
				sum += r.Usage.Input + r.Usage.Output
			}
		}
		return sum
	}
	// untilRefused sends a client's requests until the proxy refuses one
	// with 429 tokens_per_day_exceeded; it fails if that does not happen
	// by the time the client must be over its limit.
	untilRefused := func(name string, send func(i int) (limited bool)) {
		t.Helper()
		for i := 0; ; i++ {
			if send(i) {
				if got := reported(name); got < perDay {
					t.Errorf("%s: refused after %d tokens, before its %d", name, got, perDay)
				}
				return
			}
			if i > 2*perDay { // each request uses at least 7 tokens
				t.Fatalf("%s: never refused; the gateway reported %d tokens for it, its limit is %d", name, reported(name), perDay)
			}
		}
	}

	t.Run("openai-go stream without include_usage", func(t *testing.T) {
		oc := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(key("sdk")), option.WithHTTPClient(tc.HTTP),
			option.WithMaxRetries(0), option.WithHeader("X-Test-Client", "sdk"))
		untilRefused("sdk", func(i int) bool {
			stream := oc.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
				Model:    "openai/gpt-5",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(strings.Repeat("x", i))},
			})
			var text strings.Builder
			finished := false
			for stream.Next() {
				c := stream.Current()
				if len(c.Choices) == 0 {
					t.Fatalf("the client got a chunk without choices it did not ask for: %s", c.RawJSON())
				}
				if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
					t.Fatalf("the client got usage it did not ask for: %s", c.RawJSON())
				}
				text.WriteString(c.Choices[0].Delta.Content)
				finished = finished || c.Choices[0].FinishReason != ""
			}
			if err := stream.Err(); err != nil {
				var apiErr *openai.Error
				if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests {
					return true
				}
				t.Fatalf("stream: %v", err)
			}
			if text.String() != answerText || !finished {
				t.Fatalf("the stream said %q (finished %v), want %q", text.String(), finished, answerText)
			}
			return false
		})
	})

	t.Run("asks for gzip", func(t *testing.T) {
		untilRefused("gzip", func(i int) bool {
			res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{
				"Authorization": "Bearer " + key("gzip"), "Accept-Encoding": "gzip", "X-Test-Client": "gzip",
			}, fmt.Sprintf(`{"model":"openai/gpt-5","messages":[{"role":"user","content":%q}]}`, strings.Repeat("y", i)))
			if res.Status == http.StatusTooManyRequests {
				return true
			}
			if res.Status != http.StatusOK {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			body := res.Body
			if res.Header.Get("Content-Encoding") == "gzip" {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if !json.Valid(body) {
				t.Fatalf("invalid JSON answer %q", body)
			}
			return false
		})
	})

	// A client that hangs up once it has the finish_reason chunk, before
	// the gateway has even sent the usage chunk, is charged exactly what
	// the gateway reported, never an estimate: the proxy reads on for the
	// usage after its client left, and the gateway's answer ends whole.
	t.Run("hangs up after finish_reason", func(t *testing.T) {
		const estimates = `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`
		before := readAdminMetric(t, p, estimates)
		charged := func() int {
			in := readAdminMetric(t, p, `caddy_ai_gateway_auth_client_tokens_total{client="key:hangup",direction="input"}`)
			out := readAdminMetric(t, p, `caddy_ai_gateway_auth_client_tokens_total{client="key:hangup",direction="output"}`)
			return int(in + out)
		}
		for i := 0; ; i++ {
			status, ack := hangUpAfter(t, p.URL, key("hangup"), "hangup", gw, i, `"finish_reason":"stop"`, true)
			if status == http.StatusTooManyRequests {
				if got := reported("hangup"); got < perDay {
					t.Errorf("refused after %d tokens, before its %d", got, perDay)
				}
				return
			}
			if status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			eventually(t, waitTimeout, "the hang-up is charged what the gateway reported", func() string {
				answer := gatewayAnswer(gw, ack)
				if strings.HasPrefix(answer, "client gone") {
					t.Fatalf("the gateway's answer: %s: the proxy stopped reading it when its client left", answer)
				}
				if got, want := charged(), reported("hangup"); answer != "complete" || got != want {
					return fmt.Sprintf("charged %d tokens, the gateway reported %d (its answer: %q)", got, want, answer)
				}
				return ""
			})
			if got := readAdminMetric(t, p, estimates); got != before {
				t.Fatalf("usage_estimates_total{reason=client_gone} went from %v to %v: a hang-up after finish_reason was estimated", before, got)
			}
			if i > 2*perDay { // each request uses at least 7 tokens
				t.Fatalf("never refused; the gateway reported %d tokens for it, its limit is %d", reported("hangup"), perDay)
			}
		}
	})

	t.Run("hangs up mid-stream", func(t *testing.T) {
		before := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`)
		if status, _ := hangUpAfter(t, p.URL, key("early"), "early", gw, 0, `"content":" from"`, false); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		eventually(t, waitTimeout, "the early hang-up is charged an estimate", func() string {
			if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`); got != before+1 {
				return fmt.Sprintf("usage_estimates_total{reason=client_gone} = %v, want %v", got, before+1)
			}
			if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_client_estimated_tokens_total{client="key:early",direction="input"}`); got <= 0 {
				return fmt.Sprintf("estimated input tokens %v", got)
			}
			return ""
		})
	})
}

// hangUpAfter streams a chat completion paced by the fake gateway, which
// writes each event only once the client has acknowledged the one before
// (ackHeader): the client reads the events through its HTTP response
// body, acknowledging each, until the one that contains marker; then it
// hangs up (closes the connection) with the gateway's next event not yet
// written. With release, the gateway is let go on after that, once the
// proxy has had time to see the hang-up (hangUpGrace; or sooner, if the
// proxy cancelled the gateway's answer). It returns the status and the
// stream's ack id.
func hangUpAfter(t *testing.T, base, key, name string, gw *fakeGateway, i int, marker string, release bool) (int, string) {
	t.Helper()
	ack := fmt.Sprintf("%s-%d-%d", name, i, time.Now().UnixNano())
	body := fmt.Sprintf(`{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Repeat("z", i))
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Authorization": {"Bearer " + key}, "X-Test-Client": {name}, ackHeader: {ack}, "Content-Type": {"application/json"}}
	// closing the body closes the connection; no gzip, which would hold
	// the events back
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return resp.StatusCode, ack
	}
	br := bufio.NewReader(resp.Body)
	for {
		event := readEvent(t, br, marker)
		if strings.Contains(event, marker) {
			break
		}
		gw.Ack(ack) // the client has it: the gateway may send the next
	}
	resp.Body.Close() // the hang-up: the gateway's next event waits for an ack
	if !release {
		return http.StatusOK, ack
	}
	// The proxy sees the hang-up at once on loopback (net/http cancels
	// the request's context when the connection closes); a proxy that
	// then cancels its upstream request ends the gateway's answer, and
	// the wait ends there. A slow machine only makes this test weaker.
	for deadline := time.Now().Add(hangUpGrace); time.Now().Before(deadline) && gatewayAnswer(gw, ack) == ""; {
		time.Sleep(10 * time.Millisecond)
	}
	for range 10 {
		gw.Ack(ack) // the rest: the usage chunk and [DONE], if the proxy still reads
	}
	return http.StatusOK, ack
}

// hangUpGrace is how long hangUpAfter gives the proxy to see its client
// hang up before the gateway goes on.
const hangUpGrace = 500 * time.Millisecond

// readEvent reads one SSE event (its lines up to a blank one) from a
// response body.
func readEvent(t *testing.T, br *bufio.Reader, marker string) string {
	t.Helper()
	var event strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended before %s: %v", marker, err)
		}
		if strings.TrimSpace(line) != "" {
			event.WriteString(line)
		} else if event.Len() > 0 {
			return event.String()
		}
	}
}

// gatewayAnswer is how the gateway's answer to the stream named ack
// ended (gatewayRequest.Answer), "" while it is being answered.
func gatewayAnswer(gw *fakeGateway, ack string) string {
	for _, r := range gw.Requests() {
		if r.Header.Get(ackHeader) == ack {
			return r.Answer
		}
	}
	return ""
}
