package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
)

// Package jsonbody owns the proxy's one reading of JSON: the request
// body, read strictly and edited as it streams upstream ([Editor]), and
// the response, whose token usage is read as it streams to the client
// ([UsageScanner]). Bytes in, bytes out, plus what was read.
//
// It never decides what to do with what it read (attribution values,
// limits and metrics are the caller's), never buffers a body whole, never
// logs, and knows nothing of HTTP handlers: a response is a status, its
// header and the bytes written.
//
// # The request body
//
// A JSON request body (Chat Completions, Responses, Anthropic Messages,
// embeddings...) is read strictly and edited as it streams upstream, in
// O(1) memory whatever its size and whatever the size of any one string
// in it (agents send the whole conversation every time, 0.25–5 MiB,
// sometimes a base64 image of several MiB in one string).
//
//	ed := jsonbody.NewEditor(r.Body, jsonbody.Options{Attribution: true, User: &user, IncludeUsage: true})
//	r.Body = ed            // the upstream reads the edited body; Close closes the source
//	r.ContentLength = -1   // an edit changes the length: send it chunked
//	...
//	res := ed.Result()     // once the upstream has read the body (res.Done), or res.Refused
//
// (The module reads a small body whole through the editor before the
// upstream is called, and sends what came out with its exact length.)
// Make the editor the source of the replay tee (package replay), not the
// other way round, so that the copy kept for a replay is the edited body.
// The response side hides the usage-only chunk ([UsageOnlyChunk]) when
// IncludeUsage was asked and res.Streamed && !res.ClientUsage. An
// upstream answers after it has read the body, so the result is normally
// Done before the response starts; until Done it describes what was read
// so far.
//
// Editor is an io.ReadCloser and nothing else (no WriterTo, so io.Copy
// cannot go around it to the source). Read never returns more than asked,
// works with any buffer size down to one byte, and returns the source's
// errors as the source returned them. Its own errors are [ErrClosed]
// after Close, and a *[Refusal] (errors.Is [ErrRefused]) for a body it
// refuses; it never returns io.EOF for a refused body, so a transport
// never ends the upstream body (no chunked terminator, a short
// Content-Length): the upstream request is aborted and no inference
// runs. Close closes the source; it may be called from another goroutine
// while a Read runs (net/http's transport does), and Result and Refusal
// may be called from any goroutine at any time.
//
// # One reading: what is refused
//
// The editor passes on only a body that every JSON parser reads the way
// the proxy does (the gateway's JSON.parse, Python's json, Go's
// encoding/json), and refuses the rest at the first byte where it sees the
// problem, which it never passes on (what came before it may have gone
// out: the upstream request is then aborted). Refused:
//
//   - anything but exactly one JSON object, validated by RFC 8259's
//     grammar in full: strings (valid escapes, no raw control
//     characters), numbers, literals, nesting, whitespace; nothing but
//     whitespace after it. An empty body, two values, trailing garbage,
//     a body that ends early. A UTF-8 byte order mark before the object is
//     allowed and passed on (RFC 8259 lets a parser ignore it).
//   - invalid UTF-8 anywhere (a character may straddle two reads).
//     Escaped lone surrogates (`\ud800`) are grammatical JSON and pass.
//   - nesting deeper than bodyEditMaxDepth (Python's json stops near
//     there). The nesting is a bit stack, one bit per level: no
//     recursion, no allocation.
//   - in an object the editor inspects, a member whose name equals a
//     controlled name only after unescaping (`"str\u0065am"`) or with
//     Unicode simple case folding (`"Stream"`, `"ſtream"`), or that repeats
//     one: parsers disagree on which of two members wins, and some match
//     names without regard to case. A controlled member must be written as
//     the exact bytes of its name, once. The inspected objects and their
//     controlled names are in beControlledNames: the top level,
//     providerOptions and providerOptions.gateway when they are objects,
//     and stream_options when it is one. They are inspected whatever the
//     options ask.
//   - a top-level `stream` that is not `true`, `false` or `null`: only
//     `true` is a stream, and `"true"` or `1` would be guessed at.
//
// An exact single member is read exactly as JSON says.
//
// # The edits
//
//   - Attribution (Options.Attribution): the top-level `user` and
//     `providerOptions.gateway.user` get the value User, as a JSON string,
//     whatever their original type; with a nil User they are removed.
//     `providerOptions.gateway.tags` is removed (the proxy's tags go in a
//     header, and AI Gateway merges body tags with them), and so is
//     `providerOptions.gateway.quotaEntityId` (it names the budget a
//     request is charged to). Nothing else in providerOptions is touched,
//     and a `gateway` anywhere else (inside a message, or providerOptions
//     not an object) is not providerOptions.gateway of the top level.
//   - Usage (Options.IncludeUsage): a streamed request (its
//     `stream` is `true`) must carry stream_options.include_usage: true.
//     Since `stream_options` can come before `stream`, a stream_options
//     OBJECT is always made to carry it (its include_usage becomes `true`,
//     or one is added at its end): the member only means something with
//     stream:true, and a non-streamed request keeps the stream_options it
//     sent, so no upstream sees an object it would not have seen. A
//     stream_options that is NOT an object (null, a number...) is replaced
//     by {"include_usage":true} only when `stream` was already true before
//     it: a client sending "stream_options":null with stream:false must not
//     get an object (OpenAI refuses stream_options without stream).
//     Finally, if the request is streamed and its stream_options does not
//     carry include_usage (there was none, or it was not an object and came
//     before stream:true), `,"stream_options":{"include_usage":true}` is
//     appended before the top-level closing brace; in that last case the
//     name appears twice in the output, and parsers that keep the last
//     (JSON.parse, encoding/json) read ours.
//
// Result reports whether the body was streamed, whether the CLIENT asked
// for usage itself (its stream_options was an object whose include_usage
// was `true`; the response side hides the usage-only chunk from a client
// that did not), whether any byte was changed, and whether the body was
// refused.
//
// A body that needs no edit comes out byte for byte, and so does every
// member that is not edited (whitespace, order, escapes, number spelling):
// a replaced value whose bytes already equal the replacement (a `user`
// already the proxy's, include_usage already `true`) counts as no edit.
// One exception: in an object where a member can be removed (the top
// level with a nil User, providerOptions.gateway with Attribution), the
// comma before a member is held back until the member's name is known,
// with at most bodyEditMaxHeldSpace bytes of whitespace after it; more
// whitespace than that goes out before the held comma instead of after it
// (same JSON, Edited is set). A member name in an inspected object is
// held back until it ends (at most bodyEditMaxName bytes; a longer one
// cannot be a controlled name and streams), so a refused name never goes
// out.
//
// # Tokenizer: why a byte-level scanner and not jsontext
//
// encoding/json/jsontext (go-json-experiment/json) was measured first
// (edit_jsontext_test.go, GOEXPERIMENT=jsonv2): its Decoder returns
// each token whole, so its buffer holds the whole of the largest string,
// and SkipValue buffers the whole value it skips. On a 2 MiB agent body
// with a 1 MiB base64 string, a token-by-token Decoder→Encoder copy
// allocated 5.4 MB per body (its Decoder buffer at 1 MiB) and a Decoder
// alone, skipping the top-level values, 4.2 MB; the scanner allocated
// 3.1 KB and ran 4–7 times faster. With jsontext, memory per concurrent
// request follows the body and the sandbox's largest string (a 4 MiB
// image: 4+ MiB). It would also re-encode what it passes on unless the
// raw bytes were kept beside it. So the scanner (edit_scan.go, one
// function per piece of RFC 8259's grammar) validates as it streams and
// captures only member names of the inspected objects (bounded). Strings,
// most of any body, are checked 8 bytes at a time for a quote, a
// backslash, a control byte or a non-ASCII byte together; only non-ASCII
// text takes the slower path, one byte at a time through a UTF-8
// automaton that carries over from one read to the next.
//
// Memory: one allocation per request of about 3 KiB (the struct with its
// 2 KiB input buffer, its hold buffer and its nesting bits) and two small
// ones to encode User; nothing grows with the body or with any value in
// it. A refusal allocates its message. Nothing is pooled: a body the
// transport may still read after Close belongs to its request only.

