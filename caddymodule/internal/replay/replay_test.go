package replay

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// interceptWriter passes informational statuses and non-401 answers
// straight through, and keeps only a bounded part of a held 401's body.
func TestInterceptWriter(t *testing.T) {
	statuses := &statusLog{ResponseRecorder: httptest.NewRecorder()}
	iw := &interceptWriter{ResponseWriter: statuses}
	iw.WriteHeader(http.StatusEarlyHints)
	iw.WriteHeader(http.StatusUnauthorized) // final: held
	iw.WriteHeader(http.StatusOK)           // a second final status is ignored
	if !iw.held || fmt.Sprint(statuses.codes) != "[103]" {
		t.Errorf("103 then 401: held %v, statuses written %v; want held, [103]", iw.held, statuses.codes)
	}

	rec := httptest.NewRecorder()
	iw = &interceptWriter{ResponseWriter: rec}
	iw.WriteHeader(http.StatusTooManyRequests)
	iw.Write([]byte("slow down"))
	if iw.held || rec.Code != http.StatusTooManyRequests || rec.Body.String() != "slow down" {
		t.Errorf("429: held %v, recorder %d %q", iw.held, rec.Code, rec.Body)
	}
	// a body without a status is a 200, passed through
	rec = httptest.NewRecorder()
	iw = &interceptWriter{ResponseWriter: rec}
	iw.Write([]byte("ok"))
	if iw.held || rec.Code != http.StatusOK || rec.Body.String() != "ok" {
		t.Errorf("implicit 200: held %v, recorder %d %q", iw.held, rec.Code, rec.Body)
	}

	rec = httptest.NewRecorder()
	iw = &interceptWriter{ResponseWriter: rec}
	iw.WriteHeader(http.StatusUnauthorized)
	big := bytes.Repeat([]byte("z"), 3*max401Body)
	if n, err := iw.Write(big); n != len(big) || err != nil {
		t.Errorf("Write = %d, %v", n, err)
	}
	iw.Flush()
	if !iw.held || rec.Body.Len() != 0 || rec.Flushed {
		t.Fatalf("held 401 written or flushed: held %v, %d bytes, flushed %v", iw.held, rec.Body.Len(), rec.Flushed)
	}
	if iw.heldBody.Len() != max401Body {
		t.Errorf("kept %d bytes of the 401's body, want %d", iw.heldBody.Len(), max401Body)
	}
	if err := iw.sendHeld(); err != nil || rec.Code != http.StatusUnauthorized || rec.Body.Len() != max401Body {
		t.Errorf("sendHeld: %v, %d, %d bytes", err, rec.Code, rec.Body.Len())
	}
}

// statusLog records every status written to it.
type statusLog struct {
	*httptest.ResponseRecorder
	codes []int
}

func (s *statusLog) WriteHeader(code int) { s.codes = append(s.codes, code) }

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
			budget := NewBudget(0, limit)
			a := Begin(httptest.NewRecorder(), r, limit, budget)
			defer func() {
				a.End()
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
