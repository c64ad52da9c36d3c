package caddymodule

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// pricingCatalogJSON is GET /v1/models in AI Gateway's shape. The two
// DeepSeek entries are as recorded live (vercel/ai,
// packages/gateway/src/__fixtures__/issue-15894-deepseek-v3.2-catalog.json,
// 2026-07-09); the Anthropic ones have a cache-write price, dearer than
// input, as Anthropic's models do.
const pricingCatalogJSON = `{"object":"list","data":[
{"id":"deepseek/deepseek-v3.2","object":"model","created":1755815280,"owned_by":"deepseek","context_window":128000,"max_tokens":8000,"type":"language","tags":["tool-use","implicit-caching"],"pricing":{"input":"0.00000028","output":"0.00000042","input_cache_read":"0.000000028"}},
{"id":"deepseek/deepseek-v3.2-thinking","object":"model","created":1755815280,"owned_by":"deepseek","context_window":128000,"max_tokens":8000,"type":"language","tags":["tool-use","implicit-caching","reasoning"],"pricing":{"input":"0.00000062","output":"0.00000185"}},
{"id":"anthropic/claude-haiku-4.5","object":"model","created":1760486400,"owned_by":"anthropic","context_window":200000,"max_tokens":64000,"type":"language","pricing":{"input":"0.000001","output":"0.000005","input_cache_read":"0.0000001","input_cache_write":"0.00000125"}},
{"id":"anthropic/claude-opus-4.1","object":"model","created":1754352000,"owned_by":"anthropic","context_window":200000,"max_tokens":32000,"type":"language","pricing":{"input":"0.000015","output":"0.000075","input_cache_read":"0.0000015","input_cache_write":"0.00001875","web_search":"0.01"}}
]}`

func pricingCatalog(t *testing.T) *gateway.Catalog {
	t.Helper()
	c, err := gateway.ParseCatalog(strings.NewReader(pricingCatalogJSON))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sameUSD compares dollar figures computed in different orders.
func sameUSD(a, b float64) bool {
	return math.Abs(a-b) <= 1e-12*math.Max(math.Abs(a), math.Abs(b))+1e-18
}

func TestWorstCase(t *testing.T) {
	cat := pricingCatalog(t)
	const defaultCap = 4096
	for _, tc := range []struct {
		name      string
		cat       *gateway.Catalog
		models    []string
		bytes     int64
		outputCap int64
		want      limits.Amount
		capFrom   string
		atHighest bool
		err       error
	}{
		{name: "the model's max_tokens", cat: cat, models: []string{"deepseek/deepseek-v3.2"}, bytes: 4001, outputCap: -1,
			want: limits.Amount{Tokens: 1001 + 8000, Input: 1001, USD: 1001*0.00000028 + 8000*0.00000042}, capFrom: gateway.CapFromModel},
		{name: "the request's cap", cat: cat, models: []string{"deepseek/deepseek-v3.2"}, bytes: 400, outputCap: 500,
			want: limits.Amount{Tokens: 100 + 500, Input: 100, USD: 100*0.00000028 + 500*0.00000042}, capFrom: gateway.CapFromRequest},
		{name: "a request's cap above the catalog's is kept", cat: cat, models: []string{"deepseek/deepseek-v3.2"}, bytes: 4, outputCap: 20000,
			want: limits.Amount{Tokens: 1 + 20000, Input: 1, USD: 0.00000028 + 20000*0.00000042}, capFrom: gateway.CapFromRequest},
		{name: "input at most the context window", cat: cat, models: []string{"deepseek/deepseek-v3.2"}, bytes: 1 << 20, outputCap: 10,
			want: limits.Amount{Tokens: 128000 + 10, Input: 128000, USD: 128000*0.00000028 + 10*0.00000042}, capFrom: gateway.CapFromRequest},
		{name: "input at the dearest of input and cache write", cat: cat, models: []string{"anthropic/claude-haiku-4.5"}, bytes: 4000, outputCap: 100,
			want: limits.Amount{Tokens: 1100, Input: 1000, USD: 1000*0.00000125 + 100*0.000005}, capFrom: gateway.CapFromRequest},
		{name: "an unknown model at the highest prices and the default cap", cat: cat, models: []string{"acme/new-model"}, bytes: 4000, outputCap: -1,
			want: limits.Amount{Tokens: 1000 + defaultCap, Input: 1000, USD: 1000*0.00001875 + defaultCap*0.000075}, capFrom: gateway.CapFromDefault, atHighest: true},
		{name: "no model at the highest prices", cat: cat, bytes: 8, outputCap: 1,
			want: limits.Amount{Tokens: 3, Input: 2, USD: 2*0.00001875 + 0.000075}, capFrom: gateway.CapFromRequest, atHighest: true},
		{name: "the dearest fallback", cat: cat, models: []string{"deepseek/deepseek-v3.2", "anthropic/claude-opus-4.1", "anthropic/claude-haiku-4.5"}, bytes: 4000, outputCap: -1,
			want: limits.Amount{Tokens: 1000 + 64000, Input: 1000, USD: 1000*0.00001875 + 32000*0.000075}, capFrom: gateway.CapFromModel},
		{name: "no catalog: tokens with the request's cap", models: []string{"deepseek/deepseek-v3.2"}, bytes: 4000, outputCap: 300,
			want: limits.Amount{Tokens: 1300, Input: 1000}, capFrom: gateway.CapFromRequest, err: gateway.ErrNoCatalog},
		{name: "no catalog: tokens with the default cap", models: []string{"deepseek/deepseek-v3.2"}, bytes: 1 << 20, outputCap: -1,
			want: limits.Amount{Tokens: 262144 + defaultCap, Input: 262144}, capFrom: gateway.CapFromDefault, err: gateway.ErrNoCatalog},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, wc, err := worstCaseOf(tc.cat, tc.models, tc.bytes, tc.outputCap, defaultCap)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got.Tokens != tc.want.Tokens || got.Input != tc.want.Input || !sameUSD(got.USD, tc.want.USD) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if wc.CapFrom != tc.capFrom || wc.AtHighest != tc.atHighest {
				t.Errorf("cap from %q at highest %v, want %q %v", wc.CapFrom, wc.AtHighest, tc.capFrom, tc.atHighest)
			}
			if err == nil && !sameUSD(wc.USD, got.USD) {
				t.Errorf("WorstCase.USD %v, amount %v", wc.USD, got.USD)
			}
		})
	}
}

