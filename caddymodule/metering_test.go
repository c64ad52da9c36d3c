package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// chatChunks is a Chat Completions stream as AI Gateway sends it when
// asked for usage: content chunks, the finish_reason chunk, the
// usage-only chunk, [DONE].
var chatChunks = []string{
	`data: {"id":"gen_1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}` + "\n\n",
	`data: {"id":"gen_1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}` + "\n\n",
	`data: {"id":"gen_1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n",
	`data: {"id":"gen_1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":7,"total_tokens":127,"cost":0.00042}}` + "\n\n",
	"data: [DONE]\n\n",
}

// upstreamStub is a next handler that reads the whole request body, as
// the gateway does, records it, and streams the chunks (the usage-only
// chunk only when the request asked for usage, as OpenAI's rule is).
func upstreamStub(got *[]byte, gotHeader *http.Header) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		*got = body
		if gotHeader != nil {
			*gotHeader = r.Header.Clone()
		}
		var req struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		_ = json.Unmarshal(body, &req)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for _, c := range chatChunks {
			if strings.Contains(c, `"choices":[]`) && !req.StreamOptions.IncludeUsage {
				continue
			}
			if _, err := io.WriteString(w, c); err != nil {
				return err
			}
			http.NewResponseController(w).Flush()
		}
		return nil
	})
}

func chatRequest(t *testing.T, client, body string) *http.Request {
	t.Helper()
	r := clientRequest(t, client, "/v1/chat/completions")
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body))) // as a server reads it
	return r
}

// A streamed Chat Completions request that does not ask for usage gets
// stream_options.include_usage added (its other stream_options kept),
// the usage is counted, and the client sees the stream it asked for:
// without the usage-only chunk. A client that asked sees it.
func TestUsageInjectedAndHidden(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	for _, tc := range []struct {
		name, body  string
		clientAsked bool
	}{
		{"no stream_options", `{"model":"openai/gpt-5","stream":true,"messages":[]}`, false},
		{"other stream_options", `{"model":"openai/gpt-5","stream_options":{"x":1},"stream":true}`, false},
		{"include_usage false", `{"stream":true,"stream_options":{"include_usage":false}}`, false},
		{"asked", `{"stream":true,"stream_options":{"include_usage":true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			var hdr http.Header
			r := chatRequest(t, "inject-"+strings.ReplaceAll(tc.name, " ", "-"), tc.body)
			w := serve(t, h, r, upstreamStub(&got, &hdr))
			var sent struct {
				Stream        bool           `json:"stream"`
				StreamOptions map[string]any `json:"stream_options"`
			}
			if err := json.Unmarshal(got, &sent); err != nil {
				t.Fatalf("the upstream got invalid JSON %q: %v", got, err)
			}
			if sent.StreamOptions["include_usage"] != true || !sent.Stream {
				t.Errorf("the upstream got %s; want stream_options.include_usage true", got)
			}
			if tc.name == "other stream_options" && sent.StreamOptions["x"] != float64(1) {
				t.Errorf("the client's other stream_options were lost: %s", got)
			}
			if hdr.Get("Content-Length") != strconv.Itoa(len(got)) {
				t.Errorf("the upstream got Content-Length %q for a body of %d bytes", hdr.Get("Content-Length"), len(got))
			}
			want := strings.Join(chatChunks, "")
			if !tc.clientAsked {
				want = strings.Join(append(append([]string{}, chatChunks[:3]...), chatChunks[4]), "")
			}
			if w.Body.String() != want {
				t.Errorf("the client got\n%s\nwant\n%s", w.Body.String(), want)
			}
			repl := replacerOf(r)
			if in, _ := repl.Get("ai_gateway_auth.usage.input_tokens"); in != int64(120) {
				t.Errorf("input tokens %v, want 120 (the gateway's figure)", in)
			}
		})
	}
}

