package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Faithful answers: AI Gateway's shapes, usage consistent with the body
// the gateway got, costs priced from the fake's catalog, and the failure
// shapes that hang-up tests need.
//
// By default the fake answers as it always did (fixed ids such as
// "chatcmpl-fake", usage from defaultUsage, SetUsage or VaryUsage, a cost
// only on chat completions): the tests written against those bytes keep
// passing. Faithful switches it, for the whole gateway, to:
//
//   - ids: every answer that ran inference is a generation "gen_<ULID>"
//     (see newGenerationID), and the answer's id is that generation id:
//     Messages' message.id (recorded live: AI Gateway answers
//     "gen_01KY071V9GQK1EBS343E5TY39W"), and, an assumption the fake
//     makes (no recording), the chat completion's id and the Responses
//     response's id too;
//   - usage from the body: input tokens = the tokenizer's count of the
//     body the gateway received, by default ceil(len(body)/4) (the body
//     as the proxy forwarded it, edits included); output tokens = the
//     configured length (SetOutputTokens, default 200), lowered to the
//     request's output cap (max_tokens on Messages; max_completion_tokens,
//     else max_tokens, on Chat Completions; max_output_tokens on
//     Responses) and to the model's max_tokens, then, on Chat
//     Completions, times n (each of n choices writes up to the cap, and
//     OpenAI's API, whose spec AI Gateway's implements, bills the tokens
//     of every choice; the answer still shows one choice); 0 on
//     embeddings.
//     SetCacheTokens counts some input tokens as cache reads and writes.
//     SetUsage and VaryUsage still override the tokens (and their cost,
//     when non-zero);
//   - cost: priced from the catalog (fakeModel.Cost), plus SetSurcharge
//     per generation (AI Gateway's surchargeCost: what the account pays
//     on top of inference); a model the catalog does not have gets AI
//     Gateway's 404 model_not_found, and runs nothing;
//   - what the answer shows of it: the cost mode (SetCostMode) of its
//     endpoint;
//   - the catalog: the whole default one (see defaultCatalog).
//
// The text of every answer stays answerText (streamed as streamWords),
// whatever its output tokens say. In either mode, a request that ran is a
// generation, billed whole (gatewayRequest.Billed) however its answer
// ended.
//
// Messages (recorded live, vercel/ai packages/gateway/src/__fixtures__/
// issue-17326-*.chunks.txt): message_start carries usage 0/0; the final
// message_delta carries the cumulative usage and provider_metadata, whose
// gateway object holds the cost as decimal strings. The fake writes these
// events key for key in the recorded order (see fakesRecordedHaiku).

// costMode is how an answer shows its usage and cost; see SetCostMode.
type costMode string

const (
	// costPresent (the default): the cost of inference, no surcharge.
	// Chat Completions and Responses: usage.cost (a JSON number);
	// embeddings: usage.cost; Messages: provider_metadata.gateway with
	// cost, marketCost, inferenceCost, inputInferenceCost,
	// outputInferenceCost, generationId (decimal strings).
	costPresent costMode = "present"
	// costGateway: the account's total too. Messages: the recorded shape
	// whole (cost, marketCost, surchargeCost, gatewayCost, inferenceCost,
	// inputInferenceCost, outputInferenceCost, providerAllowlistCost,
	// generationId); Chat Completions, Responses, embeddings: usage.cost
	// and usage.gateway_cost (numbers).
	costGateway costMode = "gateway"
	// costMetadata: Chat Completions, Responses, embeddings: usage.cost,
	// and provider_metadata.gateway {cost, gatewayCost, generationId}
	// (decimal strings) at the top level of the answer (of the usage chunk
	// when streamed); an assumption about where AI Gateway would put it.
	// Messages: as costGateway.
	costMetadata costMode = "metadata"
	// costAbsent: tokens only, no cost anywhere (Messages: the second
	// recording, provider_metadata.gateway {generationId} alone): the
	// proxy must price them from the catalog.
	costAbsent costMode = "absent"
	// costNone: no usage at all. Chat Completions: no usage in the body,
	// no usage chunk even when asked; Messages: message_delta without
	// usage or provider_metadata (a whole message without usage);
	// Responses: usage null; embeddings: no usage.
	costNone costMode = "none"
)

const (
	// defaultOutputTokens is a faithful answer's output length unless the
	// request's cap is lower; see SetOutputTokens.
	defaultOutputTokens = 200
	// defaultUnmeteredCost is what an audio speech or image generation is
	// billed; see SetUnmeteredCost.
	defaultUnmeteredCost = 0.04
	// answerHeader carries per-request overrides; see planFor.
	answerHeader = "X-Test-Answer"
)

