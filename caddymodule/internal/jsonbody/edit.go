package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
)

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
	bodyEditMaxHeldSpace = 256
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
	// AtEnd, when set, makes the editor read the model, the output caps,
	// the choices and the fallback models (Fields; see capture.go, which
	// also says what it refuses), and is called with them once the whole body was
	// read and found well-formed, on the goroutine reading the editor,
	// before the body's end goes out: the top-level closing '}' and what
	// follows it are held back until AtEnd returns nil. If it returns an
	// error, Read returns that error from then on (never io.EOF: the
	// upstream request is aborted, with no complete JSON sent) and
	// Stopped returns it.
	AtEnd AtEnder
}

// AtEnder approves the body's end (Options.AtEnd). An interface, not a
// func: the caller's per-request state is the hook, with no closure
// allocated per request.
type AtEnder interface{ AtEnd(Fields) error }

// AtEndFunc is a function as an AtEnder.
type AtEndFunc func(Fields) error

// AtEnd calls f.
func (f AtEndFunc) AtEnd(fields Fields) error { return f(fields) }

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
// file comment. One per request; reused only once its owner gives it
// back (Recycle).
type Editor struct {
	src     io.ReadCloser
	opts    Options
	user    []byte // User, encoded
	userBuf [64]byte
	closed  atomic.Bool
	res     atomic.Uint32 // published bodyEditResult bits
	refusal atomic.Pointer[Refusal]
	stopped atomic.Pointer[stopped]

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
	// inspDepth is the depth of the innermost inspected object (0: none).
	inspDepth int

	// The current member of the innermost inspected object.
	cmp    []byte // replacement the dropped value is compared with
	cmpN   int
	act    beAction
	vfirst byte // the first byte of its value
	cmpBad bool

	streamTrue  bool
	soOK        bool // the stream_options in the output carries include_usage:true
	clientUsage bool
	edited      bool
	done        bool

	capture // what AtEnd gets (capture.go)
}

// editors holds the editors given back (Recycle): an editor is some
// 3 KB, allocated per request otherwise.
var editors sync.Pool

// NewEditor returns a reader of src edited as opts says.
func NewEditor(src io.ReadCloser, opts Options) *Editor {
	e, _ := editors.Get().(*Editor)
	if e == nil {
		e = new(Editor)
	}
	e.src, e.opts = src, opts
	e.outputCap = -1
	if opts.Attribution && opts.User != nil {
		e.user = appendJSONString(e.userBuf[:0], *opts.User)
	}
	return e
}

// Recycle gives e back for a later NewEditor, cleared (it keeps nothing
// of its body, source or caller). Only its owner may, once nothing
// reads e or asks it anything any more: for a body read whole before
// the upstream is called, never for one a transport may still read.
func (e *Editor) Recycle() {
	*e = Editor{}
	editors.Put(e)
}

// appendJSONString appends s encoded as json.Marshal encodes it; the
// usual user (printable ASCII, nothing to escape) without its machinery.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	return append(append(append(dst, '"'), s...), '"')
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

// stopped boxes AtEnd's error for an atomic pointer.
type stopped struct{ err error }

// Stopped returns the error AtEnd returned, which stopped the body
// before its end, or nil. It is not a refusal of the body (Refusal is
// nil): the caller answers it as its AtEnd decided.
func (e *Editor) Stopped() error {
	if s := e.stopped.Load(); s != nil {
		return s.err
	}
	return nil
}

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
		if s := e.stopped.Load(); s != nil {
			return 0, s.err
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
		if e.opts.AtEnd != nil && !e.release() {
			return
		}
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
	actModel                 // top-level model: read (AtEnd)
	actCap                   // an output cap: read (AtEnd)
	actChoices               // n or best_of: read (AtEnd)
	actFallbacks             // a fallback list: read (AtEnd)
	actEntryModel            // the model of a fallback list's object entry: read (AtEnd)
)

// Kinds of inspected object.
type beKind uint8

const (
	kindTop beKind = iota
	kindProvider
	kindGateway
	kindStreamOpts
	kindEntry // an object entry of a fallback list (AtEnd)
)

// beFrame is one inspected object. They nest at most four deep: the top
// level, providerOptions, providerOptions.gateway, an object entry of its
// models.
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
// client must write exactly and once. model, the output caps, the
// fallback lists and the choices are read only with AtEnd, but their
// variants are always refused.
var beControlledNames = [...][]beControlled{
	kindTop: {
		{[]byte("stream"), actStream},
		{[]byte("stream_options"), actStreamOpts},
		{[]byte("user"), actUser},
		{[]byte("providerOptions"), actProvider},
		{[]byte("model"), actModel},
		{[]byte("max_tokens"), actCap},
		{[]byte("max_completion_tokens"), actCap},
		{[]byte("max_output_tokens"), actCap},
		{[]byte("models"), actFallbacks},
		{[]byte("n"), actChoices},
		{[]byte("best_of"), actChoices},
	},
	kindProvider: {
		{[]byte("gateway"), actGateway},
	},
	kindGateway: {
		{[]byte("user"), actUser},
		{[]byte("tags"), actRemove},
		{[]byte("quotaEntityId"), actRemove},
		{[]byte("models"), actFallbacks},
		{[]byte("order"), actPass},
	},
	kindStreamOpts: {
		{[]byte("include_usage"), actIncludeUsage},
	},
	kindEntry: {
		{[]byte("model"), actEntryModel},
	},
}

// beKindWhere names an inspected object in a refusal.
var beKindWhere = [...]string{
	kindTop:        "",
	kindProvider:   " in providerOptions",
	kindGateway:    " in providerOptions.gateway",
	kindStreamOpts: " in stream_options",
	kindEntry:      " in an entry of a fallback list",
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
	e.inspDepth = e.depth
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
	// the object's '}' went out: its parent is the innermost container,
	// but for an entry of a fallback list, whose parent is beyond the list
	e.inspDepth = e.depth
	if f := &e.frames[e.nf]; f.kind == kindEntry {
		e.inspDepth--
	}
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
			e.member = i
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
	case actModel, actCap, actChoices, actFallbacks:
		if e.opts.AtEnd == nil {
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
	case actModel, actCap, actChoices, actFallbacks, actEntryModel:
		return e.capturedValue(c)
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
