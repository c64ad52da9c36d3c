package credential

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The module's metric names: namespace caddy_ai_gateway_auth, as in
// caddymodule/metrics.go. Labels are bounded: source kinds, results and
// operations only.
const metricsNamespace = "caddy_ai_gateway_auth"

var (
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

	storageErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "storage_errors_total",
		Help:      "Failed operations on Caddy's storage by shared vercel_oidc sources, by op (load, store, lock, unlock); each instance refreshes alone meanwhile.",
	}, []string{"op"})

	// source_id, not instance: a Prometheus scrape owns the instance
	// label and would rename this one to exported_instance.
	expiryDesc = prometheus.NewDesc(metricsNamespace+"_credential_expiry_seconds",
		"Seconds until the cached token of each vercel_oidc source expires (negative once expired); no series for a source that has never had a token.",
		[]string{"source", "source_id"}, nil)
)

// Collectors returns the package's metrics, built once, for the caller
// to register in each config's registry (this package registers nothing).
// The expiry gauge reads the OIDC sources alive at scrape time.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{refreshesTotal, refreshSeconds, forcedRefreshesTotal, storageErrorsTotal, ExpiryCollector{}}
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

// live is every OIDC source from its creation to its Destruct: what the
// expiry gauge reports on.
var live struct {
	sync.Mutex
	sources map[*OIDCSource]struct{}
}

func track(st *OIDCSource, alive bool) {
	live.Lock()
	defer live.Unlock()
	if live.sources == nil {
		live.sources = make(map[*OIDCSource]struct{})
	}
	if alive {
		live.sources[st] = struct{}{}
	} else {
		delete(live.sources, st)
	}
}

// ExpiryCollector reports, at scrape time, each live OIDC source's time
// to expiry (credential_expiry_seconds, a gauge). A source that has never
// held a token has no series, so that an alert on a low value does not
// fire forever for a source the config lists but nothing feeds (the root
// Caddyfile's .env.local, say).
type ExpiryCollector struct{}

// Describe implements prometheus.Collector.
func (ExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect implements prometheus.Collector.
func (ExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	live.Lock()
	sources := make([]*OIDCSource, 0, len(live.sources))
	for st := range live.sources {
		sources = append(sources, st)
	}
	live.Unlock()
	for _, st := range sources {
		if c := st.refresher.current.Load(); c != nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, c.expires.Sub(now).Seconds(), "vercel_oidc", st.id)
		}
	}
}
