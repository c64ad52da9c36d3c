package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// strictProxy runs a Caddy with signed client keys, reporting and
// limits (so metering is on) in front of gw; it returns the proxy and
// the key secret.
func strictProxy(t *testing.T, gw *fakeGateway, apiKey string) (*caddyProc, string) {
	return signedKeysProxy(t, gw.URL(), apiKey, "reporting {\n\t\t\ttags sandboxes\n\t\t}\n\t\tlimits {\n\t\t\trequests_per_minute 1000\n\t\t\ttokens_per_day 100000000\n\t\t}")
}

// hostileBody is a body shape a strict parser (the gateway's) could read
// otherwise than the proxy, or not read at all, built around messages:
// a short conversation, or one long enough that the body is streamed
// upstream rather than read ahead.
type hostileBody struct {
	name string
	body func(messages string) string
}

func chatObject(messages, members string) string {
	return `{"model":"openai/gpt-5","messages":` + messages + members + `}`
}

func utf16le(s string) string {
	var b bytes.Buffer
	for _, u := range utf16.Encode([]rune(s)) {
		b.WriteByte(byte(u))
		b.WriteByte(byte(u >> 8))
	}
	return b.String()
}

var hostileBodies = []hostileBody{
	{"Stream", func(m string) string { return chatObject(m, `,"stream":false,"Stream":true`) }},
	{"STREAM_OPTIONS", func(m string) string { return chatObject(m, `,"stream":true,"STREAM_OPTIONS":{"include_usage":false}`) }},
	{"User", func(m string) string { return chatObject(m, `,"User":"bob"`) }},
	{"ProviderOptions", func(m string) string { return chatObject(m, `,"ProviderOptions":{"gateway":{"user":"bob"}}`) }},
	{"Gateway", func(m string) string {
		return chatObject(m, `,"providerOptions":{"Gateway":{"user":"bob","tags":["team-b"]}}`)
	}},
	{"Tags", func(m string) string {
		return chatObject(m, `,"providerOptions":{"gateway":{"Tags":["team-b"],"quotaEntityId":"api_key_of_bob"}}`)
	}},
	{"long s", func(m string) string { return chatObject(m, `,"stream":true,"ſtream":false`) }},
	{"escaped stream", func(m string) string { return chatObject(m, `,"str\u0065am":true`) }},
	{"escaped user", func(m string) string { return chatObject(m, `,"us\u0065r":"bob"`) }},
	{"duplicate stream, true last", func(m string) string { return chatObject(m, `,"stream":false,"stream":true`) }},
	{"duplicate stream, true first", func(m string) string { return chatObject(m, `,"stream":true,"stream":false`) }},
	{"duplicate stream_options", func(m string) string {
		return chatObject(m, `,"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}`)
	}},
	{"duplicate gateway user", func(m string) string {
		return chatObject(m, `,"providerOptions":{"gateway":{"user":"alice","user":"bob"}}`)
	}},
	{"duplicate n, 128 last", func(m string) string { return chatObject(m, `,"max_tokens":100,"n":1,"n":128`) }},
	{"N", func(m string) string { return chatObject(m, `,"max_tokens":100,"N":128`) }},
	{"n above 128", func(m string) string { return chatObject(m, `,"max_tokens":100,"n":129`) }},
	{"stream a string", func(m string) string { return chatObject(m, `,"stream":"true"`) }},
	{"stream a number", func(m string) string { return chatObject(m, `,"stream":1`) }},
	{"UTF-16LE", func(m string) string { return utf16le(chatObject(m, `,"stream":true,"user":"bob"`)) }},
	{"truncated", func(m string) string { return strings.TrimSuffix(chatObject(m, `,"stream":true`), "}") }},
	{"two values", func(m string) string { return chatObject(m, "") + `{"stream":true}` }},
	{"BOM then a duplicate", func(m string) string { return "\xef\xbb\xbf" + chatObject(m, `,"stream":false,"stream":true`) }},
	{"invalid UTF-8", func(m string) string { return chatObject(m, ",\"stream\":true,\"user\":\"\xff\"") }},
	{"trailing garbage", func(m string) string { return chatObject(m, `,"stream":true`) + ` garbage` }},
}

