package replay

import "github.com/prometheus/client_golang/prometheus"

// The module's metric names: namespace caddy_ai_gateway_auth, as in
// caddymodule/metrics.go.
const metricsNamespace = "caddy_ai_gateway_auth"

var (
	replayCopiesSkippedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "replay_copies_skipped_total",
		Help:      "Request bodies sent upstream without a copy for a replay after a 401, by reason: body_too_large (over retry_body_limit), memory_limit (the copies in flight used retry_memory_limit).",
	}, []string{"reason"})

	// Children resolved once so the hot path does no label lookup.
	replayCopyTooLarge = replayCopiesSkippedTotal.WithLabelValues("body_too_large")
	replayCopyNoMemory = replayCopiesSkippedTotal.WithLabelValues("memory_limit")
)

// Collectors returns the package's metrics, built once, for the caller
// to register in each config's registry (this package registers nothing).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{replayCopiesSkippedTotal}
}
