package jsonbody

import (
	"io"
	"strconv"
	"sync"
)

// Fields is what the editor read for Options.AtEnd: the members that say which
// model runs and how much it may write, read as the gateway reads them,
// or refused where a parser could read them otherwise. Nothing here
// runs without AtEnd (the members' names are controlled either way).
//
//   - model (top level): a JSON string, unescaped at most maxModelID
//     bytes, all printable ASCII (an AI Gateway id is
//     `provider/model`): a policy matches it and a metric may name it.
//     Anything else (null, a number, a longer or odder string) is
//     refused.
//   - max_tokens, max_completion_tokens, max_output_tokens (top level):
//     the output caps of Chat Completions (both) and Anthropic Messages,
//     and of Responses. Each is a plain non-negative integer, or null,
//     which OpenAI's and Responses' APIs read as no cap. A fraction or
//     an exponent (100.0, 1e3), a sign, a string, or an integer above
//     2^53-1 is refused: JSON.parse reads numbers as doubles, so above
//     2^53 it and an exact parser disagree, and a cap no model has is
//     no cap the proxy could price anyway.
//   - n, best_of (top level): how many completions one request
//     generates, each up to the output cap, all of them billed: Chat
//     Completions' n and legacy Completions' n and best_of (best_of
//     generates that many and returns the best n). Each is a plain
//     positive integer up to maxChoices, or null (one). Anything else
//     (0, a sign, a fraction, an exponent, a string, more than
//     maxChoices) is refused: a body the proxy reads as one choice must
//     not be run as many.
//   - the fallback lists: providerOptions.gateway.models (AI Gateway's
//     model fallbacks, tried in order when `model` fails), and a
//     top-level models (OpenRouter's spelling, which other gateways
//     accept too: the proxy cannot tell that AI Gateway ignores it, so
//     it reads it as one). A list is an array or null; each entry a
//     model id (as model is read) or an object with one (AI Gateway's
//     decision fallbacks: {"model": "...", "when": {...}}), at most
//     maxFallbacks entries. Any other entry is refused: the proxy could
//     not say which model the gateway runs. providerOptions.gateway.order
//     and .only name providers, not models, and are not read.
type Fields struct {
	// Model is the top-level model, unescaped; HasModel says whether
	// the body has one.
	Model    string
	HasModel bool
	// OutputCap is the largest of the output caps present, or -1 when
	// none is (or all are null).
	OutputCap int64
	// Choices is how many completions the request generates: the
	// largest of n and best_of, 1 when neither is present (or both are
	// null). Each may write up to the output cap.
	Choices int64
	// Fallbacks are the model ids of the fallback lists, in body order.
	Fallbacks []string
	// Bytes is the size of the body the client sent.
	Bytes int64
}

const (
	// maxModelID bounds a model id, unescaped.
	maxModelID = 256
	// maxFallbacks bounds the entries of one fallback list.
	maxFallbacks = 32
	// maxOutputCap is the largest output cap read: 2^53-1, the largest
	// integer that every parser reads exactly.
	maxOutputCap = 1<<53 - 1
	// maxChoices bounds n and best_of: OpenAI's API takes n up to 128
	// (Chat Completions and Completions) and best_of up to 20.
	maxChoices = 128
)

// A choice count fits the capture's byte.
const _ = uint8(maxChoices)

// A captured id is unescaped into the hold: it must fit.
const _ = uint(bodyEditHoldSize - maxModelID)

// What a capture reads.
type capKind uint8

const (
	capModel      capKind = iota + 1 // the top-level model
	capCap                           // an output cap
	capChoices                       // n or best_of
	capFallback                      // a string entry of a fallback list
	capEntryModel                    // the model of an object entry
)

// capture is the editor's part that reads Fields. A captured string is
// unescaped as it streams, one escape at a time (a printable ASCII id
// needs no surrogate pair), into the first maxModelID bytes of the
// editor's hold, which a value never uses: a member name held before it
// went out before the value began (pend), and a comma is held only
// after it ends.
type capture struct {
	capOn     bool
	capWhat   capKind
	capBad    bool  // a byte an id or a cap cannot have
	hasModel  bool  // model was read
	fbGateway bool  // the fallback list open is providerOptions.gateway's
	escN      uint8 // bytes of an escape so far, in esc
	esc       [6]byte
	choices   uint8 // the largest n or best_of (at most maxChoices), 0 when none
	member    int   // the current member: its index in beControlledNames
	capN      int   // bytes of the value so far: unescaped, or digits
	fbDepth   int   // the depth of the fallback list open (0: none)
	fbCount   int   // its entries so far
	capAt     int64 // the value's offset in the body
	capVal    int64 // a cap's value, up to just above maxOutputCap
	outputCap int64
	model     string
	fallbacks []string
}