// TestHostileBodiesRefused: with reporting and limits on, each hostile
// body shape gets 400 invalid_request_body in the OpenAI SDK's shape. A
// small one (read ahead) never reaches the gateway; a large one (over
// 64 KiB, the hostile part after a long conversation) streams until the
// proxy meets the problem, and then its upstream request is aborted: the
// gateway never gets a complete body, so no inference can run on it.
// The gateway parses as JSON.parse does. (Before, every one of them was
// forwarded whole, and the duplicates and variants of stream went
// unmetered.)
func TestHostileBodiesRefused(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := strictProxy(t, gw, apiKey)
	tc := newTestClient(t)
	key := "Bearer " + signedClientKey("hostile", secret)
	small := `[{"role":"user","content":"hi"}]`
	large := "[" + strings.Repeat(`{"role":"user","content":"`+strings.Repeat("x", 1000)+`"},`, 80) + `{"role":"user","content":"hi"}]`
	before := readAdminMetric(t, p, `caddy_ai_gateway_auth_request_body_edits_total{result="refused"}`)
	for _, size := range []struct{ name, messages string }{{"small", small}, {"large", large}} {
		for _, hb := range hostileBodies {
			body := hb.body(size.messages)
			if size.name == "large" && len(body) <= 64<<10 {
				t.Fatalf("%s: a %d-byte body is not large", hb.name, len(body))
			}
			res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{
				"Authorization": key, "X-Test-Case": size.name + "/" + hb.name}, body)
			e := decodeJSON[struct {
				Error struct{ Message, Type, Code string }
			}](t, res.Body)
			if res.Status != http.StatusBadRequest || e.Error.Code != "invalid_request_body" || e.Error.Type != "invalid_request_error" ||
				!strings.HasPrefix(e.Error.Message, "request body: ") {
				t.Errorf("%s/%s: status %d: %s", size.name, hb.name, res.Status, res.Body)
			}
		}
	}
	// the proxy still serves, and the gateway does record what it gets
	if res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{"Authorization": key, "X-Test-Case": "good"},
		chatObject(large, `,"stream":false`)); res.Status != http.StatusOK {
		t.Fatalf("a good body: status %d: %s", res.Status, res.Body)
	}
	for _, r := range gw.Requests() {
		c := r.Header.Get("X-Test-Case")
		switch {
		case c == "good" && r.BodyErr != "":
			t.Errorf("the good body arrived incomplete: %s", r.BodyErr)
		case strings.HasPrefix(c, "small/"):
			t.Errorf("%s reached the gateway: %q", c, r.Body)
		case strings.HasPrefix(c, "large/") && r.BodyErr == "":
			t.Errorf("%s reached the gateway complete (read as %+v)", c, r.Read)
		}
	}
	// the large ones did stream until the problem: the gateway saw them
	// begin, then fail (all but UTF-16, refused at its second byte)
	eventually(t, waitTimeout, "the large bodies reach the gateway incomplete", func() string {
		aborted := 0
		for _, r := range gw.Requests() {
			if strings.HasPrefix(r.Header.Get("X-Test-Case"), "large/") && r.BodyErr != "" && len(r.Body) > 64<<10 {
				aborted++
			}
		}
		if aborted < len(hostileBodies)-1 {
			return fmt.Sprintf("%d aborted after more than 64 KiB", aborted)
		}
		return ""
	})
	refused := readAdminMetric(t, p, `caddy_ai_gateway_auth_request_body_edits_total{result="refused"}`) - before
	if refused != float64(2*len(hostileBodies)) {
		t.Errorf("request_body_edits_total{result=refused} grew by %v, want %d", refused, 2*len(hostileBodies))
	}
}

