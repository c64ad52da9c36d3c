package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const secret = "vck_s3cret-credential-value"

// catalogAnswers serves the test catalog, or a 500 whose message echoes
// the credential when fail says so.
func catalogAnswers(t *testing.T, fail func(n int) bool) *fake {
	body := catalogBytes(t)
	return &fake{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		if fail(n) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"type": "internal_error", "message": "upstream broke; you sent " + r.Header.Get("Authorization")}})
			return
		}
		w.Write(body)
	}}
}

func newSource(t *testing.T, f *fake, cfg SourceConfig) *CatalogSource {
	t.Helper()
	if cfg.BaseURL == "" {
		cfg.BaseURL = "https://ai-gateway.example"
	}
	cfg.Client = inProcess(f)
	if cfg.Credential == nil {
		cfg.Credential = staticCredential(secret)
	}
	s, err := NewCatalogSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCatalogSourceFetchesOnStartThenHourly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := catalogAnswers(t, func(int) bool { return false })
		s := newSource(t, f, SourceConfig{})
		defer s.Stop()
		synctest.Wait()
		if f.count() != 0 || s.Current() != nil {
			t.Fatal("the source called the gateway before Start")
		}
		if st := s.Status(); st.AgeSeconds != nil || st.Models != 0 || !st.NextAttempt.IsZero() {
			t.Fatalf("status before Start: %+v", st)
		}
		start := time.Now()
		s.Start()
		s.Start() // a second Start does nothing
		synctest.Wait()
		reqs := f.requests()
		if len(reqs) != 1 || reqs[0].path != "/v1/models" || reqs[0].auth != "Bearer "+secret {
			t.Fatalf("requests: %+v", reqs)
		}
		c := s.Current()
		if c.Len() != 7 || !c.Fetched().Equal(start) {
			t.Fatalf("catalog: %d models fetched %v", c.Len(), c.Fetched())
		}
		st := s.Status()
		if st.Models != 7 || st.Skipped != 6 || *st.AgeSeconds != 0 || st.LastError != "" || st.URL != "https://ai-gateway.example/v1/models" {
			t.Fatalf("status: %+v", st)
		}
		// Hourly, less up to a tenth.
		if wait := st.NextAttempt.Sub(start); wait < 54*time.Minute || wait > time.Hour {
			t.Fatalf("next fetch in %v", wait)
		}
		time.Sleep(30 * time.Minute)
		if age := *s.Status().AgeSeconds; age != 1800 {
			t.Fatalf("age %d s after 30 min", age)
		}
		time.Sleep(st.NextAttempt.Sub(time.Now()) - time.Nanosecond)
		synctest.Wait()
		if f.count() != 1 {
			t.Fatal("fetched again before the hour")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if f.count() != 2 || s.Current() == c {
			t.Fatalf("%d fetches after the hour; catalog replaced: %v", f.count(), s.Current() != c)
		}
	})
}

func TestCatalogSourceKeepsLastGoodAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var recovered atomic.Bool
		f := catalogAnswers(t, func(n int) bool { return n > 1 && !recovered.Load() })
		core, logs := observer.New(zap.DebugLevel)
		s := newSource(t, f, SourceConfig{Logger: zap.New(core)})
		defer s.Stop()
		s.Start()
		synctest.Wait()
		good := s.Current()
		if good == nil {
			t.Fatal("no catalog")
		}
		// From the first failure on: 30s, 1m, 2m, 4m, 8m, then 10m.
		time.Sleep(s.Status().NextAttempt.Sub(time.Now()))
		synctest.Wait()
		for i, want := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute} {
			st := s.Status()
			if st.Failures != i+1 || s.Current() != good {
				t.Fatalf("failure %d: status %+v, catalog kept: %v", i+1, st, s.Current() == good)
			}
			if wait := st.NextAttempt.Sub(st.LastAttempt); wait != want {
				t.Fatalf("after failure %d: next attempt in %v, want %v", i+1, wait, want)
			}
			if !strings.Contains(st.LastError, "500") || !strings.Contains(st.LastError, "https://ai-gateway.example/v1/models") {
				t.Fatalf("last_error %q names neither the status nor the URL", st.LastError)
			}
			time.Sleep(want)
			synctest.Wait()
		}
		recovered.Store(true)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		st := s.Status()
		if st.LastError != "" || st.Failures != 0 || s.Current() == good || *st.AgeSeconds != 0 {
			t.Fatalf("after recovery: %+v", st)
		}
		for _, e := range logs.All() {
			b, _ := json.Marshal(e.ContextMap())
			if strings.Contains(e.Message+string(b), secret) {
				t.Fatalf("a log line carries the credential: %s %s", e.Message, b)
			}
		}
		// Seven failures checked above, and the one the last wait ended in.
		if n := logs.FilterMessageSnippet("reading the model catalog failed").Len(); n != 8 {
			t.Fatalf("want a warning per failed fetch (8), got %d", n)
		}
		if logs.FilterMessageSnippet("model catalog read").Len() != 1 {
			t.Fatal("no line for the recovery")
		}
	})
}

