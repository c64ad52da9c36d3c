package jsonbody

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// The editor's scanner: RFC 8259's grammar, one function per piece of it
// (the top level, a value, an object's members, a member name, a string,
// a number, a literal, what follows a value), each a step of a state
// machine that resumes where the last read of the source stopped. A step
// consumes input in the editor's current output mode (bodyEditor.take);
// the inspected objects' members are decided in edit.go.

// Scanner states.
type beState uint8

const (
	stBefore   beState = iota // before the top-level value: a byte order mark, whitespace
	stValue                   // a value is expected: whitespace, then the value
	stArrFirst                // after '[': whitespace, ']' or a value
	stObjFirst                // after '{': whitespace, '}' or a member name
	stObjNext                 // after ',' in an object: whitespace, then a member name
	stName                    // inside a member name of an inspected object, held back
	stColon                   // after a member name: whitespace, then ':'
	stString                  // inside a string (a value, or a name not held)
	stNumber                  // inside a number
	stLiteral                 // inside true, false or null
	stAfter                   // after a value in an array or object: whitespace, ',' or the closer
	stTrailing                // after the top-level value: whitespace only
	stRefused                 // refused: nothing more is read
)

// Inside a string: an escape or a UTF-8 sequence under way. subHex1 to
// subHex4 are the hex digits of a \u escape still to come.
type beSub uint8

const (
	subNone beSub = iota
	subHex1
	subHex2
	subHex3
	subHex4
	subEsc  // after a backslash
	subUTF8 // inside a multibyte character
)

// Number grammar states; beNumFinal are those a number may end in.
type beNum uint8

const (
	numMinus beNum = iota + 1 // after '-'
	numZero                   // a leading 0
	numInt                    // in the integer part
	numDot                    // after '.'
	numFrac                   // in the fraction
	numE                      // after 'e'
	numESign                  // after the exponent's sign
	numExp                    // in the exponent
)

// beScanState is the scanner's part of the editor.
type beScanState struct {
	st     beState
	bom    int // bytes of a leading byte order mark seen
	depth  int // arrays and objects open
	kinds  [(bodyEditMaxDepth + 63) / 64]uint64
	isName bool // the string is a member name
	sub    beSub
	u8need uint8 // continuation bytes still to come
	u8lo   byte  // range of the next one
	u8hi   byte
	num    beNum
	lit    string // the literal being read, lit[:li] read
	li     int
}