const (
	// bodyEditBufSize is the input buffer: how much of the source is read
	// at a time.
	bodyEditBufSize = 2048
	// bodyEditMaxName bounds a captured member name, raw (escaped) bytes
	// between the quotes: the longest controlled name, each of its
	// characters written as a 6-byte \uXXXX escape (no character that
	// folds to an ASCII letter needs a surrogate pair). A longer name
	// cannot be one.
	bodyEditMaxName = 6 * bodyEditLongestName
	// bodyEditMaxHeldSpace bounds the whitespace held back with a comma
	// (see the file comment).
	bodyEditMaxHeldSpace = 384
	bodyEditHoldSize     = 1 + bodyEditMaxHeldSpace + bodyEditMaxName + 2
	// bodyEditMaxDepth bounds the nesting of arrays and objects.
	bodyEditMaxDepth = 1000
)

// ErrClosed is what Read returns after Close.
var ErrClosed = errors.New("read on closed request body")

// ErrRefused is what every refusal of the editor is (errors.Is).
var ErrRefused = errors.New("request body refused")

// Refusal is why the editor refused a body: a short message a client
// may see (it names the member or the problem and the byte offset, and
// clips what it quotes of the body).
type Refusal struct{ msg string }

func (r *Refusal) Error() string { return "request body: " + r.msg }