// capturedValue begins the value of a member that AtEnd reads, at its
// first byte c. It returns false when it handled c itself (a fallback
// list opened, or a refusal).
func (e *Editor) capturedValue(c byte) bool {
	at := e.pos(e.r)
	switch e.act {
	case actModel, actEntryModel:
		if c != '"' {
			e.refuse("%s at byte %d must be a string: a model id", e.capName(e.act == actEntryModel), at)
			return false
		}
		k := capModel
		if e.act == actEntryModel {
			k = capEntryModel
		}
		e.beginCapture(k, at)
	case actCap:
		switch {
		case c >= '0' && c <= '9':
			e.beginCapture(capCap, at)
			e.capVal, e.capN = int64(c-'0'), 1 // scanValue takes the first digit
		case c != 'n': // null is no cap
			e.refuse("member %q at byte %d must be a non-negative integer or null", e.memberName(), at)
			return false
		}
	case actChoices:
		switch {
		case c >= '1' && c <= '9':
			e.beginCapture(capChoices, at)
			e.capVal, e.capN = int64(c-'0'), 1
		case c != 'n': // null is one choice
			e.refuse("member %q at byte %d must be a positive integer or null", e.memberName(), at)
			return false
		}
	case actFallbacks:
		switch c {
		case '[':
			if e.open(false) {
				e.fbDepth, e.fbCount = e.depth, 0
				e.fbGateway = e.frames[e.nf-1].kind == kindGateway
			}
			return false
		case 'n':
		default:
			e.refuse("member %q%s at byte %d must be an array of model ids, or null", e.memberName(), beKindWhere[e.frames[e.nf-1].kind], at)
			return false
		}
	}
	return true
}

// capName names the model being read in a refusal.
func (e *Editor) capName(entry bool) string {
	if entry {
		return `member "model" of entry ` + strconv.Itoa(e.fbCount) + " of " + e.fbWhere()
	}
	return `member "model"`
}

// memberName is the name of the current member of the innermost
// inspected object, a controlled one.
func (e *Editor) memberName() []byte {
	return beControlledNames[e.frames[e.nf-1].kind][e.member].name
}

// fbWhere names the fallback list open.
func (e *Editor) fbWhere() string {
	if e.fbGateway {
		return "providerOptions.gateway.models"
	}
	return "models"
}

// fallbackEntry begins an entry of the fallback list open, at its first
// byte c; it returns false when it handled c itself (an object entry
// opened, or a refusal).
func (e *Editor) fallbackEntry(c byte) bool {
	at := e.pos(e.r)
	e.fbCount++
	switch {
	case e.fbCount > maxFallbacks:
		e.refuse("%s has more than %d entries (at byte %d)", e.fbWhere(), maxFallbacks, at)
	case c == '"':
		e.beginCapture(capFallback, at)
		return true
	case c == '{':
		if e.open(true) {
			e.push(kindEntry)
		}
	default:
		e.refuse("entry %d of %s at byte %d must be a model id (a string) or an object with a \"model\"", e.fbCount, e.fbWhere(), at)
	}
	return false
}

// entryComplete refuses, at its '}', an object entry of a fallback list
// without a model; it reports whether the innermost inspected object is
// complete.
func (e *Editor) entryComplete() bool {
	f := &e.frames[e.nf-1]
	if f.kind != kindEntry || f.seen&1 != 0 { // model is the entry's first controlled name
		return true
	}
	e.refuse("entry %d of %s ends at byte %d without a \"model\"", e.fbCount, e.fbWhere(), e.pos(e.r))
	return false
}

func (e *Editor) beginCapture(k capKind, at int64) {
	e.capOn, e.capWhat, e.capAt = true, k, at
	e.capN, e.capBad, e.capVal, e.escN = 0, false, 0, 0
}

// captureString reads string content the scanner validated (escapes
// are well-formed), up to and with the closing quote.
func (e *Editor) captureString(b []byte) {
	for _, c := range b {
		switch {
		case e.escN > 0:
			e.esc[e.escN] = c
			e.escN++
			switch {
			case e.esc[1] != 'u':
				e.capByte("\"\\/\b\f\n\r\t"[indexByte(`"\/bfnrt`, c)])
				e.escN = 0
			case e.escN == 6:
				e.capByte(escapedASCII(e.esc[2:6]))
				e.escN = 0
			}
		case c == '\\':
			e.esc[0], e.escN = c, 1
		case c == '"': // the closing quote: a quote inside is escaped
		default:
			e.capByte(c)
		}
	}
}

// escapedASCII is the character of a \uXXXX escape's hex digits, or
// 0x80 (refused) when it is not ASCII.
func escapedASCII(hex []byte) byte {
	if hex[0] != '0' || hex[1] != '0' || hex[2] > '7' {
		return 0x80
	}
	return hexDigit(hex[2])<<4 | hexDigit(hex[3])
}

