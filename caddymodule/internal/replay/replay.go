// Package replay owns what a replay after an upstream 401 needs while
// the first attempt runs: a copy of the request body (teed as it streams
// upstream, never read ahead) within a memory [Budget], and the first
// response, held back only if it is a 401. When the gateway answers 401
// to a request that carried a refreshable credential, the module drops
// that credential, gets a fresh one and sends the request once more
// through [Attempt.Body], so the client sees the second answer.
//
// It never decides whether to replay (the credential's source does),
// never touches a credential or a request header, never logs, and knows
// nothing of Caddy: a response writer is an http.ResponseWriter.
//
// The copy is a memory budget: agents send 100 KiB to 1 MiB with every
// request and keep the answer streaming for tens of seconds. It exists
// only while a replay is still possible, from the first byte the
// upstream reads until its status is known; any status but 401 drops it.
package replay

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"maps"
	"net/http"
	"sync"
)

const (
	// DefaultBodyLimit is the largest body kept for a replay unless
	// configured otherwise (retry_body_limit).
	DefaultBodyLimit = 1 << 20
	// max401Body is how much of a held-back 401's body is kept to pass on
	// when no replay is possible; the gateway's 401 bodies are tiny.
	max401Body = 64 * 1024
)

// Attempt is one request's replay state, one allocation per request.
// Nothing is pooled: a body the transport may still read from its own
// goroutine after the attempt (the RoundTripper contract allows it until
// Close, and HTTP/2 may read once more after Close) belongs to its
// request only, so a late read can never reach another request's data.
type Attempt struct {
	rw     interceptWriter
	body   teeBody
	header headerSnapshot
}

// Begin starts the first attempt of r, answered through w: r's body is
// teed (up to limit bytes, within budget) as the upstream reads it, and
// the response header map is saved as it is. Send the request through
// Writer; call End when the request, and its replay if any, is over.
func Begin(w http.ResponseWriter, r *http.Request, limit int64, budget *Budget) *Attempt {
	a := &Attempt{}
	a.rw.ResponseWriter = w
	a.rw.tee = &a.body
	a.body.src, a.body.limit, a.body.budget = r.Body, limit, budget
	// A body known to be larger than the limit is not kept at all.
	if limit <= 0 || r.ContentLength > limit {
		a.body.dropped, a.body.why = true, ErrBodyTooLarge
		replayCopyTooLarge.Inc()
	}
	if r.ContentLength > 0 {
		a.body.size = r.ContentLength
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &a.body
	}
	a.header.save(w.Header())
	return a
}

// End drops whatever is left of the copy: the attempt (and its replay,
// if any) is over.
func (a *Attempt) End() { a.body.release() }

// Writer is the writer the first attempt answers through: everything
// passes to the client's writer but a 401 as the first final status,
// which is held back.
func (a *Attempt) Writer() http.ResponseWriter { return &a.rw }

// Held reports whether the first attempt's answer was a 401, held back.
func (a *Attempt) Held() bool { return a.rw.held }

// SendHeld writes the held-back 401 to the client unchanged.
func (a *Attempt) SendHeld() error { return a.rw.sendHeld() }

// Body returns a body that reads like the original from the start, for
// the replay, or why none can be had: [ErrBodyTooLarge], [ErrMemory], or
// the error of the original body (which may be a body editor's
// refusal). Call it at most once, after a 401 was held.
func (a *Attempt) Body() (io.ReadCloser, error) { return a.body.replayable() }

// Discard puts the response header map h back as it was before the
// first attempt (the 401's headers must not leak into the answer that
// replaces it) and lets go of the held 401's body.
func (a *Attempt) Discard(h http.Header) {
	a.header.restore(h)
	a.rw.heldBody = bytes.Buffer{}
}

// headerSnapshot is the response header map as it was before the first
// attempt (e.g. set by the header directive), put back before a replay
// so that the upstream's 401 headers do not leak into the answer. Caddy
// sets one or two headers before the handlers run: up to 8 are kept
// inline, so that a request allocates no map for them.
type headerSnapshot struct {
	n    int
	keys [8]string
	vals [8][]string
	more http.Header // all of them, when there are more than 8
}

func (s *headerSnapshot) save(h http.Header) {
	if len(h) > len(s.keys) {
		s.more = maps.Clone(h)
		return
	}
	for k, v := range h {
		s.keys[s.n], s.vals[s.n] = k, v
		s.n++
	}
}

func (s *headerSnapshot) restore(h http.Header) {
	clear(h)
	if s.more != nil {
		maps.Copy(h, s.more)
		return
	}
	for i := range s.n {
		h[s.keys[i]] = s.vals[i]
	}
}

