package identity

import "github.com/prometheus/client_golang/prometheus"

// The module's metric names: namespace caddy_ai_gateway_auth, as in
// caddymodule/metrics.go.
const metricsNamespace = "caddy_ai_gateway_auth"

var sandboxVerificationsTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Namespace: metricsNamespace,
	Name:      "sandbox_token_verifications_total",
	Help:      "RSA verifications of Vercel Sandbox OIDC tokens (a verified token is cached until its exp).",
})

// Collectors returns the package's metrics, built once, for the caller
// to register in each config's registry (this package registers nothing).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{sandboxVerificationsTotal}
}
