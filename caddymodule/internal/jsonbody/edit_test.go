package jsonbody

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

const testReportingUser = "proxy-user"

func strPtr(s string) *string { return &s }

var (
	optsAttr    = Options{Attribution: true, User: strPtr(testReportingUser)}
	optsAttrNil = Options{Attribution: true}
	optsUsage   = Options{IncludeUsage: true}
	optsBoth    = Options{Attribution: true, User: strPtr(testReportingUser), IncludeUsage: true}
	optsBothNil = Options{Attribution: true, IncludeUsage: true}
	// optsAtEnd reads what AtEnd gets, and approves it.
	optsAtEnd = Options{Attribution: true, User: strPtr(testReportingUser), IncludeUsage: true, AtEnd: AtEndFunc(func(Fields) error { return nil })}
)

// chunkedReader hands out its data in reads of the sizes given, in turn
// (a network body arrives in pieces), then io.EOF. It is not a WriterTo.
type chunkedReader struct {
	data   []byte
	sizes  []int
	i      int
	closed bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkedReader) Close() error { c.closed = true; return nil }

// readAllIn reads r to its end in reads of the sizes given, in turn, and
// fails the test if a read returns more than asked. It returns what was
// read and the error that ended it (nil for io.EOF).
func readAllIn(t testing.TB, r io.Reader, sizes []int) ([]byte, error) {
	t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	for i := 0; ; i++ {
		n := len(buf)
		if len(sizes) > 0 {
			n = sizes[i%len(sizes)]
		}
		got, err := r.Read(buf[:n])
		if got < 0 || got > n {
			t.Fatalf("Read(%d bytes) returned %d", n, got)
		}
		out = append(out, buf[:got]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if i > 100_000_000 {
			t.Fatal("no end")
		}
	}
}

// edit runs the editor over in, read from a source in reads of src sizes
// (nil: as asked), in reads of out sizes (nil: 64 KiB). A refused body
// keeps refusing: a second Read returns the same error, never io.EOF.
func edit(t testing.TB, in []byte, opts Options, src, out []int) ([]byte, Result, error) {
	t.Helper()
	ed := NewEditor(&chunkedReader{data: in, sizes: src}, opts)
	got, err := readAllIn(t, ed, out)
	if err != nil {
		if _, again := ed.Read(make([]byte, 10)); again != err {
			t.Fatalf("after %v, a second Read returned %v", err, again)
		}
		if !errors.Is(err, ErrRefused) { // AtEnd's
			if ed.Stopped() != err || ed.Refusal() != nil {
				t.Fatalf("Stopped() %v, Refusal() %v, Read's error %v", ed.Stopped(), ed.Refusal(), err)
			}
		} else if ref := ed.Refusal(); ref == nil || error(ref) != err || ed.Stopped() != nil {
			t.Fatalf("Refusal() %v, Stopped() %v, Read's error %v", ref, ed.Stopped(), err)
		}
	}
	return got, ed.Result(), err
}

// readWays are the ways every test body is read: one big read, and the
// source's reads (the editor's buffer boundaries) and the output's of
// many sizes down to one byte.
var readWays = []struct{ src, out []int }{
	{nil, nil},
	{[]int{1}, []int{1}},
	{nil, []int{1}},
	{[]int{1}, nil},
	{[]int{2}, []int{3}},
	{[]int{3}, nil},
	{[]int{5}, []int{7}},
	{[]int{7, 3, 1, 4096, 13}, []int{5, 1, 2, 33, 9000}},
	{[]int{64}, []int{64}},
	{[]int{2047, 2, 2049}, nil},
}

// editAllWays edits in every way of readWays and fails unless all agree
// on the output, the result and the error.
func editAllWays(t testing.TB, in []byte, opts Options) ([]byte, Result, error) {
	t.Helper()
	out, res, err := edit(t, in, opts, nil, nil)
	for _, w := range readWays[1:] {
		got, r, e := edit(t, in, opts, w.src, w.out)
		if !bytes.Equal(got, out) {
			t.Fatalf("source reads %v, reads %v: got\n%q\nwant (one read)\n%q", w.src, w.out, trunc(got), trunc(out))
		}
		if r != res || fmt.Sprint(e) != fmt.Sprint(err) {
			t.Fatalf("source reads %v, reads %v: %+v, %v; one read %+v, %v", w.src, w.out, r, e, res, err)
		}
	}
	switch {
	case err == nil && !res.Done:
		t.Fatalf("result not Done after EOF: %+v", res)
	case err != nil && !res.Refused:
		t.Fatalf("error %v but the result is %+v", err, res)
	case err != nil && (!errors.Is(err, ErrRefused) || errors.Is(err, io.EOF)):
		t.Fatalf("error %v is not a refusal", err)
	case err == nil && !res.Edited && !bytes.Equal(out, in):
		t.Fatalf("Edited false but output differs:\n%q\n%q", trunc(in), trunc(out))
	}
	return out, res, err
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:150]) + "..." + string(b[len(b)-150:])
	}
	return string(b)
}

type bodyEditCase struct {
	name string
	opts Options
	in   string
	want string // "" means: unchanged
	res  Result
}

func runBodyEditCases(t *testing.T, cases []bodyEditCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			out, res, err := editAllWays(t, []byte(tc.in), tc.opts)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if string(out) != want {
				t.Errorf("got\n%s\nwant\n%s", trunc(out), trunc([]byte(want)))
			}
			tc.res.Done = true
			if res != tc.res {
				t.Errorf("result %+v, want %+v", res, tc.res)
			}
			if !json.Valid([]byte(tc.in)) || !json.Valid(out) {
				t.Errorf("input or output is not valid JSON: %s", trunc(out))
			}
		})
	}
}

var edited = Result{Edited: true}

