package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// counterValue reads a counter, as prometheus/testutil.ToFloat64 does
// (testutil would add a module to go.mod; this needs none).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// engineCounter is the value of an engine's counter name{label=value}
// (label "": a counter without labels; 0 before it counted anything),
// read through the module's collectors as a scrape would: the engines
// keep their counters to themselves.
func engineCounter(name, label, value string) float64 {
	reg := prometheus.NewRegistry()
	for _, c := range allCollectors() {
		reg.MustRegister(c)
	}
	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var allOutcomes = []string{outcomeForwarded, outcomeClientRejected, outcomeForbidden, outcomeNoCredential, outcomeReplayed}

// outcomeCounts snapshots requests_total for every outcome.
func outcomeCounts() map[string]float64 {
	m := map[string]float64{}
	for _, o := range allOutcomes {
		m[o] = counterValue(requestsTotal.WithLabelValues(o))
	}
	return m
}

// assertOutcome checks that exactly one request was counted since
// before, under want.
func assertOutcome(t *testing.T, before map[string]float64, want string) {
	t.Helper()
	after := outcomeCounts()
	for _, o := range allOutcomes {
		d := after[o] - before[o]
		if o == want && d != 1 {
			t.Errorf("requests_total{outcome=%q} grew by %v, want 1", o, d)
		}
		if o != want && d != 0 {
			t.Errorf("requests_total{outcome=%q} grew by %v, want 0 (the request was %s)", o, d, want)
		}
	}
}

// Every request is counted once, under its outcome.
func TestRequestsTotalByOutcome(t *testing.T) {
	h := staticHandler(t)
	t.Setenv("AIGW_TEST_METRICS_EMPTY", "")
	empty := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON("{env.AIGW_TEST_METRICS_EMPTY}")},
		ClientKeys:     []string{"sk-placeholder"},
	})
	req := func(path, key string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}"))
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		r, _ = withReplacer(r)
		return r
	}
	var next recordingNext

	before := outcomeCounts()
	serve(t, h, req("/v1/chat/completions", "sk-placeholder"), next.handler())
	assertOutcome(t, before, outcomeForwarded)

	before = outcomeCounts()
	serve(t, h, req("/v1/chat/completions", "sk-wrong"), neverNext(t))
	assertOutcome(t, before, outcomeClientRejected)

	before = outcomeCounts()
	serve(t, h, req("/v1/chat/completions", ""), neverNext(t))
	assertOutcome(t, before, outcomeClientRejected)

	before = outcomeCounts()
	serve(t, h, req("/admin/secret-path", "sk-placeholder"), neverNext(t))
	assertOutcome(t, before, outcomeForbidden)

	before = outcomeCounts()
	serve(t, empty, req("/v1/chat/completions", "sk-placeholder"), neverNext(t))
	assertOutcome(t, before, outcomeNoCredential)

	// replayed: an upstream 401 on a refreshable token, a fresh one minted
	rig := newReplayRig(t, nil)
	before = outcomeCounts()
	w := rig.send(t, "/v1/chat/completions", "hello")
	if w.Code != http.StatusOK {
		t.Fatalf("replay: status %d", w.Code)
	}
	assertOutcome(t, before, outcomeReplayed)
	before = outcomeCounts()
	rig.send(t, "/v1/chat/completions", "again") // the fresh token: forwarded once
	assertOutcome(t, before, outcomeForwarded)
}

// Provisioning registers the collectors in the config's registry; doing
// it again (a second handler, a second config on the same registry) is
// not an error.
func TestRegisterMetricsTwice(t *testing.T) {
	ctx := newTestContext(t)
	for i := range 3 {
		if err := registerMetrics(ctx); err != nil {
			t.Fatalf("registerMetrics #%d: %v", i+1, err)
		}
	}
	for range 2 {
		h := &Handler{CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)}, ClientKeys: []string{"sk-placeholder"}}
		t.Cleanup(func() { _ = h.Cleanup() })
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("second handler on one registry: %v", err)
		}
	}
	// each config load has a fresh registry: registering there works too
	if err := registerMetrics(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{
		"caddy_ai_gateway_auth_requests_total",
		"caddy_ai_gateway_auth_sandbox_token_verifications_total",
	} {
		if !names[want] {
			t.Errorf("%s not in the registry", want)
		}
	}
}

