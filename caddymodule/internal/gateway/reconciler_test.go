package gateway

import (
	"errors"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func newReconciler(t *testing.T, f *fake, cfg ReconcilerConfig) *Reconciler {
	t.Helper()
	cfg.BaseURL = "https://ai-gateway.example"
	cfg.Client = inProcess(f)
	if cfg.Credential == nil {
		cfg.Credential = staticCredential(secret)
	}
	r, err := NewReconciler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// outcome is what a callback got, and when.
type outcome struct {
	at  time.Time
	g   Generation
	err error
}

type outcomes struct {
	mu  sync.Mutex
	got map[string][]outcome
}

func (o *outcomes) cb(id string) func(Generation, error) {
	return func(g Generation, err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.got == nil {
			o.got = map[string][]outcome{}
		}
		o.got[id] = append(o.got[id], outcome{time.Now(), g, err})
	}
}

func (o *outcomes) of(id string) []outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]outcome(nil), o.got[id]...)
}

type counts struct{ reconciled, failed, dropped float64 }

func reconciliationCounts() counts {
	return counts{counterValue(reconciledCounter), counterValue(failedCounter), counterValue(droppedCounter)}
}

func (c counts) since(before counts) counts {
	return counts{c.reconciled - before.reconciled, c.failed - before.failed, c.dropped - before.dropped}
}

// notFoundThenRecord answers 404 to the first n lookups of each id, then
// its record.
func notFoundThenRecord(n int) *fake {
	var mu sync.Mutex
	asked := map[string]int{}
	return &fake{answer: func(_ int, w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		mu.Lock()
		asked[id]++
		k := asked[id]
		mu.Unlock()
		if k <= n {
			w.WriteHeader(404)
			w.Write([]byte(`{"error":{"message":"Generation not found","type":"not_found"}}`))
			return
		}
		w.Write([]byte(strings.ReplaceAll(genRecord, genID, id)))
	}}
}

func TestReconcilerRetriesUntilRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		f := notFoundThenRecord(3)
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		var o outcomes
		t0 := time.Now()
		if err := r.Enqueue(genID, o.cb(genID)); err != nil {
			t.Fatal(err)
		}
		if r.Pending() != 1 {
			t.Fatalf("pending %d", r.Pending())
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		// 3 s, then 6, 12 and 24 s after each 404.
		var at []time.Duration
		for _, q := range f.requests() {
			at = append(at, q.at.Sub(t0))
			if q.path != "/v1/generation" || q.query != "id="+genID || q.auth != "Bearer "+secret {
				t.Fatalf("request %+v", q)
			}
		}
		want := []time.Duration{3 * time.Second, 9 * time.Second, 21 * time.Second, 45 * time.Second}
		if !slices.Equal(at, want) {
			t.Fatalf("lookups at %v, want %v", at, want)
		}
		got := o.of(genID)
		if len(got) != 1 || got[0].err != nil || got[0].g.TotalCost != 0.000138 || got[0].at.Sub(t0) != 45*time.Second {
			t.Fatalf("callbacks: %+v", got)
		}
		if d := reconciliationCounts().since(before); d != (counts{reconciled: 1}) {
			t.Fatalf("counted %+v", d)
		}
		if r.Pending() != 0 {
			t.Fatalf("pending %d", r.Pending())
		}
	})
}

func TestReconcilerGivesUpAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		f := answering(500, `{"error":{"message":"down"}}`)
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		var o outcomes
		t0 := time.Now()
		r.Enqueue(genID, o.cb(genID))
		time.Sleep(5*time.Minute - time.Nanosecond)
		synctest.Wait()
		if got := o.of(genID); len(got) != 0 {
			t.Fatalf("gave up before the deadline: %+v", got)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		// 3, 9, 21, 45, 93 s, then every minute (the cap), the last at the deadline.
		var at []time.Duration
		for _, q := range f.requests() {
			at = append(at, q.at.Sub(t0))
		}
		want := []time.Duration{3, 9, 21, 45, 93, 153, 213, 273, 300}
		for i := range want {
			want[i] *= time.Second
		}
		if !slices.Equal(at, want) {
			t.Fatalf("lookups at %v, want %v", at, want)
		}
		got := o.of(genID)
		if len(got) != 1 || got[0].at.Sub(t0) != 5*time.Minute || got[0].err == nil ||
			errors.Is(got[0].err, ErrRefused) || errors.Is(got[0].err, ErrDropped) || !strings.Contains(got[0].err.Error(), "500") {
			t.Fatalf("callbacks: %+v", got)
		}
		if d := reconciliationCounts().since(before); d != (counts{failed: 1}) {
			t.Fatalf("counted %+v", d)
		}
	})
}

func TestReconcilerStopsAtARefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		f := answering(401, `{"error":{"message":"Invalid API key","type":"authentication_error"}}`)
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		var o outcomes
		r.Enqueue(genID, o.cb(genID))
		time.Sleep(time.Hour)
		synctest.Wait()
		got := o.of(genID)
		if f.count() != 1 || len(got) != 1 || !errors.Is(got[0].err, ErrRefused) {
			t.Fatalf("%d lookups; callbacks %+v", f.count(), got)
		}
		if d := reconciliationCounts().since(before); d != (counts{failed: 1}) {
			t.Fatalf("counted %+v", d)
		}
	})
}

func TestReconcilerRefusesInvalidIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		f := notFoundThenRecord(0)
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		var o outcomes
		for _, id := range []string{"", "msg_01abc", "gen_a&id=gen_b", "gen_../../v1/credits"} {
			if err := r.Enqueue(id, o.cb(id)); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("%q: err = %v", id, err)
			}
		}
		if err := r.Enqueue(genID, nil); err == nil {
			t.Fatal("accepted a nil callback")
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if f.count() != 0 || len(o.got) != 0 || r.Pending() != 0 {
			t.Fatalf("%d requests, callbacks %v", f.count(), o.got)
		}
		if d := reconciliationCounts().since(before); d != (counts{}) {
			t.Fatalf("counted %+v", d)
		}
	})
}

func TestReconcilerDropsTheOldestWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		f := notFoundThenRecord(0)
		r := newReconciler(t, f, ReconcilerConfig{MaxPending: 3})
		defer r.Stop()
		var o outcomes
		// A callback runs on the reconciler's goroutines, never inside
		// Enqueue, where the caller may hold a lock the callback takes.
		ids := []string{"gen_1", "gen_2", "gen_3", "gen_4", "gen_5"}
		for i, id := range ids {
			cb := o.cb(id)
			err := r.Enqueue(id, func(g Generation, err error) {
				if strings.Contains(string(debug.Stack()), "(*Reconciler).Enqueue") {
					t.Errorf("%s: callback called from Enqueue", id)
				}
				cb(g, err)
			})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // an order of enqueueing
			if want := min(i+1, 3); r.Pending() != want {
				t.Fatalf("pending %d, want %d", r.Pending(), want)
			}
		}
		synctest.Wait()
		for _, id := range ids[:2] {
			if got := o.of(id); len(got) != 1 || !errors.Is(got[0].err, ErrDropped) {
				t.Fatalf("%s: %+v", id, got)
			}
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		for _, id := range ids[2:] {
			if got := o.of(id); len(got) != 1 || got[0].err != nil || got[0].g.ID != id {
				t.Fatalf("%s: %+v", id, got)
			}
		}
		if f.count() != 3 {
			t.Fatalf("%d lookups", f.count())
		}
		if d := reconciliationCounts().since(before); d != (counts{reconciled: 3, dropped: 2}) {
			t.Fatalf("counted %+v", d)
		}
	})
}

func TestReconcilerStopCallsEveryPendingCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := reconciliationCounts()
		// The first lookup hangs until cancelled; the others wait their turn.
		f := &fake{answer: func(n int, w http.ResponseWriter, r *http.Request) { blockUntilCancelled(w, r) }}
		r := newReconciler(t, f, ReconcilerConfig{Workers: 1})
		var o outcomes
		ids := []string{"gen_1", "gen_2", "gen_3"}
		for _, id := range ids {
			r.Enqueue(id, o.cb(id))
		}
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if f.count() != 1 || r.Pending() != 3 {
			t.Fatalf("%d lookups, %d pending", f.count(), r.Pending())
		}
		r.Stop()
		for _, id := range ids {
			if got := o.of(id); len(got) != 1 || !errors.Is(got[0].err, ErrDropped) {
				t.Fatalf("%s: %+v", id, got)
			}
		}
		if err := r.Enqueue(genID, o.cb(genID)); !errors.Is(err, ErrDropped) {
			t.Fatalf("Enqueue after Stop: %v", err)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if f.count() != 1 || r.Pending() != 0 || len(o.of(genID)) != 0 {
			t.Fatalf("after Stop: %d lookups, %d pending", f.count(), r.Pending())
		}
		if d := reconciliationCounts().since(before); d != (counts{dropped: 3}) {
			t.Fatalf("counted %+v", d)
		}
		r.Stop() // twice is fine
	})
}

func TestReconcilerCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := notFoundThenRecord(0)
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		r.SetCredential(nil)
		var o outcomes
		r.Enqueue("gen_1", o.cb("gen_1"))
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if f.count() != 0 {
			t.Fatal("looked up without a credential")
		}
		// A reload brings a new credential: the retry uses the latest.
		r.SetCredential(staticCredential("old"))
		r.SetCredential(staticCredential("new"))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if reqs := f.requests(); len(reqs) != 1 || reqs[0].auth != "Bearer new" || len(o.of("gen_1")) != 1 {
			t.Fatalf("requests %+v", reqs)
		}
	})
}

func TestReconcilerWorkersRunInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Each lookup takes 10 s: two workers finish four in 20 s.
		f := &fake{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			time.Sleep(10 * time.Second)
			w.Write([]byte(strings.ReplaceAll(genRecord, genID, r.URL.Query().Get("id"))))
		}}
		r := newReconciler(t, f, ReconcilerConfig{})
		defer r.Stop()
		var o outcomes
		t0 := time.Now()
		ids := []string{"gen_1", "gen_2", "gen_3", "gen_4"}
		for _, id := range ids {
			r.Enqueue(id, o.cb(id))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		var last time.Duration
		for _, id := range ids {
			got := o.of(id)
			if len(got) != 1 || got[0].err != nil {
				t.Fatalf("%s: %+v", id, got)
			}
			last = max(last, got[0].at.Sub(t0))
		}
		if last != 23*time.Second {
			t.Fatalf("the last ended at %v, want 23s", last)
		}
	})
}

func TestReconcilerPendingGauge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for _, c := range Collectors() {
			reg.MustRegister(c)
		}
		f := notFoundThenRecord(0)
		a := newReconciler(t, f, ReconcilerConfig{})
		b := newReconciler(t, f, ReconcilerConfig{})
		var o outcomes
		a.Enqueue("gen_1", o.cb("gen_1"))
		a.Enqueue("gen_2", o.cb("gen_2"))
		b.Enqueue("gen_3", o.cb("gen_3"))
		if got := gather(t, reg, "caddy_ai_gateway_auth_reconciliations_pending"); got[""] != 3 {
			t.Fatalf("pending gauge: %v", got)
		}
		b.Stop()
		if got := gather(t, reg, "caddy_ai_gateway_auth_reconciliations_pending"); got[""] != 2 {
			t.Fatalf("pending gauge after a Stop: %v", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := gather(t, reg, "caddy_ai_gateway_auth_reconciliations_pending"); got[""] != 0 {
			t.Fatalf("pending gauge when done: %v", got)
		}
		if got := gather(t, reg, "caddy_ai_gateway_auth_reconciliations_total"); got["result=reconciled"] < 2 || got["result=dropped"] < 1 {
			t.Fatalf("reconciliations_total: %v", got)
		}
		a.Stop()
	})
}