func TestBodyEditAttribution(t *testing.T) {
	runBodyEditCases(t, []bodyEditCase{
		{name: "nothing to edit", opts: optsBoth,
			in: `{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi","user":"nested"}],"max_tokens":10}`},
		{name: "user replaced", opts: optsAttr,
			in: `{"model":"m","user":"victim"}`, want: `{"model":"m","user":"proxy-user"}`, res: edited},
		{name: "user already the proxy's", opts: optsAttr,
			in: `{"model":"m","user":"proxy-user"}`},
		{name: "user value spelled with an escape", opts: optsAttr,
			in: `{"user":"proxy\u002duser"}`, want: `{"user":"proxy-user"}`, res: edited},
		{name: "user a number", opts: optsAttr,
			in: `{"user":-12.5e3}`, want: `{"user":"proxy-user"}`, res: edited},
		{name: "user an object with a user inside", opts: optsAttr,
			in: `{"user":{"id":"x","user":"y","z":[{"}":"]"}]},"n":1}`, want: `{"user":"proxy-user","n":1}`, res: edited},
		{name: "user null", opts: optsAttr,
			in: `{"user":null}`, want: `{"user":"proxy-user"}`, res: edited},
		{name: "user an array", opts: optsAttr,
			in: `{"user":["a",["b"]]}`, want: `{"user":"proxy-user"}`, res: edited},
		{name: "user true", opts: optsAttr,
			in: `{"user":true}`, want: `{"user":"proxy-user"}`, res: edited},
		{name: "not user", opts: optsAttr,
			in: `{"users":"v","use":"w","user ":"x","\u0075ser\u0000":"y","usér":"z"}`},
		{name: "user needs escaping", opts: Options{Attribution: true, User: strPtr("a\"b\\c\n")},
			in: `{"user":"x"}`, want: `{"user":"a\"b\\c\n"}`, res: edited},
		{name: "attribution off", opts: optsUsage,
			in: `{"user":"victim","providerOptions":{"gateway":{"user":"v","tags":["t"],"quotaEntityId":"q"}}}`},

		{name: "nil user: only member", opts: optsAttrNil,
			in: `{"user":"a"}`, want: `{}`, res: edited},
		{name: "nil user: first", opts: optsAttrNil,
			in: `{"user":"a","model":"m"}`, want: `{"model":"m"}`, res: edited},
		{name: "nil user: last", opts: optsAttrNil,
			in: `{"model":"m","user":"a"}`, want: `{"model":"m"}`, res: edited},
		{name: "nil user: middle", opts: optsAttrNil,
			in: `{"model":"m","user":{"a":[1]},"n":1}`, want: `{"model":"m","n":1}`, res: edited},
		{name: "nil user: whitespace", opts: optsAttrNil,
			in: "{ \"user\" : 1 , \"a\" : 2 ,\n \"b\"\t:\n\"x\"\n}", want: "{   \"a\" : 2 ,\n \"b\"\t:\n\"x\"\n}", res: edited},
		{name: "nil user: nothing to remove", opts: optsAttrNil,
			in: "{ \"a\" : 1 ,\n  \"b\" : [1, 2] }"},

		{name: "gateway user and tags", opts: optsAttr,
			in:   `{"providerOptions":{"gateway":{"order":["a","b"],"user":"x","tags":["t"],"only":["c"]},"openai":{"user":"keep"}},"model":"m"}`,
			want: `{"providerOptions":{"gateway":{"order":["a","b"],"user":"proxy-user","only":["c"]},"openai":{"user":"keep"}},"model":"m"}`, res: edited},
		{name: "gateway user removed with nil user", opts: optsAttrNil,
			in:   `{"providerOptions":{"gateway":{"user":"x","order":["a"],"tags":["t"]}}}`,
			want: `{"providerOptions":{"gateway":{"order":["a"]}}}`, res: edited},
		{name: "gateway quota entity", opts: optsAttr,
			in: `{"providerOptions":{"gateway":{"quotaEntityId":"api_key_id_other","order":["a"]}}}`, want: `{"providerOptions":{"gateway":{"order":["a"]}}}`, res: edited},
		{name: "gateway quota entity last, an object", opts: optsAttr,
			in: `{"providerOptions":{"gateway":{"models":["x"],"quotaEntityId":{"id":"q","tags":[1]}}},"user":"u"}`, want: `{"providerOptions":{"gateway":{"models":["x"]}},"user":"proxy-user"}`, res: edited},
		{name: "gateway quota entity, tags and user, all removed", opts: optsAttrNil,
			in: `{"providerOptions":{"gateway":{"quotaEntityId":"q","tags":["a"],"user":"u"}}}`, want: `{"providerOptions":{"gateway":{}}}`, res: edited},
		{name: "gateway tags only", opts: optsAttr,
			in: `{"providerOptions":{"gateway":{"tags":[]}}}`, want: `{"providerOptions":{"gateway":{}}}`, res: edited},
		{name: "gateway options pass", opts: optsAttr,
			in: `{"providerOptions":{"gateway":{"order":["bedrock","anthropic"],"only":["anthropic"],"models":["openai/gpt-5"]},"anthropic":{"thinking":{"type":"enabled"}}}}`},
		{name: "providerOptions not an object", opts: optsAttr,
			in: `{"providerOptions":"gateway","x":{"gateway":{"user":"a"}}}`},
		{name: "providerOptions an array", opts: optsAttr,
			in: `{"providerOptions":[{"gateway":{"user":"a","tags":["t"]}}]}`},
		{name: "providerOptions null", opts: optsAttr,
			in: `{"providerOptions":null}`},
		{name: "gateway not an object", opts: optsAttr,
			in: `{"providerOptions":{"gateway":null,"x":{"gateway":{"tags":[1]}}}}`},
		{name: "gateway deeper", opts: optsAttr,
			in: `{"providerOptions":{"x":{"gateway":{"user":"x","tags":["a"]}}},"messages":[{"providerOptions":{"gateway":{"user":"x","tags":["a"]}}}],"metadata":{"user":"x","gateway":{"tags":["a"]}}}`},
		{name: "user inside providerOptions is not gateway's", opts: optsAttr,
			in: `{"providerOptions":{"user":"x","tags":["a"],"openai":{"user":"y"}}}`},
	})
}

