package caddymodule

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/bits"
	"sync/atomic"
)

// Body editing: a JSON request body (Chat Completions, Responses,
// Anthropic Messages) is edited as it streams upstream, in O(1) memory
// whatever its size and whatever the size of any one string in it (agents
// send the whole conversation every time, 0.25–5 MiB, sometimes a base64
// image of several MiB in one string).
//
// # API
//
//	ed := newBodyEditor(r.Body, bodyEditOptions{Attribution: true, User: &user, IncludeUsage: true})
//	r.Body = ed            // the upstream reads the edited body; Close closes the source
//	r.ContentLength = -1   // an edit changes the length: send it chunked
//	r.Header.Del("Content-Length")
//	...
//	res := ed.Result()     // once the upstream has read the body (res.Done)
//
// Wrap only a body that is meant to be JSON (a POST to an inference
// endpoint, no Content-Encoding: a compressed body is not JSON to the
// editor and passes through unedited, Malformed). Make the editor the
// source of the replay tee (replay.go), not the other way round, so that
// the copy kept for a replay is the edited body. The
// response side hides the usage-only chunk when IncludeUsage was asked
// and res.Streamed && !res.ClientUsage. An upstream answers after it has
// read the body, so the result is normally Done before the response
// starts; until Done it describes what was read so far.
//
// bodyEditor is an io.ReadCloser and nothing else (no WriterTo, so io.Copy
// cannot go around it to the source). Read never returns more than asked,
// works with any buffer size down to one byte, returns the source's errors
// (and io.EOF) as the source returned them and never an error of its own
// but errBodyEditorClosed after Close. Close closes the source; it may be
// called from another goroutine while a Read runs (net/http's transport
// does), and Result may be called from any goroutine at any time.
//
// # The edits
//
// Only the top-level object is edited; members are matched by name after
// JSON-unescaping it (`"us\u0065r"`) and case-insensitively with Unicode
// simple folding (strings.EqualFold: "USER", "ſtream"), because the
// upstream may be lenient (Go's encoding/json matches struct fields that
// way), and every occurrence of a duplicated name is edited (JSON parsers
// usually keep the last).
//
//   - Attribution (bodyEditOptions.Attribution): every top-level `user`
//     and every `providerOptions.gateway.user` gets the value User, as a
//     JSON string, whatever its original type; with a nil User they are
//     removed. Every `providerOptions.gateway.tags` is removed (the
//     proxy's tags go in a header, and AI Gateway merges body tags with
//     them), and so is `providerOptions.gateway.quotaEntityId` (it names
//     the budget a request is charged to). Nothing else in
//     providerOptions is touched, and a `gateway`
//     anywhere else (inside a message, or providerOptions not an object)
//     is not providerOptions.gateway of the top level.
//   - Usage (bodyEditOptions.IncludeUsage): a streamed request (its last
//     top-level `stream` is `true`) must carry
//     stream_options.include_usage: true. Since `stream_options` can come
//     before `stream`, a stream_options OBJECT is always made to carry it
//     (every include_usage member becomes `true`, and one is added at its
//     end when it has none): the member only means something with
//     stream:true, and a non-streamed request keeps the stream_options it
//     sent, so no upstream sees an object it would not have seen. A
//     stream_options that is NOT an object (null, a number...) is replaced
//     by {"include_usage":true} only when `stream` was already true before
//     it: a client sending "stream_options":null with stream:false must not
//     get an object (OpenAI refuses stream_options without stream). Finally,
//     if the request is streamed and the last stream_options of the output
//     does not carry include_usage (there was none, or the last was not an
//     object and came before stream:true),
//     `,"stream_options":{"include_usage":true}` is appended before the
//     top-level closing brace; in that last case the name appears twice and
//     parsers that keep the last (JSON.parse, encoding/json) read ours.
//
// Result reports whether the body was streamed, whether the CLIENT asked
// for usage itself (the last top-level stream_options was an object whose
// last include_usage was `true`; the response side hides the usage-only
// chunk from a client that did not), whether any byte was changed, and
// whether the body was malformed.
//
// A body that needs no edit comes out byte for byte, and so does every
// member that is not edited (whitespace, order, escapes, number spelling,
// duplicates, invalid UTF-8): a replaced value whose bytes already equal
// the replacement (a `user` already the proxy's, include_usage already
// `true`) counts as no edit. One exception, for hostile input only: in an
// object where a member can be removed (the top level with a nil User,
// providerOptions.gateway), the comma before a member is held back until
// the member's name is known, with at most bodyEditMaxHeldSpace bytes of
// whitespace after it; more whitespace than that goes out before the held
// comma instead of after it (same JSON, Edited is set).
//
// Malformed input (not JSON, not an object, truncated, trailing garbage)
// is not an error: from the byte where the editor sees the problem, the
// rest of the body flows through raw (what was already sent stays sent)
// and Result says Malformed. An empty body and a body whose first
// non-whitespace byte is not `{` (after a UTF-8 byte order mark, which is
// passed on) flow through untouched, Malformed. The
// editor only follows the structure it needs: inside values it does not
// edit it tracks strings (with their escapes) and bracket depth, as a
// counter (no recursion, no stack: 100k `[` cost nothing), and does not
// validate what a strict parser would refuse anyway (the upstream does).
//
// # Tokenizer: why a byte-level scanner and not jsontext
//
// encoding/json/jsontext (go-json-experiment/json) was measured first
// (bodyedit_jsontext_test.go, GOEXPERIMENT=jsonv2): its Decoder returns
// each token whole, so its buffer holds the whole of the largest string,
// and SkipValue buffers the whole value it skips. On a 2 MiB agent body
// with a 1 MiB base64 string, a token-by-token Decoder→Encoder copy
// allocated 5.4 MB per body (its Decoder buffer at 1 MiB) and a Decoder
// alone, skipping the top-level values, 4.2 MB; this scanner allocated
// 3.1 KB and ran 4–7 times faster (3.1 GB/s against 446 and 806 MB/s).
// With jsontext, memory per concurrent request follows the body and the
// sandbox's largest string (a 4 MiB image: 4+ MiB). It would also
// re-encode what it passes on unless the raw bytes were kept beside it,
// and its defaults refuse duplicate names and invalid UTF-8 that must
// pass through. So this scanner only tracks structure and captures the
// few small tokens it acts on: member names of the objects it edits
// (bounded: a raw name longer than bodyEditMaxName bytes cannot unescape
// to any name it looks for) and the small values of `stream` and
// `include_usage`. What is easy to get wrong is left to encoding/json:
// unescaping a captured name that has a backslash, and encoding User.
//
// Memory: one allocation per request of 3 KiB (the struct with its 2 KiB
// input buffer and its hold buffer) and two small ones to encode User;
// nothing grows with the body or with any value in it (a name with a
// backslash costs a short-lived allocation to unescape). Nothing is pooled: a body the transport may still read
// after Close belongs to its request only.