func TestPriceAnswer(t *testing.T) {
	cat := pricingCatalog(t)
	const absent = -1
	for _, tc := range []struct {
		name   string
		cat    *gateway.Catalog
		model  string
		u      answerFigures
		want   limits.Amount
		priced bool
	}{
		// the recorded Messages streams (vercel/ai issue-17326 fixtures):
		// cost "0.000038", gatewayCost "0.000138": the account pays the latter
		{"the gateway's total charge first", cat, "anthropic/claude-haiku-4.5",
			answerFigures{input: 13, output: 5, costNano: 38000, gatewayCostNano: 138000},
			limits.Amount{Tokens: 18, Input: 13, USD: 0.000138}, true},
		{"then the answer's cost", cat, "deepseek/deepseek-v3.2",
			answerFigures{input: 1000, output: 200, costNano: 420000, gatewayCostNano: absent},
			limits.Amount{Tokens: 1200, Input: 1000, USD: 0.00042}, true},
		{"a zero cost is a cost", cat, "deepseek/deepseek-v3.2",
			answerFigures{input: 1000, output: 200, costNano: 0, gatewayCostNano: absent},
			limits.Amount{Tokens: 1200, Input: 1000}, true},
		{"else the catalog, cache reads at their price", cat, "deepseek/deepseek-v3.2",
			answerFigures{input: 1000, output: 200, cacheRead: 600, costNano: absent, gatewayCostNano: absent},
			limits.Amount{Tokens: 1200, Input: 1000, USD: 400*0.00000028 + 600*0.000000028 + 200*0.00000042}, true},
		{"cache writes at theirs", cat, "anthropic/claude-haiku-4.5",
			answerFigures{input: 1500, output: 10, cacheRead: 200, cacheWrite: 1000, costNano: absent, gatewayCostNano: absent},
			limits.Amount{Tokens: 1510, Input: 1500, USD: 300*0.000001 + 200*0.0000001 + 1000*0.00000125 + 10*0.000005}, true},
		{"a model without a cache price: input's", cat, "deepseek/deepseek-v3.2-thinking",
			answerFigures{input: 100, output: 100, cacheRead: 50, costNano: absent, gatewayCostNano: absent},
			limits.Amount{Tokens: 200, Input: 100, USD: 100*0.00000062 + 100*0.00000185}, true},
		{"an unknown model at the highest", cat, "acme/new-model",
			answerFigures{input: 100, output: 10, costNano: absent, gatewayCostNano: absent},
			limits.Amount{Tokens: 110, Input: 100, USD: 100*0.000015 + 10*0.000075}, true},
		{"no catalog, a cost", nil, "deepseek/deepseek-v3.2",
			answerFigures{input: 10, output: 10, costNano: 5000, gatewayCostNano: absent},
			limits.Amount{Tokens: 20, Input: 10, USD: 0.000005}, true},
		{"no catalog, no cost: not priced", nil, "deepseek/deepseek-v3.2",
			answerFigures{input: 10, output: 10, costNano: absent, gatewayCostNano: absent},
			limits.Amount{Tokens: 20, Input: 10, USD: math.NaN()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, priced := priceAnswer(tc.cat, tc.model, tc.u)
			sameNaN := math.IsNaN(got.USD) && math.IsNaN(tc.want.USD)
			if priced != tc.priced || got.Tokens != tc.want.Tokens || got.Input != tc.want.Input || !(sameUSD(got.USD, tc.want.USD) || sameNaN) {
				t.Errorf("got %+v priced %v, want %+v %v", got, priced, tc.want, tc.priced)
			}
		})
	}
}

// worstCase reads the body's fields: its model and every fallback
// (the dearest is reserved), its cap, its size.
func TestWorstCaseFields(t *testing.T) {
	cat := pricingCatalog(t)
	f := jsonbody.Fields{Model: "deepseek/deepseek-v3.2", HasModel: true, OutputCap: 100,
		Fallbacks: []string{"anthropic/claude-haiku-4.5"}, Bytes: 4000}
	got, wc, err := worstCase(cat, f, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1000*0.00000125 + 100*0.000005; !sameUSD(got.USD, want) || got.Tokens != 1100 || wc.CapFrom != gateway.CapFromRequest {
		t.Errorf("with a fallback: %+v %+v, want the fallback's $%v", got, wc, want)
	}
	got, wc, _ = worstCase(cat, jsonbody.Fields{OutputCap: -1, Bytes: 40}, 4096)
	if !wc.AtHighest || got.Tokens != 10+4096 {
		t.Errorf("without a model: %+v %+v, want the highest prices and the default cap", got, wc)
	}
}
