package limits

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The module's metric names: namespace caddy_ai_gateway_auth, as in
// caddymodule/metrics.go.
const metricsNamespace = "caddy_ai_gateway_auth"

// Store ops, the label values of limit_store_errors_total.
const (
	opAdmit  = "admit"
	opSettle = "settle"
	opTop    = "top"
	opProbe  = "probe"
	opClient = "client"
)

var (
	storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "limit_store_errors_total",
		Help:      "Failed round trips to the Redis that limits are counted in, by op (admit, settle, top, probe, client). While it fails, each instance counts alone.",
	}, []string{"op"})

	sweptTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "limit_reservations_swept_total",
		Help:      "Reservations charged their worst case because they were not settled within their lifetime (15 min), by store (local, redis): a request that ran longer, a ticket its caller dropped, or an instance that died.",
	}, []string{"store"})

	ticketsInFlightDesc = prometheus.NewDesc(metricsNamespace+"_limit_tickets_in_flight",
		"Requests admitted by this instance and not yet settled (their worst cases are reserved). A scrape also sweeps the reservations past their lifetime.", nil, nil)

	storePendingDesc = prometheus.NewDesc(metricsNamespace+"_limit_store_pending",
		"Settlements waiting to be sent to Redis (while it fails, or behind the writer), per Redis address.", []string{"address"}, nil)

	storeErrSettle = storeErrors.WithLabelValues(opSettle)
	sweptLocal     = sweptTotal.WithLabelValues("local")
	sweptRedis     = sweptTotal.WithLabelValues("redis")
)

func init() {
	for _, op := range []string{opAdmit, opSettle, opTop, opProbe, opClient} {
		storeErrors.WithLabelValues(op)
	}
}

// Collectors returns the package's metrics, built once, for the caller
// to register in each config's registry (this package registers
// nothing). The gauges read the ledgers and Redis stores alive at scrape
// time.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{storeErrors, sweptTotal, gauges}
}

// live is what exists now: read by the gauges.
var live struct {
	sync.Mutex
	ledgers map[*Ledger]struct{}
	redises map[*Redis]struct{}
}

// track adds (or, alive false, removes) a ledger or a Redis.
func track(x any, alive bool) {
	live.Lock()
	defer live.Unlock()
	if live.ledgers == nil {
		live.ledgers, live.redises = map[*Ledger]struct{}{}, map[*Redis]struct{}{}
	}
	switch x := x.(type) {
	case *Ledger:
		if alive {
			live.ledgers[x] = struct{}{}
		} else {
			delete(live.ledgers, x)
		}
	case *Redis:
		if alive {
			live.redises[x] = struct{}{}
		} else {
			delete(live.redises, x)
		}
	}
}

type liveCollector struct{}

var gauges liveCollector

func (liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ticketsInFlightDesc
	ch <- storePendingDesc
}

// Collect reports the tickets in flight of every ledger, and one pending
// series per Redis address (two stores of one address add up).
func (liveCollector) Collect(ch chan<- prometheus.Metric) {
	live.Lock()
	ledgers := make([]*Ledger, 0, len(live.ledgers))
	for l := range live.ledgers {
		ledgers = append(ledgers, l)
	}
	redises := make([]*Redis, 0, len(live.redises))
	for r := range live.redises {
		redises = append(redises, r)
	}
	live.Unlock()
	n, now := 0, time.Now()
	for _, l := range ledgers {
		n += l.inFlight(now)
	}
	ch <- prometheus.MustNewConstMetric(ticketsInFlightDesc, prometheus.GaugeValue, float64(n))
	pending := map[string]int{}
	for _, r := range redises {
		r.mu.Lock()
		pending[r.target.shown] += r.pendingLenLocked() + len(r.queue)
		r.mu.Unlock()
	}
	for addr, p := range pending {
		ch <- prometheus.MustNewConstMetric(storePendingDesc, prometheus.GaugeValue, float64(p), addr)
	}
}
