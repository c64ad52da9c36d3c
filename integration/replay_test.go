package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// replaySite is a site block: the proxy minting OIDC tokens from the fake
// Vercel API (its only source), with extra handler options.
func replaySite(v *fakeVercel, gw, handlerExtra string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
			forced_refresh_interval %s
		}
		client_key sk-placeholder
		%s
	}
	reverse_proxy %s`, mintBlock(v.URL()), replayForcedInterval, handlerExtra, gw)
}

// replayForcedInterval is the replay sites' forced_refresh_interval:
// short, so that a test can revoke one token after another, waiting this
// long between revocations (a lower bound, whatever the machine's speed).
const replayForcedInterval = 200 * time.Millisecond

// sdkCall is one request made with a real SDK; it returns an error unless
// the whole answer arrived.
type sdkCall struct {
	name string
	do   func(ctx context.Context) error
}

// sdkCalls are the four ways agents call the gateway: OpenAI and Anthropic
// SDKs, streamed and not, all with sk-placeholder and with retries as
// given (0: the client sees exactly what the proxy answered).
func sdkCalls(base string, hc *http.Client, retries int) []sdkCall {
	oc := openai.NewClient(
		option.WithBaseURL(base+"/v1/"),
		option.WithAPIKey("sk-placeholder"),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(retries),
	)
	ac := anthropic.NewClient(
		aoption.WithBaseURL(base),
		aoption.WithAPIKey("sk-placeholder"),
		aoption.WithHTTPClient(hc),
		aoption.WithMaxRetries(retries),
	)
	chat := openai.ChatCompletionNewParams{
		Model:    "openai/gpt-5",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
	}
	msg := anthropic.MessageNewParams{
		Model:     "anthropic/claude-sonnet-4",
		MaxTokens: 1024,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello"))},
	}
	return []sdkCall{
		{"openai", func(ctx context.Context) error {
			res, err := oc.Chat.Completions.New(ctx, chat)
			if err != nil {
				return err
			}
			if len(res.Choices) != 1 || res.Choices[0].Message.Content != answerText {
				return fmt.Errorf("got %+v, want one choice saying %q", res.Choices, answerText)
			}
			return nil
		}},
		{"openai-stream", func(ctx context.Context) error {
			stream := oc.Chat.Completions.NewStreaming(ctx, chat)
			defer stream.Close()
			var text strings.Builder
			for stream.Next() {
				if c := stream.Current(); len(c.Choices) > 0 {
					text.WriteString(c.Choices[0].Delta.Content)
				}
			}
			if err := stream.Err(); err != nil {
				return err
			}
			if text.String() != answerText {
				return fmt.Errorf("streamed %q, want %q", text.String(), answerText)
			}
			return nil
		}},
		{"anthropic", func(ctx context.Context) error {
			m, err := ac.Messages.New(ctx, msg)
			if err != nil {
				return err
			}
			if len(m.Content) != 1 || m.Content[0].Text != answerText {
				return fmt.Errorf("got content %+v, want %q", m.Content, answerText)
			}
			return nil
		}},
		{"anthropic-stream", func(ctx context.Context) error {
			stream := ac.Messages.NewStreaming(ctx, msg)
			defer stream.Close()
			var m anthropic.Message
			for stream.Next() {
				if err := m.Accumulate(stream.Current()); err != nil {
					return err
				}
			}
			if err := stream.Err(); err != nil {
				return err
			}
			if len(m.Content) != 1 || m.Content[0].Text != answerText {
				return fmt.Errorf("streamed content %+v, want %q", m.Content, answerText)
			}
			return nil
		}},
	}
}

// successfulMints counts the mint calls the fake Vercel answered with a
// token.
func successfulMints(v *fakeVercel) int {
	n := 0
	for _, m := range v.Mints() {
		if m.Status == http.StatusOK {
			n++
		}
	}
	return n
}

// TestReplayAfterRevocation: the gateway revokes the token the proxy is
// using, in the middle of a run. Clients using the real OpenAI and
// Anthropic SDKs, streamed and not, one at a time and eight at once, see
// only 200s: the proxy replays each refused request once with a freshly
// minted token, and one revocation costs exactly one mint however many
// requests it hit. A body larger than retry_body_limit (with or without a
// Content-Length) is not replayed and the client gets the gateway's 401;
// a replayed SSE stream still flows event by event; a static API key's
// 401 is passed through, sent upstream once. The metrics count the
// replays and the refreshes. (The OIDC site reaches the gateway through
// a gate that can hold the refused requests until all have arrived, so
// that eight really are refused with the same token.)
func TestReplayAfterRevocation(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	apiKey := newAPIKey()
	gwStatic := newFakeGateway(t, nil, apiKey)
	env := mintEnv(v)
	env["AI_GATEWAY_API_KEY"] = apiKey
	const bodyLimit = 16 << 10
	gate := newGatedUpstream(t, gw.URL())
	p := startCaddy(t, caddyOptions{Env: env},
		replaySite(v, gate.srv.URL, "retry_body_limit 16KiB"),
		staticSite(gwStatic.URL()))
	oidcURL, staticURL := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)
	calls := sdkCalls(oidcURL, tc.HTTP, 0)
	ctx := t.Context()

	if err := calls[0].do(ctx); err != nil {
		t.Fatalf("first request: %v", err)
	}
	if n := successfulMints(v); n != 1 {
		t.Fatalf("%d mints for the first request, want 1", n)
	}
	replays := 0 // how many replays the tests below cause

	// revokeCurrent revokes the token the gateway saw last and returns it
	// with the number of requests the gateway has received so far.
	revokeCurrent := func(t *testing.T) (string, int) {
		t.Helper()
		reqs := gw.Requests()
		last := reqs[len(reqs)-1]
		if last.Status != http.StatusOK || last.AuthMethod != "oidc" {
			t.Fatalf("the gateway's last request was answered %d (%s), want a 200 with an OIDC token", last.Status, last.Reject)
		}
		// one forced refresh per interval: the previous revocation's
		// must be at least that long ago
		time.Sleep(replayForcedInterval)
		gw.Revoke(last.Credential)
		return last.Credential, len(reqs)
	}
	// checkReplayed checks that the gateway got the request twice: first
	// with the revoked token (401), then, identical but for a freshly
	// minted token, answered 200.
	checkReplayed := func(t *testing.T, reqs []gatewayRequest, revoked string) {
		t.Helper()
		if len(reqs) != 2 {
			t.Fatalf("the gateway got %d requests, want 2 (the refused one and its replay)", len(reqs))
		}
		first, second := reqs[0], reqs[1]
		if first.Status != http.StatusUnauthorized || first.Credential != revoked {
			t.Errorf("first attempt: status %d, revoked token: %v; want 401 with the revoked token", first.Status, first.Credential == revoked)
		}
		if second.Status != http.StatusOK || second.Credential == revoked {
			t.Errorf("replay: status %d (%s), revoked token again: %v; want 200 with a fresh token", second.Status, second.Reject, second.Credential == revoked)
		}
		if _, ok := v.expOf(second.Credential); !ok {
			t.Error("the replay carried a token the fake Vercel did not mint")
		}
		assertForwarded(t, second, second.Credential, "oidc")
		if first.Method != second.Method || first.Path != second.Path || first.RawQuery != second.RawQuery || string(first.Body) != string(second.Body) {
			t.Errorf("the replay differs from the first attempt: %s %s?%s (%d bytes) vs %s %s?%s (%d bytes)",
				first.Method, first.Path, first.RawQuery, len(first.Body), second.Method, second.Path, second.RawQuery, len(second.Body))
		}
		for _, h := range []string{"Content-Type", "Anthropic-Version", "User-Agent"} {
			if first.Header.Get(h) != second.Header.Get(h) {
				t.Errorf("header %s: %q on the first attempt, %q on the replay", h, first.Header.Get(h), second.Header.Get(h))
			}
		}
	}

	t.Run("sdk one at a time", func(t *testing.T) {
		for _, c := range calls {
			revoked, n := revokeCurrent(t)
			mints := successfulMints(v)
			if err := c.do(ctx); err != nil {
				t.Fatalf("%s after the token was revoked: %v", c.name, err)
			}
			replays++
			checkReplayed(t, gw.Requests()[n:], revoked)
			if got := successfulMints(v); got != mints+1 {
				t.Errorf("%s: %d mints for one revocation, want exactly 1", c.name, got-mints)
			}
		}
	})

	t.Run("sdk eight at once", func(t *testing.T) {
		revoked, n := revokeCurrent(t)
		mints := successfulMints(v)
		// Every request reaches the gateway with the revoked token: none
		// is answered before all have been sent.
		gate.hold(revoked, 2*len(calls))
		start := make(chan struct{})
		errs := make(chan error, 2*len(calls))
		var wg sync.WaitGroup
		for range 2 {
			for _, c := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if err := c.do(ctx); err != nil {
						errs <- fmt.Errorf("%s: %v", c.name, err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("a client request failed after the revocation: %v", err)
		}
		var refused, ok int
		for _, r := range gw.Requests()[n:] {
			switch {
			case r.Status == http.StatusUnauthorized && r.Credential == revoked:
				refused++
			case r.Status == http.StatusOK && r.Credential != revoked:
				ok++
			default:
				t.Errorf("gateway answered %d (%s), revoked token: %v", r.Status, r.Reject, r.Credential == revoked)
			}
		}
		if refused != 2*len(calls) || ok != 2*len(calls) {
			t.Errorf("the gateway refused %d requests and accepted %d, want all %d refused, then accepted", refused, ok, 2*len(calls))
		}
		replays += refused
		if got := successfulMints(v); got != mints+1 {
			t.Errorf("%d mints for one revocation hitting %d requests, want exactly 1", got-mints, refused)
		}
	})

	// bigChat is a chat completion body of about size bytes.
	bigChat := func(size int) string {
		return `{"model":"openai/gpt-5","messages":[{"role":"user","content":"` + strings.Repeat("x", size) + `"}]}`
	}
	// send posts body to the proxy, with a Content-Length or chunked.
	send := func(t *testing.T, body string, chunked bool) response {
		t.Helper()
		var r io.Reader = strings.NewReader(body)
		if chunked {
			r = struct{ io.Reader }{r} // unknown length: Transfer-Encoding: chunked
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, oidcURL+"/v1/chat/completions", r)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer sk-placeholder")
		req.Header.Set("Content-Type", "application/json")
		resp, err := tc.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if chunked != (req.ContentLength <= 0) {
			t.Fatalf("request Content-Length %d, chunked %v", req.ContentLength, chunked)
		}
		return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}

	t.Run("chunked body within the limit", func(t *testing.T) {
		revoked, n := revokeCurrent(t)
		res := send(t, bigChat(bodyLimit*3/4), true)
		if res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		replays++
		checkReplayed(t, gw.Requests()[n:], revoked)
	})

	for _, chunked := range []bool{false, true} {
		name := "body over the limit with Content-Length"
		if chunked {
			name = "chunked body over the limit"
		}
		t.Run(name, func(t *testing.T) {
			revoked, n := revokeCurrent(t)
			mints := successfulMints(v)
			res := send(t, bigChat(bodyLimit+1024), chunked)
			if res.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want the gateway's 401: %s", res.Status, res.Body)
			}
			if e := decodeJSON[openAIError](t, res.Body); e.Error.Type != "authentication_error" || !strings.Contains(e.Error.Message, "revoked") {
				t.Errorf("401 body %s, want the gateway's own authentication_error", res.Body)
			}
			if h := res.Header.Get("X-Ai-Gateway-Auth-Error"); h != "" {
				t.Errorf("the 401 has X-Ai-Gateway-Auth-Error %q: it is the gateway's, not the proxy's", h)
			}
			reqs := gw.Requests()[n:]
			if len(reqs) != 1 || reqs[0].Credential != revoked || len(reqs[0].Body) <= bodyLimit {
				t.Fatalf("the gateway got %d requests, want exactly the one refused (no replay of a body over retry_body_limit)", len(reqs))
			}
			// The refused token is dropped all the same: the next request
			// gets a fresh one, minted once.
			if res := tc.chat(t, oidcURL, "sk-placeholder"); res.Status != http.StatusOK {
				t.Fatalf("the next request: status %d: %s", res.Status, res.Body)
			}
			if r := lastRequest(t, gw); r.Credential == revoked || r.Status != http.StatusOK {
				t.Errorf("the next request: gateway answered %d, revoked token again: %v", r.Status, r.Credential == revoked)
			}
			if got := successfulMints(v); got != mints+1 {
				t.Errorf("%d mints after the refused token, want exactly 1", got-mints)
			}
		})
	}

	t.Run("sse after replay", func(t *testing.T) {
		for _, c := range []struct{ name, path, header, value, body string }{
			{"openai", "/v1/chat/completions", "Authorization", "Bearer sk-placeholder",
				`{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
			{"anthropic", "/v1/messages", "X-Api-Key", "sk-placeholder",
				`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		} {
			revoked, n := revokeCurrent(t)
			want := chatCompletionEvents("openai/gpt-5")
			if c.name == "anthropic" {
				want = anthropicEvents("anthropic/claude-sonnet-4")
			}
			id := "replayed-" + c.name + "-" + randomString(8)
			readAckedStream(t, tc, gw, oidcURL+c.path, map[string]string{c.header: c.value, ackHeader: id}, c.body, id, want)
			replays++
			checkReplayed(t, gw.Requests()[n:], revoked)
		}
	})

	t.Run("static key 401 passes through once", func(t *testing.T) {
		if res := tc.chat(t, staticURL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("before the revocation: status %d: %s", res.Status, res.Body)
		}
		gwStatic.Revoke(apiKey)
		n := len(gwStatic.Requests())
		for _, c := range sdkCalls(staticURL, tc.HTTP, 0) {
			err := c.do(ctx)
			var oerr *openai.Error
			var aerr *anthropic.Error
			switch {
			case errors.As(err, &oerr):
				if oerr.StatusCode != http.StatusUnauthorized || oerr.Response.Header.Get("X-Ai-Gateway-Auth-Error") != "" {
					t.Errorf("%s: %v; want the gateway's 401", c.name, err)
				}
			case errors.As(err, &aerr):
				if aerr.StatusCode != http.StatusUnauthorized || aerr.Response.Header.Get("X-Ai-Gateway-Auth-Error") != "" {
					t.Errorf("%s: %v; want the gateway's 401", c.name, err)
				}
			default:
				t.Errorf("%s: %v; want the gateway's 401", c.name, err)
			}
			reqs := gwStatic.Requests()[n:]
			if len(reqs) != 1 || reqs[0].Status != http.StatusUnauthorized || reqs[0].Credential != apiKey {
				t.Errorf("%s: the gateway got %d requests, want exactly one, refused", c.name, len(reqs))
			}
			n += len(reqs)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := adminMetrics(t, p)
		if got := m.value(t, "caddy_ai_gateway_auth_requests_total", "outcome", "replayed"); got != float64(replays) {
			t.Errorf(`requests_total{outcome="replayed"} is %v, want %d`, got, replays)
		}
		// Each mint is a successful refresh; a refresh that finds a token
		// fresh enough (one just minted for another request) counts too.
		if got, want := m.value(t, "caddy_ai_gateway_auth_credential_refreshes_total", "source", "vercel_oidc", "result", "success"), successfulMints(v); got < float64(want) || want < 2 {
			t.Errorf(`credential_refreshes_total{source="vercel_oidc",result="success"} is %v, want at least %d (one per mint)`, got, want)
		}
		if got := m.value(t, "caddy_ai_gateway_auth_credential_refreshes_total", "source", "vercel_oidc", "result", "failure"); got != 0 {
			t.Errorf(`credential_refreshes_total{source="vercel_oidc",result="failure"} is %v, want 0`, got)
		}
	})

	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
	assertNoSecrets(t, "Caddy's logs", p.Logs(), append(secretsOf(v), secret{"the API key", apiKey})...)
}

// gatedUpstream is a reverse proxy in front of the fake gateway that can
// hold requests carrying a given credential until a number of them have
// arrived, so that they all reach the gateway with it.
type gatedUpstream struct {
	srv *httptest.Server

	mu      sync.Mutex
	cred    string
	waiting int
	open    chan struct{}
}

func newGatedUpstream(t testing.TB, upstream string) *gatedUpstream {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedUpstream{}
	proxy := httputil.NewSingleHostReverseProxy(u) // flushes SSE as it comes
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		open := g.open
		if open != nil && r.Header.Get("Authorization") == "Bearer "+g.cred {
			if g.waiting--; g.waiting == 0 {
				close(g.open)
				g.open = nil
			}
		} else {
			open = nil
		}
		g.mu.Unlock()
		if open != nil {
			select {
			case <-open:
			case <-time.After(waitTimeout / 2): // the test then finds fewer refused than it wants
			}
		}
		// The body is read in full first, as the gateway does anyway:
		// Go's HTTP/1 server closes a request body once the handler
		// starts its response, which would race with the transport
		// still reading it (golang/go#40747) and cut a stream short.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// hold makes the next n requests carrying cred wait until the n-th one
// arrives.
func (g *gatedUpstream) hold(cred string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cred, g.waiting, g.open = cred, n, make(chan struct{})
}

// readAckedStream sends a streamed request naming an acknowledged stream
// (ackHeader) and reads it event by event, acknowledging each only once it
// has arrived: a proxy that held any part of the stream back would stall
// it.
func readAckedStream(t *testing.T, tc *testClient, gw *fakeGateway, url string, header map[string]string, body, id string, want []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
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
	for i, w := range want {
		ev, err := sr.next()
		if err != nil {
			t.Fatalf("event %d of %d: %v (gateway: %v)", i+1, len(want), err, gw.Stalls())
		}
		if ev+"\n" != w {
			t.Fatalf("event %d is %q, want %q", i+1, ev, w)
		}
		gw.Ack(id)
	}
	if ev, err := sr.next(); err != io.EOF {
		t.Errorf("after the last event: %q, %v; want the end of the stream", ev, err)
	}
	if s := gw.Stalls(); len(s) > 0 {
		t.Errorf("the stream stalled: %v", s)
	}
}

// metricsScrape is the admin endpoint's /metrics, in Prometheus' text
// format.
type metricsScrape string

func adminMetrics(t testing.TB, p *caddyProc) metricsScrape {
	t.Helper()
	res, err := newTestClient(t).try(http.MethodGet, p.Admin+"/metrics", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusOK {
		t.Fatalf("GET /metrics on the admin endpoint: status %d: %s", res.Status, res.Body)
	}
	return metricsScrape(res.Body)
}

// value is the sample of metric name with exactly the given labels
// (name, value pairs, in any order); 0 when there is none, as for a
// counter never incremented.
func (m metricsScrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, line := range strings.Split(string(m), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		metric, labelText, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
		if metric != name {
			continue
		}
		got := map[string]string{}
		for _, kv := range strings.Split(labelText, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				got[k] = strings.Trim(v, `"`)
			}
		}
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return f
	}
	if !strings.Contains(string(m), "\n"+name+"{") && !strings.Contains(string(m), "# TYPE "+name+" ") {
		t.Fatalf("the admin endpoint's /metrics has no %s at all", name)
	}
	return 0
}