// The usage-only chunk is found and hidden however the upstream's writes
// cut the stream: one byte at a time, all at once, and every size
// between; a line too long to hold (a long content delta) passes whole.
func TestUsageChunkHiddenAcrossWrites(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	long := `data: {"id":"gen_1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` +
		strings.Repeat("usage ", maxHeldLine/5) + `"},"finish_reason":null}],"usage":null}` + "\n\n"
	chunks := append([]string{long}, chatChunks...)
	whole := strings.Join(chunks, "")
	want := strings.Join(append(append([]string{}, chunks[:4]...), chunks[5]), "")
	sizes := []int{1, maxHeldLine - 1, maxHeldLine + 1, len(long) - 1, len(long), len(whole)}
	for size := 2; size <= len(chatChunks[3])+2; size++ {
		sizes = append(sizes, size)
	}
	for _, size := range sizes {
		r := chatRequest(t, "cut-writes", `{"stream":true}`)
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			_, _ = io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; i < len(whole); i += size {
				_, _ = io.WriteString(w, whole[i:min(i+size, len(whole))])
			}
			return nil
		})
		if w := serve(t, h, r, next); w.Body.String() != want {
			t.Errorf("writes of %d bytes: the client got\n%q\nwant\n%q", size, w.Body.String(), want)
		}
	}
}

// With reporting, the attribution fields of the body are the proxy's: a
// sandbox's "user" and providerOptions.gateway.user become its id, its
// gateway tags go; everything else passes byte for byte.
func TestBodyAttributionIsTheProxys(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.Reporting = &Reporting{Tags: []string{"sandboxes"}} })
	body := `{"model":"openai/gpt-5","user":"bob","messages":[{"role":"user","content":"hi, I am \"user\""}],` +
		`"providerOptions":{"gateway":{"order":["vertex","anthropic"],"user":"bob","tags":["team-b"]}}}`
	var got []byte
	var hdr http.Header
	r := chatRequest(t, "alice", body)
	serve(t, h, r, upstreamStub(&got, &hdr))
	want := `{"model":"openai/gpt-5","user":"key:alice","messages":[{"role":"user","content":"hi, I am \"user\""}],` +
		`"providerOptions":{"gateway":{"order":["vertex","anthropic"],"user":"key:alice"}}}`
	if string(got) != want {
		t.Errorf("the upstream got\n%s\nwant\n%s", got, want)
	}
	if hdr.Get("Ai-Reporting-User") != "key:alice" || hdr.Get("Ai-Reporting-Tags") != "sandboxes" {
		t.Errorf("reporting headers %q %q", hdr.Get("Ai-Reporting-User"), hdr.Get("Ai-Reporting-Tags"))
	}

	// a body that needs no edit is not changed
	plain := `{"model":"openai/gpt-5", "messages":[]}`
	serve(t, h, chatRequest(t, "alice", plain), upstreamStub(&got, nil))
	if string(got) != plain {
		t.Errorf("an unedited body changed: %q", got)
	}
	// a body the proxy cannot read as the gateway would does not go
	// upstream: refused, counted as such, never a 500
	before := counterValue(bodyEditsTotal.WithLabelValues("refused"))
	for _, bad := range []string{`{"user":"bob", oops`, `{"user":"bob","USER":"carol"}`, `{"us\u0065r":"bob"}`} {
		got = nil
		if w := serve(t, h, chatRequest(t, "alice", bad), upstreamStub(&got, nil)); w.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d", bad, w.Code)
		}
		if got != nil {
			t.Errorf("%s: the upstream got %q", bad, got)
		}
	}
	if counterValue(bodyEditsTotal.WithLabelValues("refused")) != before+3 {
		t.Error("the refused bodies were not counted as such")
	}
}

// A request body in a content coding could carry attribution past the
// editor: with metering on it is refused, before it counts against a
// limit or reaches the upstream.
func TestEncodedRequestBodyRefused(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.Limits = &Limits{RequestsPerMinute: 1} })
	r := chatRequest(t, "gzipper", "\x1f\x8b...")
	r.Header.Set("Content-Encoding", "gzip")
	called := false
	w := serve(t, h, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil }))
	if w.Code != http.StatusUnsupportedMediaType || w.Header().Get("X-Ai-Gateway-Auth-Error") != "request_encoding_not_allowed" || called {
		t.Errorf("status %d %q, upstream called %v; want 415 request_encoding_not_allowed", w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), called)
	}
	// it used none of the client's one request a minute
	if w := serve(t, h, chatRequest(t, "gzipper", `{}`), upstreamStub(new([]byte), nil)); w.Code != http.StatusOK {
		t.Errorf("the next request got %d", w.Code)
	}
}

