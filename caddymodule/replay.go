package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Refresh-and-replay: when the gateway answers 401 to a request that
// carried a refreshable credential, the handler drops that credential,
// gets a fresh one and sends the request once more, so the client sees
// the second answer. This needs two things kept while the first attempt
// runs: a copy of the request body (teed as it streams upstream, never
// read ahead) and the first response, held back only if it is a 401.

const (
	defaultRetryBodyLimit = 1 << 20
	// max401Body is how much of a held-back 401's body is kept to pass on
	// when no replay is possible; the gateway's 401 bodies are tiny.
	max401Body = 64 * 1024
)

// attempt is one request's replay state; pooled, so a proxied request
// allocates nothing for it.
type attempt struct {
	rw   interceptWriter
	body teeBody
	// header is the response header map as it was before the first
	// attempt (e.g. set by the header directive), restored before a
	// replay so the upstream's 401 headers do not leak into the answer.
	header http.Header
}

var attempts = sync.Pool{New: func() any { return &attempt{header: http.Header{}} }}

func getAttempt(w http.ResponseWriter, r *http.Request, limit int64) *attempt {
	a := attempts.Get().(*attempt)
	a.rw = interceptWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	a.body.reset(r.Body, limit, r.ContentLength)
	a.body.wrapped = r.Body != nil && r.Body != http.NoBody
	if a.body.wrapped {
		r.Body = &a.body
	}
	for k, v := range w.Header() {
		a.header[k] = v
	}
	return a
}

func putAttempt(a *attempt) {
	if !a.body.reusable() {
		return // a reader may still hold it: leave it to the GC
	}
	a.rw = interceptWriter{}
	a.body.reset(nil, 0, 0)
	clear(a.header)
	attempts.Put(a)
}

// restoreHeader puts the response header map back as it was before the
// first attempt.
func (a *attempt) restoreHeader(h http.Header) {
	clear(h)
	for k, v := range a.header {
		h[k] = v
	}
}

// interceptWriter passes everything through, except a 401 as the first
// status: that one (its headers stay in the map, its body is kept up to
// max401Body) is held back for the handler to decide on.
type interceptWriter struct {
	caddyhttp.ResponseWriterWrapper
	wroteHeader bool
	held        bool
	heldBody    bytes.Buffer
}

func (w *interceptWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	if status >= 100 && status < 200 {
		w.ResponseWriter.WriteHeader(status) // informational: not final
		return
	}
	w.wroteHeader = true
	if status == http.StatusUnauthorized {
		w.held = true
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *interceptWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.held {
		if room := max401Body - w.heldBody.Len(); room > 0 {
			w.heldBody.Write(p[:min(len(p), room)])
		}
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps io.Copy from bypassing Write.
func (w *interceptWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{w}, r)
}

// FlushError flushes through to the client (SSE), except a held 401.
// It goes through http.ResponseController because the writer Caddy hands
// a handler is itself a wrapper that exposes Flush only via Unwrap.
func (w *interceptWriter) FlushError() error {
	if w.held {
		return nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher for callers that do not use
// http.ResponseController.
func (w *interceptWriter) Flush() { _ = w.FlushError() }

// sendHeld writes the held-back 401 to the client unchanged.
func (w *interceptWriter) sendHeld() error {
	if w.heldBody.Len() >= max401Body {
		w.Header().Del("Content-Length") // the body was cut
	}
	w.ResponseWriter.WriteHeader(http.StatusUnauthorized)
	_, err := w.ResponseWriter.Write(w.heldBody.Bytes())
	return err
}

// teeBody keeps a copy of what the upstream reads of the request body,
// up to limit. Close does not close the real body (the server does), so
// what the upstream did not read can still be read on replay.
//
// The transport may go on reading the body in its own goroutine after
// the attempt has returned (the http.RoundTripper contract allows it
// until it calls Close): reads are serialized with replayable, refused
// once the replay has taken the body, and a body is reused for another
// request only after its reader closed it.
type teeBody struct {
	mu       sync.Mutex
	src      io.ReadCloser
	buf      bytes.Buffer
	limit    int64
	overflow bool
	eof      bool
	detached bool // the replay has the body: later reads fail
	lent     bool // the replay's reader holds buf
	wrapped  bool // installed as the request body
	closed   atomic.Bool
}

var errBodyDetached = errors.New("request body read after its attempt ended")

func (b *teeBody) reset(src io.ReadCloser, limit, contentLength int64) {
	b.src, b.limit, b.eof = src, limit, false
	b.detached, b.lent, b.wrapped = false, false, false
	b.closed.Store(false)
	b.buf.Reset()
	// A body known to be larger than the limit is not kept at all.
	b.overflow = limit <= 0 || contentLength > limit
}

// reusable reports whether no reader can touch b any more: it was never
// handed out, or its reader closed it and is not in a read.
func (b *teeBody) reusable() bool {
	if !b.wrapped {
		return true
	}
	if !b.closed.Load() || !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	return !b.lent
}

func (b *teeBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errBodyDetached
	}
	n, err := b.src.Read(p)
	if n > 0 && !b.overflow {
		if int64(b.buf.Len()+n) > b.limit {
			b.overflow = true
			b.buf.Reset()
		} else {
			b.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *teeBody) Close() error {
	b.closed.Store(true)
	return nil
}

// replayable returns a body that reads like the original from the start,
// or false when the body was, or turns out to be, larger than the limit.
func (b *teeBody) replayable() (io.ReadCloser, bool) {
	if b.src == nil {
		return nil, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.detached = true
	if b.overflow {
		return nil, false
	}
	if !b.eof {
		// read what the upstream left, still within the limit
		rest, err := io.ReadAll(io.LimitReader(b.src, b.limit-int64(b.buf.Len())+1))
		if err != nil || int64(b.buf.Len()+len(rest)) > b.limit {
			return nil, false
		}
		b.buf.Write(rest)
	}
	b.lent = true
	return io.NopCloser(bytes.NewReader(b.buf.Bytes())), true
}
