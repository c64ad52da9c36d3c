package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// Bounds of the model list filter.
const (
	// MaxListElement is the most the filter holds at once: one model
	// element with the separator before it, or the part of the answer
	// before or after its data array. A larger element is dropped; a
	// larger part outside the elements is an error.
	MaxListElement = 256 << 10
	// maxListID is the longest id the filter reads; an element whose id
	// is longer is dropped (no allowlist admits it).
	maxListID = 1024
	// maxListDepth is encoding/json's nesting bound: deeper is an error.
	maxListDepth = 10000
)

// ListStats counts what a [ModelListFilter] did with the model elements.
type ListStats struct {
	Kept, Dropped int
	// Oversized elements (over MaxListElement) are among the Dropped.
	Oversized int
}

// ModelListFilter filters AI Gateway's model list (GET /v1/models,
// {"object":"list","data":[{"id":…,…},…]}) as it streams through: each
// element of data is held until it ends, then written on or dropped.
// Everything it writes on is the input byte for byte, but for the
// dropped elements and the comma before a kept element that would
// otherwise come first.
//
// An element is kept only when it is a JSON object with exactly one
// member whose name, unescaped, is exactly "id" and none whose name is
// another case of it (a reader that folds case could take that one), when
// that member's value is a string whose unescaped value is valid UTF-8
// without U+FFFD, a lone surrogate or more than 1 KiB, and when allow
// says yes to it. An "id" nested deeper (in pricing, say) is not the
// element's id. An element longer than MaxListElement is dropped unread.
//
// The answer must be one JSON object with exactly one member named
// "data" (in any case) whose value is an array; anything else (invalid
// JSON, no data array, two, trailing data, an encoded body) is an error.
// The filter writes nothing until the data array has begun, so an error
// before that leaves w untouched ([ModelListFilter.Wrote] is false) and
// the caller can still answer 502; an error later leaves what was written
// (never a dropped element) and the caller must cut the answer short. The
// caller passes only successful (2xx) answers through the filter; an
// error answer is not a list and goes through untouched.
type ModelListFilter struct {
	w     io.Writer
	allow func(string) bool
	err   error
	off   int64 // bytes of input read
	wrote bool
	stats ListStats

	phase listPhase
	st    lexState
	stack []byte // open containers, 'o' or 'a'

	// pend is what is held: the prefix, the current element with the
	// separator before it, or the suffix.
	pend    []byte
	commaAt int  // index in pend of the ',' before the current element, or -1
	drop    bool // the current element is over the bound: its bytes are discarded

	// The current element.
	inElem, elemObj       bool
	exactIDs, variantIDs  int
	expectID, idSet, idNo bool
	id                    []byte

	dataSeen, expectData bool

	// The current string, when it is read (a key at the top level or an
	// element's, or an element's id).
	strKey  bool
	capture bool
	sbuf    []byte
	smax    int
	sbad    bool // over smax, a lone surrogate
	hi      rune // a high surrogate waiting for its low half
	uVal    rune
	uN      int

	lit  string
	litI int
}

type listPhase uint8

const (
	phasePrefix listPhase = iota // before the data array: held
	phaseData                    // in the data array: one element held at a time
	phaseSuffix                  // after the data array: held until the top-level object ends
	phaseEnd                     // after the top-level object: whitespace only
)

type lexState uint8

const (
	lxTop      lexState = iota // before the top-level value
	lxValue                    // a value is expected
	lxArrFirst                 // after '[': a value or ']'
	lxObjFirst                 // after '{': a key or '}'
	lxObjKey                   // after ',' in an object: a key
	lxColon                    // after a key
	lxAfter                    // after a value in a container: ',' or its closer
	lxEnd                      // after the top-level value
	lxStr
	lxEsc
	lxU
	lxNumMinus // after '-'
	lxNumZero  // after a leading 0
	lxNumInt   // in the integer digits
	lxNumDot   // after '.'
	lxNumFrac  // in the fraction digits
	lxNumE     // after 'e'
	lxNumESign // after the exponent's sign
	lxNumExp   // in the exponent digits
	lxLit      // in true, false or null
)

// NewModelListFilter returns a filter that writes to w the model list
// written to it, without the models allow refuses (allow is called once
// per element, with its id). Close it at the end of the answer: Close
// does not close w.
func NewModelListFilter(w io.Writer, allow func(id string) bool) *ModelListFilter {
	return &ModelListFilter{w: w, allow: allow, commaAt: -1}
}