const (
	// bodyEditBufSize is the input buffer: how much of the source is read
	// at a time.
	bodyEditBufSize = 2048
	// bodyEditMaxName bounds a captured member name, raw (escaped) bytes
	// between the quotes. The longest name edited, "providerOptions", is
	// 15 characters; each can be written as a 6-byte \uXXXX escape, and
	// no character that folds to an ASCII letter needs a surrogate pair.
	bodyEditMaxName = 96
	// bodyEditMaxHeldSpace bounds the whitespace held back with a comma
	// (see the file comment).
	bodyEditMaxHeldSpace = 384
	bodyEditHoldSize     = 1 + bodyEditMaxHeldSpace + bodyEditMaxName + 2
)

// errBodyEditorClosed is what Read returns after Close.
var errBodyEditorClosed = errors.New("read on closed request body")

// bodyEditOptions says which edits to make. The zero value edits nothing
// (and still reports Streamed and ClientUsage).
type bodyEditOptions struct {
	// Attribution makes the body's attribution the proxy's: top-level
	// `user` and providerOptions.gateway.user become User, or are removed
	// when User is nil; providerOptions.gateway.tags is removed.
	Attribution bool
	User        *string
	// IncludeUsage makes a streamed request carry
	// stream_options.include_usage: true.
	IncludeUsage bool
}

// bodyEditResult is what the editor saw. Until Done, it describes the
// part of the body read so far.
type bodyEditResult struct {
	// Done: the source reached io.EOF; the result is final.
	Done bool
	// Edited: the output differs from the input.
	Edited bool
	// Malformed: the body is not a JSON object, or the editor stopped
	// at a syntax error and passed the rest through raw.
	Malformed bool
	// Streamed: the last top-level `stream` was `true`.
	Streamed bool
	// ClientUsage: the client itself asked for usage: its last top-level
	// stream_options was an object whose last include_usage was `true`.
	ClientUsage bool
}

