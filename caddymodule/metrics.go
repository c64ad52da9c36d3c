package caddymodule

import (
	"errors"
	"slices"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
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

	pushesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "token_pushes_total",
		Help:      "Token pushes, by result: used, older (valid but not fresher than the cached token), refused.",
	}, []string{"result"})

	// Children resolved once so the hot path does no label lookup.
	forwardedCounter      = requestsTotal.WithLabelValues(outcomeForwarded)
	clientRejectedCounter = requestsTotal.WithLabelValues(outcomeClientRejected)
	forbiddenCounter      = requestsTotal.WithLabelValues(outcomeForbidden)
	noCredentialCounter   = requestsTotal.WithLabelValues(outcomeNoCredential)
	replayedCounter       = requestsTotal.WithLabelValues(outcomeReplayed)
	badRequestCounter     = requestsTotal.WithLabelValues(outcomeBadRequest)
)

var collectors = []prometheus.Collector{requestsTotal, pushesTotal}

// allCollectors is every metric of the module: the glue's own
// (collectors) and each engine's.
func allCollectors() []prometheus.Collector {
	return slices.Concat(collectors, credential.Collectors(), identity.Collectors(), replay.Collectors(), limits.Collectors(), gateway.Collectors())
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