// Faithful switches the gateway to AI Gateway's shapes, usage from the
// body and costs from the catalog (see the top of this file), for every
// answer from now on. SetOutputTokens, SetCostMode, SetCacheTokens and
// SetSurcharge switch it on too.
func (g *fakeGateway) Faithful() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faithful = true
}

// SetOutputTokens sets a faithful answer's output length when the
// request's cap is absent or larger (default 200).
func (g *fakeGateway) SetOutputTokens(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faithful, g.outputTokens = true, n
}

// SetCostMode sets how answers of the endpoint at path
// ("/v1/chat/completions", "/v1/messages", "/v1/responses",
// "/v1/embeddings"; "" for all of them) show their usage and cost.
func (g *fakeGateway) SetCostMode(path string, m costMode) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faithful = true
	if path == "" {
		clear(g.costModes)
	}
	g.costModes[path] = m
}

// SetCacheTokens makes read of each faithful answer's input tokens cache
// reads and write of them cache writes (at most the input tokens), priced
// at the model's input_cache_read and input_cache_write.
func (g *fakeGateway) SetCacheTokens(read, write int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faithful, g.cacheRead, g.cacheWrite = true, read, write
}

// SetSurcharge adds usd to what the account pays for each faithful
// generation on top of inference (AI Gateway's surchargeCost; the
// recording's is 0.0001). Only costGateway and costMetadata answers show
// it; /v1/generation always counts it.
func (g *fakeGateway) SetSurcharge(usd float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faithful, g.surcharge = true, usd
}

// SetInputTokenizer replaces how a faithful answer counts input tokens
// from the body the gateway received (default: fakeInputTokens).
func (g *fakeGateway) SetInputTokenizer(f func(body []byte) int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tokenizer = f
}

// fakeInputTokens is the default count of input tokens: one per four
// bytes of the body, rounded up.
func fakeInputTokens(body []byte) int { return (len(body) + 3) / 4 }

// SetUnmeteredCost sets what each /v1/audio/speech and
// /v1/images/generations is billed (default $0.04), in either mode;
// their answers show no usage.
func (g *fakeGateway) SetUnmeteredCost(usd float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.unmeteredCost = usd
}

func (g *fakeGateway) unmetered() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unmeteredCost
}

// HoldAnswers makes every inference answer from now on wait before its
// status line and headers, its inference already run (Ran, billed), as AI
// Gateway does during prefill and reasoning (a stream) or until the
// answer is done (a whole answer): until ReleaseAnswers, until d has
// passed (d > 0), or until the client hangs up (Answer "held: client gone
// before the headers"; the generation is still billed whole).
func (g *fakeGateway) HoldAnswers(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holding, g.holdFor = true, d
}

// ReleaseAnswers lets every held answer go on, and stops holding new
// ones.
func (g *fakeGateway) ReleaseAnswers() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holding = false
	close(g.release)
	g.release = make(chan struct{})
}

// HeldAnswers is the number of answers waiting now.
func (g *fakeGateway) HeldAnswers() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// CutStreams makes every inference answer from now on end abruptly: a
// stream after n events (the connection closed, no terminating chunk), a
// whole answer halfway through its body. The generation is billed whole.
// 0 stops cutting.
func (g *fakeGateway) CutStreams(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cutAfter = n
}

// hold waits as HoldAnswers says; false: the client left (or the test
// ended) first.
func (g *fakeGateway) hold(r *http.Request, d time.Duration) bool {
	g.mu.Lock()
	release := g.release
	g.held++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.held--
		g.mu.Unlock()
	}()
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-release:
		return true
	case <-timeout:
		return true
	case <-r.Context().Done():
		return false
	case <-g.done:
		return false
	}
}

// fakeAnswerPlan is how one request is answered: the gateway's settings,
// overridden by the request's answerHeader.
type fakeAnswerPlan struct {
	faithful bool
	cost     costMode
	hold     bool
	holdFor  time.Duration
	cut      int
	out      int
}