// Write filters p. It returns an error, the same from then on, when the
// input is not a model list or w fails.
func (f *ModelListFilter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	for i := 0; i < len(p); i++ {
		if f.st == lxStr && !f.capture {
			// The bulk of a list: string bytes nothing reads.
			j := i
			for j < len(p) && p[j] >= 0x20 && p[j] != '"' && p[j] != '\\' {
				j++
			}
			if j > i {
				f.emit(p[i:j])
				f.off += int64(j - i)
				if i = j; i == len(p) || f.err != nil {
					break
				}
			}
		}
		f.byte(p[i])
		f.off++
		if f.err != nil {
			return i, f.err
		}
	}
	if f.err != nil {
		return len(p), f.err
	}
	if f.phase == phaseEnd {
		f.flush()
	}
	return len(p), f.err
}

// Close ends the input: an error when it ended before the list did (or
// any error met before). Close does not close w.
func (f *ModelListFilter) Close() error {
	if f.err == nil {
		if f.phase != phaseEnd {
			f.fail("the body ends before its JSON value does")
		} else {
			f.flush()
		}
	}
	if f.err == nil {
		f.err = errClosed
		return nil
	}
	if f.err == errClosed {
		return nil
	}
	return f.err
}

var errClosed = errors.New("model list: write after Close")

// Err is the error that stopped the filter, or nil.
func (f *ModelListFilter) Err() error {
	if f.err == errClosed {
		return nil
	}
	return f.err
}

// Wrote says whether anything was written to w yet: until it was, an
// error can still be answered with a status of its own.
func (f *ModelListFilter) Wrote() bool { return f.wrote }

// Stats counts the elements kept and dropped so far.
func (f *ModelListFilter) Stats() ListStats { return f.stats }

func (f *ModelListFilter) fail(why string) {
	if f.err == nil {
		f.err = fmt.Errorf("model list: %s (at byte %d)", why, f.off)
	}
}

func (f *ModelListFilter) flush() {
	if len(f.pend) == 0 || f.err != nil {
		return
	}
	f.write(f.pend)
	f.pend = f.pend[:0]
}

func (f *ModelListFilter) write(b []byte) {
	if _, err := f.w.Write(b); err != nil {
		f.err = err
		return
	}
	f.wrote = true
}

// emit holds b (or discards it, in an oversized element).
func (f *ModelListFilter) emit(b []byte) {
	if f.drop {
		return
	}
	f.pend = append(f.pend, b...)
	if len(f.pend) > MaxListElement {
		f.overflow()
	}
}