// An answer that ends without usage is charged its worst case (the
// body's bytes / 4 and the output cap reserved: here the default, no
// catalog and no cap in the body), never zero, and counted as estimated;
// an answer with usage is not.
func TestUsageEstimates(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	client := "estimate-" + time.Now().Format("150405-000000")
	series := clientSeriesFor("key:" + client)
	noUsage := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range chatChunks[:2] { // cut before finish_reason
			_, _ = io.WriteString(w, c)
		}
		return nil
	})
	body := `{"model":"openai/gpt-5","messages":[{"role":"user","content":"` + strings.Repeat("x", 400) + `"}]}`
	before := counterValue(usageEstimatesTotal.WithLabelValues("no_usage"))
	r := clientRequest(t, client, "/v1/responses") // a generation endpoint, no usage injection
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	serve(t, h, r, noUsage)
	in, _ := replacerOf(r).Get("ai_gateway_auth.usage.input_tokens")
	out, _ := replacerOf(r).Get("ai_gateway_auth.usage.output_tokens")
	if in != int64((len(body)+3)/4) || out != int64(defaultMaxTokens) {
		t.Errorf("estimate %v/%v, want %d input (the body's bytes / 4) and %d output (the default cap)", in, out, (len(body)+3)/4, defaultMaxTokens)
	}
	if got := counterValue(usageEstimatesTotal.WithLabelValues("no_usage")); got != before+1 {
		t.Errorf("usage_estimates_total{reason=no_usage} grew by %v, want 1", got-before)
	}
	if counterValue(series.estimatedInput) != float64((len(body)+3)/4) || counterValue(series.estimatedOutput) != defaultMaxTokens ||
		counterValue(series.input) != counterValue(series.estimatedInput) {
		t.Errorf("estimated series %v/%v, tokens %v", counterValue(series.estimatedInput), counterValue(series.estimatedOutput), counterValue(series.input))
	}

	// the gateway's own figure: no estimate
	serve(t, h, chatRequest(t, client, `{"stream":true}`), upstreamStub(new([]byte), nil))
	if got := counterValue(usageEstimatesTotal.WithLabelValues("no_usage")); got != before+1 {
		t.Errorf("an answer with usage was estimated")
	}
}

// failingWriter is a client that hangs up after `after` writes.
type failingWriter struct {
	*httptest.ResponseRecorder
	writes, after int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.writes++; f.writes > f.after {
		return 0, errors.New("broken pipe")
	}
	return f.ResponseRecorder.Write(p)
}

// A client that hangs up right after the finish_reason chunk is charged
// what the gateway reports in the usage chunk that follows (the proxy
// reads on for it); one that hangs up earlier stops the upstream read
// at once and is charged an estimate.
func TestClientGoneAfterFinish(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	for _, tc := range []struct {
		name        string
		after       int // writes the client takes before it hangs up
		wantIn      int64
		wantChunks  int // chunks the upstream wrote
		wantEstimte bool
	}{
		{"after finish_reason", 3, 120, 5, false},
		{"mid-stream", 1, 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counterValue(usageEstimatesTotal.WithLabelValues("client_gone"))
			r := chatRequest(t, "hangup", `{"stream":true}`)
			written := 0
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				for _, c := range chatChunks { // as reverse_proxy copies: stop at a write error
					if _, err := io.WriteString(w, c); err != nil {
						return err
					}
					written++
				}
				return nil
			})
			fw := &failingWriter{ResponseRecorder: httptest.NewRecorder(), after: tc.after}
			_ = h.ServeHTTP(fw, r, next)
			if written != tc.wantChunks {
				t.Errorf("the upstream wrote %d chunks, want %d", written, tc.wantChunks)
			}
			in, _ := replacerOf(r).Get("ai_gateway_auth.usage.input_tokens")
			if !tc.wantEstimte && in != tc.wantIn {
				t.Errorf("input tokens %v, want the gateway's %d", in, tc.wantIn)
			}
			estimated := counterValue(usageEstimatesTotal.WithLabelValues("client_gone")) - before
			if (estimated == 1) != tc.wantEstimte {
				t.Errorf("usage_estimates_total{reason=client_gone} grew by %v", estimated)
			}
		})
	}
}

