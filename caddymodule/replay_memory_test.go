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
