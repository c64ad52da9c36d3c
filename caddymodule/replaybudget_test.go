package caddymodule

import (
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
				once.Do(func() { peak = budget.Status().MemoryInUse })
			}
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if r.Header.Get("Authorization") == "Bearer "+rig.first {
					entered.Done()
					entered.Wait()
				}
				return rig.gw.ServeHTTP(w, r)
			})
			skipped := engineCounter("caddy_ai_gateway_auth_replay_copies_skipped_total", "reason", "memory_limit")

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
			if got := engineCounter("caddy_ai_gateway_auth_replay_copies_skipped_total", "reason", "memory_limit") - skipped; got != float64(requests-tc.replayed) {
				t.Errorf("replay_copies_skipped_total{reason=memory_limit} grew by %v, want %d", got, requests-tc.replayed)
			}
			if u, o := budget.Status().MemoryInUse, budget.Status().RequestsInFlight; u != 0 || o != 0 {
				t.Errorf("after the burst: %d bytes reserved, %d requests open; want none", u, o)
			}
			// the retry the client was told to make goes through
			if w := rig.send(t, "/v1/chat/completions", body); w.Code != http.StatusOK || w.Body.Len() != size {
				t.Errorf("retry: status %d, %d bytes", w.Code, w.Body.Len())
			}
		})
	}
}