// overflow handles pend over the bound.
func (f *ModelListFilter) overflow() {
	switch {
	case f.phase == phaseData && f.inElem:
		f.drop = true
		f.pend = f.pend[:0]
	case f.phase == phaseData:
		f.fail("more than 256 KiB between two elements")
	case f.phase == phaseEnd:
		f.flush()
	default:
		f.fail("more than 256 KiB outside the data array")
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (f *ModelListFilter) byte(c byte) {
	// A number ends at the first byte that cannot continue it.
	switch f.st {
	case lxNumZero, lxNumInt, lxNumFrac, lxNumExp:
		digit := c >= '0' && c <= '9'
		more := digit && f.st != lxNumZero ||
			c == '.' && (f.st == lxNumZero || f.st == lxNumInt) ||
			(c == 'e' || c == 'E') && f.st != lxNumExp
		if !more {
			f.valueEnd()
			if f.err != nil {
				return
			}
		}
	}
	if !f.drop {
		f.pend = append(f.pend, c)
		if len(f.pend) > MaxListElement {
			f.overflow()
			if f.err != nil {
				return
			}
		}
	}
	switch f.st {
	case lxTop:
		if isSpace(c) {
			return
		}
		if c != '{' {
			f.fail("the body is not a JSON object")
			return
		}
		f.valueStart(c)
	case lxValue:
		if !isSpace(c) {
			f.valueStart(c)
		}
	case lxArrFirst:
		switch {
		case isSpace(c):
		case c == ']':
			f.closeContainer(c)
		default:
			f.valueStart(c)
		}
	case lxObjFirst, lxObjKey:
		switch {
		case isSpace(c):
		case c == '}' && f.st == lxObjFirst:
			f.closeContainer(c)
		case c == '"':
			f.keyStart()
		default:
			f.fail("a member name is expected")
		}
	case lxColon:
		switch {
		case isSpace(c):
		case c == ':':
			f.st = lxValue
		default:
			f.fail("':' is expected")
		}
	case lxAfter:
		top := f.stack[len(f.stack)-1]
		switch {
		case isSpace(c):
		case c == ',' && top == 'o':
			f.st = lxObjKey
		case c == ',':
			f.st = lxValue
			if len(f.stack) == 2 && f.phase == phaseData {
				f.commaAt = len(f.pend) - 1
			}
		case c == '}' && top == 'o', c == ']' && top == 'a':
			f.closeContainer(c)
		default:
			f.fail("',' or the end of an object or array is expected")
		}
	case lxEnd:
		if !isSpace(c) {
			f.fail("more follows the JSON value")
		}
	case lxStr:
		switch {
		case c == '"':
			f.stringEnd()
		case c == '\\':
			f.st = lxEsc
		case c < 0x20:
			f.fail("a control character in a string")
		case f.capture:
			f.capByte(c)
		}
	case lxEsc:
		f.st = lxStr
		switch c {
		case '"', '\\', '/':
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			f.st, f.uN, f.uVal = lxU, 0, 0
			return
		default:
			f.fail("an invalid escape in a string")
			return
		}
		if f.capture {
			f.capByte(c)
		}
	case lxU:
		var h byte
		switch {
		case c >= '0' && c <= '9':
			h = c - '0'
		case c >= 'a' && c <= 'f':
			h = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			h = c - 'A' + 10
		default:
			f.fail("an invalid \\u escape")
			return
		}
		f.uVal = f.uVal<<4 | rune(h)
		if f.uN++; f.uN == 4 {
			f.st = lxStr
			if f.capture {
				f.capRune(f.uVal)
			}
		}
	case lxNumMinus:
		switch {
		case c == '0':
			f.st = lxNumZero
		case c >= '1' && c <= '9':
			f.st = lxNumInt
		default:
			f.fail("a digit is expected")
		}
	case lxNumZero, lxNumInt, lxNumFrac, lxNumExp:
		// c continues the number (see above).
		switch {
		case c == '.':
			f.st = lxNumDot
		case c == 'e' || c == 'E':
			f.st = lxNumE
		case f.st == lxNumZero:
			f.st = lxNumInt
		}
	case lxNumDot:
		if c < '0' || c > '9' {
			f.fail("a digit is expected")
			return
		}
		f.st = lxNumFrac
	case lxNumE:
		switch {
		case c == '+' || c == '-':
			f.st = lxNumESign
		case c >= '0' && c <= '9':
			f.st = lxNumExp
		default:
			f.fail("a digit is expected")
		}
	case lxNumESign:
		if c < '0' || c > '9' {
			f.fail("a digit is expected")
			return
		}
		f.st = lxNumExp
	case lxLit:
		if c != f.lit[f.litI] {
			f.fail("an invalid literal")
			return
		}
		if f.litI++; f.litI == len(f.lit) {
			f.valueEnd()
		}
	}
}

func (f *ModelListFilter) valueStart(c byte) {
	depth := len(f.stack)
	f.capture = false
	openData := false
	switch {
	case depth == 1 && f.expectData:
		f.expectData = false
		if c != '[' {
			f.fail("its data member is not an array")
			return
		}
		openData = true
	case depth == 2 && f.phase == phaseData:
		f.inElem, f.elemObj = true, c == '{'
		f.exactIDs, f.variantIDs = 0, 0
		f.expectID, f.idSet, f.idNo = false, false, false
	case depth == 3 && f.expectID:
		f.expectID = false
		if c != '"' {
			f.idNo = true
		} else {
			f.startCapture(maxListID)
		}
	}
	switch {
	case c == '{':
		f.push('o')
		f.st = lxObjFirst
	case c == '[':
		f.push('a')
		f.st = lxArrFirst
		if openData && f.err == nil {
			f.phase = phaseData
			f.flush()
		}
	case c == '"':
		f.st, f.strKey = lxStr, false
	case c == '-':
		f.st = lxNumMinus
	case c == '0':
		f.st = lxNumZero
	case c >= '1' && c <= '9':
		f.st = lxNumInt
	case c == 't':
		f.st, f.lit, f.litI = lxLit, "true", 1
	case c == 'f':
		f.st, f.lit, f.litI = lxLit, "false", 1
	case c == 'n':
		f.st, f.lit, f.litI = lxLit, "null", 1
	default:
		f.fail("a value is expected")
	}
}

func (f *ModelListFilter) push(k byte) {
	if len(f.stack) >= maxListDepth {
		f.fail("nested too deep")
		return
	}
	f.stack = append(f.stack, k)
}

func (f *ModelListFilter) closeContainer(c byte) {
	depth := len(f.stack)
	f.stack = f.stack[:depth-1]
	if depth == 2 && f.phase == phaseData && c == ']' {
		f.phase = phaseSuffix
		f.flush()
	}
	f.valueEnd()
}

func (f *ModelListFilter) valueEnd() {
	f.capture = false
	switch depth := len(f.stack); {
	case depth == 0:
		if !f.dataSeen {
			f.fail("no data array")
			return
		}
		f.phase, f.st = phaseEnd, lxEnd
		f.flush()
		return
	case depth == 2 && f.phase == phaseData:
		f.decide()
	}
	f.st = lxAfter
}

func (f *ModelListFilter) keyStart() {
	f.st, f.strKey = lxStr, true
	f.capture = false
	if depth := len(f.stack); depth == 1 || depth == 3 && f.phase == phaseData {
		f.startCapture(len("data"))
	}
}

func (f *ModelListFilter) startCapture(max int) {
	f.capture, f.smax = true, max
	f.sbuf, f.sbad, f.hi = f.sbuf[:0], false, 0
}

func (f *ModelListFilter) capByte(c byte) {
	if f.hi != 0 {
		f.sbad, f.hi = true, 0 // a high surrogate alone
	}
	if len(f.sbuf) >= f.smax {
		f.sbad = true
		return
	}
	f.sbuf = append(f.sbuf, c)
}

func (f *ModelListFilter) capRune(r rune) {
	if f.hi != 0 {
		if utf16.IsSurrogate(r) && r >= 0xdc00 {
			r = utf16.DecodeRune(f.hi, r)
			f.hi = 0
			f.appendRune(r)
			return
		}
		f.sbad, f.hi = true, 0
	}
	switch {
	case r >= 0xd800 && r < 0xdc00:
		f.hi = r
	case utf16.IsSurrogate(r):
		f.sbad = true // a low surrogate alone
	default:
		f.appendRune(r)
	}
}

func (f *ModelListFilter) appendRune(r rune) {
	if len(f.sbuf)+utf8.RuneLen(r) > f.smax {
		f.sbad = true
		return
	}
	f.sbuf = utf8.AppendRune(f.sbuf, r)
}

func (f *ModelListFilter) stringEnd() {
	if f.hi != 0 {
		f.sbad, f.hi = true, 0
	}
	if f.strKey {
		f.st = lxColon
		if f.capture {
			f.capture = false
			f.keyEnd()
		}
		return
	}
	if f.capture { // an element's id
		f.id = append(f.id[:0], f.sbuf...)
		f.idSet = !f.sbad
	}
	f.valueEnd()
}

// keyEnd reads a member name at the top level or an element's.
func (f *ModelListFilter) keyEnd() {
	if f.sbad {
		return // longer than "data", or not even text: neither name
	}
	if len(f.stack) == 1 {
		if asciiEqualFold(f.sbuf, "data") {
			if f.dataSeen {
				f.fail("two data members")
				return
			}
			f.dataSeen, f.expectData = true, true
		}
		return
	}
	if asciiEqualFold(f.sbuf, "id") {
		if string(f.sbuf) == "id" {
			f.exactIDs++
			f.expectID = f.exactIDs == 1
		} else {
			f.variantIDs++
		}
	}
}

// asciiEqualFold is bytes.EqualFold for the names read here, whose
// letters have no case but their ASCII ones.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != s[i] {
			return false
		}
	}
	return true
}

// decide writes on the element just ended, or drops it.
func (f *ModelListFilter) decide() {
	keep := !f.drop && f.elemObj && f.exactIDs == 1 && f.variantIDs == 0 && f.idSet && !f.idNo &&
		utf8.Valid(f.id) && !bytes.ContainsRune(f.id, utf8.RuneError) && f.allow(string(f.id))
	switch {
	case keep:
		if f.stats.Kept == 0 && f.commaAt >= 0 {
			// The first element written: the comma before it goes.
			f.pend = append(f.pend[:f.commaAt], f.pend[f.commaAt+1:]...)
		}
		f.stats.Kept++
		f.flush()
	case f.drop:
		f.stats.Dropped++
		f.stats.Oversized++
	default:
		f.stats.Dropped++
	}
	f.pend, f.commaAt, f.drop, f.inElem = f.pend[:0], -1, false, false
}