// scan consumes input from e.in[e.r:e.n] and writes output to out, until
// out is full, the input is used up, pending output was set, or the body
// was refused. It returns the number of bytes written.
func (e *Editor) scan(out []byte) int {
	e.out, e.w = out, 0
	for e.r < e.n && e.w < len(e.out) && len(e.pend) == 0 && e.err == nil {
		switch e.st {
		case stBefore:
			e.scanBefore()
		case stValue, stArrFirst:
			e.scanValue()
		case stObjFirst, stObjNext:
			e.scanMember()
		case stName:
			e.scanName()
		case stColon:
			e.scanColon()
		case stString:
			e.scanString()
		case stNumber:
			e.scanNumber()
		case stLiteral:
			e.scanLiteral()
		case stAfter:
			e.scanAfter()
		case stTrailing:
			e.scanTrailing()
		}
	}
	w := e.w
	e.out, e.w = nil, 0
	return w
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// takeSpace consumes the whitespace at the start of the available input.
func (e *Editor) takeSpace() {
	in := e.avail()
	n := 0
	for n < len(in) && isJSONSpace(in[n]) {
		n++
	}
	e.take(n)
}

// unexpected refuses the byte at e.in[e.r], saying what was expected.
func (e *Editor) unexpected(expected string) {
	c := e.in[e.r]
	shown := "'" + string(c) + "'"
	if c < 0x20 || c >= 0x7f {
		shown = "byte " + "0x" + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
	}
	e.refuse("not valid JSON at byte %d: %s where %s was expected", e.pos(e.r), shown, expected)
}

// scanBefore reads what comes before the top-level value: a UTF-8 byte
// order mark at the very start (passed on), whitespace, then '{'.
func (e *Editor) scanBefore() {
	c := e.in[e.r]
	const bom = "\xef\xbb\xbf"
	switch at := e.pos(e.r); {
	case at < 3 && at == int64(e.bom) && c == bom[at]:
		e.bom++
		e.take(1)
	case e.bom > 0 && e.bom < 3:
		e.refuse("invalid UTF-8 at byte %d", at)
	case isJSONSpace(c):
		e.takeSpace()
	case c == '{':
		if e.open(true) {
			e.push(kindTop)
		}
	case isValueStart(c):
		e.refuse("the body is not a JSON object (byte %d); send one JSON object", at)
	default:
		e.unexpected("a JSON object")
	}
}

func isValueStart(c byte) bool {
	return c == '"' || c == '{' || c == '[' || c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n'
}

// open opens an object or an array at its first byte, or refuses one
// too deep. It reports whether it opened.
func (e *Editor) open(obj bool) bool {
	if e.depth == bodyEditMaxDepth {
		e.refuse("nesting deeper than %d levels at byte %d", bodyEditMaxDepth, e.pos(e.r))
		return false
	}
	e.take(1)
	word, bit := e.depth>>6, uint64(1)<<(e.depth&63)
	e.st = stArrFirst
	if obj {
		e.kinds[word] |= bit
		e.st = stObjFirst
	} else {
		e.kinds[word] &^= bit
	}
	e.depth++
	return true
}

// inObject reports whether the innermost container open is an object.
func (e *Editor) inObject() bool {
	d := e.depth - 1
	return e.kinds[d>>6]&(1<<(d&63)) != 0
}

// inspected reports whether the innermost container open is an
// inspected object (never asked at depth 0, where inspDepth is 0 too).
func (e *Editor) inspected() bool { return e.depth == e.inspDepth }

// scanValue reads the start of a value (after ':', ',' in an array, or
// '['), or an empty array's ']'.
func (e *Editor) scanValue() {
	c := e.in[e.r]
	switch {
	case isJSONSpace(c):
		e.takeSpace()
		return
	case c == ']' && e.st == stArrFirst:
		e.closeContainer(c)
		return
	case !isValueStart(c):
		e.unexpected("a value")
		return
	}
	if e.inspected() && !e.memberValue(c) || e.depth == e.fbDepth && !e.fallbackEntry(c) {
		return
	}
	switch {
	case c == '"':
		e.take(1)
		e.st = stString
	case c == '{' || c == '[':
		e.open(c == '{')
	case c == '-':
		e.take(1)
		e.num, e.st = numMinus, stNumber
	case c == '0':
		e.take(1)
		e.num, e.st = numZero, stNumber
	case c >= '1' && c <= '9':
		e.take(1)
		e.num, e.st = numInt, stNumber
	default:
		e.lit, e.li, e.st = "null", 0, stLiteral
		switch c {
		case 't':
			e.lit = "true"
		case 'f':
			e.lit = "false"
		}
	}
}

// valueEnd follows a value that ended: the top-level one, or one in an
// array or object.
func (e *Editor) valueEnd() {
	if e.capOn && !e.endCapture() {
		return
	}
	if e.depth == 0 {
		e.st = stTrailing
		return
	}
	e.st = stAfter
	if e.inspected() {
		e.memberEnd()
	}
}

// closeContainer closes the innermost array or object at its closer c,
// after what an inspected object gets added before its '}'.
func (e *Editor) closeContainer(c byte) {
	if obj := e.inObject(); obj != (c == '}') {
		e.unexpected(closerName(obj))
		return
	}
	insp := e.inspected()
	if insp && (e.beforeClose() || !e.entryComplete()) {
		return // the addition goes out first, or a refusal
	}
	if e.depth == 1 && e.opts.AtEnd != nil {
		e.mode, e.nh = modeHold, 0 // the body's end waits for AtEnd
	}
	e.take(1)
	if e.depth == e.fbDepth {
		e.fbDepth = 0
	}
	e.depth--
	if insp {
		e.pop()
	}
	e.valueEnd()
}

func closerName(obj bool) string {
	if obj {
		return "'}'"
	}
	return "']'"
}

// scanMember reads what starts an object's member: whitespace, then the
// opening quote of its name; or an empty object's '}'. In an inspected
// object the name is held back.
func (e *Editor) scanMember() {
	c := e.in[e.r]
	switch {
	case isJSONSpace(c) && e.mode == modeHold:
		if e.nh > bodyEditMaxHeldSpace {
			// Too much whitespace to hold: it goes out before the
			// comma, which stays held.
			e.pend = e.hold[1:e.nh]
			e.nh = 1
			e.edited = true
			return
		}
		in := e.in[e.r:min(e.n, e.r+bodyEditMaxHeldSpace+1-e.nh)]
		n := 0
		for n < len(in) && isJSONSpace(in[n]) {
			n++
		}
		e.take(n)
	case isJSONSpace(c):
		e.takeSpace()
	case c == '"' && e.inspected():
		if e.mode != modeHold {
			e.mode, e.nh = modeHold, 0
		}
		e.nameAt, e.namePos = e.nh, e.pos(e.r)
		e.take(1)
		e.st = stName
	case c == '"':
		e.take(1)
		e.isName, e.st = true, stString
	case c == '}' && e.st == stObjFirst:
		e.closeContainer(c)
	default:
		e.unexpected("a member name")
	}
}

// scanName reads a held member name of an inspected object. A name too
// long to be a controlled one goes out and streams as any string.
func (e *Editor) scanName() {
	room := e.nameAt + 1 + bodyEditMaxName + 1 - e.nh
	if room <= 0 {
		e.pend = e.hold[:e.nh]
		e.nh = 0
		e.mode = modeOut
		e.frames[e.nf-1].outHas = true
		e.isName, e.st = true, stString
		return
	}
	in := e.in[e.r:min(e.n, e.r+room)]
	n, end := e.stringBytes(in)
	e.take(n)
	if end {
		e.endName()
	}
}

// scanColon reads what follows a member name: whitespace, then ':'.
func (e *Editor) scanColon() {
	switch c := e.in[e.r]; {
	case isJSONSpace(c):
		e.takeSpace()
	case c == ':':
		e.take(1)
		e.st = stValue
	default:
		e.unexpected("':'")
	}
}

// scanAfter reads what follows a value in an array or object: whitespace,
// then ',' or the closer. In an inspected object where a member can be
// removed, the comma is held back (or dropped, if no member went out
// before it).
func (e *Editor) scanAfter() {
	c := e.in[e.r]
	switch {
	case isJSONSpace(c):
		e.takeSpace()
	case c == ',' && !e.inObject():
		e.take(1)
		e.st = stValue
	case c == ',':
		e.st = stObjNext
		if !e.inspected() || !e.frames[e.nf-1].canRemove {
			e.take(1)
			return
		}
		if !e.frames[e.nf-1].outHas {
			e.r++ // every member before it was removed: so is its comma
			return
		}
		e.mode, e.nh = modeHold, 0
		e.take(1)
	case c == '}' || c == ']':
		e.closeContainer(c)
	default:
		e.unexpected("',' or " + closerName(e.inObject()))
	}
}

// scanTrailing reads what follows the top-level value: whitespace only.
func (e *Editor) scanTrailing() {
	c := e.in[e.r]
	switch {
	case isJSONSpace(c) && e.mode == modeHold:
		e.holdTrailingSpace()
	case isJSONSpace(c):
		e.takeSpace()
	case isValueStart(c):
		e.refuse("more than one JSON value (the second starts at byte %d); send one JSON object", e.pos(e.r))
	default:
		e.unexpected("the end of the body")
	}
}

// scanString reads a string's content up to its closing quote: a value,
// or a member name that is not held.
func (e *Editor) scanString() {
	in := e.avail()
	n, end := e.stringBytes(in)
	if e.capOn {
		e.captureString(in[:n])
	}
	e.take(n)
	if !end {
		return
	}
	if e.isName {
		e.isName, e.st = false, stColon
		return
	}
	e.valueEnd()
}

// scanNumber reads a number by the grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; the byte after it
// ends it.
func (e *Editor) scanNumber() {
	in := e.avail()
	n := 0
	for ; n < len(in); n++ {
		next := numNext(e.num, in[n])
		if next == 0 {
			break
		}
		e.num = next
	}
	if e.capOn {
		e.captureNumber(in[:n])
	}
	e.take(n)
	if n == len(in) {
		return // more may follow
	}
	switch e.num {
	case numZero, numInt, numFrac, numExp:
		e.valueEnd()
	default:
		e.refuse("not valid JSON at byte %d: a number ends early", e.pos(e.r))
	}
}

// numNext is the number state after c, or 0 when c is not part of the
// number.
func numNext(s beNum, c byte) beNum {
	digit := c >= '0' && c <= '9'
	switch {
	case s == numMinus && c == '0':
		return numZero
	case digit && (s == numMinus || s == numInt):
		return numInt
	case c == '.' && (s == numZero || s == numInt):
		return numDot
	case digit && (s == numDot || s == numFrac):
		return numFrac
	case (c == 'e' || c == 'E') && (s == numZero || s == numInt || s == numFrac):
		return numE
	case (c == '+' || c == '-') && s == numE:
		return numESign
	case digit && (s == numE || s == numESign || s == numExp):
		return numExp
	}
	return 0
}

// scanLiteral reads true, false or null.
func (e *Editor) scanLiteral() {
	in := e.avail()
	n := 0
	for n < len(in) && e.li < len(e.lit) {
		if in[n] != e.lit[e.li] {
			e.take(n)
			e.refuse("not valid JSON at byte %d: expected %q", e.pos(e.r), e.lit)
			return
		}
		n++
		e.li++
	}
	e.take(n)
	if e.li == len(e.lit) {
		e.valueEnd()
	}
}

// stringBytes validates string content at the start of s, up to and
// including the closing quote (end), or all of s. It returns how many
// bytes it validated; on a refusal, those before the bad byte. Escapes
// and UTF-8 sequences may straddle two calls (e.sub): they go a byte at
// a time, the rest through stringRun.
func (e *Editor) stringBytes(s []byte) (n int, end bool) {
	i := 0
	for i < len(s) {
		if e.sub != subNone {
			if !e.stringSub(s[i], i) {
				return i, false
			}
			i++
			continue
		}
		if i, end = e.stringRun(s, i); end || e.err != nil {
			return i, end
		}
	}
	return i, false
}

// stringRun validates s from i to the closing quote (end), the end of s,
// a refusal, or an escape or character that goes on a byte at a time
// (e.sub). Plain bytes are skipped 8 at a time: each word's candidates
// (special8) are taken in turn without loading it again; after 64 plain
// bytes, a long run (base64, prose) goes to longPlainRun.
func (e *Editor) stringRun(s []byte, i int) (next int, end bool) {
	clean := 0
	for i+8 <= len(s) {
		m := special8(binary.LittleEndian.Uint64(s[i:]))
		if m == 0 {
			if i, clean = i+8, clean+8; clean >= 64 {
				i += longPlainRun(s[i:])
				clean = 0
			}
			continue
		}
		clean = 0
		base := i
		for ; m != 0; m &= m - 1 {
			k := base + bits.TrailingZeros64(m)>>3
			c := s[k]
			switch {
			case k < i:
				// inside what the last one took (a character, an escape)
			case c == '\\' && k+1 < len(s) && simpleEscape[s[k+1]]:
				i = k + 2
			case c == '"':
				return k + 1, true
			case c >= 0xc2 && c <= 0xdf && k+1 < len(s) && s[k+1]&0xc0 == 0x80: // é
				i = k + 2
			case plainByte[c]:
				// not special after all: a borrow's flag (special8)
			default:
				if i, end = e.stringSpecial(s, k); end || e.err != nil || e.sub != subNone {
					return i, end
				}
			}
		}
		i = max(i, base+8) // the rest of the word had no candidate
	}
	for i < len(s) { // fewer than 8 bytes left: a byte at a time
		if plainByte[s[i]] {
			i++
			continue
		}
		if i, end = e.stringSpecial(s, i); end || e.err != nil || e.sub != subNone {
			return i, end
		}
	}
	return i, false
}

// stringSpecial takes the byte at s[k] that is not plain: the closing
// quote (end), an escape, a multibyte character, or a refusal. It
// returns where the next byte to look at is.
func (e *Editor) stringSpecial(s []byte, k int) (next int, end bool) {
	switch c := s[k]; {
	case c == '"':
		return k + 1, true
	case c == '\\':
		if k+1 < len(s) && simpleEscape[s[k+1]] {
			return k + 2, false
		}
		e.sub = subEsc
	case c < 0x20:
		e.refuse("not valid JSON at byte %d: control character 0x%02x in a string (escape it)", e.pos(e.r+k), c)
		return k, false
	case c >= 0xc2 && c <= 0xdf && k+1 < len(s) && s[k+1]&0xc0 == 0x80: // é
		return k + 2, false
	case c >= 0xe1 && c <= 0xec && k+2 < len(s) && s[k+1]&0xc0 == 0x80 && s[k+2]&0xc0 == 0x80: // ✓
		return k + 3, false
	default:
		if _, size := utf8.DecodeRune(s[k:]); size > 1 {
			return k + size, false
		}
		if !e.utf8Lead(c) {
			e.refuse("invalid UTF-8 at byte %d", e.pos(e.r+k))
			return k, false
		}
	}
	// the rest of the escape or character a byte at a time, as when a read
	// cuts it: what goes out before a refusal is the same either way
	return k + 1, false
}

// plainByte and simpleEscape are byte classes: printable ASCII but '"'
// and '\'; what may follow a backslash but 'u'.
var plainByte, simpleEscape [256]bool

func init() {
	for c := 0x20; c < 0x80; c++ {
		plainByte[c] = c != '"' && c != '\\'
	}
	for _, c := range []byte(`"\/bfnrt`) {
		simpleEscape[c] = true
	}
}

// longPlainRun returns the length of a run of plain bytes (plainByte) at
// the start of s, or less: the quote and the backslash are searched for
// with the vectorised bytes.IndexByte, then what comes before them is
// checked for control and non-ASCII bytes 32 at a time (the caller goes
// on 8 at a time from where this stops).
func longPlainRun(s []byte) int {
	if q := bytes.IndexByte(s, '"'); q >= 0 {
		s = s[:q]
	}
	if b := bytes.IndexByte(s, '\\'); b >= 0 {
		s = s[:b]
	}
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+32 <= len(s); i += 32 {
		a := binary.LittleEndian.Uint64(s[i:])
		b := binary.LittleEndian.Uint64(s[i+8:])
		c := binary.LittleEndian.Uint64(s[i+16:])
		d := binary.LittleEndian.Uint64(s[i+24:])
		if ((a-lo*0x20)|a|(b-lo*0x20)|b|(c-lo*0x20)|c|(d-lo*0x20)|d)&hi != 0 {
			break
		}
	}
	return i
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f' }

// stringSub takes byte c (at s[i] of stringBytes) inside an escape or a
// UTF-8 sequence; it reports false when it refused c.
func (e *Editor) stringSub(c byte, i int) bool {
	switch e.sub {
	case subEsc:
		switch {
		case c == 'u':
			e.sub = subHex4
		case simpleEscape[c]:
			e.sub = subNone
		default:
			e.refuse("not valid JSON at byte %d: invalid escape in a string", e.pos(e.r+i-1))
			return false
		}
	case subUTF8:
		if c < e.u8lo || c > e.u8hi {
			e.refuse("invalid UTF-8 at byte %d", e.pos(e.r+i))
			return false
		}
		e.u8lo, e.u8hi = 0x80, 0xbf
		if e.u8need--; e.u8need == 0 {
			e.sub = subNone
		}
	default: // a hex digit of \uXXXX
		if !isHex(c) {
			e.refuse("not valid JSON at byte %d: invalid \\u escape in a string", e.pos(e.r+i))
			return false
		}
		e.sub--
	}
	return true
}

// utf8Lead starts a multibyte character at its lead byte c, or reports
// false for a byte no valid UTF-8 starts with (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF).
func (e *Editor) utf8Lead(c byte) bool {
	need, lo, hi := uint8(0), byte(0x80), byte(0xbf)
	switch {
	case c >= 0xc2 && c <= 0xdf:
		need = 1
	case c == 0xe0:
		need, lo = 2, 0xa0
	case c == 0xed:
		need, hi = 2, 0x9f
	case c >= 0xe1 && c <= 0xef:
		need = 2
	case c == 0xf0:
		need, lo = 3, 0x90
	case c >= 0xf1 && c <= 0xf3:
		need = 3
	case c == 0xf4:
		need, hi = 3, 0x8f
	default:
		return false
	}
	e.sub, e.u8need, e.u8lo, e.u8hi = subUTF8, need, lo, hi
	return true
}

// special8 has the high bit set in each byte of x that is '"', '\', below
// 0x20 or from 0x80, exactly for the lowest such byte: bytes above it
// may be flagged too (a borrow only runs upwards, and starts only at a
// '"' or a '\'), so the caller checks each candidate. ((x^'"')-1 also
// flags bytes from 0x80, which | x flags anyway.)
func special8(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"') // a zero byte where x has '"'
	b := x ^ (lo * '\\')
	// (- and | bind alike in Go: every difference is parenthesised)
	return ((q - lo) | (b - lo) | (x - lo*0x20) | x) & hi
}

// unescapeName appends to dst the name a JSON parser reads from raw, the
// bytes between a name's quotes (already validated); a lone surrogate
// reads as U+FFFD. dst has room: unescaping never lengthens.
func unescapeName(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if raw[i+1] != 'u' {
			dst = append(dst, "\"\\/\b\f\n\r\t"[indexByte(`"\/bfnrt`, raw[i+1])])
			i += 2
			continue
		}
		r := hex4(raw[i+2 : i+6])
		i += 6
		if utf16.IsSurrogate(r) && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
			if pair := utf16.DecodeRune(r, hex4(raw[i+2:i+6])); pair != utf8.RuneError {
				r = pair
				i += 6
			}
		}
		dst = utf8.AppendRune(dst, r) // a lone surrogate appends U+FFFD
	}
	return dst
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		v := rune(c - '0')
		if c > '9' {
			v = rune(c|0x20-'a') + 10
		}
		r = r<<4 | v
	}
	return r
}
