package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// bodyRecorder is a next handler that reads the request body as
// reverse_proxy's transport does (to its end, or to a read error, which
// it returns as reverse_proxy would: a 502 handler error) and records
// what it read. It answers 200 when the body ended.
type bodyRecorder struct {
	called        int
	body          []byte
	contentLength int64
	header        http.Header
	readErr       error
	reqBody       io.ReadCloser
}

func (n *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called++
	n.contentLength, n.header, n.reqBody = r.ContentLength, r.Header.Clone(), r.Body
	n.body, n.readErr = io.ReadAll(r.Body)
	if n.readErr != nil {
		return caddyhttp.Error(http.StatusBadGateway, n.readErr)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := io.WriteString(w, `{"ok":true}`)
	return err
}

// bodyRequest is a POST of body from client to path; length -1 hides the
// body's length, as a chunked request's is.
func bodyRequest(t *testing.T, client, path, body string, length int64) *http.Request {
	t.Helper()
	r := clientRequest(t, client, path)
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = length
	if length >= 0 { // as a server reads it
		r.Header.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	r.Header.Set("Content-Type", "application/json")
	return r
}

// bigMessages is the start of a body bigger than bodyReadAhead: a long
// conversation before the member that matters.
func bigMessages() string {
	return `{"model":"openai/gpt-5","messages":[` + strings.Repeat(`{"role":"user","content":"`+strings.Repeat("x", 1000)+`"},`, 80) + `{"role":"user","content":"hi"}]`
}

// TestBodyRefusedBeforeUpstream: with metering on, a body of a JSON
// endpoint that the editor refuses gets 400 invalid_request_body in the
// SDK's shape, counted and logged, and the next handler is never called
// for a body with a Content-Length up to bodyReadAhead; a larger one, or
// one without a length, is aborted where the editor refuses and gets the
// same 400 instead of reverse_proxy's 502. (Before, all of these were
// forwarded.)
func TestBodyRefusedBeforeUpstream(t *testing.T) {
	h := spendHandler(t, func(h *Handler) {
		h.Limits = &Limits{RequestsPerMinute: 1000}
		h.Reporting = &Reporting{}
		h.AllowPaths = []string{"default", "/v1/other", "/v1/chat/completions/"}
	})
	logs := observeLogs(h)
	h.spend.logger = h.logger
	for _, tc := range []struct {
		name, path, body string
		length           int64 // 0: the body's
		ctype            string
		want             string
	}{
		{"case variant", "/v1/chat/completions", `{"model":"m","stream":true,"Stream":false}`, 0, "", `member \"Stream\" at byte 27 is a case variant of \"stream\"`},
		{"duplicate, Anthropic", "/v1/messages", `{"model":"m","max_tokens":10,"stream":false,"stream":true}`, 0, "", `duplicate member \"stream\"`},
		{"malformed", "/v1/responses", `{"model":"m",`, 0, "", `the body ends before its JSON value does`},
		{"empty", "/v1/embeddings", ``, 0, "", `the body is empty`},
		{"trailing slash", "/v1/chat/completions/", `{"stream":"true"}`, 0, "text/plain", `must be true, false or null`},
		{"JSON content type elsewhere", "/v1/other", `{"user":"a","user":"b"}`, 0, "application/vnd.api+json", `duplicate member \"user\"`},
		{"no length", "/v1/chat/completions", `{"model":"m"} {}`, -1, "", `more than one JSON value`},
		{"large", "/v1/chat/completions", bigMessages() + `,"stream":true,"Stream":false}`, 0, "", `is a case variant of \"stream\"`},
		{"large, invalid UTF-8 last", "/v1/messages", bigMessages() + ",\"x\":\"\xff\"}", 0, "", `invalid UTF-8 at byte`},
		{"large, truncated", "/v1/chat/completions", bigMessages(), 0, "", `the body ends before its JSON value does`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			length := tc.length
			if length == 0 {
				length = int64(len(tc.body))
			}
			r := bodyRequest(t, "refused", tc.path, tc.body, length)
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			refused, bad, fwd := counterValue(bodyEditsTotal.WithLabelValues("refused")), counterValue(badRequestCounter), counterValue(forwardedCounter)
			logs.TakeAll()
			next := &bodyRecorder{}
			w := serve(t, h, r, next)
			if w.Code != http.StatusBadRequest || w.Header().Get("X-Ai-Gateway-Auth-Error") != "invalid_request_body" {
				t.Fatalf("status %d %q: %s", w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), w.Body)
			}
			if !strings.Contains(w.Body.String(), tc.want) || !strings.Contains(w.Body.String(), `request body: `) {
				t.Errorf("answer %s, want it to say %s", w.Body, tc.want)
			}
			var shape struct {
				Type  string `json:"type"`
				Error struct{ Type, Code string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &shape); err != nil || shape.Error.Type != errInvalidRequest {
				t.Errorf("answer %s: %v", w.Body, err)
			}
			if anthropic := strings.HasPrefix(tc.path, "/v1/messages"); anthropic != (shape.Type == "error") || !anthropic && shape.Error.Code != "invalid_request_body" {
				t.Errorf("answer %s is not in the SDK's shape", w.Body)
			}
			streamed := length < 0 || length > bodyReadAhead
			switch {
			case !streamed && next.called != 0:
				t.Errorf("the upstream was called with %q", next.body)
			case streamed && (next.called != 1 || !errors.Is(next.readErr, jsonbody.ErrRefused)):
				t.Errorf("streamed: the upstream was called %d times, its read ended with %v", next.called, next.readErr)
			case streamed && bytes.Contains(next.body, []byte("Stream")):
				t.Errorf("the refused member went upstream")
			}
			if got := counterValue(bodyEditsTotal.WithLabelValues("refused")); got != refused+1 {
				t.Errorf("request_body_edits_total{result=refused} grew by %v", got-refused)
			}
			if got := counterValue(badRequestCounter); got != bad+1 {
				t.Errorf("the 400 was counted %v times", got-bad)
			}
			if got := counterValue(forwardedCounter); got != fwd {
				t.Errorf("the refused request was also counted forwarded")
			}
			if l := logs.FilterMessage("request refused").FilterField(zap.String("code", "invalid_request_body")); l.Len() != 1 {
				t.Errorf("%d request refused log lines with code invalid_request_body", l.Len())
			}
		})
	}
}

// A small body goes upstream with its exact Content-Length: an unedited
// one byte for byte with its own, an edited one with the edited length
// (before, every metered body went chunked). The bytes read ahead are let
// go of once the upstream has read them. A larger body streams, chunked.
func TestBodyContentLength(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.Reporting = &Reporting{} })
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"unedited", "/v1/messages", `{"model":"anthropic/claude-haiku-4.5","max_tokens":1024,"messages":[{"role":"user","content":"héllo"}]}`, ""},
		{"unedited with a BOM and spaces", "/v1/embeddings", "\xef\xbb\xbf { \"model\" : \"m\" , \"input\" : [ \"a\" ] }\n", ""},
		{"edited", "/v1/chat/completions", `{"model":"m","stream":true,"user":"bob"}`, `{"model":"m","stream":true,"user":"key:length","stream_options":{"include_usage":true}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.body
			}
			next := &bodyRecorder{}
			w := serve(t, h, bodyRequest(t, "length", tc.path, tc.body, int64(len(tc.body))), next)
			if w.Code != http.StatusOK || string(next.body) != want {
				t.Fatalf("status %d, the upstream got %q, want %q", w.Code, next.body, want)
			}
			if next.contentLength != int64(len(want)) || next.header.Get("Content-Length") != strconv.Itoa(len(want)) {
				t.Errorf("Content-Length %d (header %q), want %d", next.contentLength, next.header.Get("Content-Length"), len(want))
			}
			if hb, ok := next.reqBody.(*heldBody); !ok || hb.b != nil {
				t.Errorf("the body read ahead is %T, still holding its bytes after the upstream read them", next.reqBody)
			}
		})
	}
	t.Run("large", func(t *testing.T) {
		body := bigMessages() + "}"
		next := &bodyRecorder{}
		w := serve(t, h, bodyRequest(t, "length", "/v1/messages", body, int64(len(body))), next)
		if w.Code != http.StatusOK || string(next.body) != body || next.contentLength != -1 || next.header.Get("Content-Length") != "" {
			t.Fatalf("status %d, Content-Length %d %q, the body changed: %v", w.Code, next.contentLength, next.header.Get("Content-Length"), string(next.body) != body)
		}
	})
	t.Run("bodyless GET and OPTIONS are not read", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodOptions, http.MethodHead} {
			r := bodyRequest(t, "length", "/v1/chat/completions", "", 0)
			r.Method, r.Body = method, http.NoBody
			if w := serve(t, h, r, &bodyRecorder{}); w.Code != http.StatusOK {
				t.Errorf("%s: status %d", method, w.Code)
			}
		}
	})
	t.Run("multipart is not read", func(t *testing.T) {
		body := "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--x--\r\n"
		r := bodyRequest(t, "length", "/v1/audio/transcriptions", body, int64(len(body)))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
		next := &bodyRecorder{}
		if w := serve(t, h, r, next); w.Code != http.StatusOK || string(next.body) != body || next.contentLength != int64(len(body)) {
			t.Fatalf("status %d, the upstream got %q with Content-Length %d", w.Code, next.body, next.contentLength)
		}
	})
}

// heldBody lets go of its bytes at the end of the body or at Close, and
// refuses reads after Close.
func TestHeldBody(t *testing.T) {
	hb := &heldBody{b: []byte("abc")}
	buf := make([]byte, 2)
	if n, err := hb.Read(buf); n != 2 || err != nil || hb.b == nil {
		t.Fatalf("%d %v", n, err)
	}
	if n, err := hb.Read(buf); n != 1 || err != nil || hb.b != nil {
		t.Fatalf("%d %v, holding %q", n, err, hb.b)
	}
	if _, err := hb.Read(buf); err != io.EOF {
		t.Fatal(err)
	}
	hb = &heldBody{b: []byte("abc")}
	hb.Close()
	if _, err := hb.Read(buf); err == nil || hb.b != nil {
		t.Fatalf("read after Close: %v", err)
	}
}

// A body read ahead goes back to its pool once read whole or closed, and
// only then: the next buffer of that size may be the same array, so a
// body must never be readable from a buffer it gave back.
func TestHeldBodyBufferPool(t *testing.T) {
	for _, tc := range []struct{ n, size int }{{1, 512}, {512, 512}, {513, 1024}, {bodyReadAhead + 128, 128 << 10}} {
		if got := cap(*readAheadBuffer(tc.n)); got != tc.size {
			t.Errorf("a buffer for %d bytes holds %d, want %d", tc.n, got, tc.size)
		}
	}
	if b := readAheadBuffer(200 << 10); cap(*b) != 200<<10 {
		t.Errorf("past the largest pool: %d bytes", cap(*b))
	}
	for _, closeFirst := range []bool{false, true} {
		pooled := readAheadBuffer(3)
		*pooled = append((*pooled)[:0], "abc"...)
		hb := &heldBody{b: *pooled, pooled: pooled}
		buf := make([]byte, 2)
		if closeFirst {
			hb.Close()
		} else if n, err := hb.Read(buf); n != 2 || err != nil || hb.pooled == nil {
			t.Fatalf("first read: %d %v, pooled %v", n, err, hb.pooled != nil)
		}
		_, _ = hb.Read(buf)
		if hb.pooled != nil || hb.b != nil {
			t.Errorf("closed %v: the buffer is still held after the body's end", closeFirst)
		}
		hb.Close() // a second give-back would hand the buffer to two bodies
		if hb.pooled != nil {
			t.Error("the buffer came back")
		}
	}
}

// A JSON request whose Content-Type names a charset other than UTF-8 is
// refused with 415 before anything is read (the editor reads UTF-8; the
// gateway might decode the declared charset). (Before, a UTF-16LE body
// with charset=utf-16le carried the client's user and an unmetered
// stream upstream.)
func TestForeignCharsetRefused(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	utf16 := "{\x00\"\x00s\x00t\x00r\x00e\x00a\x00m\x00\"\x00:\x00t\x00r\x00u\x00e\x00}\x00"
	for ct, refused := range map[string]bool{
		"application/json; charset=utf-16le":  true,
		"application/json;charset=UTF-16":     true,
		"application/json; charset=latin1":    true,
		`application/json; charset="utf-32"`:  true,
		"application/json; charset=":          true,
		"application/json; charset=utf-8":     false,
		"application/json; Charset=UTF-8":     false,
		`application/json; charset="utf8"`:    false,
		"application/json":                    false,
		"text/plain; charset=utf-16le":        true, // a JSON endpoint whatever the type says
		"application/json; charset=utf-8; x=": true, // unreadable: refused
	} {
		r := bodyRequest(t, "charset", "/v1/chat/completions", utf16, int64(len(utf16)))
		r.Header.Set("Content-Type", ct)
		next := &bodyRecorder{}
		w := serve(t, h, r, next)
		switch {
		case refused && (w.Code != http.StatusUnsupportedMediaType || w.Header().Get("X-Ai-Gateway-Auth-Error") != "request_encoding_not_allowed" || next.called != 0):
			t.Errorf("%s: status %d %q, upstream called %d times; want 415", ct, w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), next.called)
		case !refused && w.Code != http.StatusBadRequest: // then the editor refuses UTF-16
			t.Errorf("%s: status %d, want the editor's 400", ct, w.Code)
		}
	}
	// a second Content-Type header is read too
	r := bodyRequest(t, "charset", "/v1/chat/completions", `{}`, 2)
	r.Header["Content-Type"] = []string{"application/json", "application/json; charset=utf-16le"}
	if w := serve(t, h, r, &bodyRecorder{}); w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("two Content-Types: status %d", w.Code)
	}
	// not a JSON request: not checked
	r = bodyRequest(t, "charset", "/v1/audio/transcriptions", "--x--\r\n", 7)
	r.Header.Set("Content-Type", "multipart/form-data; boundary=x; charset=latin1")
	if w := serve(t, h, r, &bodyRecorder{}); w.Code != http.StatusOK {
		t.Errorf("multipart: status %d", w.Code)
	}
}

// A body refused after a first attempt was answered 401: the replay
// reads the rest of it through the editor, which refuses; the client
// gets the 400, not the held 401.
func TestReplayOfARefusedBody(t *testing.T) {
	rig := newReplayRig(t, func(h *Handler) { h.UsageMetrics = true })
	rig.gw.readBody = "none" // the 401 comes before the body is read
	body := bigMessages() + `,"stream":true,"Stream":false}`
	w := httptest.NewRecorder()
	r := rig.request("/v1/chat/completions", strings.NewReader(body))
	r.Body = io.NopCloser(unknownLength{strings.NewReader(body)})
	r.ContentLength = -1
	if err := rig.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(rig.gw.ServeHTTP)); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusBadRequest || w.Header().Get("Www-Authenticate") != "" || !strings.Contains(w.Body.String(), "case variant") {
		t.Fatalf("status %d, headers %v: %s", w.Code, w.Header(), w.Body)
	}
}

// A small body read ahead is replayed after a 401 as it was forwarded:
// edited, with its length, whether the first attempt read it all, half
// or none of it.
func TestReplayOfAHeldBody(t *testing.T) {
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	want := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`
	for _, mode := range []string{"all", "none", "half"} {
		rig := newReplayRig(t, func(h *Handler) { h.UsageMetrics = true })
		rig.gw.readBody = mode
		w := rig.send(t, "/v1/chat/completions", body)
		calls := rig.gw.calls()
		if w.Code != http.StatusOK || len(calls) != 2 || string(calls[1].body) != want {
			t.Fatalf("%s: status %d after %d attempts; the replay sent %q", mode, w.Code, len(calls), calls[len(calls)-1].body)
		}
		if cl := calls[1].header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
			t.Errorf("%s: the replay's Content-Length %q, want %d", mode, cl, len(want))
		}
	}
}