// Scanner states.
type beState uint8

const (
	beBefore   beState = iota // whitespace before the top-level '{'
	beObjOpen                 // after an edited object's '{': whitespace, a name or '}'
	beObjComma                // after a ',' in an edited object: whitespace or a name
	beName                    // inside a member name, held back
	beNameLong                // inside a name too long to be one edited: passed on
	beColon                   // after a name: whitespace or ':'
	beValStart                // after ':': whitespace or a value
	beScalar                  // inside a number or literal member value
	beStr                     // inside a string (e.depth containers deep)
	beStrEsc                  // after a backslash in a string
	beNest                    // inside an array or object not edited, outside strings
	beAfterVal                // after a member value: whitespace, ',' or '}'
	beTrailing                // after the top-level '}': whitespace only
	beRaw                     // malformed or not an object: everything passes
)

// What to do with the current member.
type beAction uint8

const (
	actPass         beAction = iota
	actRemove                // drop the member (and a comma)
	actUser                  // replace the value with User
	actStream                // top-level stream: capture the value
	actProvider              // top-level providerOptions: edit if an object
	actGateway               // providerOptions.gateway: edit if an object
	actStreamOpts            // top-level stream_options
	actIncludeUsage          // stream_options.include_usage
)

// Kinds of object the editor edits.
type beKind uint8

const (
	kindTop beKind = iota
	kindProvider
	kindGateway
	kindStreamOpts
)

// beFrame is one edited object. Edited objects nest at most three deep:
// the top level, providerOptions, providerOptions.gateway.
type beFrame struct {
	kind beKind
	// canRemove: a member of this object can be removed, so a comma is
	// held back until the next member's name is known.
	canRemove bool
	// outHas: the output object has a member: the next one needs a comma.
	outHas bool
	// stream_options: an include_usage was seen (or added), and the last
	// one the client sent was `true`.
	iuSeen, iuTrue bool
}

// Constant output; pend slices these and never writes to them.
var (
	beTrue            = []byte("true")
	beStreamOptsValue = []byte(`{"include_usage":true}`)
	beAddStreamOpts   = []byte(`,"stream_options":{"include_usage":true}`)
	beAddIncludeUsage = []byte(`,"include_usage":true`)

	beNameUser      = []byte("user")
	beNameProvider  = []byte("providerOptions")
	beNameGateway   = []byte("gateway")
	beNameTags      = []byte("tags")
	beNameQuota     = []byte("quotaEntityId")
	beNameStream    = []byte("stream")
	beNameStreamOpt = []byte("stream_options")
	beNameInclude   = []byte("include_usage")
)

// bodyEditor edits a JSON request body as it streams; see the file
// comment. One per request, never reused.
type bodyEditor struct {
	src    io.ReadCloser
	opts   bodyEditOptions
	user   []byte // User, encoded
	closed atomic.Bool
	res    atomic.Uint32 // published bodyEditResult bits

	srcErr   error // the source's error, returned once the input is drained
	finished bool  // the end of input was handled

	in   [bodyEditBufSize]byte
	r, n int // in[r:n] is unread input

	pend []byte // output that goes before any further input

	// hold: a held-back comma, whitespace, and a member name from its
	// opening quote (at nameAt); nh bytes used.
	hold   [bodyEditHoldSize]byte
	nh     int
	nameAt int

	st     beState
	before int  // bytes before the top-level '{'
	bom    int  // bytes of a leading byte order mark seen
	esc    bool // a name's backslash escapes the next byte
	frames [3]beFrame
	nf     int
	depth  int // containers open inside a value not edited

	// The current member.
	act     beAction
	dropM   bool // whitespace and ':' of a removed member are dropped
	dropV   bool // the value is dropped (removed or replaced)
	capture bool
	tok     [5]byte // start of a captured scalar
	ntok    int
	cmp     []byte // replacement the dropped value is compared with
	cmpN    int
	cmpBad  bool

	streamTrue  bool
	soOK        bool // the last stream_options in the output carries include_usage:true
	clientUsage bool
	edited      bool
	malformed   bool
	done        bool
}

// newBodyEditor returns a reader of src edited as opts says.
func newBodyEditor(src io.ReadCloser, opts bodyEditOptions) *bodyEditor {
	e := &bodyEditor{src: src, opts: opts}
	if opts.Attribution && opts.User != nil {
		e.user, _ = json.Marshal(*opts.User) // a string always encodes
	}
	return e
}

