package caddymodule

import (
	"errors"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Reconciling with the gateway's ledger: an answer charged an estimate
// (its usage never arrived) whose generation id the proxy saw is looked
// up in <gateway>/v1/generation, in the background, and the gateway's
// record replaces the estimate. The lookups run on the gateway link's
// reconciler (catalog.go), with the proxy's own credential: never the
// client's key, and a sandbox cannot call /v1/generation itself (it is
// outside every default allow_paths).

// reconcileLater looks genID up in the gateway's ledger (after a few
// seconds, with backoff, for up to 5 minutes) and calls apply, once, with
// the gateway's figure: total_cost in USD, its native tokens. apply is
// never called when no record could be had (a lookup refused, the
// deadline passed, the proxy stopping, an id that is not AI Gateway's):
// the charge then stays estimated. apply runs on a reconciler goroutine
// and must not block for long.
func (h *Handler) reconcileLater(genID string, apply func(limits.Amount)) {
	g := h.gateway
	if g == nil {
		return // metering off: nothing was charged
	}
	err := g.reconciler.Enqueue(genID, func(gen gateway.Generation, err error) {
		if err == nil {
			apply(generationAmount(gen))
		}
		// a failure is logged and counted by the reconciler
	})
	if err != nil && !errors.Is(err, gateway.ErrDropped) {
		if c := h.logger.Check(zapcore.DebugLevel, "generation not looked up"); c != nil {
			c.Write(zap.String("id", genID), zap.Error(err))
		}
	}
}

// generationAmount is the gateway's record as an amount: what the account
// paid, and the provider's native token counts. native_tokens_prompt
// counts every input token, cached ones included (as OpenAI's
// prompt_tokens); completion tokens include reasoning.
func generationAmount(gen gateway.Generation) limits.Amount {
	in, out := max(gen.PromptTokens, 0), max(gen.CompletionTokens, 0)
	return limits.Amount{Tokens: in + out, Input: in, USD: max(gen.TotalCost, 0)}
}
