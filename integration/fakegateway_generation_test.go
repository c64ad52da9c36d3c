package integration

import (
	"crypto/rand"
	"math/big"
	"net/http"
	"time"
)

// Generations: every request that ran inference is billed as one
// generation, "gen_<ULID>", which GET /v1/generation?id= answers a while
// after it ended, as AI Gateway does:
//
//	{"data":{"id":"gen_…","total_cost":0.000138,"upstream_inference_cost":0,
//	  "usage":0.000138,"created_at":"…","model":"…","is_byok":false,
//	  "provider_name":"anthropic","streamed":true,"finish_reason":"stop",
//	  "latency":…,"generation_time":…,"native_tokens_prompt":13,
//	  "native_tokens_completion":5,"native_tokens_reasoning":0,
//	  "native_tokens_cached":0,"native_tokens_cache_creation":0,
//	  "billable_web_search_calls":0}}
//
// (the fields vercel/ai's GatewayGenerationInfoFetcher reads, in its
// order). total_cost is what the account pays for it, surcharge included,
// however its answer ended: cut, held, or its client gone.

// fakeGeneration is one billed generation.
type fakeGeneration struct {
	ID       string
	Model    string
	Provider string
	Path     string
	Streamed bool
	// Usage is what was billed: every token, Cost and Surcharge (Total is
	// total_cost).
	Usage     fakeUsage
	CreatedAt time.Time
	// EndedAt is when its answer ended (written whole, cut, or its client
	// gone); zero while it is being answered (then /v1/generation answers
	// 404).
	EndedAt time.Time
	// Lookups counts the GET /v1/generation for it, answered or not.
	Lookups int
}

// fakeULIDAlphabet is the base32 alphabet of ULIDs.
const fakeULIDAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newGenerationID is "gen_" and a ULID: 48 bits of Unix milliseconds, 80
// random bits, 26 Crockford base32 characters (as AI Gateway's
// "gen_01KY071V9GQK1EBS343E5TY39W").
func newGenerationID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	rand.Read(b[6:])
	n := new(big.Int).SetBytes(b[:])
	out := make([]byte, 26)
	thirtyTwo := big.NewInt(32)
	for i := 25; i >= 0; i-- {
		var m big.Int
		n.DivMod(n, thirtyTwo, &m)
		out[i] = fakeULIDAlphabet[m.Int64()]
	}
	return "gen_" + string(out)
}

// newGeneration records a generation billed u for a request to path.
func (g *fakeGateway) newGeneration(path string, req gatewayReading, u fakeUsage, m fakeModel) *fakeGeneration {
	now := time.Now()
	gen := &fakeGeneration{Model: req.Model, Provider: m.provider(), Path: path, Streamed: req.Stream, Usage: u, CreatedAt: now}
	if gen.Provider == "" {
		gen.Provider = fakeModel{ID: req.Model}.provider()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for gen.ID == "" || g.gens[gen.ID] != nil {
		gen.ID = newGenerationID(now)
	}
	g.gens[gen.ID] = gen
	g.genOrder = append(g.genOrder, gen.ID)
	return gen
}

// SetGenerationDelay makes GET /v1/generation answer 404 for a
// generation until d has passed since it ended and it has been looked up
// more than lookups times (404 to the first lookups lookups). Default: 0
// and 0, found as soon as its answer has ended.
func (g *fakeGateway) SetGenerationDelay(d time.Duration, lookups int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.genDelay, g.genLookups = d, lookups
}

// Generations returns every generation billed so far, in order.
func (g *fakeGateway) Generations() []fakeGeneration {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]fakeGeneration, 0, len(g.genOrder))
	for _, id := range g.genOrder {
		out = append(out, *g.gens[id])
	}
	return out
}

// Generation returns the generation id.
func (g *fakeGateway) Generation(id string) (fakeGeneration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen, ok := g.gens[id]
	if !ok {
		return fakeGeneration{}, false
	}
	return *gen, true
}

// GenerationLookups returns every GET /v1/generation received so far,
// each with its credential (Credential, AuthMethod, Reject), the id it
// asked for (RawQuery) and its Status.
func (g *fakeGateway) GenerationLookups() []gatewayRequest {
	var out []gatewayRequest
	for _, r := range g.Requests() {
		if r.Method == http.MethodGet && r.Path == "/v1/generation" {
			out = append(out, r)
		}
	}
	return out
}

// Billed returns the requests that ran inference (Ran), in order, each
// with its GenerationID and what it was Billed.
func (g *fakeGateway) Billed() []gatewayRequest {
	var out []gatewayRequest
	for _, r := range g.Requests() {
		if r.Ran {
			out = append(out, r)
		}
	}
	return out
}

// BilledTotal sums what every request that ran was billed: tokens, Cost
// and Surcharge (its Total is what the account paid), added as decimals.
func (g *fakeGateway) BilledTotal() fakeUsage {
	var t fakeUsage
	cost, surcharge := new(big.Rat), new(big.Rat)
	for _, r := range g.Billed() {
		b := r.Billed
		t.Input += b.Input
		t.Output += b.Output
		t.CacheRead += b.CacheRead
		t.CacheWrite += b.CacheWrite
		cost.Add(cost, fakeRatOfUSD(b.Cost))
		surcharge.Add(surcharge, fakeRatOfUSD(b.Surcharge))
	}
	t.Cost, t.Surcharge = fakeRatFloat(cost), fakeRatFloat(surcharge)
	return t
}

// serveGeneration answers GET /v1/generation?id= (the credential already
// checked): the record once the generation is found (SetGenerationDelay),
// 404 before and for an id it never billed.
func (g *fakeGateway) serveGeneration(w http.ResponseWriter, r *http.Request, rec gatewayRequest) {
	id := r.URL.Query().Get("id")
	if id == "" {
		rec.Status = http.StatusBadRequest
		g.record(rec)
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error": map[string]string{"message": "Missing required query parameter: id", "type": "invalid_request_error"},
		})
		return
	}
	g.mu.Lock()
	gen := g.gens[id]
	var found fakeGeneration
	if gen != nil {
		gen.Lookups++
		if !gen.EndedAt.IsZero() && time.Since(gen.EndedAt) >= g.genDelay && gen.Lookups > g.genLookups {
			found = *gen
		}
	}
	g.mu.Unlock()
	if found.ID == "" {
		rec.Status = http.StatusNotFound
		g.record(rec)
		writeJSON(w, http.StatusNotFound, map[string]any{
			"error": map[string]string{"message": "Generation not found", "type": "not_found_error"},
		})
		return
	}
	rec.Status = http.StatusOK
	g.record(rec)
	u := found.Usage
	total := u.Total()
	genTime := max(found.EndedAt.Sub(found.CreatedAt).Milliseconds(), 1)
	writeJSON(w, http.StatusOK, fakeObj{{"data", fakeObj{
		{"id", found.ID}, {"total_cost", total}, {"upstream_inference_cost", 0}, {"usage", total},
		{"created_at", found.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z")}, {"model", found.Model},
		{"is_byok", false}, {"provider_name", found.Provider}, {"streamed", found.Streamed}, {"finish_reason", "stop"},
		{"latency", min(genTime, 120)}, {"generation_time", genTime},
		{"native_tokens_prompt", u.Input}, {"native_tokens_completion", u.Output}, {"native_tokens_reasoning", 0},
		{"native_tokens_cached", u.CacheRead}, {"native_tokens_cache_creation", u.CacheWrite},
		{"billable_web_search_calls", 0},
	}}})
}
