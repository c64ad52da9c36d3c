package caddymodule

import (
	"math"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// Stand-ins for i-capture's seams (docs: /work/wt/prompts/seams.md),
// until its branch lands: this file goes when i-capture ("capture: done",
// "usage: done") is merged (i-price's worstCase and answerAmount then
// take jsonbody.Fields and the new jsonbody.Usage, in pricing.go).

// reqFields stands for jsonbody.Fields (i-capture).
type reqFields struct {
	Model     string
	HasModel  bool
	OutputCap int64 // -1: none
	Fallbacks []string
	Bytes     int64
}

// worstCase is i-price's over reqFields until jsonbody.Fields lands.
func worstCase(cat *gateway.Catalog, f reqFields, defaultCap int64) (limits.Amount, gateway.WorstCase, error) {
	return worstCaseOf(cat, append([]string{f.Model}, f.Fallbacks...), f.Bytes, f.OutputCap, defaultCap)
}

// answerAmount is i-price's over today's jsonbody.Usage (a cost, no
// gateway cost, no cache counts) until i-capture's phase 2 lands.
func answerAmount(cat *gateway.Catalog, model string, u jsonbody.Usage) (limits.Amount, bool) {
	fig := answerFigures{input: u.Input, output: u.Output, costNano: -1, gatewayCostNano: -1}
	if u.HasCost {
		fig.costNano = int64(math.Round(u.Cost * 1e9))
	}
	return priceAnswer(cat, model, fig)
}

// generationID stands for jsonbody.Usage.GenerationID (i-capture).
func generationID(jsonbody.Usage) string { return "" }
