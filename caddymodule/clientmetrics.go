package caddymodule

import (
	"sync"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics per client. The client label is capped: the first
// maxClientLabels clients seen by the process get their own series, the
// rest share the label "other", so that no number of clients can grow
// the registry without bound.

// maxClientLabels is the cap on distinct client label values.
var maxClientLabels = 1000

const otherClientLabel = "other"

var (
	clientTokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_tokens_total",
		Help:      "Tokens used per client, as the gateway reported them in responses, by direction (input, output). The client label is capped; beyond the cap clients count as \"other\".",
	}, []string{"client", "direction"})

	clientCostTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_cost_total",
		Help:      "Cost per client, as AI Gateway reported it in responses (in the gateway's unit, USD).",
	}, []string{"client"})

	clientRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_requests_total",
		Help:      "Requests forwarded per client (metered requests only: with reporting, limits or usage_metrics).",
	}, []string{"client"})

	limitRefusalsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "limit_refusals_total",
		Help:      "Requests refused with 429 because the client was over a limit, by limit (requests_per_minute, tokens_per_day, usd_per_day, too_many_clients).",
	}, []string{"limit"})

	limitedCounter = requestsTotal.WithLabelValues(outcomeLimited)
)

// outcomeLimited is the requests_total outcome of a request refused by
// a limit.
const outcomeLimited = "limited"

func init() {
	collectors = append(collectors, clientTokensTotal, clientCostTotal, clientRequestsTotal, limitRefusalsTotal)
}

// clientSeries are one client label's counters, resolved once.
type clientSeries struct {
	label                           string
	input, output, requests, cost   prometheus.Counter
	estimatedInput, estimatedOutput prometheus.Counter // the estimated part of input and output
}

var clientLabels struct {
	mu     sync.RWMutex
	series map[string]*clientSeries
	other  *clientSeries
}

func newClientSeries(label string) *clientSeries {
	return &clientSeries{
		label:    label,
		input:    clientTokensTotal.WithLabelValues(label, "input"),
		output:   clientTokensTotal.WithLabelValues(label, "output"),
		requests: clientRequestsTotal.WithLabelValues(label),
		cost:     clientCostTotal.WithLabelValues(label),

		estimatedInput:  clientEstimatedTokensTotal.WithLabelValues(label, "input"),
		estimatedOutput: clientEstimatedTokensTotal.WithLabelValues(label, "output"),
	}
}

// clientSeriesFor returns the counters of a client's label.
func clientSeriesFor(name string) *clientSeries {
	label := reportingValue(name, identity.MaxNameLen) // a valid, bounded label value
	if label == "" {
		label = "unknown"
	}
	clientLabels.mu.RLock()
	s := clientLabels.series[label]
	clientLabels.mu.RUnlock()
	if s != nil {
		return s
	}
	clientLabels.mu.Lock()
	defer clientLabels.mu.Unlock()
	if s = clientLabels.series[label]; s != nil {
		return s
	}
	if clientLabels.series == nil {
		clientLabels.series = map[string]*clientSeries{}
	}
	if len(clientLabels.series) >= maxClientLabels || label == otherClientLabel {
		if clientLabels.other == nil {
			clientLabels.other = newClientSeries(otherClientLabel)
		}
		return clientLabels.other
	}
	s = newClientSeries(label)
	clientLabels.series[label] = s
	return s
}