// planFor is the plan for r. The request may override the gateway's
// settings with answerHeader, a comma-separated list of:
//
//	cost=<mode>     a costMode (faithful only)
//	hold[=<dur>]    as HoldAnswers(dur) (until ReleaseAnswers without one)
//	cut=<n>         as CutStreams(n)
//	out=<n>         as SetOutputTokens(n) (faithful only)
//
// so that parallel tests can share one gateway. The proxy forwards the
// header as it forwards any.
func (g *fakeGateway) planFor(r *http.Request) (fakeAnswerPlan, error) {
	g.mu.Lock()
	p := fakeAnswerPlan{faithful: g.faithful, cost: costPresent, hold: g.holding, holdFor: g.holdFor, cut: g.cutAfter, out: g.outputTokens}
	if m, ok := g.costModes[r.URL.Path]; ok {
		p.cost = m
	} else if m, ok := g.costModes[""]; ok {
		p.cost = m
	}
	g.mu.Unlock()
	for _, d := range strings.Split(r.Header.Get(answerHeader), ",") {
		name, val, hasVal := strings.Cut(strings.TrimSpace(d), "=")
		var err error
		switch name {
		case "":
		case "cost":
			switch m := costMode(val); m {
			case costPresent, costGateway, costMetadata, costAbsent, costNone:
				p.cost = m
			default:
				err = fmt.Errorf("unknown cost mode %q", val)
			}
		case "hold":
			p.hold, p.holdFor = true, 0
			if hasVal {
				p.holdFor, err = time.ParseDuration(val)
			}
		case "cut":
			p.cut, err = strconv.Atoi(val)
		case "out":
			p.out, err = strconv.Atoi(val)
		default:
			err = fmt.Errorf("unknown directive %q", name)
		}
		if err == nil && !p.faithful && (name == "cost" || name == "out") {
			err = fmt.Errorf("%s= needs Faithful", name)
		}
		if err != nil {
			return p, fmt.Errorf("%s: %q: %v", answerHeader, r.Header.Get(answerHeader), err)
		}
	}
	return p, nil
}

// faithfulUsage is what a faithful answer bills: its tokens (see the top
// of this file), its cost at the model's prices, the surcharge.
func (g *fakeGateway) faithfulUsage(path string, body []byte, req gatewayReading, m fakeModel, p fakeAnswerPlan) fakeUsage {
	g.mu.Lock()
	fixed, vary, tokenize, read, write, surcharge := g.usage, g.varyUsage, g.tokenizer, g.cacheRead, g.cacheWrite, g.surcharge
	g.mu.Unlock()
	if tokenize == nil {
		tokenize = fakeInputTokens
	}
	var u fakeUsage
	switch {
	case fixed != nil:
		u = *fixed
	case vary:
		u = variedFakeUsage(body)
	default:
		u.Input = tokenize(body)
		u.Output = p.out
		if c := req.outputCap(path); c > 0 && c < u.Output {
			u.Output = c
		}
		if m.MaxTokens > 0 && m.MaxTokens < u.Output {
			u.Output = m.MaxTokens
		}
		if path == "/v1/chat/completions" && req.N > 1 {
			u.Output *= req.N
		}
		u.CacheRead = min(read, u.Input)
		u.CacheWrite = min(write, u.Input-u.CacheRead)
	}
	if path == "/v1/embeddings" {
		u.Output = 0
	}
	if u.Cost == 0 {
		u.Cost = m.Cost(u)
	}
	u.Surcharge = surcharge
	return u
}

// reportedUsage is what a faithful answer shows of billed in mode.
func reportedUsage(path string, req gatewayReading, billed fakeUsage, mode costMode) fakeUsage {
	if mode == costNone || path == "/v1/chat/completions" && req.Stream && !req.IncludeUsage {
		return fakeUsage{}
	}
	u := billed
	switch mode {
	case costAbsent:
		u.Cost, u.Surcharge = 0, 0
	case costPresent:
		u.Surcharge = 0
	}
	return u
}

