package caddymodule

import (
	"errors"
	"slices"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics, built once and registered in each config's registry (every
// config load has a fresh one). Labels are bounded: outcomes, source
// kinds and results only; never a client key, a path or a token.
const metricsNamespace = "caddy_ai_gateway_auth"

// Request outcomes.
const (
	outcomeForwarded      = "forwarded"
	outcomeClientRejected = "client_rejected"
	outcomeForbidden      = "forbidden"
	outcomeNoCredential   = "no_credential"
	outcomeReplayed       = "replayed"
	outcomeBadRequest     = "bad_request"
)

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "requests_total",
		Help:      "Requests handled by ai_gateway_auth, by outcome (forwarded, client_rejected, forbidden, bad_request, limited, no_credential, replayed).",
	}, []string{"outcome"})

	refreshesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "credential_refreshes_total",
		Help:      "Credential refresh attempts, by source kind and result (success, failure).",
	}, []string{"source", "result"})

	refreshSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "credential_refresh_duration_seconds",
		Help:      "How long credential refreshes take, by source kind.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"source"})

	forcedRefreshesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "credential_forced_refreshes_total",
		Help:      "Refreshes forced by upstream 401s, by source kind and result: replaced (a different token replaced the refused one), kept (none could be had: the refused token stays in use), throttled (a forced refresh ran less than the interval ago).",
	}, []string{"source", "result"})

	pushesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "token_pushes_total",
		Help:      "Token pushes, by result: used, older (valid but not fresher than the cached token), refused.",
	}, []string{"result"})

	// source_id, not instance: a Prometheus scrape owns the instance
	// label and would rename this one to exported_instance.
	expiryDesc = prometheus.NewDesc(metricsNamespace+"_credential_expiry_seconds",
		"Seconds until the cached token of each vercel_oidc source expires (negative once expired); no series for a source that has never had a token.",
		[]string{"source", "source_id"}, nil)

	// Children resolved once so the hot path does no label lookup.
	forwardedCounter      = requestsTotal.WithLabelValues(outcomeForwarded)
	clientRejectedCounter = requestsTotal.WithLabelValues(outcomeClientRejected)
	forbiddenCounter      = requestsTotal.WithLabelValues(outcomeForbidden)
	noCredentialCounter   = requestsTotal.WithLabelValues(outcomeNoCredential)
	replayedCounter       = requestsTotal.WithLabelValues(outcomeReplayed)
	badRequestCounter     = requestsTotal.WithLabelValues(outcomeBadRequest)
)

// expiryCollector reports, at scrape time, each live OIDC source's time
// to expiry. A source that has never held a token has no series, so that
// an alert on a low value does not fire forever for a source the config
// lists but nothing feeds (the root Caddyfile's .env.local, say).
type expiryCollector struct{}

func (expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	oidcStates.Range(func(_, v any) bool {
		st := v.(*oidcState)
		if c := st.refresher.current.Load(); c != nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, c.expires.Sub(now).Seconds(), "vercel_oidc", st.id)
		}
		return true
	})
}

var collectors = []prometheus.Collector{requestsTotal, refreshesTotal, refreshSeconds, forcedRefreshesTotal, pushesTotal, expiryCollector{}}

// allCollectors is every metric of the module: the glue's own
// (collectors) and each engine's.
func allCollectors() []prometheus.Collector {
	return slices.Concat(collectors, identity.Collectors(), replay.Collectors())
}

// registerMetrics adds the collectors to this config's registry.
func registerMetrics(ctx caddy.Context) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	for _, c := range allCollectors() {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

func observePush(used bool) {
	if used {
		pushesTotal.WithLabelValues("used").Inc()
	} else {
		pushesTotal.WithLabelValues("older").Inc()
	}
}

// Results of a forced refresh.
const (
	forcedReplaced  = "replaced"
	forcedKept      = "kept"
	forcedThrottled = "throttled"
)

func observeForcedRefresh(kind, result string) {
	forcedRefreshesTotal.WithLabelValues(kind, result).Inc()
}

func observeRefresh(kind, result string, took time.Duration) {
	refreshesTotal.WithLabelValues(kind, result).Inc()
	refreshSeconds.WithLabelValues(kind).Observe(took.Seconds())
}