func TestBodyEditUsage(t *testing.T) {
	streamed := Result{Streamed: true}
	streamedEdited := Result{Streamed: true, Edited: true}
	runBodyEditCases(t, []bodyEditCase{
		{name: "stream without options", opts: optsUsage,
			in: `{"model":"m","stream":true}`, want: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "stream alone, spaces", opts: optsUsage,
			in: "{ \"stream\" : true }\n", want: "{ \"stream\" : true ,\"stream_options\":{\"include_usage\":true}}\n", res: streamedEdited},
		{name: "stream false", opts: optsUsage,
			in: `{"model":"m","stream":false}`},
		{name: "stream null", opts: optsUsage,
			in: `{"model":"m","stream":null}`},
		{name: "no stream", opts: optsUsage,
			in: `{"model":"m"}`},
		{name: "empty object", opts: optsBoth, in: `{}`},
		{name: "stream inside a message", opts: optsUsage,
			in: `{"messages":[{"stream":true,"Stream":"x","stream":1}],"x":{"stream":true}}`},
		{name: "options after stream, include_usage false", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":false}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options after stream, include_usage true", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":true}}`, res: Result{Streamed: true, ClientUsage: true}},
		{name: "options before stream, include_usage true", opts: optsUsage,
			in: `{"stream_options":{"include_usage":true},"stream":true}`, res: Result{Streamed: true, ClientUsage: true}},
		{name: "options before stream, include_usage false", opts: optsUsage,
			in: `{"stream_options":{"include_usage":false},"stream":true}`, want: `{"stream_options":{"include_usage":true},"stream":true}`, res: streamedEdited},
		{name: "options empty", opts: optsUsage,
			in: `{"stream":true,"stream_options":{}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options with other members", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"x":[1,{"include_usage":false}] , "y" : 2 }}`, want: `{"stream":true,"stream_options":{"x":[1,{"include_usage":false}] , "y" : 2 ,"include_usage":true}}`, res: streamedEdited},
		{name: "include_usage a string", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":"true"}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options null after stream", opts: optsUsage,
			in: `{"stream":true,"stream_options":null}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options a number after stream", opts: optsUsage,
			in: `{"stream":true,"stream_options":1,"n":2}`, want: `{"stream":true,"stream_options":{"include_usage":true},"n":2}`, res: streamedEdited},
		{name: "options null before stream", opts: optsUsage,
			in: `{"stream_options":null,"stream":true}`, want: `{"stream_options":null,"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options null, not streamed", opts: optsUsage,
			in: `{"stream_options":null,"stream":false}`},
		{name: "options null after stream:false", opts: optsUsage,
			in: `{"stream":false,"stream_options":null}`},
		{name: "options object, not streamed", opts: optsUsage,
			in: `{"stream_options":{"include_usage":false}}`, want: `{"stream_options":{"include_usage":true}}`, res: edited},
		{name: "usage off still reports", opts: optsAttr,
			in: `{"stream":true,"stream_options":{"include_usage":true}}`, res: Result{Streamed: true, ClientUsage: true}},
		{name: "usage off, no stream_options", opts: optsAttr,
			in: `{"stream":true,"stream_options":{"include_usage":false}}`, res: streamed},
		{name: "both edits", opts: optsBoth,
			in:   `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"user":"sandbox"}`,
			want: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"user":"proxy-user","stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "both edits, user removed last", opts: optsBothNil,
			in:   `{"stream":true,"user":"sandbox"}`,
			want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "both edits, all removed", opts: optsBothNil,
			in: `{"user":"sandbox"}`, want: `{}`, res: edited},
	})
}

// escapeAll writes every character of s as a \u escape.
func escapeAll(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return b.String()
}

// bodyRefusalCases are bodies a strict parser could read otherwise than
// the proxy, or that are not one well-formed UTF-8 JSON object, and what
// their refusal says.
var bodyRefusalCases = []struct{ name, in, msg string }{
	// controlled members: case variants, folding, escapes, repeats
	{"Stream", `{"model":"m","stream":true,"Stream":false}`, `member "Stream" at byte 27 is a case variant of "stream"; send each controlled member once, spelled exactly`},
	{"STREAM_OPTIONS", `{"STREAM_OPTIONS":{"include_usage":true}}`, `member "STREAM_OPTIONS" at byte 1 is a case variant of "stream_options"`},
	{"User", `{"User":"bob"}`, `case variant of "user"`},
	{"ProviderOptions", `{"ProviderOptions":{"gateway":{"user":"bob"}}}`, `case variant of "providerOptions"`},
	{"Gateway", `{"providerOptions":{"Gateway":{"user":"bob"}}}`, `member "Gateway" in providerOptions at byte 20 is a case variant of "gateway"`},
	{"Tags", `{"providerOptions":{"gateway":{"Tags":["b"]}}}`, `member "Tags" in providerOptions.gateway at byte 31 is a case variant of "tags"`},
	{"quotaentityid", `{"providerOptions":{"gateway":{"quotaentityid":"q"}}}`, `case variant of "quotaEntityId"`},
	{"Include_Usage", `{"stream":true,"stream_options":{"Include_Usage":false}}`, `member "Include_Usage" in stream_options at byte 33 is a case variant of "include_usage"`},
	{"Model", `{"model":"a","Model":"b"}`, `case variant of "model"`},
	{"MAX_TOKENS", `{"MAX_TOKENS":1}`, `case variant of "max_tokens"`},
	{"Max_Output_Tokens", `{"Max_Output_Tokens":1}`, `case variant of "max_output_tokens"`},
	{"long s", `{"ſtream":false,"stream":true}`, `member "ſtream" at byte 1 is a case variant of "stream"`},
	{"long s escaped", `{"\u017ftream":false}`, `member "\u017ftream" at byte 1 is a case variant of "stream"`},
	{"Kelvin sign", `{"max_to\u212aens":1}`, `case variant of "max_tokens"`},
	{"Kelvin sign raw", "{\"max_to\u212aens\":1}", `case variant of "max_tokens"`},
	{"escaped stream", `{"str\u0065am":true}`, `member "str\u0065am" at byte 1 is an escaped spelling of "stream"; send each`},
	{"escaped user", `{"us\u0065r":"bob"}`, `escaped spelling of "user"`},
	{"escaped capital", `{"provider\u004fptions":{}}`, `escaped spelling of "providerOptions"`},
	{"fully escaped", `{"` + escapeAll("max_completion_tokens") + `":1}`, `escaped spelling of "max_completion_tokens"`},
	{"escaped tags", `{"providerOptions":{"gateway":{"t\u0061gs":[]}}}`, `escaped spelling of "tags"`},
	{"escaped quotaEntityId", `{"providerOptions":{"gateway":{"quotaEntity\u0049d":"q"}}}`, `escaped spelling of "quotaEntityId"`},
	{"duplicate stream, true last", `{"stream":false,"model":"m","stream":true}`, `duplicate member "stream" at byte 28; send each`},
	{"duplicate stream, true first", `{"stream":true,"stream":false}`, `duplicate member "stream" at byte 15`},
	{"duplicate stream_options", `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}`, `duplicate member "stream_options"`},
	{"duplicate user", `{"user":"a","user":"b"}`, `duplicate member "user"`},
	{"duplicate providerOptions", `{"providerOptions":{},"providerOptions":{"gateway":{"user":1}}}`, `duplicate member "providerOptions"`},
	{"duplicate gateway", `{"providerOptions":{"gateway":{},"gateway":{"user":"b"}}}`, `duplicate member "gateway" in providerOptions`},
	{"duplicate gateway user", `{"providerOptions":{"gateway":{"user":"a","order":[],"user":"b"}}}`, `duplicate member "user" in providerOptions.gateway`},
	{"duplicate quotaEntityId", `{"providerOptions":{"gateway":{"quotaEntityId":"a","quotaEntityId":"b"}}}`, `duplicate member "quotaEntityId"`},
	{"duplicate include_usage", `{"stream_options":{"include_usage":true,"include_usage":false}}`, `duplicate member "include_usage" in stream_options`},
	{"duplicate model", `{"model":"a","messages":[],"model":"b"}`, `duplicate member "model"`},
	{"duplicate max_tokens", `{"max_tokens":1,"max_tokens":100000}`, `duplicate member "max_tokens"`},
	{"BOM then a duplicate", "\xef\xbb\xbf{\"stream\":false,\"stream\":true}", `duplicate member "stream" at byte 19`},
	// stream must be true, false or null
	{"stream a string", `{"stream":"true"}`, `member "stream" at byte 10 must be true, false or null`},
	{"stream a number", `{"stream":1}`, `must be true, false or null`},
	{"stream an object", `{"stream":{}}`, `must be true, false or null`},
	{"stream an array", `{"stream":[true]}`, `must be true, false or null`},
	{"stream True", `{"stream":True}`, `'T' where a value was expected`},
	{"stream truex", `{"stream":truex}`, `not valid JSON at byte 14: 'x' where ',' or '}' was expected`},
	// not one JSON object
	{"empty", ``, `the body is empty`},
	{"whitespace", " \n\t", `the body is empty`},
	{"BOM alone", "\xef\xbb\xbf", `the body is empty`},
	{"array", `[{"stream":true}]`, `the body is not a JSON object`},
	{"string", `"stream"`, `the body is not a JSON object`},
	{"number", `12`, `the body is not a JSON object`},
	{"not JSON", "stream=true", `not valid JSON at byte 0: 's' where a JSON object was expected`},
	{"UTF-16LE", "{\x00\"\x00s\x00t\x00r\x00e\x00a\x00m\x00\"\x00:\x00t\x00r\x00u\x00e\x00}\x00", `not valid JSON at byte 1: byte 0x00 where a member name was expected`},
	{"UTF-16LE with its BOM", "\xff\xfe{\x00}\x00", `byte 0xff where a JSON object was expected`},
	{"half a BOM", "\xef\xbb{}", `invalid UTF-8 at byte 2`},
	{"BOM after whitespace", " \xef\xbb\xbf{}", `byte 0xef where a JSON object was expected`},
	{"two BOMs", "\xef\xbb\xbf\xef\xbb\xbf{}", `byte 0xef where a JSON object was expected`},
	{"truncated in a name", `{"model":"m","us`, `the body ends before its JSON value does (at byte 16)`},
	{"truncated in a value", `{"model":"m","user":"ab`, `the body ends before its JSON value does`},
	{"truncated in a number", `{"a":12`, `the body ends before its JSON value does`},
	{"truncated in a literal", `{"a":tr`, `the body ends before its JSON value does`},
	{"truncated before the closing brace", `{"stream":true `, `the body ends before its JSON value does (at byte 15)`},
	{"truncated in an escape", `{"a":"\u00`, `the body ends before`},
	{"truncated in a character", "{\"a\":\"\xe2\x9c", `the body ends before`},
	{"two values", `{"a":1}{"stream":true}`, `more than one JSON value (the second starts at byte 7)`},
	{"two values, spaced", "{\"a\":1}\n[1]", `more than one JSON value`},
	{"trailing garbage", `{"a":1} x`, `not valid JSON at byte 8: 'x' where the end of the body was expected`},
	{"trailing NUL", "{\"a\":1}\x00", `byte 0x00 where the end of the body was expected`},
	{"double comma", `{"a":1,,"b":2}`, `',' where a member name was expected`},
	{"trailing comma", `{"a":1,}`, `'}' where a member name was expected`},
	{"trailing comma in an array", `{"a":[1,]}`, `']' where a value was expected`},
	{"missing colon", `{"a" 1}`, `'1' where ':' was expected`},
	{"missing value", `{"a":,"b":1}`, `',' where a value was expected`},
	{"missing comma", `{"a":1 "b":2}`, `'"' where ',' or '}' was expected`},
	{"single quotes", `{'a':1}`, `''' where a member name was expected`},
	{"unquoted name", `{a:1}`, `'a' where a member name was expected`},
	{"bracket mismatch", `{"a":[1}`, `'}' where ']' was expected`},
	{"brace mismatch", `{"a":{"b":1]}`, `']' where '}' was expected`},
	{"comment", `{"a":1 /* x */}`, `'/' where ',' or '}' was expected`},
	{"leading zero", `{"a":01}`, `'1' where ',' or '}' was expected`},
	{"minus alone", `{"a":-}`, `a number ends early`},
	{"dot without digits", `{"a":1.}`, `a number ends early`},
	{"leading dot", `{"a":.5}`, `'.' where a value was expected`},
	{"exponent without digits", `{"a":1e}`, `a number ends early`},
	{"exponent sign only", `{"a":1e+}`, `a number ends early`},
	{"plus sign", `{"a":+1}`, `'+' where a value was expected`},
	{"NaN", `{"a":NaN}`, `'N' where a value was expected`},
	{"Infinity", `{"a":-Infinity}`, `a number ends early`},
	{"hex number", `{"a":0x10}`, `'x' where ',' or '}' was expected`},
	{"bad literal", `{"a":nul}`, `expected "null"`},
	{"capital literal", `{"a":True}`, `'T' where a value was expected`},
	{"unknown escape", `{"a":"\x"}`, `not valid JSON at byte 6: invalid escape in a string`},
	{"short unicode escape", `{"a":"\u12"}`, `invalid \u escape`},
	{"escape in a name", `{"us\er":1}`, `invalid escape in a string`},
	{"raw newline", "{\"a\":\"x\ny\"}", `control character 0x0a in a string`},
	{"raw tab", "{\"a\":\"x\ty\"}", `control character 0x09 in a string`},
	{"raw NUL in a name", "{\"us\x00er\":1}", `control character 0x00 in a string`},
	{"DEL outside a string", "{\"a\":1\x7f}", `byte 0x7f where ',' or '}' was expected`},
	// not UTF-8
	{"invalid byte", "{\"a\":\"\xff\"}", `invalid UTF-8 at byte 6`},
	{"lone continuation", "{\"a\":\"x\x80\"}", `invalid UTF-8 at byte 7`},
	{"overlong", "{\"a\":\"\xc0\xaf\"}", `invalid UTF-8 at byte 6`},
	{"overlong 3 bytes", "{\"a\":\"\xe0\x80\xaf\"}", `invalid UTF-8 at byte`},
	{"surrogate", "{\"a\":\"\xed\xa0\x80\"}", `invalid UTF-8 at byte`},
	{"above U+10FFFF", "{\"a\":\"\xf4\x90\x80\x80\"}", `invalid UTF-8 at byte`},
	{"cut character", "{\"a\":\"\xe2\x9c\"}", `invalid UTF-8 at byte`},
	{"cut character before a plain byte", "{\"a\":\"\xf0\x9f\x98x\"}", `invalid UTF-8 at byte`},
	{"invalid in a name", "{\"\xffuser\":1}", `invalid UTF-8 at byte 2`},
	{"invalid in a long string", "{\"a\":\"" + strings.Repeat("x", 5000) + "\xff\"}", `invalid UTF-8 at byte 5006`},
	{"invalid late in a long name", "{\"" + strings.Repeat("x", 500) + "\xc3(\":1}", `invalid UTF-8 at byte`},
	// nesting
	{"too deep, arrays", `{"m":` + strings.Repeat("[", bodyEditMaxDepth) + "1" + strings.Repeat("]", bodyEditMaxDepth) + "}", `nesting deeper than 1000 levels at byte 1004`},
	{"too deep, objects", `{"m":` + strings.Repeat(`{"a":`, bodyEditMaxDepth) + "1" + strings.Repeat("}", bodyEditMaxDepth) + "}", `nesting deeper than 1000 levels`},
	{"too deep, unterminated", `{"m":` + strings.Repeat("[", 100_000), `nesting deeper than 1000 levels`},
}

// TestBodyEditRefusals: every refusal case is refused at every read
// size, whatever the options, with a message that names the problem and
// where it is, and nothing from the problem on goes out. (Before, all of
// these passed, edited or raw.)
func TestBodyEditRefusals(t *testing.T) {
	for _, tc := range bodyRefusalCases {
		t.Run(tc.name, func(t *testing.T) {
			for i, opts := range []Options{{}, optsBoth, optsBothNil, optsAtEnd} {
				out, res, err := editAllWays(t, []byte(tc.in), opts)
				if err == nil {
					t.Fatalf("accepted, output %q", trunc(out))
				}
				if !strings.HasPrefix(err.Error(), "request body: ") || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("refusal %q, want it to say %q", err, tc.msg)
				}
				if !res.Refused || res.Done {
					t.Fatalf("result %+v", res)
				}
				if i == 0 && !bytes.HasPrefix([]byte(tc.in), out) {
					t.Fatalf("with no edit, %q went out: not a prefix of the body", trunc(out))
				}
				if len(err.Error()) > 400 {
					t.Fatalf("a %d-byte message: client data is not clipped", len(err.Error()))
				}
			}
		})
	}
}

// TestBodyEditValidJSON: every construct of RFC 8259 passes byte for byte,
// however the reads cut it, and so does a controlled member spelled
// exactly once, and names that only resemble one, or that repeat outside
// the inspected objects.
func TestBodyEditValidJSON(t *testing.T) {
	deep := func(n int, open, close string) string {
		return `{"m":` + strings.Repeat(open, n-1) + "1" + strings.Repeat(close, n-1) + "}"
	}
	for _, in := range []string{
		`{}`, ` { } `, "\r\n\t{\r\n\t}\r\n\t",
		"\xef\xbb\xbf{}", "\xef\xbb\xbf {\"model\":\"m\"}\n",
		`{"a":[],"b":{},"c":[[],{}],"d":[{"e":[1,{"f":null}]}]}`,
		`{"n":[0,-0,1,-1,10,0.5,-0.5,1e5,1E5,1e+5,1e-5,1.5e-05,-12.34E+56,123456789012345678901234567890]}`,
		`{"l":[true,false,null]}`,
		`{"s":"","e":"\"\\\/\b\f\n\r\t","u":"\u0000\u001f\u00e9\u20AC\ud83d\ude00","lone":"\ud800","lone2":"\udfff\u0041"}`,
		"{\"utf8\":\"é€😀\u2028\u00a0\x7f\",\"é\":\"\xf4\x8f\xbf\xbf\"}",
		`{"stream":true,"stream_options":{"include_usage":true},"user":"u","providerOptions":{"gateway":{"user":"u","tags":["a"],"quotaEntityId":"q","models":["m"],"order":["o"]}},"model":"m","max_tokens":1,"max_completion_tokens":2,"max_output_tokens":3}`,
		`{"streams":1,"stream ":2," stream":3,"stream_":4,"user_":5,"Users":6,"providerOption":7,"gateways":8,"include":9}`,
		`{"providerOptions":{"Gateway_":{},"GATEWAYS":{},"openai":{"User":1,"user":2,"user":3}},"metadata":{"stream":1,"Stream":2,"stream":3}}`,
		`{"messages":[{"role":"user","content":"x","stream":true,"STREAM":false,"stream":false}],"tools":[{"user":1,"user":2}]}`,
		`{"stream_options":{"x":{"include_usage":1,"Include_Usage":2}}}`,
		`{"` + strings.Repeat("x", 5000) + `":1,"user":2}`,
		`{"` + strings.Repeat(`\\`, 200) + `":1}`,
		deep(bodyEditMaxDepth, "[", "]"),
		deep(bodyEditMaxDepth, `{"a":`, "}"),
		deep(bodyEditMaxDepth/2, `[{"a":`, "}]"),
	} {
		t.Run(fmt.Sprintf("%.40q", in), func(t *testing.T) {
			if !json.Valid([]byte(strings.TrimPrefix(in, "\xef\xbb\xbf"))) {
				t.Fatalf("test body is not valid JSON")
			}
			out, res, err := editAllWays(t, []byte(in), Options{})
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !bytes.Equal(out, []byte(in)) || res.Edited {
				t.Fatalf("changed (%+v):\n%q", res, trunc(out))
			}
		})
	}
}

// Multibyte characters and escapes come out whole however the reads cut
// them: each is put at every offset of a word and read a byte at a time
// too. An invalid sequence is refused wherever it falls.
func TestBodyEditUTF8AcrossReads(t *testing.T) {
	for _, s := range []string{"é", "€", "😀", "\U0010ffff", `\u00e9`, `\ud83d\ude00`, `\"`, `\\`} {
		for pad := range 12 {
			in := `{"a":"` + strings.Repeat("x", pad) + s + strings.Repeat("y", 9) + `"}`
			out, _, err := editAllWays(t, []byte(in), optsBoth)
			if err != nil || string(out) != in {
				t.Fatalf("%q at %d: %q, %v", s, pad, out, err)
			}
		}
	}
	for _, bad := range []string{"\xe2\x9c", "\xf0\x9f\x98", "\xc3", "\xed\xbf\xbf", "\xf8\x88\x80\x80\x80", "\xe2\x9c\x93\x93"} {
		for pad := range 12 {
			in := `{"a":"` + strings.Repeat("x", pad) + bad + `z"}`
			if _, _, err := editAllWays(t, []byte(in), optsBoth); err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
				t.Fatalf("%q at %d: %v", bad, pad, err)
			}
		}
	}
	// the whole of Unicode, raw and escaped, in one body
	var b strings.Builder
	b.WriteString(`{"a":"`)
	for r := rune(0x20); r < 0x110000; r += 0x3f {
		if r == '"' || r == '\\' || r >= 0xd800 && r < 0xe000 {
			continue
		}
		b.WriteRune(r)
		fmt.Fprintf(&b, `\u%04x`, r&0xffff)
	}
	b.WriteString(`"}`)
	if !utf8.ValidString(b.String()) || !json.Valid([]byte(b.String())) {
		t.Fatal("test body not UTF-8 JSON")
	}
	if _, _, err := editAllWays(t, []byte(b.String()), optsBoth); err != nil {
		t.Fatal(err)
	}
}

