package integration

import (
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The fake gateway's model catalog: GET /v1/models in AI Gateway's shape,
// and the prices every faithful answer's cost is computed from.
//
// The shape, as recorded live from AI Gateway (vercel/ai,
// packages/gateway/src/__fixtures__/issue-15894-deepseek-v3.2-catalog.json):
//
//	{"object":"list","data":[{"id":"deepseek/deepseek-v3.2","object":"model",
//	  "created":1755815280,"released":1764547200,"owned_by":"deepseek",
//	  "name":"DeepSeek V3.2","description":"…","context_window":128000,
//	  "max_tokens":8000,"type":"language","tags":["tool-use","implicit-caching"],
//	  "pricing":{"input":"0.00000028","output":"0.00000042","input_cache_read":"0.000000028"}}, …]}
//
// Prices are USD per token, as decimal strings. Some models have more
// keys (input_cache_write; image keys), an embedding model has only
// input, and an image model may have no token pricing at all.

// fakeModel is one entry of the catalog, in AI Gateway's shape.
type fakeModel struct {
	ID            string `json:"id"`
	Object        string `json:"object"` // "model"; set when empty
	Created       int64  `json:"created"`
	Released      int64  `json:"released,omitempty"`
	OwnedBy       string `json:"owned_by"`
	Name          string `json:"name,omitempty"`
	Description   string `json:"description,omitempty"`
	ContextWindow int    `json:"context_window,omitempty"` // absent (0) on image models
	MaxTokens     int    `json:"max_tokens,omitempty"`     // the largest output; absent (0) on image models
	// Type is "language", "embedding", "image" (or "video").
	Type string   `json:"type,omitempty"`
	Tags []string `json:"tags,omitempty"`
	// Pricing maps a price's name (input, output, input_cache_read,
	// input_cache_write, …) to USD per token as a decimal string; nil: the
	// model has no pricing key.
	Pricing map[string]string `json:"pricing,omitempty"`

	// Unlisted models are run and priced by the fake but left out of GET
	// /v1/models: a model the proxy's catalog does not know.
	Unlisted bool `json:"-"`
}

// defaultCatalog is what a faithful gateway (see Faithful) serves and
// prices from until SetCatalog: models with different prices, output caps
// and types. Prices are AI Gateway's at the time of writing, except
// deepseek's, which is the recording's verbatim.
//
// The two first keep the ids and creation times the fake listed before
// it had a catalog (the models the other tests use), and they alone are
// listed until Faithful or SetCatalog (see legacyCatalogSize): tests
// count the models listed.
func defaultCatalog() []fakeModel {
	return []fakeModel{
		{ID: "openai/gpt-5", Created: 1754524800, Released: 1754524800, OwnedBy: "openai", Name: "GPT-5",
			Description: "OpenAI's flagship model.", ContextWindow: 400000, MaxTokens: 128000, Type: "language",
			Tags:    []string{"reasoning", "tool-use", "vision", "file-input", "implicit-caching"},
			Pricing: map[string]string{"input": "0.00000125", "output": "0.00001", "input_cache_read": "0.000000125"}},
		{ID: "anthropic/claude-sonnet-4", Created: 1747872000, Released: 1747872000, OwnedBy: "anthropic", Name: "Claude Sonnet 4",
			Description: "Anthropic's mid-size model.", ContextWindow: 200000, MaxTokens: 64000, Type: "language",
			Tags:    []string{"reasoning", "tool-use", "vision", "file-input"},
			Pricing: map[string]string{"input": "0.000003", "output": "0.000015", "input_cache_read": "0.0000003", "input_cache_write": "0.00000375"}},
		{ID: "anthropic/claude-haiku-4.5", Created: 1760486400, Released: 1760486400, OwnedBy: "anthropic", Name: "Claude Haiku 4.5",
			Description: "Anthropic's small, fast model.", ContextWindow: 200000, MaxTokens: 64000, Type: "language",
			Tags:    []string{"reasoning", "tool-use", "vision", "file-input"},
			Pricing: map[string]string{"input": "0.000001", "output": "0.000005", "input_cache_read": "0.0000001", "input_cache_write": "0.00000125"}},
		{ID: "deepseek/deepseek-v3.2", Created: 1755815280, Released: 1764547200, OwnedBy: "deepseek", Name: "DeepSeek V3.2",
			Description: "DeepSeek-V3.2: Official successor to V3.2-Exp.", ContextWindow: 128000, MaxTokens: 8000, Type: "language",
			Tags:    []string{"tool-use", "implicit-caching"},
			Pricing: map[string]string{"input": "0.00000028", "output": "0.00000042", "input_cache_read": "0.000000028"}},
		{ID: "openai/text-embedding-3-small", Created: 1706140800, Released: 1706140800, OwnedBy: "openai", Name: "text-embedding-3-small",
			Description: "OpenAI's small embedding model.", ContextWindow: 8192, Type: "embedding", Tags: []string{},
			Pricing: map[string]string{"input": "0.00000002"}},
		{ID: "google/imagen-4.0-generate-001", Created: 1748390400, Released: 1748390400, OwnedBy: "google", Name: "Imagen 4",
			Description: "Google's image model.", Type: "image", Tags: []string{}},
	}
}

// legacyCatalogSize is how many of defaultCatalog's models a gateway
// lists (and knows) until Faithful or SetCatalog: the two the fake listed
// before, now with their catalog entries.
const legacyCatalogSize = 2

// catalogFailure is how GET /v1/models fails; see SetCatalogFailure.
type catalogFailure int

const (
	catalogOK        catalogFailure = iota // the catalog is served (default)
	catalogError                           // 500 with AI Gateway's internal_server_error body
	catalogMalformed                       // 200 with a body that is not JSON
	catalogHang                            // no answer at all until the client gives up, the failure mode changes, or the test ends
)

// SetCatalog makes GET /v1/models serve models (and faithful answers
// price from them) from now on; nil restores the default catalog.
func (g *fakeGateway) SetCatalog(models []fakeModel) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.catalog = slices.Clone(models)
}