func hexDigit(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c | 0x20 - 'a' + 10
}

// capByte adds an unescaped byte to a captured id.
func (e *Editor) capByte(c byte) {
	if c < 0x20 || c > 0x7e {
		e.capBad = true
	}
	if e.capN < maxModelID {
		e.hold[e.capN] = c
	}
	e.capN++
}

// captureNumber reads number bytes after the first digit.
func (e *Editor) captureNumber(b []byte) {
	for _, c := range b {
		if c < '0' || c > '9' {
			e.capBad = true
			continue
		}
		if e.capVal <= maxOutputCap { // stops just above it: no overflow
			e.capVal = e.capVal*10 + int64(c-'0')
		}
		e.capN++
	}
}

// endCapture ends a captured value; it reports false when it refused it.
func (e *Editor) endCapture() bool {
	e.capOn = false
	if e.capWhat == capChoices {
		return e.endChoices()
	}
	if e.capWhat == capCap {
		switch {
		case e.capBad:
			e.refuse("member %q at byte %d must be a plain non-negative integer (no fraction, no exponent)", e.memberName(), e.capAt)
		case e.capVal > maxOutputCap:
			e.refuse("member %q at byte %d is above %d, which not every JSON parser reads exactly", e.memberName(), e.capAt, int64(maxOutputCap))
		default:
			e.outputCap = max(e.outputCap, e.capVal)
			return true
		}
		return false
	}
	if e.capBad || e.capN > maxModelID || e.capN == 0 {
		name := "entry " + strconv.Itoa(e.fbCount) + " of " + e.fbWhere()
		if e.capWhat != capFallback {
			name = e.capName(e.capWhat == capEntryModel)
		}
		e.refuse("%s at byte %d must be a model id: 1 to %d printable ASCII characters", name, e.capAt, maxModelID)
		return false
	}
	id := modelIDs.intern(e.hold[:e.capN])
	if e.capWhat == capModel {
		e.model, e.hasModel = id, true
	} else {
		e.fallbacks = append(e.fallbacks, id)
	}
	return true
}

// endChoices ends a captured n or best_of; it reports false when it
// refused it.
func (e *Editor) endChoices() bool {
	if e.capBad {
		e.refuse("member %q at byte %d must be a plain positive integer (no fraction, no exponent)", e.memberName(), e.capAt)
		return false
	}
	if e.capVal > maxChoices {
		e.refuse("member %q at byte %d is above %d, the most completions one request may ask for", e.memberName(), e.capAt, maxChoices)
		return false
	}
	if e.capVal >= 1 { // always (its first digit is 1 to 9): 1 to maxChoices fits the byte
		e.choices = max(e.choices, uint8(e.capVal))
	}
	return true
}

// holdTrailingSpace holds the whitespace after the top-level object with
// its '}', as much as the hold has room for; the rest is dropped.
func (e *Editor) holdTrailingSpace() {
	in := e.in[e.r:e.n]
	n := 0
	for n < len(in) && isJSONSpace(in[n]) {
		n++
	}
	keep := min(n, len(e.hold)-e.nh)
	e.take(keep)
	if n > keep {
		e.r += n - keep
		e.edited = true
	}
}

// release calls AtEnd at the end of a well-formed body: the held end
// goes out if it returns nil; otherwise the body stops there. It
// reports whether the end was released.
func (e *Editor) release() bool {
	err := e.opts.AtEnd.AtEnd(Fields{
		Model:     e.model,
		HasModel:  e.hasModel,
		OutputCap: e.outputCap,
		Choices:   max(int64(e.choices), 1),
		Fallbacks: e.fallbacks,
		Bytes:     e.off + int64(e.n),
	})
	if err != nil {
		if err == io.EOF { // would end the upstream body as if complete
			err = io.ErrUnexpectedEOF
		}
		e.nh = 0
		e.stopped.Store(&stopped{err})
		return false
	}
	e.pend, e.nh, e.mode = e.hold[:e.nh], 0, modeOut
	return true
}

// modelIDs holds the model ids bodies named, so that the few ids a
// fleet uses cost no allocation per request. It stops growing at
// maxInternedIDs (a client naming junk ids fills it, no more): later
// ids are allocated per request, as without it.
var modelIDs internTable

const maxInternedIDs = 1024

type internTable struct {
	mu  sync.RWMutex
	ids map[string]string
}

func (t *internTable) intern(b []byte) string {
	t.mu.RLock()
	id, ok := t.ids[string(b)] // no allocation: the compiler reads b in place
	t.mu.RUnlock()
	if ok {
		return id
	}
	id = string(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids == nil {
		t.ids = make(map[string]string)
	}
	if len(t.ids) < maxInternedIDs {
		t.ids[id] = id
	}
	return id
}
