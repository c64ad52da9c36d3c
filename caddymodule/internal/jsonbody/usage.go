package jsonbody

import (
	"bytes"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
)

const maxUsageCarry = 64 << 10

type scanMode uint8

const (
	scanNone scanMode = iota
	scanJSON
	scanSSE
)

// Fields of a usage object, as bits of usageScanner.seen.
const (
	fieldPrompt = 1 << iota
	fieldCompletion
	fieldInput
	fieldOutput
	fieldCacheCreation
	fieldCacheRead
	fieldCost
	fieldCached      // {prompt,input}_tokens_details.cached_tokens
	fieldCostNano    // cost, in nano-dollars
	fieldGatewayCost // gateway_cost, in nano-dollars

	// the token counts: a usage object without one is not a usage
	fieldTokens = fieldPrompt | fieldCompletion | fieldInput | fieldOutput | fieldCacheCreation | fieldCacheRead
)

// UsageScanner finds token usage in a response body written to it in
// pieces of any size. The zero value scans nothing until start.
type UsageScanner struct {
	mode scanMode
	// SSE: the unfinished line (its tail); JSON: the body's tail.
	carry []byte

	seen                              uint16
	prompt, completion, input, output int64
	cacheCreation, cacheRead, cached  int64
	cost                              float64
	costNano, gatewayCostNano         int64

	// provider_metadata.gateway's cost and gatewayCost (nano-dollars,
	// -1: none seen; valid once metaSeen), and the generation id
	// (usage_gateway.go)
	metaSeen                  bool
	metaCost, metaGatewayCost int64
	generationID              string
	idSeen                    bool // an answer id was seen: no other is looked for
	jsonBytes                 int  // of a JSON body, up to more than maxUsageCarry

	// What an estimate needs when an answer ends without its usage:
	// events counts SSE data lines (but [DONE]); final is set once the
	// answer's content is complete (a JSON body, or an SSE line with a
	// finish_reason, stop_reason or response.completed), so that only
	// its usage can follow; complete is set when a usage object was
	// found at or after that point: the answer's whole usage.
	events   int64
	final    bool
	complete bool
	// keyInWrite: the last Write may have held the usage key (see
	// MayHaveUsageKey)
	keyInWrite bool
}

// Usage is what a response reported.
type Usage struct {
	// Input counts every input token the way OpenAI does: cache reads
	// and writes included (Anthropic's are added to its input_tokens).
	Input int64
	// Output counts every output token, reasoning tokens included.
	Output int64
	// Cost is AI Gateway's cost (USD) in usage.cost, when HasCost.
	Cost    float64
	HasCost bool
	// CacheReadTokens and CacheWriteTokens are the part of Input read
	// from and written to the prompt cache: Anthropic's
	// cache_read_input_tokens and cache_creation_input_tokens, or
	// OpenAI's {prompt,input}_tokens_details.cached_tokens (reads).
	CacheReadTokens, CacheWriteTokens int64
	// CostNanoUSD is the answer's cost of inference in nano-dollars:
	// usage.cost, else provider_metadata.gateway.cost; -1 when absent.
	CostNanoUSD int64
	// GatewayCostNanoUSD is what the account pays in nano-dollars, the
	// cost with AI Gateway's surcharges: usage.gateway_cost, else
	// provider_metadata.gateway.gatewayCost; -1 when absent.
	GatewayCostNanoUSD int64
	// GenerationID is AI Gateway's id of the generation (gen_...):
	// provider_metadata.gateway.generationId, else the answer's id when
	// it is one; "" when neither was seen.
	GenerationID string
}