// Is makes every Refusal ErrRefused for errors.Is.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

// Reason is the refusal's message without the "request body: " that
// Error puts before it (for a log line's reason field).
func (r *Refusal) Reason() string { return r.msg }

// Options says which edits to make. The zero value edits nothing
// (and still reads strictly, and reports Streamed and ClientUsage).
type Options struct {
	// Attribution makes the body's attribution the proxy's: top-level
	// `user` and providerOptions.gateway.user become User, or are removed
	// when User is nil; providerOptions.gateway.tags and .quotaEntityId
	// are removed.
	Attribution bool
	User        *string
	// IncludeUsage makes a streamed request carry
	// stream_options.include_usage: true.
	IncludeUsage bool
}

// Result is what the editor saw. Until Done (or Refused), it
// describes the part of the body read so far.
type Result struct {
	// Done: the source reached io.EOF after one whole JSON object; the
	// result is final.
	Done bool
	// Edited: the output differs from the input.
	Edited bool
	// Refused: the editor refused the body (see Refusal); final.
	Refused bool
	// Streamed: the top-level `stream` was `true`.
	Streamed bool
	// ClientUsage: the client itself asked for usage: its top-level
	// stream_options was an object whose include_usage was `true`.
	ClientUsage bool
}

// Editor reads and edits a JSON request body as it streams; see the
// file comment. One per request, never reused.
type Editor struct {
	src     io.ReadCloser
	opts    Options
	user    []byte // User, encoded
	closed  atomic.Bool
	res     atomic.Uint32 // published bodyEditResult bits
	refusal atomic.Pointer[Refusal]

	srcErr   error // the source's error, returned once the input is drained
	finished bool  // the end of input was handled
	err      error // the refusal, returned once the output before it is out

	in   [bodyEditBufSize]byte
	r, n int
	off  int64 // offset in the body of in[0]

	pend []byte // output that goes before any further input

	// The output of the current scan: out[:w] is written.
	out  []byte
	w    int
	mode beMode

	// hold: a held-back comma, whitespace, and a member name from its
	// opening quote (at nameAt, body offset namePos); nh bytes used.
	hold    [bodyEditHoldSize]byte
	nh      int
	nameAt  int
	namePos int64
	nameBuf [bodyEditMaxName]byte // an escaped name, unescaped

	beScanState

	frames [4]beFrame // the inspected objects open, outermost first
	nf     int

	// The current member of the innermost inspected object.
	act    beAction
	vfirst byte   // the first byte of its value
	cmp    []byte // replacement the dropped value is compared with
	cmpN   int
	cmpBad bool

	streamTrue  bool
	soOK        bool // the stream_options in the output carries include_usage:true
	clientUsage bool
	edited      bool
	done        bool
}

// NewEditor returns a reader of src edited as opts says.
func NewEditor(src io.ReadCloser, opts Options) *Editor {
	e := &Editor{src: src, opts: opts}
	if opts.Attribution && opts.User != nil {
		e.user, _ = json.Marshal(*opts.User) // a string always encodes
	}
	return e
}