// answerFaithfully writes the answer of a priced endpoint in AI
// Gateway's shape. u is what it reports (reportedUsage); gen its
// generation.
func (g *fakeGateway) answerFaithfully(w http.ResponseWriter, r *http.Request, req gatewayReading, m fakeModel, gen *fakeGeneration, u fakeUsage, p fakeAnswerPlan, outcome *string) {
	id, model := gen.ID, req.Model
	switch r.URL.Path {
	case "/v1/chat/completions":
		if req.Stream {
			events := fakeChatEvents(id, model)
			if req.IncludeUsage && p.cost != costNone {
				chunk := map[string]any{"id": id, "object": "chat.completion.chunk", "created": fakeCreated, "model": model,
					"choices": []any{}, "usage": fakeOpenAIUsage(u, p.cost)}
				addFakeGatewayMetadata(chunk, id, u, p.cost)
				events = append(events[:len(events)-1:len(events)-1], sse("", chunk), events[len(events)-1])
			}
			g.stream(w, r, events, p.cut, outcome)
			return
		}
		c := chatCompletion(model)
		c["id"] = id
		delete(c, "usage")
		if p.cost != costNone {
			c["usage"] = fakeOpenAIUsage(u, p.cost)
			addFakeGatewayMetadata(c, id, u, p.cost)
		}
		g.writeAnswer(w, c, p.cut, outcome)
	case "/v1/messages":
		if req.Stream {
			g.stream(w, r, aiGatewayMessageEvents(id, m, streamWords, u, p.cost, gen.CreatedAt), p.cut, outcome)
			return
		}
		g.writeAnswer(w, aiGatewayMessage(id, m, u, p.cost, gen.CreatedAt), p.cut, outcome)
	case "/v1/responses":
		if req.Stream {
			g.stream(w, r, aiGatewayResponseEvents(id, model, u, p.cost), p.cut, outcome)
			return
		}
		g.writeAnswer(w, aiGatewayResponse(id, model, u, p.cost), p.cut, outcome)
	case "/v1/embeddings":
		e := map[string]any{
			"object": "list", "model": model,
			"data": []map[string]any{{"object": "embedding", "index": 0, "embedding": []float64{0.25, -0.5, 0.125}}},
		}
		if p.cost != costNone {
			usage := fakeOpenAIUsage(u, p.cost)
			delete(usage, "completion_tokens")
			e["usage"] = usage
			addFakeGatewayMetadata(e, id, u, p.cost)
		}
		g.writeAnswer(w, e, p.cut, outcome)
	}
}

// fakeChatEvents is a streamed chat completion without usage, named id.
func fakeChatEvents(id, model string) []string {
	chunk := func(delta map[string]any, finish any) string {
		return sse("", map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": fakeCreated, "model": model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}},
		})
	}
	events := []string{chunk(map[string]any{"role": "assistant", "content": ""}, nil)}
	for _, w := range streamWords {
		events = append(events, chunk(map[string]any{"content": w}, nil))
	}
	return append(events, chunk(map[string]any{}, "stop"), "data: [DONE]\n\n")
}

// fakeOpenAIUsage is Chat Completions' (and embeddings') usage object in mode:
// prompt_tokens counts cached tokens too, as OpenAI's does, and
// prompt_tokens_details.cached_tokens the cache reads.
func fakeOpenAIUsage(u fakeUsage, mode costMode) map[string]any {
	m := map[string]any{"prompt_tokens": u.Input, "completion_tokens": u.Output, "total_tokens": u.Input + u.Output}
	if u.CacheRead > 0 {
		m["prompt_tokens_details"] = map[string]int{"cached_tokens": u.CacheRead}
	}
	switch mode {
	case costPresent, costMetadata:
		m["cost"] = u.Cost
	case costGateway:
		m["cost"] = u.Cost
		m["gateway_cost"] = u.Total()
	}
	return m
}

// addFakeGatewayMetadata adds, in costMetadata, provider_metadata.gateway to
// an OpenAI-shaped answer (or its usage chunk).
func addFakeGatewayMetadata(v map[string]any, id string, u fakeUsage, mode costMode) {
	if mode != costMetadata {
		return
	}
	v["provider_metadata"] = map[string]any{"gateway": fakeObj{
		{"cost", fakeUSDString(u.Cost)}, {"gatewayCost", fakeUSDString(u.Total())}, {"generationId", id},
	}}
}

// aiGatewayMessageEvents is a streamed Messages answer as AI Gateway
// writes it (the recorded order, keys in order), saying words.
func aiGatewayMessageEvents(id string, m fakeModel, words []string, u fakeUsage, mode costMode, at time.Time) []string {
	events := []string{
		sse("message_start", fakeObj{{"type", "message_start"}, {"message", fakeObj{
			{"id", id}, {"type", "message"}, {"role", "assistant"}, {"content", []any{}}, {"model", m.ID},
			{"stop_reason", nil}, {"stop_sequence", nil}, {"usage", fakeObj{{"input_tokens", 0}, {"output_tokens", 0}}},
		}}}),
		sse("content_block_start", fakeObj{{"type", "content_block_start"}, {"index", 0},
			{"content_block", fakeObj{{"type", "text"}, {"text", ""}}}}),
	}
	for _, w := range words {
		events = append(events, sse("content_block_delta", fakeObj{{"type", "content_block_delta"}, {"index", 0},
			{"delta", fakeObj{{"type", "text_delta"}, {"text", w}}}}))
	}
	delta := fakeObj{{"type", "message_delta"}, {"delta", fakeObj{{"stop_reason", "end_turn"}, {"stop_sequence", nil}}}}
	if mode != costNone {
		delta = append(delta, fakeKV{"usage", fakeMessagesUsage(u)}, fakeKV{"provider_metadata", fakeMessagesMetadata(id, m, u, mode, at)})
	}
	return append(events,
		sse("content_block_stop", fakeObj{{"type", "content_block_stop"}, {"index", 0}}),
		sse("message_delta", delta),
		sse("message_stop", fakeObj{{"type", "message_stop"}}),
	)
}