// No label ever holds a client key, a token, a path or anything else a
// request chose: label values come from small fixed sets.
func TestMetricsLabelsBounded(t *testing.T) {
	ctx := newTestContext(t)
	token := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("AIGW_TEST_METRICS_OIDC", token)
	h := &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_METRICS_OIDC"})},
		ClientKeys:     []string{"sk-placeholder-metrics"},
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"sk-placeholder-metrics", "sk-wrong-metrics-key", token, "secret-path-xyz", "v1", "chat"}
	for _, tc := range []struct{ path, key string }{
		{"/v1/chat/completions", "sk-placeholder-metrics"},
		{"/v1/chat/completions", "sk-wrong-metrics-key"},
		{"/secret-path-xyz", "sk-placeholder-metrics"},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer "+tc.key)
		r, _ = withReplacer(r)
		var next recordingNext
		serve(t, h, r, next.handler())
	}
	observePush(true)
	observePush(false)

	allowed := map[string]*regexp.Regexp{
		"outcome": regexp.MustCompile(`^(forwarded|client_rejected|forbidden|bad_request|no_credential|replayed|limited)$`),
		// spend per client (clientmetrics.go): client names are verified and capped in number
		"client":    regexp.MustCompile(`^(placeholder|other|key:(?:[A-Za-z0-9._:-]{1,64}/)?[A-Za-z0-9_.%-]{1,128}|sandbox:[A-Za-z0-9_.%-]+/[A-Za-z0-9_.%-]*/[A-Za-z0-9_.%-]+)$`),
		"direction": regexp.MustCompile(`^(input|output)$`),
		// per model and policy (modelmetrics.go): a model id as an allowlist reads it, capped in number; a policy name
		"model":     regexp.MustCompile(`^(none|other|[A-Za-z0-9._:/@+-]{1,256})$`),
		"policy":    regexp.MustCompile(`^[A-Za-z0-9_-]{0,64}$`),
		"limit":     regexp.MustCompile(`^(requests_per_minute|tokens_per_day|tokens_per_month|usd_per_day|usd_per_month|concurrent_requests|too_many_clients)$`),
		"source":    regexp.MustCompile(`^(static|vercel_oidc)$`),
		"result":    regexp.MustCompile(`^(success|failure|used|older|refused|replaced|kept|throttled|edited|unchanged|ok|error|reconciled|failed|dropped)$`),
		"gateway":   regexp.MustCompile(`^https?://[^/?#@]+$`),
		"source_id": regexp.MustCompile(`^[0-9a-f]{12}$`),
		"reason":    regexp.MustCompile(`^(body_too_large|memory_limit|client_gone|no_usage|no_answer)$`),
		// limit_reservations_swept_total
		"store": regexp.MustCompile(`^(local|redis)$`),
		// storage_errors_total, once a share test ran; limit_store_errors_total, once a Redis test ran
		"op": regexp.MustCompile(`^(load|store|lock|unlock|admit|settle|top|client|probe)$`),
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seenExpiry := false
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "caddy_ai_gateway_auth_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				re, ok := allowed[l.GetName()]
				if !ok {
					t.Errorf("%s has label %q", f.GetName(), l.GetName())
					continue
				}
				if !re.MatchString(l.GetValue()) {
					t.Errorf("%s{%s=%q}: unexpected value", f.GetName(), l.GetName(), l.GetValue())
				}
				assertNotContains(t, f.GetName()+" label", l.GetValue(), secrets...)
			}
			if f.GetName() == "caddy_ai_gateway_auth_credential_expiry_seconds" {
				for _, l := range m.GetLabel() {
					if l.GetName() == "source_id" && l.GetValue() == h.sources[0].Status(time.Now()).ID {
						seenExpiry = true
						if v := m.GetGauge().GetValue(); v < 3500 || v > 3601 {
							t.Errorf("credential_expiry_seconds = %v, want about 3600", v)
						}
					}
				}
			}
		}
	}
	if !seenExpiry {
		t.Error("no credential_expiry_seconds for the source")
	}
}

// A vercel_oidc source that never had a token has no expiry series (an
// alert on a low value would fire forever for it); once it has one, the
// series appears, labelled source_id (a scrape renames a label named
// instance to exported_instance).
func TestExpirySeriesOnlyWithAToken(t *testing.T) {
	t.Setenv("AIGW_TEST_EXPIRY_EMPTY", "")
	empty := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_EXPIRY_EMPTY"})
	t.Setenv("AIGW_TEST_EXPIRY_SET", oidctest.OIDCToken(t, time.Now().Add(time.Hour)))
	set := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_EXPIRY_SET"})

	series := map[string]float64{}
	ch := make(chan prometheus.Metric, 1000)
	credential.ExpiryCollector{}.Collect(ch)
	close(ch)
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		for _, l := range pb.GetLabel() {
			if l.GetName() == "source_id" {
				series[l.GetValue()] = pb.GetGauge().GetValue()
			}
		}
	}
	if v, ok := series[empty.Status(time.Now()).ID]; ok {
		t.Errorf("a source without a token has an expiry series (%v)", v)
	}
	if v, ok := series[set.Status(time.Now()).ID]; !ok || v < 3500 || v > 3601 {
		t.Errorf("the source with a token: series %v (present %v), want about 3600", v, ok)
	}
}