// The longest controlled name bounds what is captured, and that name
// spelled in six bytes a character is still caught; a longer one streams.
func TestBodyEditLongTokens(t *testing.T) {
	longest := 0
	for _, names := range beControlledNames {
		for _, c := range names {
			longest = max(longest, len(c.name))
		}
	}
	if longest != bodyEditLongestName {
		t.Fatalf("the longest controlled name is %d characters, bodyEditLongestName %d", longest, bodyEditLongestName)
	}
	esc := escapeAll("max_completion_tokens")
	if len(esc) != bodyEditMaxName {
		t.Fatalf("fully escaped, the longest name is %d bytes, bodyEditMaxName %d", len(esc), bodyEditMaxName)
	}
	long := strings.Repeat("x", 5000)
	runBodyEditCases(t, []bodyEditCase{
		{name: "long name", opts: optsBothNil,
			in: `{"` + long + `":1,"user":"a","` + long + `\"` + long + `":2}`, want: `{"` + long + `":1,"` + long + `\"` + long + `":2}`, res: edited},
		{name: "long name ending in an escape", opts: optsAttr,
			in: `{"` + strings.Repeat("\\\\", 70) + `":1,"user":"a"}`, want: `{"` + strings.Repeat("\\\\", 70) + `":1,"user":"proxy-user"}`, res: edited},
		{name: "name one byte longer than captured", opts: optsAttrNil,
			in: `{"a":1,"x` + esc + `":1,"user":1}`, want: `{"a":1,"x` + esc + `":1}`, res: edited},
		{name: "huge strings", opts: optsBoth,
			in:   `{"messages":[{"role":"tool","content":"` + strings.Repeat(`line \"quoted\"\n`, 16<<10) + `"},{"role":"user","content":"` + strings.Repeat("QUJD", 64<<10) + `"}],"stream":true,"user":"` + strings.Repeat("u", 256<<10) + `"}`,
			want: `{"messages":[{"role":"tool","content":"` + strings.Repeat(`line \"quoted\"\n`, 16<<10) + `"},{"role":"user","content":"` + strings.Repeat("QUJD", 64<<10) + `"}],"stream":true,"user":"proxy-user","stream_options":{"include_usage":true}}`,
			res:  Result{Edited: true, Streamed: true}},
		{name: "long user value", opts: optsAttr,
			in: `{"user":"` + long + `"}`, want: `{"user":"proxy-user"}`, res: edited},
	})
	if _, _, err := editAllWays(t, []byte(`{"`+esc+`":1}`), Options{}); err == nil || !strings.Contains(err.Error(), `escaped spelling of "max_completion_tokens"`) {
		t.Fatalf("the longest escaped spelling: %v", err)
	}
}

