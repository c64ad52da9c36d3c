package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
// finish_reason chunk, before the usage chunk. Each is charged exactly
// what the gateway reported (the status route's figure, no estimate),
// and refused once its next worst case does not fit what is left. A
// client that hangs up mid-stream is charged its worst case, marked
// estimated.
func TestTokensPerDayHoldsAgainstClients(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.VaryUsage()
	// a few requests' worth (usage: 5-101 input, 2-14 output tokens); each
	// reserves its body's bytes / 4 plus the default cap of 20
	const perDay, outCap = 200, 20
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t\tdefault_max_tokens %d\n\t\t}", perDay, outCap))
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
	// with 429 tokens_per_day_exceeded, whose worst case (at most
	// maxWorst(i) for the i-th request) does not fit what is left; it
	// fails if that does not happen by the time it must have, and when
	// what the proxy charged is not exactly what the gateway reported.
	untilRefused := func(name string, maxWorst func(i int) int, send func(i int) (limited bool)) {
		t.Helper()
		for i := 0; ; i++ {
			if send(i) {
				if got := reported(name); got+maxWorst(i) <= perDay {
					t.Errorf("%s: refused after %d tokens, when %d more still fit in %d", name, got, maxWorst(i), perDay)
				}
				break
			}
			if i > perDay/7 { // each request uses at least 7 tokens
				t.Fatalf("%s: never refused; the gateway reported %d tokens for it, its limit is %d", name, reported(name), perDay)
			}
		}
		if c, raw := settledBudget(t, p, "key:"+name); c.Today.Tokens != int64(reported(name)) || c.Today.EstimatedTokens != 0 {
			t.Errorf("%s: charged %+v, want exactly the %d tokens the gateway reported: %s", name, c.Today, reported(name), raw)
		}
	}
	// an SDK's body: its JSON around the content, with room to spare
	sdkWorst := func(i int) int { return (200+i+3)/4 + outCap }

	t.Run("openai-go stream without include_usage", func(t *testing.T) {
		oc := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(key("sdk")), option.WithHTTPClient(tc.HTTP),
			option.WithMaxRetries(0), option.WithHeader("X-Test-Client", "sdk"))
		untilRefused("sdk", sdkWorst, func(i int) bool {
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

	gzipBody := func(i int) string {
		return fmt.Sprintf(`{"model":"openai/gpt-5","messages":[{"role":"user","content":%q}]}`, strings.Repeat("y", i))
	}
	t.Run("asks for gzip", func(t *testing.T) {
		untilRefused("gzip", func(i int) int { return (len(gzipBody(i))+3)/4 + outCap }, func(i int) bool {
			res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{
				"Authorization": "Bearer " + key("gzip"), "Accept-Encoding": "gzip", "X-Test-Client": "gzip",
			}, gzipBody(i))
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

	t.Run("hangs up after finish_reason", func(t *testing.T) {
		before := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`)
		untilRefused("hangup", func(i int) int { return (len(hangUpBody(i))+3)/4 + outCap }, func(i int) bool {
			status := hangUpAfter(t, p.URL, key("hangup"), "hangup", gw, i, `"finish_reason":"stop"`)
			return status == http.StatusTooManyRequests
		})
		if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`); got != before {
			t.Errorf("usage_estimates_total{reason=client_gone} grew by %v: a hang-up after finish_reason was estimated", got-before)
		}
	})

	t.Run("hangs up mid-stream", func(t *testing.T) {
		before := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`)
		if status := hangUpAfter(t, p.URL, key("early"), "early", gw, 0, `"content":" from"`); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		worst := int64((len(hangUpBody(0))+3)/4 + outCap)
		eventually(t, waitTimeout, "the early hang-up is charged its worst case", func() string {
			if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="client_gone"}`); got != before+1 {
				return fmt.Sprintf("usage_estimates_total{reason=client_gone} = %v, want %v", got, before+1)
			}
			if c, raw := clientBudget(t, p, "key:early"); c.Today.Tokens != worst || c.Today.EstimatedTokens != worst {
				return fmt.Sprintf("charged %+v, want %d tokens, estimated: %s", c.Today, worst, raw)
			}
			return ""
		})
	})
}

// hangUpBody is hangUpAfter's i-th request body.
func hangUpBody(i int) string {
	return fmt.Sprintf(`{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Repeat("z", i))
}

// hangUpAfter streams a chat completion as a raw client, paced by the
// fake gateway's acknowledgements (one per event read from the decoded
// body), and closes the connection as soon as it has read the event
// containing marker; only then is the gateway let go on (after a moment
// for the proxy to see the hang-up). It returns the status.
func hangUpAfter(t *testing.T, base, key, name string, gw *fakeGateway, i int, marker string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ack := fmt.Sprintf("%s-%d-%d", name, i, time.Now().UnixNano())
	body := hangUpBody(i)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Test-Client: %s\r\n%s: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", conn.RemoteAddr(), key, name, ackHeader, ack, len(body), body)
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode
	}
	events := bufio.NewReader(resp.Body) // the chunked framing decoded: events only
	for {
		var event strings.Builder
		for { // one event: lines up to a blank one
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("the stream ended before %s: %v", marker, err)
			}
			if strings.TrimSpace(line) == "" {
				break
			}
			event.WriteString(line)
		}
		if strings.Contains(event.String(), marker) {
			break
		}
		gw.Ack(ack) // let the gateway send the next event
	}
	conn.Close()
	time.Sleep(200 * time.Millisecond) // the proxy sees the hang-up (a slow machine only makes this test weaker)
	for range 10 {
		gw.Ack(ack) // the rest: the usage chunk and [DONE], if the proxy still reads
	}
	return http.StatusOK
}