// Start picks how to scan from the response's status and headers.
func (s *UsageScanner) Start(status int, h http.Header) {
	s.mode = scanNone
	if status < 200 || status > 299 {
		return
	}
	if ce := h.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return
	}
	media, _, _ := strings.Cut(ct, ";") // no mime.ParseMediaType: it allocates a map per answer
	media = strings.TrimSpace(media)
	switch {
	case strings.EqualFold(media, "text/event-stream"):
		s.mode = scanSSE
	case strings.EqualFold(media, "application/json") || len(media) > 5 && strings.EqualFold(media[len(media)-5:], "+json"):
		s.mode = scanJSON
		s.final = true // a whole answer: its usage is in it or nowhere
	}
}

// MayHaveUsageKey reports whether the last Write's bytes may hold the
// usage key: false only when they were whole SSE lines, none with it
// (the cheap test, from the same pass, for hiding the usage chunk).
func (s *UsageScanner) MayHaveUsageKey() bool { return s.keyInWrite }

// Write scans the next piece of the body.
func (s *UsageScanner) Write(p []byte) {
	// every byte of p is in a line scanned whole only if no line was
	// left unfinished before p and none is after it
	s.keyInWrite = s.mode != scanSSE || len(s.carry) > 0 || len(p) > 0 && p[len(p)-1] != '\n'
	switch s.mode {
	case scanJSON:
		s.jsonBytes = min(s.jsonBytes+len(p), maxUsageCarry+1)
		s.keepTail(p)
	case scanSSE:
		s.writeSSE(p)
	}
}

func (s *UsageScanner) writeSSE(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keepTail(p)
			return
		}
		line := p[:i]
		if len(s.carry) > 0 {
			s.keepTail(line)
			line = s.tail()
		}
		s.scanLine(line)
		if cap(s.carry) > maxIdleCarry {
			s.carry = nil // one long line must not pin its buffer for the rest of the stream
		} else {
			s.carry = s.carry[:0]
		}
		p = p[i+1:]
	}
}

// maxIdleCarry is the largest carry buffer kept for reuse between SSE
// lines; a larger one (left by a long line) is dropped once the line is
// scanned.
const maxIdleCarry = 4 << 10

// keepTail appends p to carry, of which only the last maxUsageCarry
// bytes count (see tail). The buffer may hold up to 2*maxUsageCarry
// bytes before it is trimmed back to maxUsageCarry, so that trimming,
// a copy of maxUsageCarry bytes, happens at most once per maxUsageCarry
// bytes written rather than on every small write.
func (s *UsageScanner) keepTail(p []byte) {
	if len(p) >= maxUsageCarry {
		s.carry = append(s.carry[:0], p[len(p)-maxUsageCarry:]...)
		return
	}
	if drop := len(s.carry) + len(p) - 2*maxUsageCarry; drop > 0 {
		// Keep the last maxUsageCarry-len(p) bytes, so that with p the
		// carry holds exactly maxUsageCarry.
		drop = len(s.carry) + len(p) - maxUsageCarry
		n := copy(s.carry, s.carry[drop:])
		s.carry = s.carry[:n]
	}
	if need := len(s.carry) + len(p); need > cap(s.carry) {
		// Grow by hand: append's growth could overshoot 2*maxUsageCarry.
		c := min(max(2*cap(s.carry), need), 2*maxUsageCarry)
		grown := make([]byte, len(s.carry), c)
		copy(grown, s.carry)
		s.carry = grown
	}
	s.carry = append(s.carry, p...)
}

// tail is what counts of carry: its last maxUsageCarry bytes.
func (s *UsageScanner) tail() []byte {
	if n := len(s.carry) - maxUsageCarry; n > 0 {
		return s.carry[n:]
	}
	return s.carry
}

