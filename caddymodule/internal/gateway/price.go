package gateway

import (
	"errors"
	"math"
)

// ErrNoCatalog is the error of pricing before any catalog has been read.
var ErrNoCatalog = errors.New("no model catalog has been read from the gateway yet")

// Usage is the tokens of one answer. Input counts every input token,
// cache reads and writes included (OpenAI's prompt_tokens; Anthropic's
// input_tokens + cache_read_input_tokens + cache_creation_input_tokens).
// Output includes reasoning tokens.
type Usage struct {
	Input, Output, CacheRead, CacheWrite int64
}

// Cost prices u: uncached input at Input, cache reads at CacheRead, cache
// writes at CacheWrite, output at Output. Negative counts count as 0, and
// cached tokens beyond Input are priced as cached, never subtracted.
// [Catalog.Prices] gives the prices to charge a model at.
func (p Prices) Cost(u Usage) float64 {
	in, out := max(u.Input, 0), max(u.Output, 0)
	read, write := max(u.CacheRead, 0), max(u.CacheWrite, 0)
	uncached := max(in-read-write, 0)
	return float64(uncached)*p.Input + float64(read)*p.CacheRead +
		float64(write)*p.CacheWrite + float64(out)*p.Output
}

// Prices returns what to charge a model at: its own prices (exact), or,
// for a model the catalog does not know or knows without token prices,
// the catalog's highest (not exact). A nil catalog returns [ErrNoCatalog].
func (c *Catalog) Prices(model string) (p Prices, exact bool, err error) {
	if c == nil {
		return Prices{}, false, ErrNoCatalog
	}
	if m, ok := c.models[model]; ok && m.Prices.HasTokenPrices {
		return m.Prices, true, nil
	}
	return c.highest, false, nil
}

// WorstCase is the most a request may cost.
type WorstCase struct {
	// OutputCap is the output cap reserved for, and CapFrom where it came
	// from: "request", "model" (the catalog's max_tokens) or "default".
	OutputCap int64
	CapFrom   string
	// Tokens is the input estimate plus OutputCap.
	Tokens int64
	// USD is the input estimate priced at the highest of the input and
	// cache prices (a cache write can cost more than input), plus
	// OutputCap at the output price; 0 with an error.
	USD float64
	// AtHighest says USD is at the catalog's highest prices: the model is
	// unknown to it, or has no token prices.
	AtHighest bool
}

// Where a WorstCase's output cap came from.
const (
	CapFromRequest = "request"
	CapFromModel   = "model"
	CapFromDefault = "default"
)

// WorstCase is the most a request for model may cost: inputTokens (an
// estimate) plus an output cap, the request's own outputCap when > 0,
// else the model's max_tokens, else defaultCap. It is priced at the
// model's prices, or at the catalog's highest (AtHighest), every input
// token at the dearest of the input and cache prices. On a nil
// catalog the tokens are given with [ErrNoCatalog] and no price.
func (c *Catalog) WorstCase(model string, inputTokens, outputCap, defaultCap int64) (WorstCase, error) {
	w := WorstCase{OutputCap: max(defaultCap, 0), CapFrom: CapFromDefault}
	m, known := c.Model(model)
	switch {
	case outputCap > 0:
		w.OutputCap, w.CapFrom = outputCap, CapFromRequest
	case known && m.MaxTokens > 0:
		w.OutputCap, w.CapFrom = m.MaxTokens, CapFromModel
	}
	in := max(inputTokens, 0)
	w.Tokens = in + w.OutputCap
	if w.Tokens < in { // overflow
		w.Tokens = math.MaxInt64
	}
	p, exact, err := c.Prices(model)
	if err != nil {
		return w, err
	}
	w.AtHighest = !exact
	w.USD = float64(in)*max(p.Input, p.CacheRead, p.CacheWrite) + float64(w.OutputCap)*p.Output
	return w, nil
}
