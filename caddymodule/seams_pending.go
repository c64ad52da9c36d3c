package caddymodule

import (
	"math"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// Stand-ins for the other helpers' seams (docs: /work/wt/prompts/seams.md),
// until their branches land: this file goes when i-price ("price: done")
// and i-capture's "usage: done" are merged.

// currentCatalog stands for i-price's: no catalog is ever read.
func (h *Handler) currentCatalog() *gateway.Catalog { return nil }

// worstCase stands for i-price's.
func worstCase(cat *gateway.Catalog, f jsonbody.Fields, defaultCap int64) (limits.Amount, gateway.WorstCase, error) {
	in := (f.Bytes + bytesPerToken - 1) / bytesPerToken
	if cat == nil {
		outCap := f.OutputCap
		if outCap < 0 {
			outCap = defaultCap
		}
		return limits.Amount{Tokens: in + outCap, Input: in}, gateway.WorstCase{}, gateway.ErrNoCatalog
	}
	wc, err := cat.WorstCase(f.Model, in, f.OutputCap, defaultCap)
	return limits.Amount{Tokens: wc.Tokens, Input: in, USD: wc.USD}, wc, err
}

// answerAmount stands for i-price's.
func answerAmount(cat *gateway.Catalog, model string, u jsonbody.Usage) (limits.Amount, bool) {
	amt := limits.Amount{Tokens: u.Input + u.Output, Input: u.Input, USD: math.NaN()}
	switch {
	case u.HasCost:
		amt.USD = u.Cost
	case cat != nil:
		p, _, err := cat.Prices(model)
		if err != nil {
			return amt, false
		}
		amt.USD = p.Cost(gateway.Usage{Input: u.Input, Output: u.Output})
	default:
		return amt, false
	}
	return amt, true
}

// reconcileLater stands for i-price's: nothing is looked up.
func (h *Handler) reconcileLater(genID string, apply func(limits.Amount)) {}

// generationID stands for jsonbody.Usage.GenerationID (i-capture).
func generationID(jsonbody.Usage) string { return "" }
