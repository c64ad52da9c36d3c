package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSSEIsNotBuffered proves that the proxy passes SSE through as the
// gateway writes it: the fake gateway writes one event, flushes, and
// writes the next only after the client has acknowledged receiving the
// previous one. A proxy that buffered the response (or any part of it)
// would stall the stream, which the gateway records and the client sees
// as a truncated stream.
func TestSSEIsNotBuffered(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	oidcTok := v.Token(time.Hour)
	gw := newFakeGateway(t, v, apiKey)
	// Both kinds of source: requests with a refreshable credential take
	// another path through the handler (one that can replay after a 401).
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey, "VERCEL_OIDC_TOKEN": oidcTok}},
		staticSite(gw.URL()), fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gw.URL()))
	tc := newTestClient(t)
	sites := []struct{ name, url, cred, method string }{
		{"static", p.URLs[0], apiKey, "api-key"},
		{"vercel_oidc", p.URLs[1], oidcTok, "oidc"},
	}

	for _, site := range sites {
		for _, c := range []struct {
			name, path, keyHeader, keyValue, body string
			want                                  []string
		}{
			{"openai", "/v1/chat/completions", "Authorization", "Bearer sk-placeholder",
				`{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
				chatCompletionEvents("openai/gpt-5")},
			{"anthropic", "/v1/messages", "X-Api-Key", "sk-placeholder",
				`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
				anthropicEvents("anthropic/claude-sonnet-4")},
		} {
			t.Run(site.name+"/"+c.name, func(t *testing.T) {
				id := c.name + "-" + randomString(8)
				ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, site.url+c.path, strings.NewReader(c.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set(c.keyHeader, c.keyValue)
				req.Header.Set(ackHeader, id)
				resp, err := tc.HTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				sr := &sseReader{r: bufio.NewReader(resp.Body)}
				for i, want := range c.want {
					ev, err := sr.next()
					if err != nil {
						t.Fatalf("event %d of %d: %v (gateway: %v)", i+1, len(c.want), err, gw.Stalls())
					}
					if ev+"\n" != want {
						t.Fatalf("event %d is %q, want %q", i+1, ev, want)
					}
					gw.Ack(id) // only now may the gateway write the next event
				}
				if ev, err := sr.next(); err != io.EOF {
					t.Errorf("after the last event: %q, %v; want the end of the stream", ev, err)
				}
				if s := gw.Stalls(); len(s) > 0 {
					t.Errorf("the stream stalled: %v", s)
				}
				assertForwarded(t, lastRequest(t, gw), site.cred, site.method)
			})
		}
	}
}