// TestForeignCharsetRefused: a UTF-16LE body that says so in its
// Content-Type gets 415 request_encoding_not_allowed and never reaches
// the gateway. (Before, it carried the client's user, tags and an
// unmetered stream upstream.)
func TestForeignCharsetRefused(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := strictProxy(t, gw, apiKey)
	tc := newTestClient(t)
	body := utf16le(chatObject(`[{"role":"user","content":"hi"}]`, `,"stream":true,"user":"bob","providerOptions":{"gateway":{"tags":["team-b"]}}`))
	res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{
		"Authorization": "Bearer " + signedClientKey("utf16", secret), "Content-Type": "application/json; charset=utf-16le"}, body)
	if res.Status != http.StatusUnsupportedMediaType || res.Header.Get("X-Ai-Gateway-Auth-Error") != "request_encoding_not_allowed" {
		t.Errorf("status %d: %s", res.Status, res.Body)
	}
	if n := len(gw.Requests()); n != 0 {
		t.Errorf("the gateway got %d requests", n)
	}
}

// sdkCapture records each request body an SDK sends, as it sends it.
type sdkCapture struct {
	mu   sync.Mutex
	sent map[string]capturedBody // by X-Test-Call
}

type capturedBody struct {
	body   []byte
	length int64
}

func (c *sdkCapture) middleware(req *http.Request, next func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	var b []byte
	if req.Body != nil {
		var err error
		if b, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	c.mu.Lock()
	c.sent[req.Header.Get("X-Test-Call")] = capturedBody{b, req.ContentLength}
	c.mu.Unlock()
	return next(req)
}

// TestSDKBodiesPassByteForByte: with reporting and limits on, the
// request bodies the real SDKs send where nothing is to be edited (no
// user, no stream to meter) reach the gateway byte for byte, with their
// Content-Length (before, every metered body went chunked): OpenAI's
// chat completion, embeddings and responses, Anthropic's message,
// streamed or not.
func TestSDKBodiesPassByteForByte(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := strictProxy(t, gw, apiKey)
	key := signedClientKey("sdk-bytes", secret)
	capture := &sdkCapture{sent: map[string]capturedBody{}}
	tc := newTestClient(t)
	oc := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(key), option.WithHTTPClient(tc.HTTP),
		option.WithMaxRetries(0), option.WithMiddleware(capture.middleware))
	ac := anthropic.NewClient(aoption.WithBaseURL(p.URL), aoption.WithAPIKey(key), aoption.WithHTTPClient(tc.HTTP),
		aoption.WithMaxRetries(0), aoption.WithMiddleware(capture.middleware))
	ctx := t.Context()
	prompt := "Say hello to \"the gateway\" — and é, ✓, 😀.\n\tThen stop."
	msg := anthropic.MessageNewParams{Model: "anthropic/claude-sonnet-4", MaxTokens: 1024,
		System:   []anthropic.TextBlockParam{{Text: "You are terse."}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))}}
	calls := []struct {
		name string
		call func(call option.RequestOption, acall aoption.RequestOption) error
	}{
		{"openai chat", func(c option.RequestOption, _ aoption.RequestOption) error {
			_, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "openai/gpt-5",
				Messages:            []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage(prompt)},
				MaxCompletionTokens: openai.Int(512), Temperature: openai.Float(0.2)}, c)
			return err
		}},
		{"openai embeddings", func(c option.RequestOption, _ aoption.RequestOption) error {
			_, err := oc.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "openai/text-embedding-3-small",
				Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{prompt, "second"}}}, c)
			return err
		}},
		{"openai responses", func(c option.RequestOption, _ aoption.RequestOption) error {
			r, err := oc.Responses.New(ctx, responses.ResponseNewParams{Model: "openai/gpt-5",
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)}, MaxOutputTokens: openai.Int(256)}, c)
			if err == nil && r.OutputText() != answerText {
				err = fmt.Errorf("answer %q", r.OutputText())
			}
			return err
		}},
		{"anthropic message", func(_ option.RequestOption, c aoption.RequestOption) error {
			m, err := ac.Messages.New(ctx, msg, c)
			if err == nil && m.Content[0].Text != answerText {
				err = fmt.Errorf("answer %q", m.Content[0].Text)
			}
			return err
		}},
		{"anthropic message streamed", func(_ option.RequestOption, c aoption.RequestOption) error {
			stream := ac.Messages.NewStreaming(ctx, msg, c)
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
				return fmt.Errorf("answer %+v", m.Content)
			}
			return nil
		}},
	}
	for _, c := range calls {
		if err := c.call(option.WithHeader("X-Test-Call", c.name), aoption.WithHeader("X-Test-Call", c.name)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		r := lastRequest(t, gw)
		sent := capture.sent[c.name]
		if r.Header.Get("X-Test-Call") != c.name || len(sent.body) == 0 {
			t.Fatalf("%s: the gateway's last request is %q's; the SDK sent %d bytes", c.name, r.Header.Get("X-Test-Call"), len(sent.body))
		}
		if !bytes.Equal(r.Body, sent.body) {
			t.Errorf("%s: the SDK sent\n%s\nthe gateway got\n%s", c.name, sent.body, r.Body)
		}
		if r.ContentLength != int64(len(sent.body)) || sent.length != int64(len(sent.body)) {
			t.Errorf("%s: the SDK sent Content-Length %d, the gateway got %d (-1: chunked) for %d bytes", c.name, sent.length, r.ContentLength, len(sent.body))
		}
	}
}

