package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The replay copy of a body lives only until the upstream's status is
// known. Agents send 100 KiB to 1 MiB per request and keep the answer
// streaming: with 64 streams of 256 KiB bodies open, the heap must not
// hold their copies (16 MiB) once each stream's 200 went out, even
// though the upstream read half of each body before its status and the
// rest after it.
func TestReplayCopyReleasedOnStatus(t *testing.T) {
	const streams, size = 64, 256 << 10
	for _, tc := range []struct {
		name  string
		known bool // Content-Length known
	}{{"known length", true}, {"chunked", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newReplayRig(t, nil)
			rig.gw.refused = nil // the gateway accepts the token: no replay
			body := strings.Repeat("x", size)
			opened := make(chan struct{}, streams)
			finish := make(chan struct{})
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, size/2)); err != nil {
					return err
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil || n != size/2 {
					t.Errorf("read %d bytes after the status (%v), want %d", n, err, size/2)
				}
				io.WriteString(w, "data: one\n\n")
				http.NewResponseController(w).Flush()
				opened <- struct{}{}
				<-finish // the stream stays open
				return nil
			})

			before := heapAlloc()
			var wg sync.WaitGroup
			for range streams {
				wg.Go(func() {
					var rd io.Reader = strings.NewReader(body)
					if !tc.known {
						rd = unknownLength{rd}
					}
					w := httptest.NewRecorder()
					if err := rig.h.ServeHTTP(w, rig.request("/v1/messages", rd), next); err != nil {
						t.Error(err)
					}
					if w.Code != http.StatusOK {
						t.Errorf("status %d", w.Code)
					}
				})
			}
			for range streams {
				<-opened
			}
			held := heapAlloc() - before
			close(finish)
			wg.Wait()
			if limit := int64(streams * size / 4); held > limit {
				t.Errorf("with %d streams open the heap grew by %d KiB (%d KiB per stream), want under %d KiB: "+
					"the copies of their %d KiB bodies are still held", streams, held>>10, held>>10/streams, limit>>10, size>>10)
			}
			t.Logf("heap held per open stream: %d bytes", held/streams)
		})
	}
}

func heapAlloc() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// The copy is held in chunks, as many as the body needs, listed in a
// slice sized from Content-Length when it is known; nothing is kept for
// a body over the limit, nor once a status other than 401 arrived.
func TestTeeBodySizing(t *testing.T) {
	const limit = 600 << 10
	for _, tc := range []struct {
		name   string
		size   int
		known  bool // Content-Length known
		status int  // written halfway through the body; 0: none
		kept   bool
	}{
		{"known length", 100 << 10, true, 0, true},
		{"known length at the limit", limit, true, 0, true},
		{"small", 70, true, 0, true},
		{"chunked", 590 << 10, false, 0, true},
		{"known over the limit", limit + 1, true, 0, false},
		{"chunked over the limit", 2 * limit, false, 0, false},
		{"200 halfway", 100 << 10, true, http.StatusOK, false},
		{"429 halfway", 100 << 10, false, http.StatusTooManyRequests, false},
		{"401 halfway", 100 << 10, true, http.StatusUnauthorized, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.Repeat("b", tc.size)
			var rd io.Reader = strings.NewReader(body)
			if !tc.known {
				rd = unknownLength{rd}
			}
			r := httptest.NewRequest(http.MethodPost, "/v1/messages", rd)
			budget := newReplayBudget(0, limit)
			a := newAttempt(httptest.NewRecorder(), r, limit, budget)
			defer func() {
				a.end()
				if u := budget.used.Load(); u != 0 {
					t.Errorf("%d bytes of the budget still reserved after the attempt", u)
				}
			}()
			buf := make([]byte, 4096) // the transport's write buffer
			read := 0
			for {
				if tc.status != 0 && read >= tc.size/2 {
					a.rw.WriteHeader(tc.status)
				}
				n, err := r.Body.Read(buf)
				if read == 0 && n > 0 && tc.known && tc.size <= limit {
					// a known length is reserved whole at the first byte:
					// a copy is all or nothing
					if got, want := budget.used.Load(), memory(int64(tc.size), int64(tc.size)); got != want {
						t.Errorf("%d bytes reserved after the first read, want the whole copy's %d", got, want)
					}
				}
				read += n
				if err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			a.body.mu.Lock()
			c := a.body.copy
			a.body.mu.Unlock()
			reserved := budget.used.Load()
			if !tc.kept {
				if c.n != 0 || c.head != nil || c.rest != nil || reserved != 0 {
					t.Fatalf("%d bytes in %d chunks kept, %d reserved, want none", c.n, chunkCount(c), reserved)
				}
				return
			}
			// the budget holds the copy's memory: whole chunks, or the
			// body's own size when it is known to be under one
			want := int64((tc.size + chunkSize - 1) / chunkSize * chunkSize)
			if tc.known && tc.size < chunkSize {
				want = int64(tc.size)
			}
			if reserved != want {
				t.Errorf("%d bytes reserved, want %d", reserved, want)
			}
			n := (tc.size + chunkSize - 1) / chunkSize
			if c.n != int64(tc.size) || chunkCount(c) != n {
				t.Errorf("%d bytes in %d chunks kept, want %d in %d", c.n, chunkCount(c), tc.size, n)
			}
			if tc.known && cap(c.rest) != n-1 {
				t.Errorf("chunk list capacity %d, want %d (from Content-Length)", cap(c.rest), n-1)
			}
			rc, err := a.body.replayable()
			if err != nil {
				t.Fatalf("not replayable: %v", err)
			}
			if got, _ := io.ReadAll(rc); string(got) != body {
				t.Errorf("replay body: %d bytes, want the %d-byte body", len(got), len(body))
			}
			// read to the end, the copy gives its budget back at once,
			// not when the replayed answer ends
			if u := budget.used.Load(); u != 0 {
				t.Errorf("%d bytes of the budget still reserved once the replay read the copy", u)
			}
			if _, err := r.Body.Read(buf); err != errBodyDetached {
				t.Errorf("read after the replay took the body: %v, want errBodyDetached", err)
			}
		})
	}
}

// The replayed answer may stream for minutes: its body lets go of the
// copy once read to the end, and reads the same bytes through small and
// odd-sized reads as through large ones.
func TestReplayBodyLetsGo(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 3*chunkSize/16+5)
	for _, size := range []int{1, 7, 4096, chunkSize, 3 * chunkSize} {
		var c chunks
		c.write([]byte(body))
		rb := &replayBody{c: c}
		var got []byte
		p := make([]byte, size)
		for {
			n, err := rb.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
		}
		if string(got) != body {
			t.Errorf("reads of %d: got %d bytes, want the %d-byte body", size, len(got), len(body))
		}
		if rb.c.head != nil || rb.c.rest != nil {
			t.Error("the copy is still held after EOF")
		}
	}
}

func chunkCount(c chunks) int {
	if c.head == nil {
		return 0
	}
	return 1 + len(c.rest)
}
