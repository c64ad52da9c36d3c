package caddymodule

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// One reading per request: with metering on, every JSON request body is
// read strictly by the body editor (package jsonbody), whether or not it is
// edited, and what the editor refuses never reaches the upstream whole.
//
//   - A body with a Content-Length of at most bodyReadAhead is read whole
//     through the editor before the next handler is called: a refusal is
//     answered 400 invalid_request_body and nothing goes upstream; else
//     the edited bytes go with their exact Content-Length (an unedited
//     body byte for byte, with its own). The buffer is let go of as soon
//     as the upstream has read it.
//   - A larger body, or one without a Content-Length, streams through the
//     editor (chunked: an edit changes its length). Where the editor
//     refuses, its Read fails: the transport aborts the upstream request
//     before the body ends (no chunked terminator), reverse_proxy returns
//     an error, and the client gets the same 400 instead of a 502 (unless
//     an answer had already started).
//
// JSON endpoints are AI Gateway's JSON APIs (jsonPaths) and any request
// whose Content-Type is JSON. Multipart uploads (/v1/images/edits,
// /v1/audio/transcriptions) are not read.

// bodyReadAhead is the largest body read whole before the upstream is
// called.
const bodyReadAhead = 64 << 10

// jsonPaths are the endpoints whose request body is JSON whatever its
// Content-Type says.
var jsonPaths = map[string]bool{
	"/v1/chat/completions":      true,
	"/v1/completions":           true,
	"/v1/responses":             true,
	"/v1/responses/compact":     true,
	"/v1/messages":              true,
	"/v1/messages/count_tokens": true,
	"/v1/embeddings":            true,
	"/v1/images/generations":    true,
	"/v1/audio/speech":          true,
	"/v1/rerank":                true,
	"/v2/rerank":                true,
}

// jsonRequest reports whether r's body is to be read as JSON: a JSON
// endpoint (a trailing slash changes nothing), or a JSON Content-Type;
// and a body, or a method that has one (an empty POST is refused, a
// bodyless GET or OPTIONS is not read).
func jsonRequest(r *http.Request) bool {
	if r.ContentLength == 0 && r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return false
	}
	if jsonPaths[strings.TrimRight(r.URL.Path, "/")] {
		return true
	}
	for _, ct := range r.Header["Content-Type"] {
		mt, _, _ := strings.Cut(ct, ";")
		mt = strings.TrimSpace(mt)
		if strings.EqualFold(mt, "application/json") || len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json") {
			return true
		}
	}
	return false
}

// foreignCharset reports whether a JSON request declares a charset other
// than UTF-8 (or a Content-Type the proxy cannot read a charset from):
// the editor reads UTF-8, and the gateway might decode the declared one.
func foreignCharset(r *http.Request) bool {
	if !jsonRequest(r) {
		return false
	}
	for _, ct := range r.Header["Content-Type"] {
		if !containsFold(ct, "charset") {
			continue
		}
		_, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return true
		}
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains the lower-case ASCII word,
// in any case.
func containsFold(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(word)], word) {
			return true
		}
	}
	return false
}

// readJSONBody puts the body editor on r's body (see the file comment)
// and, for a small body, reads it whole. It returns the editor's
// refusal, or the client's error reading the body.
func (m *meterWriter) readJSONBody(r *http.Request, opts jsonbody.Options) error {
	src := r.Body
	if src == nil {
		src = http.NoBody
	}
	m.body = jsonbody.NewEditor(src, opts)
	if r.ContentLength < 0 || r.ContentLength > bodyReadAhead {
		r.Body = m.body
		m.streamed = true
		r.ContentLength = -1 // an edit changes the length: send it chunked
		delete(r.Header, "Content-Length")
		return nil
	}
	pooled := readAheadBuffer(int(r.ContentLength) + 128) // room for the usual edits
	buf := (*pooled)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := m.body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	*pooled = buf                                   // the same array, unless an edit outgrew it
	m.readAhead.b, m.readAhead.pooled = buf, pooled // in the meterWriter: one allocation less per request
	r.Body = &m.readAhead
	if int64(len(buf)) != r.ContentLength {
		r.ContentLength = int64(len(buf))
		r.Header["Content-Length"] = []string{strconv.Itoa(len(buf))}
	}
	return nil
}

