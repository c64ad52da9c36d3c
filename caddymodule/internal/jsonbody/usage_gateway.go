package jsonbody

import (
	"bytes"
	"math"
)

// What AI Gateway adds to an answer's usage: what it costs, and which
// generation it was, read as the recorded answers show them (vercel/ai
// packages/gateway/src/__fixtures__/issue-17326-*.chunks.txt, copied in
// testdata/):
//
//   - Messages: the final message_delta's provider_metadata.gateway
//     {cost, gatewayCost, generationId, ...} (decimal strings; cost is
//     inference, gatewayCost what the account pays with the surcharges),
//     and message_start's message.id, the same gen_ id.
//   - Chat Completions and Responses: usage.cost (a number or a decimal
//     string) and usage.gateway_cost where present, and
//     provider_metadata.gateway as above when the answer carries it;
//     the answer's id when it is a gen_ id (AI Gateway's own; an id of
//     another shape is not one).
//
// The metadata is looked for only in the SSE lines (and the JSON body's
// tail) that carry a usage object, where AI Gateway puts it, so that a
// stream's other lines cost no search. The answer's
// id is an SSE stream's first (a chunk, a message or a response has its
// own id first, and all of a stream's chunks the same); a JSON body's id
// is read when the whole body is kept (at most maxUsageCarry bytes, the
// usual size of an answer that is not streamed): of a larger one only
// the tail is, where the first id is not the answer's.

// maxGenerationID bounds a generation id; a longer one is ignored.
const maxGenerationID = 128

var (
	gatewayKey = []byte(`"gateway"`)
	idKey      = []byte(`"id"`)
	genPrefix  = []byte("gen_")
)

// findGatewayMetadata applies the last "gateway" object in line that
// has a cost, a gatewayCost or a generationId.
func (s *UsageScanner) findGatewayMetadata(line []byte) {
	for end := len(line); ; {
		i := bytes.LastIndex(line[:end], gatewayKey)
		if i < 0 {
			return
		}
		end = i
		j := skipSpace(line, i+len(gatewayKey))
		if j >= len(line) || line[j] != ':' {
			continue
		}
		if j = skipSpace(line, j+1); j < len(line) && line[j] == '{' && s.applyGatewayMetadata(line[j:]) {
			return
		}
	}
}

// applyGatewayMetadata reads provider_metadata.gateway at the start of
// b; it reports whether it was well formed and had anything to read.
func (s *UsageScanner) applyGatewayMetadata(b []byte) bool {
	cost, gatewayCost := int64(-1), int64(-1)
	var id []byte
	ok := eachMember(b, func(key, val []byte) {
		switch string(key) {
		case "cost":
			if n, ok := parseNanoUSD(val); ok {
				cost = n
			}
		case "gatewayCost":
			if n, ok := parseNanoUSD(val); ok {
				gatewayCost = n
			}
		case "generationId":
			id = generationID(val)
		}
	})
	if !ok || cost < 0 && gatewayCost < 0 && id == nil {
		return false
	}
	if !s.metaSeen {
		s.metaSeen, s.metaCost, s.metaGatewayCost = true, -1, -1
	}
	if cost >= 0 {
		s.metaCost = cost
	}
	if gatewayCost >= 0 {
		s.metaGatewayCost = gatewayCost
	}
	if id != nil && string(id) != s.generationID { // the gateway's own word wins
		s.generationID, s.idSeen = string(id), true
	}
	return true
}

// findGenerationID reads the answer's id, the first "id" whose value is
// a string, and keeps it if it is a generation id; then no other id is
// looked for.
func (s *UsageScanner) findGenerationID(b []byte) {
	for !s.idSeen {
		i := bytes.Index(b, idKey)
		if i < 0 {
			return
		}
		b = b[i+len(idKey):]
		j := skipSpace(b, 0)
		if j >= len(b) || b[j] != ':' {
			continue
		}
		if j = skipSpace(b, j+1); j < len(b) && b[j] == '"' {
			if end, ok := skipString(b, j); ok {
				s.idSeen = true
				if id := generationID(b[j:end]); id != nil {
					s.generationID = string(id)
				}
			}
		}
	}
}