// Result returns what the editor saw so far; final once Done.
func (e *bodyEditor) Result() bodyEditResult {
	b := e.res.Load()
	return bodyEditResult{
		Done:        b&1 != 0,
		Edited:      b&2 != 0,
		Malformed:   b&4 != 0,
		Streamed:    b&8 != 0,
		ClientUsage: b&16 != 0,
	}
}

func (e *bodyEditor) publish() {
	var b uint32
	for i, f := range [...]bool{e.done, e.edited, e.malformed, e.streamTrue, e.clientUsage} {
		if f {
			b |= 1 << i
		}
	}
	e.res.Store(b)
}

// Close closes the source. Reads after it fail.
func (e *bodyEditor) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	return e.src.Close()
}

// Read reads the edited body.
func (e *bodyEditor) Read(p []byte) (int, error) {
	if e.closed.Load() {
		return 0, errBodyEditorClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	defer e.publish()
	for {
		if n := e.fill(p); n > 0 {
			return n, nil
		}
		if e.srcErr != nil {
			if !e.finished {
				e.finish()
				continue
			}
			return 0, e.srcErr
		}
		if e.st == beRaw {
			// Nothing held or buffered: the rest flows straight through.
			n, err := e.src.Read(p)
			if err != nil {
				e.srcErr = err
				if n > 0 {
					return n, nil
				}
				continue
			}
			return n, nil
		}
		m, err := e.src.Read(e.in[:])
		e.r, e.n = 0, m
		if err != nil {
			e.srcErr = err
		} else if m == 0 {
			return 0, nil
		}
	}
}

// finish handles the end of the input: a body that ended anywhere but
// after its top-level object is malformed, and what was held goes out.
func (e *bodyEditor) finish() {
	e.finished = true
	if e.st != beTrailing && e.st != beRaw {
		e.setMalformed()
	}
	e.done = e.srcErr == io.EOF
}

// fill writes pending output and edited input into p.
func (e *bodyEditor) fill(p []byte) int {
	w := 0
	for w < len(p) {
		if len(e.pend) > 0 {
			c := copy(p[w:], e.pend)
			e.pend = e.pend[c:]
			w += c
			continue
		}
		if e.r >= e.n {
			break
		}
		w += e.scan(p[w:])
	}
	return w
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isScalarByte: a byte of a number or literal (loosely: the upstream
// validates them).
func isScalarByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
}

func isValueStart(c byte) bool {
	return c == '"' || c == '{' || c == '[' || c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n'
}

// scan consumes input from e.in[e.r:e.n] and writes output to out, until
// out is full, the input is used up, or pending output was set. It
// returns the number of bytes written.
func (e *bodyEditor) scan(out []byte) int {
	in := e.in[:e.n]
	r, w := e.r, 0
	for r < len(in) && w < len(out) && len(e.pend) == 0 {
		c := in[r]
		switch e.st {
		case beRaw:
			k := copy(out[w:], in[r:])
			r += k
			w += k

		case beBefore:
			switch {
			case e.bom < 3 && e.bom == e.before && c == "\xef\xbb\xbf"[e.bom]:
				// A UTF-8 byte order mark, which RFC 8259 lets a parser
				// ignore (Python's does): pass it on and edit what follows.
				out[w] = c
				w++
				r++
				e.bom++
				e.before++
			case e.bom > 0 && e.bom < 3:
				e.setMalformed()
			case isJSONSpace(c):
				e.before++
				out[w] = c
				w++
				r++
			case c == '{':
				out[w] = c
				w++
				r++
				e.push(kindTop)
			default:
				e.setMalformed()
			}

		case beObjOpen, beAfterVal:
			switch {
			case isJSONSpace(c):
				out[w] = c
				w++
				r++
			case c == '}':
				if e.beforeClose() {
					continue // the insertion goes out first
				}
				out[w] = c
				w++
				r++
				e.pop()
			case c == ',' && e.st == beAfterVal:
				r++
				f := &e.frames[e.nf-1]
				switch {
				case !f.canRemove:
					out[w] = c
					w++
				case f.outHas:
					e.hold[0] = c
					e.nh = 1
				default:
					// Every member before it was removed: so is its comma.
				}
				e.st = beObjComma
			case c == '"' && e.st == beObjOpen:
				r++
				e.startName()
			default:
				e.setMalformed()
			}

		case beObjComma:
			switch {
			case isJSONSpace(c):
				switch {
				case e.nh == 0:
					out[w] = c
					w++
					r++
				case e.nh > bodyEditMaxHeldSpace:
					// Too much whitespace to hold: it goes out before
					// the comma, which stays held.
					e.pend = e.hold[1:e.nh]
					e.nh = 1
					e.edited = true
				default:
					e.hold[e.nh] = c
					e.nh++
					r++
				}
			case c == '"':
				r++
				e.startName()
			default:
				e.setMalformed()
			}

		case beName:
			if e.nh-e.nameAt > bodyEditMaxName+1 {
				// Too long to be a name the editor looks for.
				e.pend = e.hold[:e.nh]
				e.nh = 0
				e.frames[e.nf-1].outHas = true
				e.act, e.dropM = actPass, false
				e.st = beNameLong
				break
			}
			e.hold[e.nh] = c
			e.nh++
			r++
			switch {
			case e.esc:
				e.esc = false
			case c == '\\':
				e.esc = true
			case c == '"':
				e.endName()
			}

		case beNameLong:
			if e.esc {
				out[w] = c
				w++
				r++
				e.esc = false
				break
			}
			end := min(len(in), r+len(out)-w)
			j, quote, esc := scanString(in[r:end])
			if quote {
				j++
				e.st = beColon
			}
			e.esc = esc
			copy(out[w:], in[r:r+j])
			w += j
			r += j

		case beColon:
			switch {
			case isJSONSpace(c) || c == ':':
				if !e.dropM {
					out[w] = c
					w++
				}
				r++
				if c == ':' {
					e.st = beValStart
				}
			default:
				e.setMalformed()
			}

		case beValStart:
			if isJSONSpace(c) {
				if !e.dropM {
					out[w] = c
					w++
				}
				r++
				break
			}
			if !isValueStart(c) {
				e.setMalformed()
				break
			}
			if e.startValue(c) {
				out[w] = c // an edited object's '{'
				w++
				r++
				break
			}
			if e.dropV {
				e.compare(in[r : r+1])
			} else {
				out[w] = c
				w++
			}
			r++
			switch c {
			case '"':
				e.depth = 0
				e.st = beStr
			case '{', '[':
				e.depth = 1
				e.st = beNest
			default:
				e.st = beScalar
				e.captureByte(c)
			}

		case beScalar:
			switch {
			case isScalarByte(c):
				if e.dropV {
					e.compare(in[r : r+1])
				} else {
					out[w] = c
					w++
				}
				r++
				e.captureByte(c)
			case isJSONSpace(c) || c == ',' || c == '}':
				e.endValue()
			default:
				e.setMalformed()
			}

		case beStr:
			end := len(in)
			if !e.dropV {
				end = min(end, r+len(out)-w)
			}
			j, quote, esc := scanString(in[r:end])
			if quote {
				j++
			}
			if e.dropV {
				e.compare(in[r : r+j])
			} else {
				copy(out[w:], in[r:r+j])
				w += j
			}
			r += j
			switch {
			case esc:
				e.st = beStrEsc
			case !quote:
			case e.depth == 0:
				e.endValue()
			default:
				e.st = beNest
			}

		case beStrEsc:
			if e.dropV {
				e.compare(in[r : r+1])
			} else {
				out[w] = c
				w++
			}
			r++
			e.st = beStr

		case beNest:
			end := len(in)
			if !e.dropV {
				end = min(end, r+len(out)-w)
			}
			j, next := r, beNest
		nest:
			for ; j < end; j++ {
				switch in[j] {
				case '"':
					j++
					next = beStr
					break nest
				case '{', '[':
					e.depth++
				case '}', ']':
					e.depth--
					if e.depth == 0 {
						j++
						next = beAfterVal
						break nest
					}
				}
			}
			if e.dropV {
				e.compare(in[r:j])
			} else {
				copy(out[w:], in[r:j])
				w += j - r
			}
			r = j
			switch next {
			case beStr:
				e.st = beStr
			case beAfterVal:
				e.endValue()
			}

		case beTrailing:
			if isJSONSpace(c) {
				out[w] = c
				w++
				r++
				break
			}
			e.setMalformed()
		}
	}
	e.r = r
	return w
}

// scanString scans string content in s, escapes included. It stops at
// the closing quote (quote: s[n] is it) or at the end of s (esc: s ends in
// a backslash whose escaped byte is still to come). Text with escapes
// every few bytes (source code in a tool result) is searched 8 bytes at a
// time; after 64 bytes without a quote or backslash (base64), the
// vectorised bytes.IndexByte takes over.
func scanString(s []byte) (n int, quote, esc bool) {
	i, clean := 0, 0
	for i < len(s) {
		switch {
		case clean >= 64:
			rest := s[i:]
			end := len(rest)
			if k := bytes.IndexByte(rest, '\\'); k >= 0 {
				end = k
			}
			if q := bytes.IndexByte(rest[:end], '"'); q >= 0 {
				return i + q, true, false
			}
			i += end
			clean = 0
			if i == len(s) {
				return i, false, false
			}
		case i+8 <= len(s):
			x := binary.LittleEndian.Uint64(s[i:])
			m := swarHas(x, '"') | swarHas(x, '\\')
			if m == 0 {
				i += 8
				clean += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3 // the first match is exact
			clean = 0
		}
		switch s[i] {
		case '"':
			return i, true, false
		case '\\':
			if i+1 == len(s) {
				return len(s), false, true
			}
			i += 2
		default:
			i++
		}
	}
	return len(s), false, false
}

// swarHas has the high bit set in each byte of x equal to b, exactly for
// the lowest such byte (bytes above a match may be flagged too).
func swarHas(x uint64, b byte) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	y := x ^ (lo * uint64(b))
	return (y - lo) &^ y & hi
}

func (e *bodyEditor) setMalformed() {
	e.malformed = true
	if e.cmp != nil {
		e.edited = true // the replacement went out; the value did not end
		e.cmp = nil
	}
	e.st = beRaw
	if e.nh > 0 {
		e.pend = e.hold[:e.nh]
		e.nh = 0
	}
}

func (e *bodyEditor) push(k beKind) {
	f := &e.frames[e.nf]
	*f = beFrame{kind: k}
	switch k {
	case kindTop:
		f.canRemove = e.opts.Attribution && e.opts.User == nil
	case kindGateway:
		f.canRemove = true // tags
	}
	e.nf++
	e.act = actPass
	e.st = beObjOpen
}

// pop ends the current edited object after its '}' went out.
func (e *bodyEditor) pop() {
	e.nf--
	f := &e.frames[e.nf]
	if f.kind == kindStreamOpts {
		e.clientUsage = f.iuTrue
		e.soOK = e.opts.IncludeUsage
	}
	if e.nf == 0 {
		e.st = beTrailing
		return
	}
	e.act, e.dropM, e.dropV = actPass, false, false
	e.st = beAfterVal
}

// beforeClose sets what goes before an edited object's '}'; it reports
// whether it set anything.
func (e *bodyEditor) beforeClose() bool {
	f := &e.frames[e.nf-1]
	var add []byte
	switch {
	case f.kind == kindStreamOpts && e.opts.IncludeUsage && !f.iuSeen:
		f.iuSeen = true
		add = beAddIncludeUsage
	case f.kind == kindTop && e.opts.IncludeUsage && e.streamTrue && !e.soOK:
		e.soOK = true
		add = beAddStreamOpts
	default:
		return false
	}
	if !f.outHas {
		add = add[1:] // no comma
	}
	f.outHas = true
	e.pend = add
	e.edited = true
	return true
}

func (e *bodyEditor) startName() {
	e.nameAt = e.nh
	e.hold[e.nh] = '"'
	e.nh++
	e.esc = false
	e.st = beName
}

// endName decides what to do with the member whose name (with its
// quotes) is held at hold[nameAt:nh].
func (e *bodyEditor) endName() {
	f := &e.frames[e.nf-1]
	e.act = e.match(f.kind, e.hold[e.nameAt:e.nh])
	e.st = beColon
	if e.act == actRemove {
		e.nh = 0 // the held comma goes too
		e.dropM, e.dropV = true, true
		e.edited = true
		return
	}
	e.dropM = false
	e.pend = e.hold[:e.nh]
	e.nh = 0
	f.outHas = true
}

// match says what to do with a member of an object of kind k, by its
// quoted raw name.
func (e *bodyEditor) match(k beKind, quoted []byte) beAction {
	raw := quoted[1 : len(quoted)-1]
	var name []byte
	if bytes.IndexByte(raw, '\\') < 0 {
		name = raw
	} else {
		name = unescapeName(quoted)
	}
	attr := e.opts.Attribution
	user := actUser
	if e.opts.User == nil {
		user = actRemove
	}
	switch k {
	case kindTop:
		switch {
		case attr && bytes.EqualFold(name, beNameUser):
			return user
		case attr && bytes.EqualFold(name, beNameProvider):
			return actProvider
		case bytes.EqualFold(name, beNameStream):
			return actStream
		case bytes.EqualFold(name, beNameStreamOpt):
			return actStreamOpts
		}
	case kindProvider:
		if bytes.EqualFold(name, beNameGateway) {
			return actGateway
		}
	case kindGateway:
		switch {
		case bytes.EqualFold(name, beNameUser):
			return user
		case bytes.EqualFold(name, beNameTags), bytes.EqualFold(name, beNameQuota):
			return actRemove
		}
	case kindStreamOpts:
		if bytes.EqualFold(name, beNameInclude) {
			return actIncludeUsage
		}
	}
	return actPass
}

// unescapeName returns the name a JSON parser reads from a quoted name
// with escapes, or nil. A name a strict parser refuses is read as a
// lenient one would (JSON5 reads an unknown escape \X as X), since the
// upstream may be lenient; the strict one refuses the body anyway.
func unescapeName(quoted []byte) []byte {
	var s string
	if json.Unmarshal(quoted, &s) == nil {
		return []byte(s)
	}
	fixed := make([]byte, 0, len(quoted))
	for i := 0; i < len(quoted); i++ {
		c := quoted[i]
		if c == '\\' && i+2 < len(quoted) {
			switch quoted[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't', 'u':
				fixed = append(fixed, c, quoted[i+1])
				i++
			}
			continue
		}
		fixed = append(fixed, c)
	}
	if json.Unmarshal(fixed, &s) == nil {
		return []byte(s)
	}
	return nil
}

// startValue begins the current member's value at its first byte c. It
// returns true when the value is an object the editor edits (its '{' is
// then passed on by the caller); otherwise it sets dropV, the
// replacement and the capture for the value.
func (e *bodyEditor) startValue(c byte) bool {
	e.ntok, e.capture = 0, false
	switch e.act {
	case actProvider, actGateway:
		if c == '{' {
			if e.act == actProvider {
				e.push(kindProvider)
			} else {
				e.push(kindGateway)
			}
			return true
		}
	case actStreamOpts:
		if c == '{' {
			e.push(kindStreamOpts)
			return true
		}
		e.clientUsage = false
		e.soOK = false
		if e.opts.IncludeUsage && e.streamTrue {
			e.replace(beStreamOptsValue)
			e.soOK = true
		}
	case actUser:
		e.replace(e.user)
	case actIncludeUsage:
		e.capture = true
		if e.opts.IncludeUsage {
			e.replace(beTrue)
		}
	case actStream:
		e.capture = true
	}
	return false
}

// replace puts b out in place of the current value, which is dropped and
// compared with b: equal bytes are no edit.
func (e *bodyEditor) replace(b []byte) {
	e.pend = b
	e.dropV = true
	e.cmp, e.cmpN, e.cmpBad = b, 0, false
}

func (e *bodyEditor) compare(b []byte) {
	if e.cmp == nil || e.cmpBad {
		return
	}
	if e.cmpN+len(b) > len(e.cmp) || !bytes.Equal(e.cmp[e.cmpN:e.cmpN+len(b)], b) {
		e.cmpBad = true
		return
	}
	e.cmpN += len(b)
}

func (e *bodyEditor) captureByte(c byte) {
	if e.capture && e.ntok < len(e.tok) {
		e.tok[e.ntok] = c
	}
	e.ntok++
}

// endValue ends the current member after its value.
func (e *bodyEditor) endValue() {
	if e.cmp != nil {
		if e.cmpBad || e.cmpN != len(e.cmp) {
			e.edited = true
		}
		e.cmp = nil
	}
	isTrue := e.capture && e.ntok == 4 && string(e.tok[:4]) == "true"
	switch e.act {
	case actStream:
		e.streamTrue = isTrue
	case actIncludeUsage:
		f := &e.frames[e.nf-1]
		f.iuSeen = true
		f.iuTrue = isTrue
	}
	e.act, e.dropM, e.dropV, e.capture = actPass, false, false, false
	e.st = beAfterVal
}