// scanLine looks for a usage object in one SSE line (or a JSON body).
// Only `data:` lines carry JSON; event names and comments never contain
// the usage key, so the line's kind need not be known (a cut line has
// lost its prefix anyway).
func (s *UsageScanner) scanLine(line []byte) {
	if s.mode == scanSSE && bytes.HasPrefix(line, sseData) && !bytes.Equal(bytes.TrimSpace(line[len(sseData):]), sseDone) {
		s.events++
	}
	finish, usage := lineKeys(line, !s.final)
	if finish {
		s.final = true
	}
	if !usage { // the ids and costs come with a usage key too
		return
	}
	s.keyInWrite = true
	if s.mode == scanSSE {
		s.findGenerationID(line)
	}
	if !s.findUsage(line) {
		return
	}
	if s.final {
		s.complete = true
	}
	if bytes.Contains(line, gatewayKey) { // with the usage object, as AI Gateway writes it
		s.findGatewayMetadata(line)
	}
}

var (
	usageKey = []byte(`"usage"`)
	sseData  = []byte("data:")
	sseDone  = []byte("[DONE]")
)

// lineKeys reports whether an SSE line ends the answer's content (looked
// for only if finish: a Chat Completions chunk with a finish_reason,
// Anthropic's message_delta with its stop_reason, or the Responses API's
// response.completed; what follows is usage, and [DONE] or
// message_stop, only) and whether it has the usage key. Of finish_reason
// and stop_reason only the first of each counts (with several choices,
// one that finished is not the answer's end).
func lineKeys(line []byte, finish bool) (final, usage bool) {
	usage = keyAt(line, 0, usageKey) >= 0
	if !finish {
		return false, usage
	}
	if i := keyAt(line, 0, finishKey); i >= 0 && reasonFollows(line, i+len(finishKey)) {
		return true, usage
	}
	if i := keyAt(line, 0, stopKey); i >= 0 && reasonFollows(line, i+len(stopKey)) {
		return true, usage
	}
	return keyAt(line, 0, responseCompleted) >= 0, usage
}

// keyAt is the index of the first quoted key in line that starts at from
// or after, or -1: wherever bytes.Index finds it. It searches from the key's second byte and
// checks the quote before: bytes.Index on a needle that starts with a
// quote stops at every quote of the JSON (one search this way is about
// twice as fast as a walk over the quotes).
func keyAt(line []byte, from int, key []byte) int {
	for {
		i := bytes.Index(line[from:], key[1:])
		if i < 0 {
			return -1
		}
		if i += from; i > 0 && line[i-1] == '"' {
			return i - 1
		}
		from = i + 1
	}
}

// reasonFollows reports whether a string (a reason, not null) is the
// value of the key that ends before line[i].
func reasonFollows(line []byte, i int) bool {
	j := skipSpace(line, i)
	if j < len(line) && line[j] == ':' {
		j = skipSpace(line, j+1)
		return j < len(line) && line[j] == '"'
	}
	return false
}

var (
	finishKey         = []byte(`"finish_reason"`)
	stopKey           = []byte(`"stop_reason"`)
	responseCompleted = []byte(`"response.completed"`)
)

// findUsage applies the last usage object in b that holds token counts.
// The bytes "usage" between unescaped quotes cannot occur inside a JSON
// string (its quotes would be escaped), so every match is a key; the
// last one with token counts is the response's own (a tool schema may
// have a "usage" property earlier on). That also holds for a tail
// that lost the beginning of its line or body.
func (s *UsageScanner) findUsage(b []byte) bool {
	end := len(b)
	for {
		i := bytes.LastIndex(b[:end], usageKey)
		if i < 0 {
			return false
		}
		end = i
		j := skipSpace(b, i+len(usageKey))
		if j >= len(b) || b[j] != ':' {
			continue
		}
		j = skipSpace(b, j+1)
		if j < len(b) && b[j] == '{' && s.applyUsageObject(b[j:]) {
			return true
		}
	}
}

