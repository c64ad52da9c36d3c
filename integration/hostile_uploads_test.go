package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHostileUploadsBoundedMemory: clients send 100 bodies of 1 MiB (the
// default retry_body_limit) at once through a vercel_oidc source, to an
// upstream that reads every body and then holds its status, the moment
// the replay copies would be largest. With the default replay budget
// (4 KiB per request in flight, at least one 1 MiB body), Caddy's live
// heap grows by about what plain proxying costs, not by 100 MiB of
// copies; the bodies past the budget are counted (and the admin status
// shows the budget in use), and every request still succeeds once the
// upstream answers. (Without the budget,
// retry_memory_limit 1GiB, the heap grows by over 100 MiB here.)
func TestHostileUploadsBoundedMemory(t *testing.T) {
	t.Parallel()
	const uploads, size = 100, 1 << 20
	v := newFakeVercel(t)

	var read atomic.Int32
	allRead, release := make(chan struct{}), make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != size {
			http.Error(w, fmt.Sprintf("read %d bytes: %v", n, err), http.StatusBadRequest)
			return
		}
		if read.Add(1) == uploads {
			close(allRead)
		}
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll() // runs before Close, which waits for held handlers
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, mintSite(v, upstream.URL, ""))
	tc := newTestClient(t)
	before := heapInuse(t, p)

	body := strings.Repeat("x", size)
	statuses := make([]int, uploads)
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			res, err := tc.try(http.MethodPost, p.URL+"/v1/chat/completions",
				map[string]string{"Authorization": "Bearer sk-placeholder"}, body)
			if err != nil {
				t.Error(err)
				return
			}
			statuses[i] = res.Status
		})
	}
	select {
	case <-allRead:
	case <-time.After(waitTimeout):
		t.Fatalf("the upstream read %d of %d uploads", read.Load(), uploads)
	}
	during := heapInuse(t, p)
	// the status route shows the budget as it is: every upload in
	// flight, one body's copy held, the limit it may not pass
	if st, _ := adminStatus(t, p); len(st.Handlers) != 1 {
		t.Errorf("%d handlers in the status, want 1", len(st.Handlers))
	} else if r := st.Handlers[0].Replay; r.RequestsInFlight != uploads || r.MemoryLimit != size || r.MemoryInUse != size {
		t.Errorf("status replay %+v, want %d requests in flight and %d bytes in use of %d", r, uploads, size, size)
	}
	releaseAll()
	wg.Wait()

	growth := int64(during) - int64(before)
	t.Logf("Caddy's live heap with %d uploads of %d bytes held before their status: %+.1f MiB", uploads, size, float64(growth)/(1<<20))
	if growth > 40<<20 {
		t.Errorf("Caddy's live heap grew by %.1f MiB with %d uploads held; the replay copies are not bounded", float64(growth)/(1<<20), uploads)
	}
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("upload %d: status %d, want 200", i, s)
		}
	}
	if got := adminMetrics(t, p).value(t, "caddy_ai_gateway_auth_replay_copies_skipped_total", "reason", "memory_limit"); got < uploads-2 {
		t.Errorf("replay_copies_skipped_total{reason=memory_limit} = %v, want at least %d of %d uploads", got, uploads-2, uploads)
	}
}
