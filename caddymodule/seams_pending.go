package caddymodule

import (
	"math"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// Stand-ins for i-capture's phase 2 (docs: /work/wt/prompts/seams.md):
// this file goes when its "usage: done" is merged (answerAmount then
// reads the new jsonbody.Usage in pricing.go).

// answerAmount is i-price's over today's jsonbody.Usage (a cost, no
// gateway cost, no cache counts).
func answerAmount(cat *gateway.Catalog, model string, u jsonbody.Usage) (limits.Amount, bool) {
	fig := answerFigures{input: u.Input, output: u.Output, costNano: -1, gatewayCostNano: -1}
	if u.HasCost {
		fig.costNano = int64(math.Round(u.Cost * 1e9))
	}
	return priceAnswer(cat, model, fig)
}

// generationID stands for jsonbody.Usage.GenerationID (i-capture).
func generationID(jsonbody.Usage) string { return "" }
