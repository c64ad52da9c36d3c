package caddymodule

import (
	"net/http"
	"testing"
)

// With metering on, a request body in any content coding but identity is
// refused with 415, however the coding is spelled or hidden: in capitals,
// under another name, in a comma list, or on a second Content-Encoding
// line after an identity or empty first one (which Header.Get alone
// reads). A refusal of the literal `gzip` only, or of the first line
// only, fails here.
func TestContentEncodingEveryValue(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	for _, tc := range []struct {
		name  string
		lines []string // the Content-Encoding header's lines, in order
		ok    bool
	}{
		{"gzip", []string{"gzip"}, false},
		{"GZIP", []string{"GZIP"}, false},
		{"x-gzip", []string{"x-gzip"}, false},
		{"br", []string{"br"}, false},
		{"deflate", []string{"deflate"}, false},
		{"zstd", []string{"zstd"}, false},
		{"compress", []string{"compress"}, false},
		{"list identity, gzip", []string{"identity, gzip"}, false},
		{"list gzip, identity", []string{"gzip, identity"}, false},
		{"list with empty elements", []string{" , ,gzip"}, false},
		{"lines identity then gzip", []string{"identity", "gzip"}, false},
		{"lines empty then gzip", []string{"", "gzip"}, false},
		{"spaces around gzip", []string{" gzip "}, false},
		{"tab before gzip", []string{"\tgzip"}, false},
		{"unknown coding", []string{"aes128gcm"}, false},
		{"identity", []string{"identity"}, true},
		{"Identity", []string{"Identity"}, true},
		{"lines identity twice", []string{"identity", " IDENTITY "}, true},
		{"empty", []string{""}, true},
		{"empty elements only", []string{" , "}, true},
		{"none", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := chatRequest(t, "encoder", `{"model":"openai/gpt-5","messages":[]}`)
			if tc.lines != nil {
				r.Header["Content-Encoding"] = tc.lines
			}
			var next recordingNext
			w := serve(t, h, r, next.handler())
			reached := len(next.calls()) == 1
			if tc.ok {
				if w.Code != http.StatusOK || !reached {
					t.Errorf("Content-Encoding %q: status %d, reached %v; want it passed on", tc.lines, w.Code, reached)
				}
				return
			}
			if w.Code != http.StatusUnsupportedMediaType || w.Header().Get("X-Ai-Gateway-Auth-Error") != "request_encoding_not_allowed" || reached {
				t.Errorf("Content-Encoding %q: status %d %q, reached %v; want 415 request_encoding_not_allowed, not reached",
					tc.lines, w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), reached)
			}
			assertErrorShape(t, w.Body.Bytes(), false, errInvalidRequest, "request_encoding_not_allowed")
		})
	}
}

// A request without a body has nothing to hide in a coding: a GET that
// names one passes, metering on or not.
func TestContentEncodingWithoutBody(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	r := clientRequest(t, "encoder", "/v1/models")
	r.Method, r.Body, r.ContentLength = http.MethodGet, http.NoBody, 0
	r.Header["Content-Encoding"] = []string{"identity", "gzip"}
	var next recordingNext
	if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK || len(next.calls()) != 1 {
		t.Errorf("GET with Content-Encoding and no body: status %d, %d upstream calls; want it passed on", w.Code, len(next.calls()))
	}
}