// heldBody is a small request body read ahead. It lets go of its bytes
// as soon as they are read (or at Close), its buffer back to the pool
// it came from: a stream that lasts minutes does not keep them, and the
// next body reuses them. Reads after Close fail.
type heldBody struct {
	mu     sync.Mutex
	b      []byte
	pooled *[]byte // the buffer b is in, until it goes back to its pool
	closed bool
	// sent: the upstream read it to its end (the request went whole)
	sent atomic.Bool
}

func (h *heldBody) Read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, jsonbody.ErrClosed
	}
	n := copy(p, h.b)
	if h.b = h.b[n:]; len(h.b) == 0 {
		h.letGo()
		h.sent.Store(true)
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

func (h *heldBody) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.letGo()
	return nil
}

// letGo gives the buffer back: the bytes were copied out (or never will
// be), and nothing else points into it. Called with mu held.
func (h *heldBody) letGo() {
	h.b = nil
	if h.pooled != nil {
		putReadAheadBuffer(h.pooled)
		h.pooled = nil
	}
}

// readAheadPools hold the buffers of bodies read ahead, by size: powers
// of two from 512 bytes to the smallest one above bodyReadAhead plus
// room for the edits, so that a small body never holds a large buffer.
var readAheadPools [9]sync.Pool // of *[]byte: 512 B, 1 KiB, ..., 128 KiB

const smallestReadAhead = 512

// readAheadPool is the index of the smallest pool whose buffers hold n
// bytes, or -1 past the largest.
func readAheadPool(n int) int {
	for i, size := 0, smallestReadAhead; i < len(readAheadPools); i, size = i+1, size*2 {
		if n <= size {
			return i
		}
	}
	return -1
}

// readAheadBuffer returns a buffer with room for n bytes, from its pool.
func readAheadBuffer(n int) *[]byte {
	i := readAheadPool(n)
	if i < 0 {
		b := make([]byte, 0, n)
		return &b
	}
	if b, ok := readAheadPools[i].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, smallestReadAhead<<i)
	return &b
}

// putReadAheadBuffer gives b back to the pool of its size (an edit may
// have grown it past its pool's).
func putReadAheadBuffer(b *[]byte) {
	c := cap(*b)
	if i := readAheadPool(c); i >= 0 && c == smallestReadAhead<<i {
		*b = (*b)[:0]
		readAheadPools[i].Put(b)
	}
}

// bodyError is the refusal of a body the editor refused (400
// invalid_request_body, in the shape the client's SDK parses); any other
// error (the client's, reading its body) is returned as Caddy's: 413 for
// a body over a request_body limit, else 400.
func bodyError(r *http.Request, name string, err error) (*refusal, error) {
	if ref, ok := asModelRefusal(r, name, err); ok { // the model check (modelcheck.go)
		return ref, nil
	}
	ref, ok := errors.AsType[*jsonbody.Refusal](err)
	if !ok {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
		}
		return nil, caddyhttp.Error(http.StatusBadRequest, err)
	}
	return invalidBody(r, name, ref), nil
}

// countForwarded counts a request sent upstream, unless its body was
// refused as it streamed: its refusal counts that one a bad request.
func countForwarded(w http.ResponseWriter) {
	if m, ok := w.(*meterWriter); ok && m.body != nil && (m.body.Refusal() != nil || m.body.Stopped() != nil || m.admitRef != nil) && !m.wroteHeader {
		return
	}
	forwardedCounter.Inc()
}

// refusedAsItStreamed is the refusal to answer (400
// invalid_request_body) for a body the editor refused as it streamed,
// instead of the error reverse_proxy returned when its upstream request
// was aborted; only while no answer has started.
func (m *meterWriter) refusedAsItStreamed() *refusal {
	if m.body == nil || m.wroteHeader {
		return nil
	}
	if ref, ok := asModelRefusal(m.r, m.id, m.body.Stopped()); ok { // the model check (modelcheck.go)
		m.refusalAnswered = true
		return ref
	}
	if m.admitRef != nil { // not admitted at the body's end (budget.go)
		return m.admitRef
	}
	ref := m.body.Refusal()
	if ref == nil {
		return nil
	}
	m.refusalAnswered = true
	return invalidBody(m.r, m.id, ref)
}
