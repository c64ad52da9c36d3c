package gateway

import (
	"net/url"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The module's metric names: namespace caddy_ai_gateway_auth, as in
// caddymodule/metrics.go.
const metricsNamespace = "caddy_ai_gateway_auth"

var (
	catalogFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "catalog_fetches_total",
		Help:      "Reads of AI Gateway's model catalog, by result (ok, error).",
	}, []string{"result"})

	reconciliations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "reconciliations_total",
		Help:      "Generation lookups ended, by result: reconciled (the gateway's record was read), failed (no record by the deadline, or the lookup was refused), dropped (given up by the proxy: queue full, or shutting down).",
	}, []string{"result"})

	catalogModelsDesc = prometheus.NewDesc(metricsNamespace+"_catalog_models",
		"Models in the catalog currently in use, per gateway address (0 before one has been read).",
		[]string{"gateway"}, nil)

	reconciliationsPendingDesc = prometheus.NewDesc(metricsNamespace+"_reconciliations_pending",
		"Generation lookups waiting or in flight.", nil, nil)

	fetchesOK         = catalogFetches.WithLabelValues("ok")
	fetchesError      = catalogFetches.WithLabelValues("error")
	reconciledCounter = reconciliations.WithLabelValues("reconciled")
	failedCounter     = reconciliations.WithLabelValues("failed")
	droppedCounter    = reconciliations.WithLabelValues("dropped")
	gauges            = liveCollector{}
)

// Collectors returns the package's metrics, built once, for the caller
// to register in each config's registry (this package registers nothing).
// The gauges read the sources and reconcilers that are running at scrape
// time.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{catalogFetches, reconciliations, gauges}
}

// live is what is running now: read by the gauges.
var live struct {
	sync.Mutex
	sources     map[*CatalogSource]struct{}
	reconcilers map[*Reconciler]struct{}
}

func trackSource(s *CatalogSource, running bool) {
	live.Lock()
	defer live.Unlock()
	if live.sources == nil {
		live.sources = make(map[*CatalogSource]struct{})
	}
	if running {
		live.sources[s] = struct{}{}
	} else {
		delete(live.sources, s)
	}
}

func trackReconciler(r *Reconciler, running bool) {
	live.Lock()
	defer live.Unlock()
	if live.reconcilers == nil {
		live.reconcilers = make(map[*Reconciler]struct{})
	}
	if running {
		live.reconcilers[r] = struct{}{}
	} else {
		delete(live.reconcilers, r)
	}
}

// gatewayLabel is the base URL without a trailing slash (it has no
// credentials, query or fragment: parseBaseURL refuses them).
func gatewayLabel(u *url.URL) string {
	return strings.TrimSuffix(u.String(), "/")
}

type liveCollector struct{}

func (liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- catalogModelsDesc
	ch <- reconciliationsPendingDesc
}

// Collect reports one series per gateway address (two sources of one
// address would otherwise make a duplicate series and fail the scrape:
// the newer catalog wins) and the pending lookups of every reconciler.
func (liveCollector) Collect(ch chan<- prometheus.Metric) {
	live.Lock()
	byLabel := make(map[string]*Catalog)
	for s := range live.sources {
		c := s.Current()
		if prev, ok := byLabel[s.label]; !ok || c.Fetched().After(prev.Fetched()) {
			byLabel[s.label] = c
		}
	}
	var pending int
	for r := range live.reconcilers {
		pending += r.Pending()
	}
	live.Unlock()
	for label, c := range byLabel {
		ch <- prometheus.MustNewConstMetric(catalogModelsDesc, prometheus.GaugeValue, float64(c.Len()), label)
	}
	ch <- prometheus.MustNewConstMetric(reconciliationsPendingDesc, prometheus.GaugeValue, float64(pending))
}
