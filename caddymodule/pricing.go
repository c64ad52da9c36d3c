package caddymodule

import (
	"math"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// Pricing: a request's worst case before it goes upstream, and what an
// answer cost, over the gateway's catalog (catalog.go). The catalog's
// rules (a model it does not know at its highest prices, no catalog:
// gateway.ErrNoCatalog) are internal/gateway's; what is here is which
// figure of the request and of the answer is used.

// worstCase is the worst case of a request whose body's fields are f
// (worstCaseOf): its model and fallback models, its output cap (-1:
// none) and its size.
func worstCase(cat *gateway.Catalog, f jsonbody.Fields, defaultCap int64) (limits.Amount, gateway.WorstCase, error) {
	models := make([]string, 0, 1+len(f.Fallbacks))
	if f.HasModel {
		models = append(models, f.Model)
	}
	return worstCaseOf(cat, append(models, f.Fallbacks...), f.Bytes, f.OutputCap, defaultCap)
}

// worstCaseOf is a request's worst case: its input estimate,
// ceil(bytes/4), at most the model's context_window when the catalog
// knows it, plus its output cap (outputCap when > 0, else the catalog's
// max_tokens, else defaultCap), priced at the model's prices or the
// catalog's highest. A request that names fallback models may be served
// by any of them: the dearest is reserved (the most dollars; tokens, the
// most of any). On a nil catalog the tokens are filled in and the error
// is gateway.ErrNoCatalog.
func worstCaseOf(cat *gateway.Catalog, models []string, bodyBytes, outputCap, defaultCap int64) (limits.Amount, gateway.WorstCase, error) {
	if len(models) == 0 {
		models = []string{""} // no model: priced at the catalog's highest
	}
	var worst gateway.WorstCase
	var amt limits.Amount
	for i, model := range models {
		in := inputEstimate(cat, model, bodyBytes)
		wc, err := cat.WorstCase(model, in, outputCap, defaultCap)
		if err != nil {
			// no catalog: the caps are the request's or the default,
			// the same for every model
			return limits.Amount{Tokens: wc.Tokens, Input: in}, wc, err
		}
		if i == 0 || wc.USD > worst.USD {
			worst = wc
			amt.USD, amt.Input = wc.USD, in
		}
		amt.Tokens = max(amt.Tokens, wc.Tokens)
	}
	return amt, worst, nil
}

// inputEstimate is a body's input tokens before it is read by the model:
// bytes / 4, rounded up, at most the model's context window.
func inputEstimate(cat *gateway.Catalog, model string, bodyBytes int64) int64 {
	in := (max(bodyBytes, 0) + bytesPerToken - 1) / bytesPerToken
	if m, ok := cat.Model(model); ok && m.ContextWindow > 0 {
		in = min(in, m.ContextWindow)
	}
	return in
}

// answerFigures is what an answer reported: its tokens (input counts every
// input token, cache reads and writes included; output includes
// reasoning) and its dollars in nano-USD, -1 when absent: costNano is
// the provider's cost (usage.cost, or provider_metadata.gateway.cost),
// gatewayCostNano what the account pays (gateway_cost, gatewayCost:
// cost plus the gateway's surcharges).
type answerFigures struct {
	input, output, cacheRead, cacheWrite int64
	costNano, gatewayCostNano            int64
}

// priceAnswer is what an answer used: its tokens and, in this order, the
// gateway's total charge, its cost, or its tokens at the catalog's prices
// for model (cache reads and writes at their own prices; a model the
// catalog does not know at its highest). priced is false when there is
// neither a cost in the answer nor a catalog: then USD is NaN, which no
// sum can take for a price (the caller charges something else).
func priceAnswer(cat *gateway.Catalog, model string, u answerFigures) (amt limits.Amount, priced bool) {
	in, out := max(u.input, 0), max(u.output, 0)
	amt = limits.Amount{Tokens: in + out, Input: in}
	switch {
	case u.gatewayCostNano >= 0:
		amt.USD = nanoUSD(u.gatewayCostNano)
	case u.costNano >= 0:
		amt.USD = nanoUSD(u.costNano)
	default:
		p, _, err := cat.Prices(model)
		if err != nil {
			amt.USD = math.NaN()
			return amt, false
		}
		amt.USD = p.Cost(gateway.Usage{Input: in, Output: out, CacheRead: u.cacheRead, CacheWrite: u.cacheWrite})
	}
	return amt, true
}

func nanoUSD(n int64) float64 { return float64(n) / 1e9 }

// answerAmount is what an answer used, from the usage its scanner read
// (see priceAnswer).
func answerAmount(cat *gateway.Catalog, model string, u jsonbody.Usage) (limits.Amount, bool) {
	return priceAnswer(cat, model, answerFigures{
		input: u.Input, output: u.Output, cacheRead: u.CacheReadTokens, cacheWrite: u.CacheWriteTokens,
		costNano: u.CostNanoUSD, gatewayCostNano: u.GatewayCostNanoUSD,
	})
}