// interceptWriter passes everything through, except a 401 as the first
// status: that one (its headers stay in the map, its body is kept up to
// max401Body) is held back for the handler to decide on. Any other final
// status means no replay: the copy of the body is dropped at once.
type interceptWriter struct {
	http.ResponseWriter
	tee         *teeBody // nil: nothing to drop
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
	if w.tee != nil {
		w.tee.release()
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

// Unwrap returns the client's writer, for http.ResponseController.
func (w *interceptWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errNotImplemented is what Push returns when the writer below cannot
// push (the message of Caddy's own wrappers').
var errNotImplemented = errors.New("method not implemented")

// Push implements http.Pusher, passing a push on when the writer below
// can push, as Caddy's response writer wrappers do.
func (w *interceptWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := w.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return errNotImplemented
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
// up to limit and within the handler's replay budget, until release. Close does not close the real body (the
// server does), so what the upstream did not read can still be read on
// replay. Reads may come from the transport's own goroutine, even after
// the attempt returned or after Close; they are serialized with the
// replay's, and refused once the replay has taken the body.
type teeBody struct {
	src    io.ReadCloser
	limit  int64
	size   int64 // Content-Length, when known
	budget *Budget

	// readMu serializes reads of src (the transport's and the replay's).
	readMu   sync.Mutex
	eof      bool
	detached bool // the replay has the body: later reads fail

	// mu guards the copy. It is never held across a read of src, so a
	// status never waits on a client that is slow to send its body.
	mu       sync.Mutex
	copy     chunks
	reserved int64 // bytes of the budget this copy holds
	dropped  bool  // over the limit or the budget, or no replay possible: nothing is kept
	why      error // why no replay is possible, when not the status
}

var (
	errBodyDetached = errors.New("request body read after its attempt ended")
	// ErrBodyTooLarge is why a body over the limit has no replay.
	ErrBodyTooLarge = errors.New("request body larger than retry_body_limit")
	// ErrMemory is why a body whose copy found the budget spent has no
	// replay.
	ErrMemory = errors.New("the replay copies in flight used retry_memory_limit")
)

func (b *teeBody) Read(p []byte) (int, error) {
	b.readMu.Lock()
	defer b.readMu.Unlock()
	if b.detached {
		return 0, errBodyDetached
	}
	n, err := b.src.Read(p)
	if n > 0 {
		b.keep(p[:n])
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *teeBody) keep(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped {
		return
	}
	need := b.copy.n + int64(len(p))
	if need > b.limit {
		b.drop(ErrBodyTooLarge)
		replayCopyTooLarge.Inc()
		return
	}
	if need > b.reserved && !b.reserve(need) {
		b.drop(ErrMemory)
		replayCopyNoMemory.Inc()
		return
	}
	if b.copy.n == 0 && b.size > 0 {
		b.copy.presize(b.size)
	}
	b.copy.write(p)
}

// reserve takes budget for the memory of a copy of at least need bytes:
// the whole body's at once when its length is known, so that a copy is
// all or nothing and a burst of uploads cannot leave every one of them
// half kept; otherwise a chunk at a time. Under b.mu.
func (b *teeBody) reserve(need int64) bool {
	want := memory(b.size, max(b.size, need))
	if !b.budget.reserve(want - b.reserved) {
		return false
	}
	b.reserved = want
	return true
}

// drop lets go of the copy and its budget; why says why no replay is
// possible (nil: the status made it moot). Under b.mu.
func (b *teeBody) drop(why error) {
	b.dropped = true
	if why != nil && b.why == nil {
		b.why = why
	}
	b.copy.free()
	b.budget.give(b.reserved)
	b.reserved = 0
}

// Close leaves the real body to the server; reads after it still work
// (the transport may make one), and touch only this request's body.
func (b *teeBody) Close() error { return nil }

// release drops the copy and stops copying: no replay can happen.
// The budget the copy held is returned; after a replay, that is when the
// replay is over.
func (b *teeBody) release() {
	b.mu.Lock()
	b.drop(nil)
	b.mu.Unlock()
}

// replayable returns a body that reads like the original from the start,
// or why none can be had: the body was, or turns out to be, larger than
// the limit, or its copy found the budget spent. The replay takes the
// copy: the teeBody keeps nothing after this but its budget, until
// release.
func (b *teeBody) replayable() (io.ReadCloser, error) {
	if b.src == nil {
		return nil, nil
	}
	b.readMu.Lock()
	defer b.readMu.Unlock()
	b.detached = true
	b.mu.Lock()
	c, dropped, why := b.copy, b.dropped, b.why
	b.copy, b.dropped = chunks{}, true
	b.mu.Unlock()
	if dropped {
		return nil, cmp.Or(why, ErrBodyTooLarge)
	}
	if !b.eof {
		if err := b.copyRest(&c); err != nil {
			c.free()
			return nil, err
		}
	}
	// Its chunks go to the GC, not back to the pool: the transport may
	// still read the replay's body after the request is over. Its budget
	// is given back once the replay has read it all.
	return &replayBody{c: c, done: b.release}, nil
}

// copyRest reads what the upstream left of the body into c, within the
// limit and the budget, a read at a time: the rest never sits in memory
// twice, nor outside the budget.
func (b *teeBody) copyRest(c *chunks) error {
	if c.n == 0 && b.size > 0 {
		c.presize(b.size) // the upstream read none of it
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := b.src.Read(buf)
		if n > 0 {
			need := c.n + int64(n)
			if need > b.limit {
				replayCopyTooLarge.Inc()
				return ErrBodyTooLarge
			}
			if !b.reserveRest(need) {
				replayCopyNoMemory.Inc()
				return ErrMemory
			}
			c.write(buf[:n])
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// reserveRest is reserve for the replay, which does not hold b.mu.
func (b *teeBody) reserveRest(need int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return need <= b.reserved || b.reserve(need)
}

// chunkSize is the unit of the copy. The chunks are pooled: a copy lives
// a few milliseconds (the time to upload a body), and reusing its memory
// at once, instead of leaving each agent-sized copy as garbage until the
// next GC, is what keeps memory per stream and CPU per request near plain
// Caddy's (BenchmarkServeHTTPOIDC/body=256KiB, bench/scale.sh). Small
// chunks: a pool never holds a large buffer, and a copy is never larger
// than its body by more than one chunk. A body known to be smaller than a
// chunk gets a buffer cut to fit instead: most requests are small, and
// each would otherwise hold (and take from the budget) a whole chunk.
// (Cutting the last chunk of larger bodies too would make it garbage at
// every request: 16 KiB more allocated per request, measured.)
const chunkSize = 16 << 10

type chunk [chunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// chunks is a copy held in chunks, each full but the last. Whoever holds
// it owns its chunks: the teeBody under its mu, then (after replayable)
// the replay's body. The first chunk is apart, so that a small body's
// copy costs one allocation, its buffer.
type chunks struct {
	head []byte   // the first chunk
	rest [][]byte // the others
	n    int64
	size int64 // the body's Content-Length, when known
}

// memory is what a copy of n bytes of a body of size bytes (0: unknown)
// holds: whole chunks, or the body's size when it is known to fit in less
// than one.
func memory(size, n int64) int64 {
	if size > 0 && size < chunkSize {
		return size + memory(0, n-size) // more than size: pooled chunks after it
	}
	return (max(n, 0) + chunkSize - 1) / chunkSize * chunkSize
}

// presize prepares for a body of size bytes (Content-Length). A body
// under a chunk gets a buffer cut to fit instead of a pooled chunk.
func (c *chunks) presize(size int64) {
	c.size = size
	if size > chunkSize {
		c.rest = make([][]byte, 0, (size-1)/chunkSize)
	}
}

func (c *chunks) write(p []byte) {
	for len(p) > 0 {
		last := &c.head
		if len(c.rest) > 0 {
			last = &c.rest[len(c.rest)-1]
		}
		if len(*last) == cap(*last) {
			var next []byte
			if c.head == nil && c.size > 0 && c.size < chunkSize {
				next = make([]byte, 0, c.size)
			} else {
				next = chunkPool.Get().(*chunk)[:0]
			}
			if c.head == nil {
				c.head = next
			} else {
				c.rest = append(c.rest, next)
			}
			continue
		}
		m := min(len(p), cap(*last)-len(*last))
		*last = append(*last, p[:m]...)
		p = p[m:]
		c.n += int64(m)
	}
}

// free puts the pooled chunks back; c must not be used afterwards by
// anyone else (only the teeBody calls it, under its mu).
func (c *chunks) free() {
	putChunk(c.head)
	for _, ch := range c.rest {
		putChunk(ch)
	}
	*c = chunks{}
}

func putChunk(ch []byte) {
	if cap(ch) == chunkSize {
		chunkPool.Put((*chunk)(ch[:chunkSize]))
	}
}

// replayBody reads the copy for the replay and lets go of it at the end:
// the replayed answer may stream for minutes. Close does nothing, so a
// Close from the transport's other goroutine races with nothing.
type replayBody struct {
	c    chunks
	off  int    // in c.head; each chunk read to its end is let go of
	done func() // gives the copy's budget back, at the end
}

func (r *replayBody) Read(p []byte) (int, error) {
	for r.off == len(r.c.head) {
		if len(r.c.rest) == 0 {
			r.c = chunks{}
			if r.done != nil {
				r.done() // safe to call again: the attempt's end does too
				r.done = nil
			}
			return 0, io.EOF
		}
		next := r.c.rest[0]
		r.c.rest[0] = nil // the GC may have the chunks already read
		r.c.head, r.c.rest, r.off = next, r.c.rest[1:], 0
	}
	n := copy(p, r.c.head[r.off:])
	r.off += n
	return n, nil
}

func (r *replayBody) Close() error { return nil }