// generationID returns the id in a raw JSON string (with its quotes) if
// it is a generation id: gen_ then letters, digits, '_' or '-', at most
// maxGenerationID bytes in all; else nil.
func generationID(raw []byte) []byte {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil
	}
	id := raw[1 : len(raw)-1]
	if len(id) > maxGenerationID || len(id) == len(genPrefix) || !bytes.HasPrefix(id, genPrefix) {
		return nil
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return nil
		}
	}
	return id
}

// costsTo sets u's costs: usage's, else provider metadata's.
func (s *UsageScanner) costsTo(u *Usage) {
	if s.metaSeen {
		u.CostNanoUSD, u.GatewayCostNanoUSD = s.metaCost, s.metaGatewayCost
	}
	if s.seen&fieldCostNano != 0 {
		u.CostNanoUSD = s.costNano
	}
	if s.seen&fieldGatewayCost != 0 {
		u.GatewayCostNanoUSD = s.gatewayCostNano
	}
}

// parseNanoUSD reads a cost in USD, a JSON number or a decimal string
// (with the number's grammar: no sign but for the exponent's), exactly
// as nano-dollars: digits below a nano-dollar round up. A negative, an
// overflow or anything else reads as nothing.
func parseNanoUSD(b []byte) (int64, bool) {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	mant, exp, sticky, ok := parseDecimal(b)
	if !ok {
		return 0, false
	}
	// value = mant × 10^exp (+ a little, if sticky), in nano-dollars
	exp += 9
	switch {
	case mant == 0 && !sticky:
		return 0, true
	case exp >= 0:
		for ; exp > 0; exp-- {
			if mant > math.MaxInt64/10 {
				return 0, false
			}
			mant *= 10
		}
		if sticky { // only with digits dropped above 10^17: far beyond any cost
			return 0, false
		}
		return mant, true
	case exp < -18: // mant < 10^18: a positive value below a nano-dollar
		return 1, true
	}
	div := int64(1)
	for ; exp < 0; exp++ {
		div *= 10
	}
	q := mant / div
	if mant%div != 0 || sticky {
		q++
	}
	return q, true
}

// parseDecimal reads the JSON number grammar without a sign:
// (0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, as mant × 10^exp, mant
// keeping 18 significant digits at most; sticky: a non-zero digit was
// dropped beyond them.
func parseDecimal(b []byte) (mant int64, exp int, sticky, ok bool) {
	const room = 1e17 // mant < 10^18
	i, digits := 0, 0
	for pastDot := false; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '.' && !pastDot && digits > 0:
			pastDot = true
			digits = 0 // the fraction needs a digit of its own
			continue
		case c < '0' || c > '9':
		case mant < room:
			mant = mant*10 + int64(c-'0')
			if pastDot {
				exp--
			}
			digits++
			continue
		default: // no room: the digit is dropped
			if !pastDot {
				exp++
			}
			sticky = sticky || c != '0'
			digits++
			continue
		}
		break
	}
	if digits == 0 || len(b) > 1 && b[0] == '0' && b[1] >= '0' && b[1] <= '9' {
		return 0, 0, false, false
	}
	if i < len(b) {
		e, ok := parseExponent(b[i:])
		if !ok {
			return 0, 0, false, false
		}
		exp += e
	}
	return mant, exp, sticky, true
}

// parseExponent reads [eE][+-]?[0-9]+, bounded to ±400 (beyond, a cost
// overflows or rounds up to one nano-dollar all the same).
func parseExponent(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != 'e' && b[0] != 'E' {
		return 0, false
	}
	b = b[1:]
	neg := b[0] == '-'
	if b[0] == '-' || b[0] == '+' {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	e := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		e = min(e*10+int(c-'0'), 400)
	}
	if neg {
		e = -e
	}
	return e, true
}