// applyUsageObject reads the members of the JSON object at the start of
// b and overwrites the counts it names. It reports whether the object
// was well formed and had a token count; a malformed one changes nothing.
func (s *UsageScanner) applyUsageObject(b []byte) bool {
	var seen uint16
	var vals [10]int64 // by field: the index of its bit
	var cost float64
	set := func(bit uint16, n int64) {
		vals[bits.TrailingZeros16(bit)], seen = n, seen|bit
	}
	ok := eachMember(b, func(key, val []byte) {
		switch bit := usageField(key); bit {
		case 0:
		case fieldCost:
			if n, ok := parseNanoUSD(val); ok {
				set(fieldCostNano, n)
			}
			if f, ok := parseCost(val); ok {
				cost, seen = f, seen|fieldCost
			}
		case fieldGatewayCost:
			if n, ok := parseNanoUSD(val); ok {
				set(bit, n)
			}
		case fieldCached:
			if n, ok := cachedTokens(val); ok {
				set(bit, n)
			}
		default:
			if n, ok := parseCount(val); ok {
				set(bit, n)
			}
		}
	})
	if !ok || seen&fieldTokens == 0 {
		return false
	}
	for idx, dst := range []*int64{&s.prompt, &s.completion, &s.input, &s.output, &s.cacheCreation, &s.cacheRead, nil, &s.cached, &s.costNano, &s.gatewayCostNano} {
		if dst != nil && seen&(1<<idx) != 0 {
			*dst = vals[idx]
		}
	}
	if seen&fieldCost != 0 {
		s.cost = cost
	}
	s.seen |= seen
	return true
}

// eachMember calls fn with the name (raw, between its quotes) and the
// raw value of each member of the JSON object at the start of b, and
// reports whether the object is well formed up to its '}'.
func eachMember(b []byte, fn func(key, val []byte)) bool {
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		kEnd, ok := skipString(b, i)
		if !ok {
			return false
		}
		key := b[i+1 : kEnd-1]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		vEnd, ok := skipValue(b, i)
		if !ok {
			return false
		}
		fn(key, b[i:vEnd])
		i = skipSpace(b, vEnd)
		switch {
		case i >= len(b):
			return false
		case b[i] == '}':
			return true
		case b[i] != ',':
			return false
		}
		i = skipSpace(b, i+1)
	}
}

// cachedTokens reads cached_tokens from a usage's token details object.
func cachedTokens(details []byte) (n int64, found bool) {
	ok := eachMember(details, func(key, val []byte) {
		if string(key) == "cached_tokens" {
			n, found = parseCount(val)
		}
	})
	return n, ok && found
}

func usageField(key []byte) uint16 {
	switch string(key) {
	case "prompt_tokens":
		return fieldPrompt
	case "completion_tokens":
		return fieldCompletion
	case "input_tokens":
		return fieldInput
	case "output_tokens":
		return fieldOutput
	case "cache_creation_input_tokens":
		return fieldCacheCreation
	case "cache_read_input_tokens":
		return fieldCacheRead
	case "cost":
		return fieldCost
	case "prompt_tokens_details", "input_tokens_details":
		return fieldCached
	case "gateway_cost":
		return fieldGatewayCost
	}
	return 0
}

// SSE reports whether the answer is scanned as an SSE stream (set by
// Start).
func (s *UsageScanner) SSE() bool { return s.mode == scanSSE }

// Final reports whether the answer's content is complete: a JSON body,
// or an SSE line with a finish_reason, stop_reason or
// response.completed was seen, so that only its usage can follow.
func (s *UsageScanner) Final() bool { return s.final }

// Complete reports whether a usage object was found at or after the
// point the answer became Final: the answer's whole usage.
func (s *UsageScanner) Complete() bool { return s.complete }

// Events counts the SSE data lines seen (but [DONE]): about a token
// each, for an estimate when an answer ends without its usage.
func (s *UsageScanner) Events() int64 { return s.events }