// Catalog returns the catalog the fake serves and prices from now,
// unlisted models included: the test's (SetCatalog), else the default
// (only its legacyCatalogSize first models until Faithful).
func (g *fakeGateway) Catalog() []fakeModel {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.catalog != nil:
		return slices.Clone(g.catalog)
	case g.faithful:
		return defaultCatalog()
	default:
		return defaultCatalog()[:legacyCatalogSize]
	}
}

// Model returns the catalog's model id (unlisted ones included).
func (g *fakeGateway) Model(id string) (fakeModel, bool) {
	for _, m := range g.Catalog() {
		if m.ID == id {
			return m, true
		}
	}
	return fakeModel{}, false
}

// SetCatalogFailure makes GET /v1/models fail as f from now on
// (catalogOK: serve it again). A fetch hanging in catalogHang is released
// by the next call, and then answered as that call says.
func (g *fakeGateway) SetCatalogFailure(f catalogFailure) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.catalogFail = f
	close(g.catalogChanged)
	g.catalogChanged = make(chan struct{})
}

// CatalogFetches returns every GET /v1/models received so far, each with
// the credential it carried (Credential, AuthMethod, Reject) and how it
// was answered (Status; 0 while a hanging fetch waits).
func (g *fakeGateway) CatalogFetches() []gatewayRequest {
	var out []gatewayRequest
	for _, r := range g.Requests() {
		if r.Method == http.MethodGet && r.Path == "/v1/models" {
			out = append(out, r)
		}
	}
	return out
}

// catalogFailed answers GET /v1/models as the failure mode says, and
// reports whether it did (false: serve the catalog as usual).
func (g *fakeGateway) catalogFailed(w http.ResponseWriter, r *http.Request, rec gatewayRequest) bool {
	idx := -1
	for {
		g.mu.Lock()
		f, changed := g.catalogFail, g.catalogChanged
		g.mu.Unlock()
		switch f {
		case catalogError:
			rec.Status = http.StatusInternalServerError
			g.recordOrUpdate(&idx, rec)
			writeJSON(w, http.StatusInternalServerError, map[string]any{
				"error": map[string]string{"message": "Internal server error", "type": "internal_server_error"},
			})
			return true
		case catalogMalformed:
			rec.Status = http.StatusOK
			g.recordOrUpdate(&idx, rec)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte(`{"object":"list","data":[{"id":"openai/gpt-5","pricing":`))
			return true
		case catalogHang:
			rec.Status = 0
			g.recordOrUpdate(&idx, rec)
			select {
			case <-changed:
				continue // answered as the new mode says
			case <-r.Context().Done():
				return true
			case <-g.done:
				return true
			}
		}
		if idx >= 0 { // released from a hang: served below, recorded here
			rec.Status = http.StatusOK
			g.recordOrUpdate(&idx, rec)
			g.writeCatalog(w, r)
			return true
		}
		return false
	}
}