// In an object where a member can be removed, whitespace after a comma is
// held back with it only up to bodyEditMaxHeldSpace bytes: a padded body
// does not grow the editor, and still comes out as the same JSON.
func TestBodyEditLongWhitespace(t *testing.T) {
	pad := strings.Repeat(" \t\r\n", 10_000)
	for _, tc := range []struct {
		name, in, want string
		kept           bool
	}{
		{"kept member", `{"a":1,` + pad + `"b":2}`, `{"a":1,"b":2}`, true},
		{"removed last member", `{"a":1,` + pad + `"user":2}`, `{"a":1}`, false},
		{"removed middle member", `{"a":1,` + pad + `"user":2,` + pad + `"b":3}`, `{"a":1,"b":3}`, false},
		{"gateway", `{"providerOptions":{"gateway":{"a":1,` + pad + `"tags":2}}}`, `{"providerOptions":{"gateway":{"a":1}}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, res, err := editAllWays(t, []byte(tc.in), optsAttrNil)
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output not JSON: %v", err)
			}
			json.Unmarshal([]byte(tc.want), &want)
			if !jsonEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if !res.Edited {
				t.Fatal("not Edited")
			}
			if n := bytes.Count(out, []byte(" ")); tc.kept && n != strings.Count(tc.in, " ") {
				t.Fatalf("%d spaces out, %d in: a kept member's whitespace is moved, never dropped", n, strings.Count(tc.in, " "))
			}
		})
	}
	// Where nothing can be removed, nothing is held and nothing moves.
	in := `{"a":1,` + pad + `"user":2}`
	out, _, _ := editAllWays(t, []byte(in), optsBoth)
	if want := `{"a":1,` + pad + `"user":"proxy-user"}`; string(out) != want {
		t.Fatalf("got %q", trunc(out))
	}
}

// stallAfter hands out data, then reports a read that would block (a
// client that stopped sending) instead of blocking.
type stallAfter struct {
	data    []byte
	stalled bool
}

func (s *stallAfter) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		s.stalled = true
		return 0, errors.New("the test's client stalls: the editor waited for it")
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

func (*stallAfter) Close() error { return nil }

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// The editor is an io.ReadCloser over its source and nothing more.
func TestBodyEditReader(t *testing.T) {
	in := []byte(`{"model":"m","stream":true,"user":"a"}`)
	want := `{"model":"m","stream":true,"user":"proxy-user","stream_options":{"include_usage":true}}`

	t.Run("io.Copy to a ReaderFrom, from a WriterTo source", func(t *testing.T) {
		// bytes.Reader is a WriterTo and bytes.Buffer a ReaderFrom:
		// neither may go around the editor.
		ed := NewEditor(io.NopCloser(bytes.NewReader(in)), optsBoth)
		if _, ok := any(ed).(io.WriterTo); ok {
			t.Fatal("the editor must not be a WriterTo of its own")
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, ed); err != nil {
			t.Fatal(err)
		}
		if buf.String() != want {
			t.Fatalf("got %s", buf.String())
		}
	})

	t.Run("iotest", func(t *testing.T) {
		ed := NewEditor(io.NopCloser(iotest.HalfReader(bytes.NewReader(in))), optsBoth)
		if err := iotest.TestReader(ed, []byte(want)); err != nil {
			t.Fatal(err)
		}
		ed = NewEditor(io.NopCloser(iotest.DataErrReader(bytes.NewReader(in))), optsBoth)
		if err := iotest.TestReader(ed, []byte(want)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("source error", func(t *testing.T) {
		boom := errors.New("connection reset")
		src := io.MultiReader(bytes.NewReader(in[:20]), iotest.ErrReader(boom))
		ed := NewEditor(io.NopCloser(src), optsBoth)
		out, err := io.ReadAll(ed)
		if !errors.Is(err, boom) {
			t.Fatalf("err %v, want the source's", err)
		}
		if string(out) != `{"model":"m",` { // "stream" is held until its name ends
			t.Fatalf("got %q before the error", out)
		}
		if _, err := ed.Read(make([]byte, 10)); !errors.Is(err, boom) {
			t.Fatalf("second read: %v", err)
		}
		if ed.Result().Done {
			t.Fatal("Done after an error")
		}
	})

	t.Run("source error mid-value", func(t *testing.T) {
		ed := NewEditor(io.NopCloser(iotest.TimeoutReader(bytes.NewReader(in))), optsBoth)
		out := make([]byte, 100)
		n, err := ed.Read(out)
		if err != nil || n == 0 {
			t.Fatalf("first read: %d, %v", n, err)
		}
		_, err = ed.Read(out)
		if !errors.Is(err, iotest.ErrTimeout) {
			t.Fatalf("got %v, want %v", err, iotest.ErrTimeout)
		}
	})

	t.Run("EOF with data", func(t *testing.T) {
		ed := NewEditor(io.NopCloser(iotest.DataErrReader(strings.NewReader(`{"a":[1]}`))), optsBoth)
		out, err := io.ReadAll(ed)
		if err != nil || string(out) != `{"a":[1]}` {
			t.Fatalf("%q, %v", out, err)
		}
		if r := ed.Result(); !r.Done || r.Refused {
			t.Fatalf("%+v", r)
		}
	})

	t.Run("refusal with EOF in the same read", func(t *testing.T) {
		// a refused body never reads as ended: the transport must not
		// finish the upstream body
		for _, in := range []string{`{"a":[1]`, `{"a":1} x`, `{"stream":1}`} {
			ed := NewEditor(io.NopCloser(iotest.DataErrReader(strings.NewReader(in))), optsBoth)
			_, err := io.ReadAll(ed)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("%s: %v, want a refusal", in, err)
			}
			if r := ed.Result(); r.Done || !r.Refused || ed.Refusal() == nil {
				t.Fatalf("%s: %+v", in, r)
			}
		}
	})

	t.Run("refusal without waiting for more input", func(t *testing.T) {
		// the bad byte is refused at once, even when the client stalls
		// after it: the source's next read would block, and is not made
		src := &stallAfter{data: []byte(`{"model":"m","Stream":true,`)}
		ed := NewEditor(src, optsBoth)
		_, err := io.ReadAll(ed)
		if !errors.Is(err, ErrRefused) || src.stalled {
			t.Fatalf("%v (stalled %v)", err, src.stalled)
		}
	})

	t.Run("empty reads", func(t *testing.T) {
		ed := NewEditor(io.NopCloser(bytes.NewReader(in)), optsBoth)
		if n, err := ed.Read(nil); n != 0 || err != nil {
			t.Fatalf("Read(nil) = %d, %v", n, err)
		}
	})

	t.Run("close", func(t *testing.T) {
		src := &chunkedReader{data: in}
		ed := NewEditor(src, optsBoth)
		if _, err := ed.Read(make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		if err := ed.Close(); err != nil {
			t.Fatal(err)
		}
		if !src.closed {
			t.Fatal("source not closed")
		}
		if _, err := ed.Read(make([]byte, 5)); !errors.Is(err, ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if err := ed.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})

	t.Run("close and result while reading", func(t *testing.T) {
		// net/http may close a request body from another goroutine while
		// its writer reads it, and the response side asks for the result
		// from its own: -race checks this.
		big := realisticAgentBody(256<<10, true, true)
		ed := NewEditor(io.NopCloser(bytes.NewReader(big)), optsBoth)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for {
				if _, err := ed.Read(buf); err != nil {
					return
				}
			}
		}()
		for range 100 {
			_ = ed.Result()
		}
		ed.Close()
		wg.Wait()
	})
}

// special8 flags every byte a string must look at, the lowest exactly;
// longPlainRun never runs past one. Checked against a byte at a time on
// words built from the bytes around each class's edges.
func TestStringScanWords(t *testing.T) {
	edges := []byte{'"', '\\', 0, 1, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7e, 0x7f, 0x80, 0xa0, 0xc3, 0xff, 'a', 'n'}
	rng := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 256)
	for range 200_000 {
		for i := range buf[:8] {
			buf[i] = edges[rng.IntN(len(edges))]
		}
		x := binary.LittleEndian.Uint64(buf)
		m := special8(x)
		first := -1
		for i, c := range buf[:8] {
			special := !plainByte[c]
			if special && m&(0x80<<(8*i)) == 0 {
				t.Fatalf("special8(%016x) misses byte %d (%#x)", x, i, c)
			}
			if special && first < 0 {
				first = i
			}
		}
		if first >= 0 && bits.TrailingZeros64(m)>>3 != first {
			t.Fatalf("special8(%016x): lowest flag at byte %d, the first special is %d", x, bits.TrailingZeros64(m)>>3, first)
		}
	}
	for range 20_000 {
		for i := range buf {
			buf[i] = 'a' + byte(rng.IntN(26))
		}
		n := rng.IntN(len(buf) + 1)
		if n < len(buf) {
			buf[n] = edges[rng.IntN(5)] // '"', '\\' or a control byte
			if rng.IntN(2) == 0 {
				buf[n] = 0x80 + byte(rng.IntN(128))
			}
		}
		if got := longPlainRun(buf); got > n {
			t.Fatalf("longPlainRun ran to %d past the special byte at %d (%#x)", got, n, buf[n])
		}
	}
}

// A bad byte deep in a long run of plain text (where the vectorised
// search takes over) is refused wherever it falls.
func TestBodyEditLongRuns(t *testing.T) {
	for _, bad := range []string{"\x00", "\x1f", "\x7f\xff", "\xc3", "\xe2\x9c", "\xed\xa0\x80"} {
		for _, at := range []int{0, 63, 64, 65, 100, 127, 128, 129, 1000, 2046, 2047, 2048, 2049, 4095} {
			in := `{"a":"` + strings.Repeat("Q", at) + bad + strings.Repeat("Q", 3000) + `"}`
			_, _, err := editAllWays(t, []byte(in), Options{})
			if err == nil {
				t.Fatalf("%q after %d plain bytes: accepted", bad, at)
			}
			if bad == "\x7f\xff" {
				if !strings.Contains(err.Error(), fmt.Sprintf("invalid UTF-8 at byte %d", 6+at+1)) {
					t.Fatalf("%q after %d plain bytes: %v", bad, at, err)
				}
			}
		}
	}
}

// appendJSONString encodes as json.Marshal does, the usual ids and the
// strings it escapes alike.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "key:alice", "sandbox:sbx_1", `a"b`, `a\b`, "<&>", "tab\there", "\x00\x1f\x7f", "é", "\u2028\u2029", "\xff", strings.Repeat("x", 100)} {
		want, _ := json.Marshal(s)
		if got := appendJSONString([]byte("prefix"), s); string(got) != "prefix"+string(want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}