// `reporting { user {ai_gateway_auth.client} }`, the default as written
// before client ids, still reports the id: a sandbox that names itself
// like a key cannot share its user. Anything around the placeholder
// resolves it as written.
func TestReportingUserLegacyDefault(t *testing.T) {
	for user, want := range map[string]string{
		"{ai_gateway_auth.client}":      "key:legacy",
		"{ai_gateway_auth.client_id}":   "key:legacy",
		"name:{ai_gateway_auth.client}": "name:legacy",
	} {
		h := spendHandler(t, func(h *Handler) { h.Reporting = &Reporting{User: user} })
		var hdr http.Header
		r := chatRequest(t, "legacy", `{"user":"bob"}`)
		var got []byte
		serve(t, h, r, upstreamStub(&got, &hdr))
		if hdr.Get("Ai-Reporting-User") != want || string(got) != `{"user":"`+want+`"}` {
			t.Errorf("user %s: header %q, body %s; want %s", user, hdr.Get("Ai-Reporting-User"), got, want)
		}
	}
}

// A client whose connection ends (its context cancelled) right after the
// finish chunk, while the upstream is quiet before its usage chunk: the
// upstream request is not cancelled (the proxy reads on for the usage,
// within drainTimeout), and the request is charged exactly the gateway's
// usage, not an estimate. (A mutant that cancels on the client's context
// fails here: the upstream's context ends at once.)
func TestClientContextEndsAfterFinish(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	before := counterValue(usageEstimatesTotal.WithLabelValues("client_gone"))
	r := chatRequest(t, "quiet-upstream", `{"stream":true}`)
	ctx, hangUp := context.WithCancel(r.Context())
	defer hangUp()
	r = r.WithContext(ctx)
	upstreamCancelled := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range chatChunks[:3] { // up to finish_reason
			_, _ = io.WriteString(w, c)
		}
		http.NewResponseController(w).Flush()
		hangUp() // the client leaves while the upstream is quiet
		select { // a cancelled upstream ends at once; a kept one is not done before drainTimeout
		case <-r.Context().Done():
			upstreamCancelled = true
			return r.Context().Err()
		case <-time.After(300 * time.Millisecond):
		}
		for _, c := range chatChunks[3:] { // then the usage chunk and [DONE]
			_, _ = io.WriteString(w, c)
		}
		return nil
	})
	_ = h.ServeHTTP(httptest.NewRecorder(), r, next)
	if upstreamCancelled {
		t.Fatal("the upstream request was cancelled when the client left after the finish chunk")
	}
	if in, _ := replacerOf(r).Get("ai_gateway_auth.usage.input_tokens"); in != int64(120) {
		t.Errorf("input tokens %v, want the gateway's 120", in)
	}
	if got := counterValue(usageEstimatesTotal.WithLabelValues("client_gone")); got != before {
		t.Errorf("usage_estimates_total{reason=client_gone} grew by %v", got-before)
	}
}

// flushCounter counts the flushes that reach the client.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++; f.ResponseRecorder.Flush() }

// A hidden usage chunk costs the client no flush: the upstream flushes
// after each of its five chunks, the client's writer sees four (the
// first with the header), and gets every chunk but the usage one.
func TestHiddenUsageChunkNotFlushed(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range chatChunks {
			_, _ = io.WriteString(w, c)
			if err := http.NewResponseController(w).Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
	if err := h.ServeHTTP(w, chatRequest(t, "flushes", `{"stream":true}`), next); err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(append(append([]string{}, chatChunks[:3]...), chatChunks[4]), ""); w.Body.String() != want {
		t.Errorf("the client got %q", w.Body.String())
	}
	if w.flushes != len(chatChunks)-1 {
		t.Errorf("the client's writer was flushed %d times, want %d", w.flushes, len(chatChunks)-1)
	}
}