func TestCatalogSourceStatusNeverCarriesTheCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := catalogAnswers(t, func(int) bool { return true })
		s := newSource(t, f, SourceConfig{})
		defer s.Stop()
		s.Start()
		synctest.Wait()
		st := s.Status()
		b, _ := json.Marshal(st)
		if st.LastError == "" || strings.Contains(string(b), secret) {
			t.Fatalf("status: %s", b)
		}
		if !strings.Contains(st.LastError, "[credential]") {
			t.Fatalf("the echoed credential was not replaced: %q", st.LastError)
		}
		// Never read: no catalog, no age, the models gauge at 0.
		if s.Current() != nil || st.AgeSeconds != nil || st.Models != 0 {
			t.Fatalf("status: %+v", st)
		}
		for _, key := range []string{`"fetched_at"`, `"age_seconds"`} {
			if strings.Contains(string(b), key) {
				t.Fatalf("status without a catalog shows %s: %s", key, b)
			}
		}
	})
}

func TestCatalogSourceStatusJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSource(t, catalogAnswers(t, func(int) bool { return false }), SourceConfig{})
		defer s.Stop()
		s.Start()
		synctest.Wait()
		b, err := json.Marshal(s.Status())
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		json.Unmarshal(b, &got)
		for _, key := range []string{"url", "fetched_at", "age_seconds", "models", "skipped_models", "consecutive_failures", "last_attempt", "next_attempt"} {
			if _, ok := got[key]; !ok {
				t.Errorf("status JSON has no %s: %s", key, b)
			}
		}
		if _, ok := got["last_error"]; ok {
			t.Errorf("last_error after a good fetch: %s", b)
		}
	})
}

func TestCatalogSourceCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := catalogAnswers(t, func(int) bool { return false })
		s := newSource(t, f, SourceConfig{Credential: func(context.Context) (string, error) {
			return "", errors.New("no token yet")
		}})
		defer s.Stop()
		s.Start()
		synctest.Wait()
		if f.count() != 0 || !strings.Contains(s.Status().LastError, "no token yet") {
			t.Fatalf("%d requests without a credential; status %+v", f.count(), s.Status())
		}
		s.SetCredential(nil)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if f.count() != 0 || !strings.Contains(s.Status().LastError, "no credential set") {
			t.Fatalf("status %+v", s.Status())
		}
		// A reload brings a new credential source: the latest wins.
		s.SetCredential(staticCredential("first"))
		s.SetCredential(staticCredential("second"))
		time.Sleep(time.Minute)
		synctest.Wait()
		if reqs := f.requests(); len(reqs) != 1 || reqs[0].auth != "Bearer second" || s.Current() == nil {
			t.Fatalf("requests %+v", reqs)
		}
	})
}

func TestCatalogSourceRefreshIsCoalescedAndSpaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := catalogAnswers(t, func(int) bool { return false })
		s := newSource(t, f, SourceConfig{})
		defer s.Stop()
		s.Start()
		synctest.Wait()
		t0 := time.Now()
		for range 10 {
			s.Refresh()
			synctest.Wait()
		}
		if f.count() != 1 {
			t.Fatalf("%d fetches: Refresh fetched within 30 s of the last", f.count())
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		reqs := f.requests()
		if len(reqs) != 2 || reqs[1].at.Sub(t0) != 30*time.Second {
			t.Fatalf("requests %+v; want one more at +30s", reqs)
		}
		// Long after the last fetch, Refresh fetches at once.
		time.Sleep(5 * time.Minute)
		s.Refresh()
		synctest.Wait()
		if f.count() != 3 {
			t.Fatalf("%d fetches", f.count())
		}
		if wait := s.Status().NextAttempt.Sub(time.Now()); wait < 54*time.Minute {
			t.Fatalf("after a refresh the next fetch is in %v", wait)
		}
	})
}

// A Refresh asked for before a fetch starts is that fetch.
func TestCatalogSourceRefreshBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := catalogAnswers(t, func(int) bool { return false })
		s := newSource(t, f, SourceConfig{})
		defer s.Stop()
		s.Refresh()
		s.Start()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if f.count() != 1 {
			t.Fatalf("%d fetches", f.count())
		}
	})
}

func TestCatalogSourceFetchTimeoutAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fake{answer: func(n int, w http.ResponseWriter, r *http.Request) { blockUntilCancelled(w, r) }}
		s := newSource(t, f, SourceConfig{})
		errorsBefore := counterValue(fetchesError)
		s.Start()
		time.Sleep(30*time.Second - time.Nanosecond)
		synctest.Wait()
		if st := s.Status(); st.LastError != "" {
			t.Fatalf("failed before the timeout: %+v", st)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if st := s.Status(); !strings.Contains(st.LastError, "deadline exceeded") {
			t.Fatalf("after 30 s: %+v", st)
		}
		if got := counterValue(fetchesError) - errorsBefore; got != 1 {
			t.Fatalf("error counter +%v", got)
		}
		// Stop while a fetch hangs: it is cancelled, not counted a failure.
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if f.count() != 2 {
			t.Fatalf("%d fetches", f.count())
		}
		s.Stop()
		if got := counterValue(fetchesError) - errorsBefore; got != 1 {
			t.Fatalf("error counter +%v after Stop", got)
		}
		if st := s.Status(); !st.NextAttempt.IsZero() {
			t.Fatalf("a stopped source shows a next attempt: %+v", st)
		}
		time.Sleep(3 * time.Hour)
		s.Start()
		s.Refresh()
		synctest.Wait()
		if f.count() != 2 {
			t.Fatalf("fetched after Stop: %d", f.count())
		}
		s.Stop()
	})
}

func TestCatalogSourceStopBeforeStart(t *testing.T) {
	f := &fake{answer: func(int, http.ResponseWriter, *http.Request) {}}
	s := newSource(t, f, SourceConfig{})
	s.Stop()
	s.Start()
	s.Stop()
	if f.count() != 0 {
		t.Fatal("called the gateway")
	}
}

func TestNewCatalogSourceChecksTheURL(t *testing.T) {
	for _, bad := range []string{"", "ai-gateway.vercel.sh", "ftp://ai-gateway.vercel.sh", "https://user:pw@ai-gateway.vercel.sh", "https://ai-gateway.vercel.sh/?x=1", "https://ai-gateway.vercel.sh/#f", "https:///v1"} {
		if _, err := NewCatalogSource(SourceConfig{BaseURL: bad}); err == nil {
			t.Errorf("accepted %q", bad)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("the error shows the URL's password: %v", err)
		}
	}
	s, err := NewCatalogSource(SourceConfig{BaseURL: "http://127.0.0.1:8080/prefix/"})
	if err != nil || s.Status().URL != "http://127.0.0.1:8080/prefix/v1/models" {
		t.Fatalf("%v, %+v", err, s)
	}
}

func TestCatalogMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ok, failed := counterValue(fetchesOK), counterValue(fetchesError)
		good := catalogAnswers(t, func(int) bool { return false })
		bad := catalogAnswers(t, func(int) bool { return true })
		// Two sources of one address make one series; a source that never
		// read a catalog shows 0.
		a := newSource(t, good, SourceConfig{BaseURL: "https://one.example"})
		b := newSource(t, good, SourceConfig{BaseURL: "https://one.example/"})
		c := newSource(t, bad, SourceConfig{BaseURL: "https://two.example"})
		stopped := newSource(t, good, SourceConfig{BaseURL: "https://three.example"})
		for _, s := range []*CatalogSource{a, b, c, stopped} {
			s.Start()
		}
		synctest.Wait()
		stopped.Stop()
		reg := prometheus.NewRegistry()
		for _, col := range Collectors() {
			reg.MustRegister(col)
		}
		got := gather(t, reg, "caddy_ai_gateway_auth_catalog_models")
		want := map[string]float64{"gateway=https://one.example": 7, "gateway=https://two.example": 0}
		if !maps.Equal(got, want) {
			t.Fatalf("catalog_models: %v, want %v", got, want)
		}
		if d := counterValue(fetchesOK) - ok; d != 3 {
			t.Fatalf("ok +%v", d)
		}
		if d := counterValue(fetchesError) - failed; d != 1 {
			t.Fatalf("error +%v", d)
		}
		if got := gather(t, reg, "caddy_ai_gateway_auth_catalog_fetches_total"); len(got) != 2 || got["result=ok"] < 3 || got["result=error"] < 1 {
			t.Fatalf("catalog_fetches_total: %v", got)
		}
		for _, s := range []*CatalogSource{a, b, c} {
			s.Stop()
		}
	})
}

// TestCatalogSourceTried: Tried is closed once the first fetch has ended,
// good or bad, and by Stop; never before the first fetch.
func TestCatalogSourceTried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, fail := range []bool{false, true} {
			release := make(chan struct{})
			f := &fake{answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
				<-release
				if fail {
					w.WriteHeader(http.StatusBadGateway)
					return
				}
				w.Write(catalogBytes(t))
			}}
			s := newSource(t, f, SourceConfig{})
			s.Start()
			synctest.Wait()
			select {
			case <-s.Tried():
				t.Fatalf("fail=%v: Tried closed while the first fetch is under way", fail)
			default:
			}
			close(release)
			<-s.Tried()
			if got := s.Current() != nil; got == fail {
				t.Fatalf("fail=%v: after the first fetch, catalog present = %v", fail, got)
			}
			s.Stop()
		}
		s := newSource(t, catalogAnswers(t, func(int) bool { return false }), SourceConfig{})
		s.Stop() // never started: waiters are let go
		<-s.Tried()
	})
}