// TestHostileBodyAbortedOverHTTP2: AI Gateway is reached over HTTP/2,
// where a request body ends with END_STREAM rather than a final chunk.
// A large body the proxy refuses as it streams is reset there too: the
// upstream's read of it fails, and the client gets the 400. (Before,
// the body went whole.)
func TestHostileBodyAbortedOverHTTP2(t *testing.T) {
	t.Parallel()
	type seen struct {
		proto string
		n     int
		err   error
	}
	got := make(chan seen, 1)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- seen{r.Proto, len(b), err}
		if err == nil {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
		}
	}))
	up.Config.Protocols = new(http.Protocols)
	up.Config.Protocols.SetUnencryptedHTTP2(true) // h2c, as the TLS leg to AI Gateway negotiates h2
	up.Start()
	t.Cleanup(up.Close)
	p, secret := signedKeysProxy(t, "h2c://"+strings.TrimPrefix(up.URL, "http://"), newAPIKey(), "usage_metrics")
	tc := newTestClient(t)
	key := "Bearer " + signedClientKey("h2", secret)
	large := "[" + strings.Repeat(`{"role":"user","content":"`+strings.Repeat("x", 1000)+`"},`, 80) + `{"role":"user","content":"hi"}]`

	res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{"Authorization": key}, chatObject(large, `,"stream":true,"Stream":false`))
	if res.Status != http.StatusBadRequest || res.Header.Get("X-Ai-Gateway-Auth-Error") != "invalid_request_body" {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	s := <-got
	if s.proto != "HTTP/2.0" || s.err == nil || s.n < 64<<10 {
		t.Fatalf("the upstream read %d bytes over %s, then %v; want an HTTP/2 body reset after more than 64 KiB", s.n, s.proto, s.err)
	}
	// a good body goes whole over the same protocol
	res = tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{"Authorization": key}, chatObject(large, ""))
	if s := <-got; res.Status != http.StatusOK || s.err != nil || s.proto != "HTTP/2.0" {
		t.Fatalf("a good body: status %d, the upstream read %d bytes over %s, then %v", res.Status, s.n, s.proto, s.err)
	}
}