// recordOrUpdate records rec the first time, and replaces that record
// after.
func (g *fakeGateway) recordOrUpdate(idx *int, rec gatewayRequest) {
	if *idx < 0 {
		*idx = g.record(rec)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reqs[*idx] = rec
}

// writeCatalog writes the listed models in AI Gateway's shape.
func (g *fakeGateway) writeCatalog(w http.ResponseWriter, r *http.Request) {
	data := []fakeModel{}
	for _, m := range g.Catalog() {
		if m.Unlisted {
			continue
		}
		if m.Object == "" {
			m.Object = "model"
		}
		data = append(data, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// fakeUSDRat reads a decimal price or amount exactly; "" and malformed
// strings are nil.
func fakeUSDRat(s string) *big.Rat {
	if s == "" {
		return nil
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil
	}
	return r
}

// fakeRatOfUSD is the decimal a float64 amount was written as (its shortest
// representation), exactly: 0.0001 is 1/10000, not the binary double
// nearest to it.
func fakeRatOfUSD(f float64) *big.Rat {
	r, _ := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
	return r
}

func fakeRatFloat(r *big.Rat) float64 {
	f, _ := r.Float64()
	return f
}

// fakeUSDString writes an amount as AI Gateway writes its decimal strings
// ("0.000038"): the shortest decimal that reads back as the same float64.
func fakeUSDString(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// fakeAddUSD adds amounts as decimals, rounding once: fakeAddUSD(0.000038,
// 0.0001) is exactly the float64 nearest to 0.000138.
func fakeAddUSD(amounts ...float64) float64 {
	sum := new(big.Rat)
	for _, a := range amounts {
		sum.Add(sum, fakeRatOfUSD(a))
	}
	return fakeRatFloat(sum)
}

// costRats prices u at the model's prices, exactly: the input side
// (uncached input at input, cache reads at input_cache_read, cache writes
// at input_cache_write, each falling back to input when the model has no
// such price) and the output side. A price the model lacks counts as 0.
func (m fakeModel) costRats(u fakeUsage) (input, output *big.Rat) {
	price := func(key, fallback string) *big.Rat {
		if p := fakeUSDRat(m.Pricing[key]); p != nil {
			return p
		}
		if p := fakeUSDRat(m.Pricing[fallback]); p != nil {
			return p
		}
		return new(big.Rat)
	}
	times := func(n int, p *big.Rat) *big.Rat { return new(big.Rat).Mul(big.NewRat(int64(n), 1), p) }
	uncached := max(u.Input-u.CacheRead-u.CacheWrite, 0)
	in := times(uncached, price("input", ""))
	in.Add(in, times(u.CacheRead, price("input_cache_read", "input")))
	in.Add(in, times(u.CacheWrite, price("input_cache_write", "input")))
	return in, times(u.Output, price("output", ""))
}

// Cost is what u costs at the model's prices (inference only, no
// surcharge): exact decimal arithmetic rounded once to float64, the
// figure a faithful answer reports. A proxy that prices in float64
// arithmetic may differ in the last bits: compare with a tolerance.
func (m fakeModel) Cost(u fakeUsage) float64 {
	in, out := m.costRats(u)
	return fakeRatFloat(in.Add(in, out))
}

// provider is the model's provider, as AI Gateway's routing names it.
func (m fakeModel) provider() string {
	if m.OwnedBy != "" {
		return m.OwnedBy
	}
	p, _, _ := strings.Cut(m.ID, "/")
	return p
}

// modelPage is AI Gateway's answer to GET /v1/models/{creator}/{model}
// (the model's entry, as GET /v1/models lists it) and to
// /v1/models/{creator}/{model}/endpoints (the providers that serve it:
// {"data":{"id","name","architecture","endpoints":[…]}}, each endpoint
// with its provider, limits, supported parameters and pricing as
// prompt/completion); a model it does not have is 404 model_not_found.
// The shapes are as recorded from AI Gateway (third-party notes,
// 2026-08; the endpoints route is in Vercel's REST API reference). It
// routes on the path as sent: an id whose slash is escaped
// (openai%2Fgpt-5) is not a route AI Gateway documents, and the fake
// answers it 404 not_found_error, so a test sees which form reached it.
func (g *fakeGateway) modelPage(r *http.Request) (int, any) {
	tail := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/models/")
	id, endpoints := strings.CutSuffix(tail, "/endpoints")
	if strings.Count(id, "/") != 1 || strings.Contains(id, "%") {
		return http.StatusNotFound, map[string]any{
			"error": map[string]string{"message": "not found: " + r.URL.EscapedPath(), "type": "not_found_error"},
		}
	}
	m, ok := g.Model(id)
	if !ok {
		return http.StatusNotFound, map[string]any{
			"error": map[string]string{"message": fmt.Sprintf("Model '%s' not found", id), "type": "model_not_found"},
		}
	}
	if m.Object == "" {
		m.Object = "model"
	}
	if !endpoints {
		return http.StatusOK, m
	}
	output := "text"
	if m.Type == "image" {
		output = "image"
	}
	endpoint := map[string]any{
		"name": m.OwnedBy + " | " + m.ID, "model_name": m.Name, "provider_name": m.OwnedBy,
		"context_length": m.ContextWindow, "max_completion_tokens": m.MaxTokens, "max_prompt_tokens": nil,
		"quantization": nil, "supported_parameters": []string{"max_tokens", "temperature", "stop", "tools", "tool_choice"},
		"tags": m.Tags, "status": 0, "supports_implicit_caching": slices.Contains(m.Tags, "implicit-caching"),
		"pricing": map[string]any{"prompt": m.Pricing["input"], "completion": m.Pricing["output"], "request": "0", "discount": 0},
	}
	return http.StatusOK, map[string]any{"data": map[string]any{
		"id": m.ID, "name": m.Name,
		"architecture": map[string]any{
			"tokenizer": nil, "instruct_type": nil, "modality": "text→" + output,
			"input_modalities": []string{"text"}, "output_modalities": []string{output},
		},
		"endpoints": []any{endpoint},
	}}
}
