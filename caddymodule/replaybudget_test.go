package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A burst of uploads whose token the gateway refuses: the copies in
// flight never use more than the budget, the requests that got a copy
// are replayed, and the others get the gateway's 401 marked for a retry
// (the credential was replaced, so a retry works). Every request is
// inside the handler before any body is read, so the default budget is
// the same for all 40: 4 KiB each (160 KiB), and at least one
// retry_body_limit body.
func TestReplayBudgetBurst(t *testing.T) {
	const requests = 40
	for _, tc := range []struct {
		name      string
		bodyLimit int64 // retry_body_limit
		size      int   // each request's body
		memLimit  int64 // retry_memory_limit; 0: auto
		replayed  int
	}{
		{"auto, 4 KiB per request", 64 << 10, 64 << 10, 0, 2},
		{"auto, at least one body", 1 << 20, 256 << 10, 0, 4},
		{"fixed", 1 << 20, 256 << 10, 600 << 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			rig := newReplayRig(t, func(h *Handler) { h.RetryBodyLimit, h.RetryMemoryLimit = tc.bodyLimit, tc.memLimit })
			budget := rig.h.replayBudget
			var entered, read sync.WaitGroup
			entered.Add(requests)
			read.Add(requests)
			var peak int64
			var once sync.Once
			rig.gw.before401 = func() {
				read.Done()
				read.Wait() // every first attempt has read its body
				once.Do(func() { peak = budget.used.Load() })
			}
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if r.Header.Get("Authorization") == "Bearer "+rig.first {
					entered.Done()
					entered.Wait()
				}
				return rig.gw.ServeHTTP(w, r)
			})
			skipped := counterValue(replayCopyNoMemory)

			body := strings.Repeat("a", size)
			results := make([]*httptest.ResponseRecorder, requests)
			var wg sync.WaitGroup
			for i := range requests {
				wg.Go(func() {
					results[i] = httptest.NewRecorder()
					if err := rig.h.ServeHTTP(results[i], rig.request("/v1/chat/completions", strings.NewReader(body)), next); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()

			if want := int64(tc.replayed * size); peak != want {
				t.Errorf("copies in flight held %d bytes, want %d (%d copies)", peak, want, tc.replayed)
			}
			replayed, retry := 0, 0
			for _, w := range results {
				switch {
				case w.Code == http.StatusOK && w.Body.Len() == size:
					replayed++
				case w.Code == http.StatusUnauthorized && w.Header().Get("X-Should-Retry") == "true" &&
					strings.Contains(w.Body.String(), "invalid token"):
					retry++
				default:
					t.Errorf("status %d, X-Should-Retry %q, %d bytes: want a replayed 200 or the gateway's 401 marked for a retry",
						w.Code, w.Header().Get("X-Should-Retry"), w.Body.Len())
				}
			}
			if replayed != tc.replayed || retry != requests-tc.replayed {
				t.Errorf("%d replayed, %d marked for a retry; want %d and %d", replayed, retry, tc.replayed, requests-tc.replayed)
			}
			if got := counterValue(replayCopyNoMemory) - skipped; got != float64(requests-tc.replayed) {
				t.Errorf("replay_copies_skipped_total{reason=memory_limit} grew by %v, want %d", got, requests-tc.replayed)
			}
			if u, o := budget.used.Load(), budget.open.Load(); u != 0 || o != 0 {
				t.Errorf("after the burst: %d bytes reserved, %d requests open; want none", u, o)
			}
			// the retry the client was told to make goes through
			if w := rig.send(t, "/v1/chat/completions", body); w.Code != http.StatusOK || w.Body.Len() != size {
				t.Errorf("retry: status %d, %d bytes", w.Code, w.Body.Len())
			}
		})
	}
}

// The budget counts only requests in flight: it grows by 4 KiB with
// each, and once a burst is over a lone request has room for a whole
// retry_body_limit body again. A body of unknown length takes its chunks
// one at a time, never past the budget, and gives them all back when the
// next would not fit.
func TestReplayBudgetReserve(t *testing.T) {
	b := newReplayBudget(0, 100<<10) // rounded up to 7 chunks: 112 KiB
	if got := b.limit(); got != 7*chunkSize {
		t.Fatalf("limit with nothing in flight: %d, want %d", got, 7*chunkSize)
	}
	for range 40 {
		b.enter()
	}
	if got, want := b.limit(), int64(40*autoPerRequest); got != want || want != 10*chunkSize {
		t.Fatalf("limit with 40 in flight: %d, want %d (10 chunks)", got, want)
	}
	var tee teeBody
	tee.limit, tee.budget = 1<<20, b
	tee.src = io.NopCloser(strings.NewReader(""))
	chunk := make([]byte, chunkSize)
	for i := range 11 {
		tee.keep(chunk)
		if tee.dropped {
			if i != 10 {
				t.Fatalf("copy dropped at chunk %d, want at chunk 10 (past %d bytes)", i, b.limit())
			}
			break
		}
	}
	if !tee.dropped || tee.why != errReplayMemory || b.used.Load() != 0 {
		t.Errorf("dropped %v (%v), %d bytes reserved; want dropped for memory, nothing reserved", tee.dropped, tee.why, b.used.Load())
	}
	for range 40 {
		b.leave()
	}
	if got := b.limit(); got != 7*chunkSize {
		t.Errorf("limit once the burst is over: %d, want %d", got, 7*chunkSize)
	}

	fixed := newReplayBudget(64<<10, 1<<20)
	fixed.enter()
	if got := fixed.limit(); got != 64<<10 {
		t.Errorf("fixed limit %d, want %d whatever is in flight", got, 64<<10)
	}
	if !fixed.reserve(64<<10) || fixed.reserve(1) {
		t.Error("a fixed budget of 64 KiB did not hold exactly 64 KiB")
	}
	fixed.give(64 << 10)
	if fixed.used.Load() != 0 {
		t.Errorf("%d bytes still reserved", fixed.used.Load())
	}
}