// Result returns what the editor saw so far; final once Done or Refused.
func (e *Editor) Result() Result {
	b := e.res.Load()
	return Result{
		Done:        b&1 != 0,
		Edited:      b&2 != 0,
		Refused:     b&4 != 0,
		Streamed:    b&8 != 0,
		ClientUsage: b&16 != 0,
	}
}

// Refusal returns why the body was refused, or nil.
func (e *Editor) Refusal() *Refusal { return e.refusal.Load() }

func (e *Editor) publish() {
	var b uint32
	for i, f := range [...]bool{e.done, e.edited, e.err != nil, e.streamTrue, e.clientUsage} {
		if f {
			b |= 1 << i
		}
	}
	e.res.Store(b)
}

// Close closes the source. Reads after it fail.
func (e *Editor) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	return e.src.Close()
}

// Read reads the edited body.
func (e *Editor) Read(p []byte) (int, error) {
	if e.closed.Load() {
		return 0, ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	defer e.publish()
	for {
		if n := e.fill(p); n > 0 {
			return n, nil
		}
		if e.err != nil {
			return 0, e.err
		}
		if e.srcErr != nil {
			if !e.finished {
				e.finish()
				continue
			}
			return 0, e.srcErr
		}
		m, err := e.src.Read(e.in[:])
		e.off += int64(e.n)
		e.r, e.n = 0, m
		if err != nil {
			e.srcErr = err
		} else if m == 0 {
			return 0, nil
		}
	}
}

// finish handles the end of the input: a body that ended anywhere but
// after its top-level object is refused.
func (e *Editor) finish() {
	e.finished = true
	if e.srcErr != io.EOF || e.err != nil {
		return
	}
	switch e.st {
	case stTrailing:
		e.done = true
	case stBefore:
		e.refuse("the body is empty; send one JSON object")
	default:
		e.refuse("the body ends before its JSON value does (at byte %d)", e.off+int64(e.n))
	}
}

// fill writes pending output and edited input into p.
func (e *Editor) fill(p []byte) int {
	w := 0
	for w < len(p) {
		if len(e.pend) > 0 {
			c := copy(p[w:], e.pend)
			e.pend = e.pend[c:]
			w += c
			continue
		}
		if e.r >= e.n || e.err != nil {
			break
		}
		w += e.scan(p[w:])
	}
	return w
}

// refuse refuses the body where the scanner is: nothing from there on,
// nor anything held, goes out. format's arguments are the caller's,
// already clipped.
func (e *Editor) refuse(format string, args ...any) {
	if e.err != nil {
		return
	}
	ref := &Refusal{msg: fmt.Sprintf(format, args...)}
	e.err = ref
	e.refusal.Store(ref)
	e.st = stRefused
	e.pend, e.nh = nil, 0
}

// pos is the offset in the body of e.in[i].
func (e *Editor) pos(i int) int64 { return e.off + int64(i) }

// Output modes: where the bytes the scanner consumes go.
type beMode uint8

const (
	modeOut  beMode = iota // to the output
	modeHold               // held back (a comma, whitespace, a member name)
	modeDrop               // dropped (a removed member, a replaced value), compared with cmp
)

// take consumes n input bytes in the current mode. The caller has made
// sure they fit: in out[w:] (avail) or in the hold.
func (e *Editor) take(n int) {
	b := e.in[e.r : e.r+n]
	e.r += n
	switch {
	case e.mode == modeOut && n == 1: // most structure: no call to memmove
		e.out[e.w] = b[0]
		e.w++
	case e.mode == modeOut:
		e.w += copy(e.out[e.w:], b)
	case e.mode == modeHold:
		e.nh += copy(e.hold[e.nh:], b)
	default:
		e.compare(b)
	}
}

// avail is the unread input the current mode has room for.
func (e *Editor) avail() []byte {
	end := e.n
	if e.mode == modeOut {
		end = min(end, e.r+len(e.out)-e.w)
	}
	return e.in[e.r:end]
}

// What to do with the current member of an inspected object.
type beAction uint8

const (
	actPass         beAction = iota
	actRemove                // drop the member (and a comma)
	actUser                  // replace the value with User
	actStream                // top-level stream: true, false or null
	actProvider              // top-level providerOptions: inspected if an object
	actGateway               // providerOptions.gateway: inspected if an object
	actStreamOpts            // top-level stream_options
	actIncludeUsage          // stream_options.include_usage
)

// Kinds of inspected object.
type beKind uint8

const (
	kindTop beKind = iota
	kindProvider
	kindGateway
	kindStreamOpts
)

// beFrame is one inspected object. They nest at most three deep: the top
// level, providerOptions, providerOptions.gateway.
type beFrame struct {
	kind beKind
	// canRemove: a member of this object can be removed, so a comma is
	// held back until the next member's name is known.
	canRemove bool
	// outHas: the output object has a member: the next one needs a comma.
	outHas bool
	// seen: the controlled names met, by index in beControlledNames.
	seen uint16
	// stream_options: an include_usage was seen (or added), and it was
	// `true`.
	iuSeen, iuTrue bool
}

// beControlled is a controlled name of an inspected object and what the
// editor does with its member.
type beControlled struct {
	name []byte
	act  beAction
}

// bodyEditLongestName is the length of the longest controlled name,
// max_completion_tokens (a test holds it to the list).
const bodyEditLongestName = 21

// beControlledNames are, per kind of inspected object, the names a
// client must write exactly and once. model and the output caps are read
// by nothing yet, but will be (budgets): their variants are refused now.
var beControlledNames = [...][]beControlled{
	kindTop: {
		{[]byte("stream"), actStream},
		{[]byte("stream_options"), actStreamOpts},
		{[]byte("user"), actUser},
		{[]byte("providerOptions"), actProvider},
		{[]byte("model"), actPass},
		{[]byte("max_tokens"), actPass},
		{[]byte("max_completion_tokens"), actPass},
		{[]byte("max_output_tokens"), actPass},
	},
	kindProvider: {
		{[]byte("gateway"), actGateway},
	},
	kindGateway: {
		{[]byte("user"), actUser},
		{[]byte("tags"), actRemove},
		{[]byte("quotaEntityId"), actRemove},
		{[]byte("models"), actPass},
		{[]byte("order"), actPass},
	},
	kindStreamOpts: {
		{[]byte("include_usage"), actIncludeUsage},
	},
}

// beKindWhere names an inspected object in a refusal.
var beKindWhere = [...]string{
	kindTop:        "",
	kindProvider:   " in providerOptions",
	kindGateway:    " in providerOptions.gateway",
	kindStreamOpts: " in stream_options",
}

// Constant output; pend slices these and never writes to them.
var (
	beTrue            = []byte("true")
	beStreamOptsValue = []byte(`{"include_usage":true}`)
	beAddStreamOpts   = []byte(`,"stream_options":{"include_usage":true}`)
	beAddIncludeUsage = []byte(`,"include_usage":true`)
)

// push opens an inspected object of kind k, whose '{' went out.
func (e *Editor) push(k beKind) {
	f := &e.frames[e.nf]
	*f = beFrame{kind: k}
	switch k {
	case kindTop:
		f.canRemove = e.opts.Attribution && e.opts.User == nil
	case kindGateway:
		f.canRemove = e.opts.Attribution // tags, quotaEntityId
	}
	e.nf++
	e.act = actPass
}

// pop ends the innermost inspected object after its '}' went out.
func (e *Editor) pop() {
	e.nf--
	if f := &e.frames[e.nf]; f.kind == kindStreamOpts {
		e.clientUsage = f.iuTrue
		e.soOK = e.opts.IncludeUsage
	}
}

// beforeClose sets what goes before an inspected object's '}'; it
// reports whether it set anything.
func (e *Editor) beforeClose() bool {
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

// endName decides what to do with the member whose name (with its
// quotes) is held at hold[nameAt:nh], or refuses it.
func (e *Editor) endName() {
	f := &e.frames[e.nf-1]
	act, ok := e.match(f)
	if !ok {
		return
	}
	e.act = act
	e.st = stColon
	if act == actRemove {
		e.nh = 0 // the held comma goes too
		e.mode = modeDrop
		e.edited = true
		return
	}
	e.pend = e.hold[:e.nh]
	e.nh = 0
	e.mode = modeOut
	f.outHas = true
}

// match returns the action for the held member name of f, or refuses a
// variant or a repeat of a controlled name.
func (e *Editor) match(f *beFrame) (beAction, bool) {
	raw := e.hold[e.nameAt+1 : e.nh-1]
	name, escaped := raw, bytes.IndexByte(raw, '\\') >= 0
	if escaped {
		name = unescapeName(e.nameBuf[:0], raw)
	}
	for i, c := range beControlledNames[f.kind] {
		exact := bytes.Equal(name, c.name)
		if !exact && !bytes.EqualFold(name, c.name) {
			continue
		}
		const fix = "; send each controlled member once, spelled exactly"
		where := beKindWhere[f.kind]
		switch {
		case !exact:
			e.refuse("member \"%s\"%s at byte %d is a case variant of %q"+fix, safetext.Clipped(string(raw)), where, e.namePos, c.name)
		case escaped:
			e.refuse("member \"%s\"%s at byte %d is an escaped spelling of %q"+fix, safetext.Clipped(string(raw)), where, e.namePos, c.name)
		case f.seen&(1<<i) != 0:
			e.refuse("duplicate member %q%s at byte %d"+fix, c.name, where, e.namePos)
		default:
			f.seen |= 1 << i
			return e.action(c.act), true
		}
		return 0, false
	}
	return actPass, true
}

// action is what the options make of a controlled member's action.
func (e *Editor) action(a beAction) beAction {
	switch a {
	case actUser:
		switch {
		case !e.opts.Attribution:
			return actPass
		case e.opts.User == nil:
			return actRemove
		}
	case actRemove:
		if !e.opts.Attribution {
			return actPass
		}
	}
	return a
}

// memberValue begins the value of the current member of the innermost
// inspected object at its first byte c. It returns false when it handled
// c itself (an inspected object opened, or a refusal); otherwise the
// value is scanned as any other, dropped and replaced if so decided.
func (e *Editor) memberValue(c byte) bool {
	e.vfirst = c
	switch e.act {
	case actProvider, actGateway, actStreamOpts:
		if c == '{' {
			if e.open(true) {
				e.push([...]beKind{actProvider: kindProvider, actGateway: kindGateway, actStreamOpts: kindStreamOpts}[e.act])
			}
			return false
		}
		if e.act == actStreamOpts {
			e.clientUsage, e.soOK = false, false
			if e.opts.IncludeUsage && e.streamTrue {
				e.replace(beStreamOptsValue)
				e.soOK = true
			}
		}
	case actUser:
		e.replace(e.user)
	case actIncludeUsage:
		if e.opts.IncludeUsage {
			e.replace(beTrue)
		}
	case actStream:
		if c != 't' && c != 'f' && c != 'n' {
			e.refuse("member \"stream\" at byte %d must be true, false or null", e.pos(e.r))
			return false
		}
	}
	return true
}

// replace puts b out in place of the current value, which is dropped and
// compared with b: equal bytes are no edit.
func (e *Editor) replace(b []byte) {
	e.pend = b
	e.mode = modeDrop
	e.cmp, e.cmpN, e.cmpBad = b, 0, false
}

func (e *Editor) compare(b []byte) {
	if e.cmp == nil || e.cmpBad {
		return
	}
	if e.cmpN+len(b) > len(e.cmp) || !bytes.Equal(e.cmp[e.cmpN:e.cmpN+len(b)], b) {
		e.cmpBad = true
		return
	}
	e.cmpN += len(b)
}

// memberEnd ends the current member of the innermost inspected object,
// after its value.
func (e *Editor) memberEnd() {
	if e.cmp != nil {
		if e.cmpBad || e.cmpN != len(e.cmp) {
			e.edited = true
		}
		e.cmp = nil
	}
	isTrue := e.vfirst == 't' // the grammar allows only the literal true
	switch e.act {
	case actStream:
		e.streamTrue = isTrue
	case actIncludeUsage:
		f := &e.frames[e.nf-1]
		f.iuSeen = true
		f.iuTrue = isTrue
	}
	e.act = actPass
	e.mode = modeOut
}