// Finish ends the body and returns what it reported, and whether it
// reported token counts (without them, the Usage has at most the
// generation id and the costs).
func (s *UsageScanner) Finish() (Usage, bool) {
	if len(s.carry) > 0 { // a JSON body, or a last SSE line without its newline
		s.scanLine(s.tail())
	}
	if s.mode == scanJSON && s.jsonBytes <= maxUsageCarry { // the whole body
		s.findGenerationID(s.carry)
	}
	s.carry, s.mode = nil, scanNone
	u := Usage{CostNanoUSD: -1, GatewayCostNanoUSD: -1, GenerationID: s.generationID}
	s.costsTo(&u)
	if s.seen&fieldTokens == 0 {
		return u, false
	}
	if s.seen&fieldPrompt != 0 { // OpenAI chat: prompt_tokens counts cached input too
		u.Input = s.prompt
	} else { // Anthropic counts cache reads and writes apart from input_tokens
		u.Input = s.input + s.cacheCreation + s.cacheRead
	}
	if s.seen&fieldCompletion != 0 {
		u.Output = s.completion
	} else {
		u.Output = s.output
	}
	u.Cost, u.HasCost = s.cost, s.seen&fieldCost != 0
	u.CacheReadTokens, u.CacheWriteTokens = s.cacheRead, s.cacheCreation
	if s.seen&(fieldCacheRead|fieldCacheCreation) == 0 && s.seen&fieldCached != 0 {
		u.CacheReadTokens = s.cached // OpenAI's: part of prompt_tokens or input_tokens
	}
	return u, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string starting at b[i].
func skipString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index after the JSON value starting at b[i]
// (nesting without recursion, so no input can exhaust the stack).
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(b) && (b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] >= '0' && b[j] <= '9' ||
		b[j] >= 'a' && b[j] <= 'z' || b[j] == 'E') {
		j++
	}
	return j, j > i && j < len(b)
}

// parseCount reads a token count: a non-negative integer.
func parseCount(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseCost reads the gateway's cost: a number, or a number in a string.
func parseCost(b []byte) (float64, bool) {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	if len(b) == 0 || len(b) > 32 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < 0 || f != f || f > 1e9 {
		return 0, false
	}
	return f, true
}

// HasUsageObject reports whether b has a "usage" key whose value is an
// object (every other chunk of a Chat Completions stream that asked for
// usage has "usage":null).
func HasUsageObject(b []byte) bool {
	for from := 0; ; {
		i := keyAt(b, from, usageKey)
		if i < 0 {
			return false
		}
		from = i + len(usageKey) - 1 // its closing quote may open the next
		j := skipSpace(b, from+1)
		if j < len(b) && b[j] == ':' {
			if j = skipSpace(b, j+1); j < len(b) && b[j] == '{' {
				return true
			}
		}
	}
}

// UsageLine returns the JSON of an SSE data line that has a "usage" key
// whose value is an object, and whether the line is one: the cheap test
// before UsageOnlyChunk, which decodes.
func UsageLine(line []byte) ([]byte, bool) {
	data, ok := bytes.CutPrefix(line, sseData)
	if !ok || !HasUsageObject(data) {
		return nil, false
	}
	return data, true
}

// UsageOnlyChunk reports whether data, the JSON of an SSE data line
// (UsageLine), is the usage-only chunk of a Chat Completions stream: an
// empty choices array and a usage object. It reads the top-level members
// in place (no decoding, no allocation); the last of a repeated member
// counts, and a key matches without regard to case, as encoding/json's.
func UsageOnlyChunk(data []byte) bool {
	data = bytes.TrimSpace(data)
	var choices, usage []byte
	ok := eachMember(data, func(key, val []byte) {
		switch {
		case bytes.EqualFold(key, choicesName):
			choices = val
		case bytes.EqualFold(key, usageName):
			usage = val
		}
	})
	if !ok || len(choices) == 0 || choices[0] != '[' || skipSpace(choices, 1) != len(choices)-1 {
		return false // not well formed, or choices not an empty array
	}
	if end, _ := skipValue(data, 0); end != len(data) {
		return false // something after the object
	}
	return eachMember(usage, func(_, _ []byte) {}) // an object, well formed
}

var (
	choicesName = []byte("choices")
	usageName   = []byte("usage")
)