// aiGatewayMessage is a whole Messages answer; its usage and
// provider_metadata are the final message_delta's (an assumption: no
// whole answer was recorded).
func aiGatewayMessage(id string, m fakeModel, u fakeUsage, mode costMode, at time.Time) fakeObj {
	a := fakeObj{
		{"id", id}, {"type", "message"}, {"role", "assistant"},
		{"content", []any{fakeObj{{"type", "text"}, {"text", answerText}}}}, {"model", m.ID},
		{"stop_reason", "end_turn"}, {"stop_sequence", nil},
	}
	if mode != costNone {
		a = append(a, fakeKV{"usage", fakeMessagesUsage(u)}, fakeKV{"provider_metadata", fakeMessagesMetadata(id, m, u, mode, at)})
	}
	return a
}

// fakeMessagesUsage is the final usage of a Messages answer, as recorded:
// input_tokens counts the uncached input only (Anthropic's rule);
// cache_read_input_tokens and cache_creation_input_tokens appear when not
// zero (the recording, with none, has neither).
func fakeMessagesUsage(u fakeUsage) fakeObj {
	o := fakeObj{{"input_tokens", max(u.Input-u.CacheRead-u.CacheWrite, 0)}, {"output_tokens", u.Output}}
	if u.CacheWrite > 0 {
		o = append(o, fakeKV{"cache_creation_input_tokens", u.CacheWrite})
	}
	if u.CacheRead > 0 {
		o = append(o, fakeKV{"cache_read_input_tokens", u.CacheRead})
	}
	return append(o, fakeKV{"cache_creation", fakeObj{{"ephemeral_5m_input_tokens", u.CacheWrite}, {"ephemeral_1h_input_tokens", 0}}})
}

// fakeMessagesMetadata is a Messages answer's provider_metadata in mode.
func fakeMessagesMetadata(id string, m fakeModel, u fakeUsage, mode costMode, at time.Time) fakeObj {
	uncached := max(u.Input-u.CacheRead-u.CacheWrite, 0)
	anthropic := fakeObj{
		{"usage", fakeObj{
			{"input_tokens", uncached}, {"cache_creation_input_tokens", u.CacheWrite}, {"cache_read_input_tokens", u.CacheRead},
			{"cache_creation", fakeObj{{"ephemeral_5m_input_tokens", u.CacheWrite}, {"ephemeral_1h_input_tokens", 0}}},
			{"output_tokens", u.Output}, {"service_tier", "standard"}, {"inference_geo", "not_available"},
		}},
		{"cacheCreationInputTokens", u.CacheWrite}, {"stopSequence", nil}, {"iterations", nil}, {"container", nil}, {"contextManagement", nil},
	}
	var gateway fakeObj
	if mode != costAbsent {
		gateway = fakeObj{{"routing", fakeRouting(m.ID, at)}}
	}
	in, out := fakeSplitCost(m, u)
	switch mode {
	case costPresent:
		gateway = append(gateway, fakeObj{
			{"cost", fakeUSDString(u.Cost)}, {"marketCost", fakeUSDString(u.Cost)},
			{"inferenceCost", fakeUSDString(u.Cost)}, {"inputInferenceCost", fakeUSDString(in)}, {"outputInferenceCost", fakeUSDString(out)},
		}...)
	case costGateway, costMetadata:
		gateway = append(gateway, fakeObj{
			{"cost", fakeUSDString(u.Cost)}, {"marketCost", fakeUSDString(u.Cost)}, {"surchargeCost", fakeUSDString(u.Surcharge)},
			{"gatewayCost", fakeUSDString(u.Total())}, {"inferenceCost", fakeUSDString(u.Cost)},
			{"inputInferenceCost", fakeUSDString(in)}, {"outputInferenceCost", fakeUSDString(out)},
			{"providerAllowlistCost", fakeUSDString(u.Surcharge)},
		}...)
	}
	gateway = append(gateway, fakeKV{"generationId", id})
	return fakeObj{{"anthropic", anthropic}, {"gateway", gateway}}
}

