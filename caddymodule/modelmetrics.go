package caddymodule

import (
	"sync"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Usage per model, in a family of its own rather than a model label on
// client_tokens_total: clients (up to 1000 labels) times models (AI
// Gateway lists hundreds) could make hundreds of thousands of series,
// while models times policies stays in the hundreds. Cost by client and
// cost by model are each one query; the two crossed is AI Gateway's own
// report (group_by=user). The model label is the model the request
// named, capped: the first maxModelLabels ids the process sees get their
// own series, the rest share "other" (as client labels do), as does a
// model the gateway's catalog does not list; a request that named none
// counts as "none". The policy label is the
// client's policy ("" for the block's own settings): policies are
// config-defined, so it is bounded by what the configs name.

// maxModelLabels is the cap on distinct model label values.
var maxModelLabels = 200

const noModelLabel = "none"

var (
	modelTokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "model_tokens_total",
		Help:      "Tokens used per requested model and client policy, by direction (input, output), as client_tokens_total counts them. The model label is capped; beyond the cap models count as \"other\"; a request that named no model counts as \"none\".",
	}, []string{"policy", "model", "direction"})

	modelCostTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "model_cost_total",
		Help:      "Cost per requested model and client policy, in USD, as client_cost_total counts it. The model label is capped like model_tokens_total's.",
	}, []string{"policy", "model"})
)

func init() {
	collectors = append(collectors, modelTokensTotal, modelCostTotal)
}

// modelSeries are one (policy, model) pair's counters, resolved once.
type modelSeries struct {
	input, output, cost prometheus.Counter
}

type modelKey struct{ policy, model string }

var modelLabels struct {
	mu     sync.RWMutex
	models map[string]bool // the model label values given out
	series map[modelKey]*modelSeries
}

// modelSeriesFor returns the counters of a policy's requests for model
// ("" when the request named none).
func modelSeriesFor(policyName, model string) *modelSeries {
	label := model
	switch {
	case model == "":
		label = noModelLabel
	case policy.CheckModelID(model) != "" || model == otherClientLabel:
		label = otherClientLabel
	}
	k := modelKey{policyName, label}
	modelLabels.mu.RLock()
	s := modelLabels.series[k]
	modelLabels.mu.RUnlock()
	if s != nil {
		return s
	}
	modelLabels.mu.Lock()
	defer modelLabels.mu.Unlock()
	if modelLabels.series == nil {
		modelLabels.series, modelLabels.models = map[modelKey]*modelSeries{}, map[string]bool{}
	}
	if !modelLabels.models[label] && label != noModelLabel && label != otherClientLabel {
		if len(modelLabels.models) >= maxModelLabels {
			k.model = otherClientLabel
		} else {
			modelLabels.models[label] = true
		}
	}
	if s = modelLabels.series[k]; s != nil {
		return s
	}
	s = &modelSeries{
		input:  modelTokensTotal.WithLabelValues(k.policy, k.model, "input"),
		output: modelTokensTotal.WithLabelValues(k.policy, k.model, "output"),
		cost:   modelCostTotal.WithLabelValues(k.policy, k.model),
	}
	modelLabels.series[k] = s
	return s
}

// listedModel is the model a request named, or "other" when the
// gateway's catalog is read and does not list it: a client that names
// made-up models (and hangs up, to be charged an estimate) cannot take
// the capped labels from the models in use. Without a catalog, the model
// as named.
func listedModel(c *gateway.Catalog, model string) string {
	if c == nil || model == "" {
		return model
	}
	if _, ok := c.Model(model); !ok {
		return otherClientLabel
	}
	return model
}

// countModel counts what a finished request used (as the client's
// series count it) under its model and policy.
func (m *meterWriter) countModel(amt limits.Amount, priced bool) {
	s := modelSeriesFor(m.policy, listedModel(m.spend.h.currentCatalog(), m.model))
	s.input.Add(float64(amt.Input))
	s.output.Add(float64(amt.Tokens - amt.Input))
	if priced && amt.USD > 0 {
		s.cost.Add(amt.USD)
	}
}
