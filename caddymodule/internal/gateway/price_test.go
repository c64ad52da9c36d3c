package gateway

import (
	"errors"
	"math"
	"testing"
)

// near compares dollar figures computed in different orders.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*max(1, math.Abs(b)) }

func TestCost(t *testing.T) {
	deepseek := Prices{Input: 0.00000028, Output: 0.00000042, CacheRead: 0.000000028, CacheWrite: 0.00000028, HasTokenPrices: true}
	haiku := Prices{Input: 0.000001, Output: 0.000005, CacheRead: 0.0000001, CacheWrite: 0.00000125, HasTokenPrices: true}
	for _, tc := range []struct {
		name string
		p    Prices
		u    Usage
		want float64
	}{
		{"deepseek uncached", deepseek, Usage{Input: 1000, Output: 100}, 1000*0.00000028 + 100*0.00000042},
		// 1000 input of which 800 read from the cache: 200 at input, 800 at the cache-read price.
		{"deepseek cache reads", deepseek, Usage{Input: 1000, Output: 100, CacheRead: 800}, 200*0.00000028 + 800*0.000000028 + 100*0.00000042},
		// An Anthropic answer: input_tokens 13 + cache_read 2000 + cache_creation 500.
		{"haiku reads and writes", haiku, Usage{Input: 13 + 2000 + 500, Output: 5, CacheRead: 2000, CacheWrite: 500}, 13*0.000001 + 2000*0.0000001 + 500*0.00000125 + 5*0.000005},
		// Cached counts above Input (a caller that did not add them) are still charged.
		{"cached beyond input", haiku, Usage{Input: 10, CacheRead: 100}, 100 * 0.0000001},
		{"negative counts", haiku, Usage{Input: -5, Output: -1}, 0},
		{"nothing", haiku, Usage{}, 0},
	} {
		if got := tc.p.Cost(tc.u); !near(got, tc.want) {
			t.Errorf("%s: Cost = %.15g, want %.15g", tc.name, got, tc.want)
		}
	}
}

func TestPrices(t *testing.T) {
	c := readTestCatalog(t)
	if p, exact, err := c.Prices("deepseek/deepseek-v3.2"); err != nil || !exact || p.Input != 0.00000028 {
		t.Errorf("known model: %+v, %v, %v", p, exact, err)
	}
	for _, model := range []string{"nobody/unknown", "google/imagen-4.0-generate-001", "DeepSeek/DeepSeek-V3.2"} {
		if p, exact, err := c.Prices(model); err != nil || exact || p != c.Highest() {
			t.Errorf("%s: %+v, %v, %v; want the highest prices, not exact", model, p, exact, err)
		}
	}
	var none *Catalog
	if _, _, err := none.Prices("deepseek/deepseek-v3.2"); !errors.Is(err, ErrNoCatalog) {
		t.Errorf("nil catalog: err = %v", err)
	}
}

func TestWorstCase(t *testing.T) {
	c := readTestCatalog(t)
	h := c.Highest()
	const def = 4096
	for _, tc := range []struct {
		name        string
		model       string
		in, cap     int64
		wantCap     int64
		wantFrom    string
		wantUSD     float64
		wantHighest bool
	}{
		{"request cap", "deepseek/deepseek-v3.2", 1000, 100, 100, CapFromRequest, 1000*0.00000028 + 100*0.00000042, false},
		// The request's cap is kept even above the catalog's max_tokens.
		{"request cap above the model's", "deepseek/deepseek-v3.2", 1000, 20000, 20000, CapFromRequest, 1000*0.00000028 + 20000*0.00000042, false},
		{"model cap", "deepseek/deepseek-v3.2", 1000, 0, 8000, CapFromModel, 1000*0.00000028 + 8000*0.00000042, false},
		// Input at the dearest of input and cache prices: haiku's cache write.
		{"cache write dearer than input", "anthropic/claude-haiku-4.5", 1000, 0, 64000, CapFromModel, 1000*0.00000125 + 64000*0.000005, false},
		{"embedding: no max_tokens, free output", "openai/text-embedding-3-small", 1000, 0, def, CapFromDefault, 1000 * 0.00000002, false},
		{"unknown model at the highest", "nobody/unknown", 1000, 100, 100, CapFromRequest, 1000*max(h.Input, h.CacheWrite) + 100*h.Output, true},
		{"unknown model, default cap", "nobody/unknown", 1000, 0, def, CapFromDefault, 1000*max(h.Input, h.CacheWrite) + def*h.Output, true},
		{"known model without token prices", "google/imagen-4.0-generate-001", 10, 0, def, CapFromDefault, 10*max(h.Input, h.CacheWrite) + def*h.Output, true},
		{"negative input", "deepseek/deepseek-v3.2", -50, 100, 100, CapFromRequest, 100 * 0.00000042, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := c.WorstCase(tc.model, tc.in, tc.cap, def)
			if err != nil {
				t.Fatal(err)
			}
			if w.OutputCap != tc.wantCap || w.CapFrom != tc.wantFrom || w.Tokens != max(tc.in, 0)+tc.wantCap || w.AtHighest != tc.wantHighest || !near(w.USD, tc.wantUSD) {
				t.Fatalf("got %+v; want cap %d from %s, tokens %d, USD %.15g, at highest %v", w, tc.wantCap, tc.wantFrom, max(tc.in, 0)+tc.wantCap, tc.wantUSD, tc.wantHighest)
			}
		})
	}
	t.Run("overflow", func(t *testing.T) {
		w, err := c.WorstCase("deepseek/deepseek-v3.2", math.MaxInt64, 100, def)
		if err != nil || w.Tokens != math.MaxInt64 {
			t.Fatalf("got %+v, %v", w, err)
		}
	})
	t.Run("no catalog", func(t *testing.T) {
		var none *Catalog
		w, err := none.WorstCase("deepseek/deepseek-v3.2", 1000, 0, def)
		if !errors.Is(err, ErrNoCatalog) {
			t.Fatalf("err = %v, want ErrNoCatalog", err)
		}
		if w.Tokens != 1000+def || w.OutputCap != def || w.CapFrom != CapFromDefault || w.USD != 0 {
			t.Fatalf("got %+v; want the tokens at the default cap and no price", w)
		}
		if w, _ := none.WorstCase("x", 1000, 50, def); w.Tokens != 1050 || w.CapFrom != CapFromRequest {
			t.Fatalf("request cap without a catalog: %+v", w)
		}
	})
}
