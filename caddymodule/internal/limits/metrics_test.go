package limits

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather reads the package's metrics through a registry of their own, as
// the module's config does.
func gather(t *testing.T) map[string][]*dto.Metric {
	t.Helper()
	reg := prometheus.NewRegistry()
	for _, c := range Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, f := range families {
		out[f.GetName()] = f.GetMetric()
	}
	return out
}

func gaugeSum(ms []*dto.Metric) (n float64) {
	for _, m := range ms {
		n += m.GetGauge().GetValue()
	}
	return n
}

// The metrics an operator needs: store errors by op, swept reservations
// by store, tickets in flight, settlements waiting for Redis; every
// name in the module's namespace, and no registration of their own.
func TestMetrics(t *testing.T) {
	before := gather(t)
	for _, name := range []string{
		"caddy_ai_gateway_auth_limit_store_errors_total", "caddy_ai_gateway_auth_limit_reservations_swept_total",
		"caddy_ai_gateway_auth_limit_tickets_in_flight",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("%s is missing: %v", name, before)
		}
	}
	if n := len(before["caddy_ai_gateway_auth_limit_store_errors_total"]); n != 5 {
		t.Errorf("%d store error series, want one per op (admit, settle, top, probe, client)", n)
	}
	l := NewLedger()
	defer l.Destruct()
	s := NewStore(l, nil, 0)
	now := time.Now()
	a := admitted(t, s, "gauge", Config{}, Amount{Tokens: 10}, now)
	admitted(t, s, "gauge", Config{}, Amount{Tokens: 10}, now).Settle(Amount{}, false, now)
	dropped := admitted(t, s, "gauge-dropped", Config{}, Amount{Tokens: 10}, now.Add(-ReservationLifetime-time.Second))
	_ = dropped // its caller lost it: the scrape sweeps it
	swept := counterValue(sweptLocal)
	after := gather(t)
	if d := gaugeSum(after["caddy_ai_gateway_auth_limit_tickets_in_flight"]) - gaugeSum(before["caddy_ai_gateway_auth_limit_tickets_in_flight"]); d != 1 {
		t.Errorf("tickets in flight grew by %v, want 1", d)
	}
	if counterValue(sweptLocal)-swept != 1 {
		t.Error("the scrape did not sweep the expired reservation")
	}
	a.Settle(Amount{}, false, now)

	_, url := newTestRedis(t)
	r := healthyRedis(t, url)
	if _, ok := gather(t)["caddy_ai_gateway_auth_limit_store_pending"]; !ok {
		t.Errorf("no pending gauge with a Redis")
	}
	_ = r
}
