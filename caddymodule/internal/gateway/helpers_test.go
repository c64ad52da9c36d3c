package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// inProcess is a client whose requests are served by h in the calling
// goroutine, with no network: what tests on synctest's fake clock need
// (a goroutine waiting on a socket would keep the clock from moving).
func inProcess(h http.Handler) *http.Client {
	return &http.Client{Transport: handlerTransport{h}}
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err // the handler gave up with the request
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// seen is one request the fake gateway received.
type seen struct {
	at    time.Time
	path  string
	query string
	auth  string
}

// fake is a fake AI Gateway: answer decides each answer; every request is
// recorded.
type fake struct {
	mu     sync.Mutex
	reqs   []seen
	answer func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, seen{at: time.Now(), path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization")})
	n := len(f.reqs)
	f.mu.Unlock()
	f.answer(n, w, r)
}

func (f *fake) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func (f *fake) count() int { return len(f.requests()) }

func staticCredential(v string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return v, nil }
}

func catalogBytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// blockUntilCancelled answers nothing until the request is given up.
func blockUntilCancelled(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// counterValue reads a counter (prometheus/testutil would add a module to
// go.mod).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// gather returns the series of one metric in reg, keyed by their label
// values joined with ",", with their (counter or gauge) values.
func gather(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return got
}