// fakeSplitCost is u.Cost's input and output sides at m's prices; when
// u.Cost is not their sum (SetUsage or VaryUsage set it), all of it is
// input.
func fakeSplitCost(m fakeModel, u fakeUsage) (in, out float64) {
	if m.Cost(u) != u.Cost {
		return u.Cost, 0
	}
	i, o := m.costRats(u)
	return fakeRatFloat(i), fakeRatFloat(o)
}

// fakeRouting is provider_metadata.gateway.routing as recorded, for a model
// served by its provider at once.
func fakeRouting(model string, at time.Time) fakeObj {
	p, _, _ := strings.Cut(model, "/")
	start := at.UnixMilli()
	return fakeObj{
		{"originalModelId", model}, {"resolvedProvider", p}, {"fallbacksAvailable", []string{}},
		{"planningReasoning", "System credentials planned for: " + p + ". Total execution order: " + p + "(system)"},
		{"canonicalSlug", model}, {"finalProvider", p}, {"modelAttemptCount", 1},
		{"modelAttempts", []any{fakeObj{
			{"canonicalSlug", model}, {"success", true}, {"providerAttemptCount", 1},
			{"providerAttempts", []any{fakeObj{
				{"provider", p}, {"credentialType", "system"}, {"success", true}, {"startTime", start}, {"endTime", start + 1},
				{"providerRequestId", "req_fake"}, {"statusCode", 200}, {"providerResponseId", "msg_fake"},
			}}},
		}}},
		{"totalProviderAttemptCount", 1},
	}
}

// aiGatewayResponse is a whole Responses answer named id.
func aiGatewayResponse(id, model string, u fakeUsage, mode costMode) map[string]any {
	a := responsesAnswer(model, u)
	a["id"] = id
	if mode == costNone {
		a["usage"] = nil
		return a
	}
	usage := a["usage"].(map[string]any)
	usage["input_tokens_details"] = map[string]int{"cached_tokens": u.CacheRead}
	switch mode {
	case costPresent, costMetadata:
		usage["cost"] = u.Cost
	case costGateway:
		usage["cost"] = u.Cost
		usage["gateway_cost"] = u.Total()
	}
	addFakeGatewayMetadata(a, id, u, mode)
	return a
}

// aiGatewayResponseEvents is a streamed Responses answer named id: usage
// in response.completed.
func aiGatewayResponseEvents(id, model string, u fakeUsage, mode costMode) []string {
	started := aiGatewayResponse(id, model, u, mode)
	started["status"], started["output"], started["usage"] = "in_progress", []any{}, nil
	delete(started, "provider_metadata")
	events := []string{sse("response.created", map[string]any{"type": "response.created", "sequence_number": 0, "response": started})}
	for i, w := range streamWords {
		events = append(events, sse("response.output_text.delta", map[string]any{
			"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_fake",
			"output_index": 0, "content_index": 0, "delta": w,
		}))
	}
	return append(events, sse("response.completed", map[string]any{
		"type": "response.completed", "sequence_number": len(streamWords) + 1, "response": aiGatewayResponse(id, model, u, mode),
	}))
}

// writeSpeech answers /v1/audio/speech: audio bytes, no usage.
func (g *fakeGateway) writeSpeech(w http.ResponseWriter, cut int, outcome *string) {
	audio := bytes.Repeat([]byte{0xff, 0xf3, 0x44, 0xc4}, 1024)
	w.Header().Set("Content-Type", "audio/mpeg")
	if cut == 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(audio)))
		w.WriteHeader(http.StatusOK)
		w.Write(audio)
		return
	}
	w.WriteHeader(http.StatusOK)
	w.Write(audio[:len(audio)/2])
	w.(http.Flusher).Flush()
	*outcome = "cut in the middle of the body"
	panic(http.ErrAbortHandler)
}

// fakeImagesAnswer answers /v1/images/generations: one image, no usage.
func fakeImagesAnswer() map[string]any {
	const png1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
	return map[string]any{"created": fakeCreated, "data": []map[string]any{{"b64_json": png1x1}}}
}

// fakeObj is a JSON object whose keys keep their order, as AI Gateway
// wrote them.
type fakeObj []fakeKV

type fakeKV struct {
	K string
	V any
}

func (o fakeObj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(kv.K)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(kv.V)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
