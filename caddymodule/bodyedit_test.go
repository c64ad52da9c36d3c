package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

const testReportingUser = "proxy-user"

func strPtr(s string) *string { return &s }

var (
	optsAttr    = bodyEditOptions{Attribution: true, User: strPtr(testReportingUser)}
	optsAttrNil = bodyEditOptions{Attribution: true}
	optsUsage   = bodyEditOptions{IncludeUsage: true}
	optsBoth    = bodyEditOptions{Attribution: true, User: strPtr(testReportingUser), IncludeUsage: true}
	optsBothNil = bodyEditOptions{Attribution: true, IncludeUsage: true}
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

// strictReader fails the test if the editor returns more than asked.
func readAllIn(t testing.TB, r io.Reader, sizes []int) []byte {
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
			return out
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if i > 100_000_000 {
			t.Fatal("no end")
		}
	}
}

// editAll runs the editor over in with one big read per call.
func editAll(t testing.TB, in []byte, opts bodyEditOptions) ([]byte, bodyEditResult) {
	t.Helper()
	ed := newBodyEditor(io.NopCloser(bytes.NewReader(in)), opts)
	out, err := io.ReadAll(ed)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return out, ed.Result()
}

// editAllWays edits in with one big read, with 1-byte reads from a
// 1-byte source, and with odd sizes, and fails unless all agree.
func editAllWays(t testing.TB, in []byte, opts bodyEditOptions) ([]byte, bodyEditResult) {
	t.Helper()
	out, res := editAll(t, in, opts)
	for _, w := range []struct {
		src, read []int
	}{
		{[]int{1}, []int{1}},
		{nil, []int{1}},
		{[]int{1}, nil},
		{[]int{7, 3, 1, 4096, 13}, []int{5, 1, 2, 33, 9000}},
	} {
		ed := newBodyEditor(&chunkedReader{data: in, sizes: w.src}, opts)
		got := readAllIn(t, ed, w.read)
		if !bytes.Equal(got, out) {
			t.Fatalf("source reads %v, reads %v: got\n%q\nwant (one read)\n%q", w.src, w.read, trunc(got), trunc(out))
		}
		if r := ed.Result(); r != res {
			t.Fatalf("source reads %v, reads %v: result %+v, one read %+v", w.src, w.read, r, res)
		}
	}
	if !res.Done {
		t.Fatalf("result not Done after EOF: %+v", res)
	}
	if !res.Edited && !bytes.Equal(out, in) {
		t.Fatalf("Edited false but output differs:\n%q\n%q", trunc(in), trunc(out))
	}
	return out, res
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:150]) + "..." + string(b[len(b)-150:])
	}
	return string(b)
}

type bodyEditCase struct {
	name string
	opts bodyEditOptions
	in   string
	want string // "" means: unchanged
	res  bodyEditResult
}

func runBodyEditCases(t *testing.T, cases []bodyEditCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			out, res := editAllWays(t, []byte(tc.in), tc.opts)
			if string(out) != want {
				t.Errorf("got\n%s\nwant\n%s", trunc(out), trunc([]byte(want)))
			}
			tc.res.Done = true
			if res != tc.res {
				t.Errorf("result %+v, want %+v", res, tc.res)
			}
			if !res.Malformed && json.Valid([]byte(tc.in)) && !json.Valid(out) {
				t.Errorf("output is not valid JSON: %s", trunc(out))
			}
		})
	}
}

var edited = bodyEditResult{Edited: true}

func TestBodyEditAttribution(t *testing.T) {
	runBodyEditCases(t, []bodyEditCase{
		{name: "nothing to edit", opts: optsBoth,
			in: `{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi","user":"nested"}],"max_tokens":10}`},
		{name: "user replaced", opts: optsAttr,
			in: `{"model":"m","user":"victim"}`, want: `{"model":"m","user":"proxy-user"}`, res: edited},
		{name: "user already the proxy's", opts: optsAttr,
			in: `{"model":"m","user":"proxy-user"}`},
		{name: "user spelled with an escape, same value", opts: optsAttr,
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
		{name: "escaped name", opts: optsAttr,
			in: `{"us\u0065r":"v"}`, want: `{"us\u0065r":"proxy-user"}`, res: edited},
		{name: "fully escaped name", opts: optsAttr,
			in: `{"\u0055\u0053\u0045\u0052":"v"}`, want: `{"\u0055\u0053\u0045\u0052":"proxy-user"}`, res: edited},
		{name: "upper case", opts: optsAttr,
			in: `{"USER":"v","User":"w"}`, want: `{"USER":"proxy-user","User":"proxy-user"}`, res: edited},
		{name: "long s folds to s", opts: optsAttr,
			in: `{"uſer":"v","u\u017fer":"w"}`, want: `{"uſer":"proxy-user","u\u017fer":"proxy-user"}`, res: edited},
		{name: "lenient escape", opts: optsAttr,
			in: `{"us\er":"v"}`, want: `{"us\er":"proxy-user"}`, res: edited},
		{name: "not user", opts: optsAttr,
			in: `{"users":"v","use":"w","user ":"x","\u0075ser\u0000":"y"}`},
		{name: "duplicates", opts: optsAttr,
			in: `{"user":"a","model":"m","user":"b"}`, want: `{"user":"proxy-user","model":"m","user":"proxy-user"}`, res: edited},
		{name: "user needs escaping", opts: bodyEditOptions{Attribution: true, User: strPtr("a\"b\\c\n")},
			in: `{"user":"x"}`, want: `{"user":"a\"b\\c\n"}`, res: edited},
		{name: "attribution off", opts: optsUsage,
			in: `{"user":"victim","providerOptions":{"gateway":{"user":"v","tags":["t"]}}}`},

		{name: "nil user: only member", opts: optsAttrNil,
			in: `{"user":"a"}`, want: `{}`, res: edited},
		{name: "nil user: first", opts: optsAttrNil,
			in: `{"user":"a","model":"m"}`, want: `{"model":"m"}`, res: edited},
		{name: "nil user: last", opts: optsAttrNil,
			in: `{"model":"m","user":"a"}`, want: `{"model":"m"}`, res: edited},
		{name: "nil user: middle", opts: optsAttrNil,
			in: `{"model":"m","user":{"a":[1]},"n":1}`, want: `{"model":"m","n":1}`, res: edited},
		{name: "nil user: all duplicates", opts: optsAttrNil,
			in: `{"user":1,"USER":2,"us\u0065r":3}`, want: `{}`, res: edited},
		{name: "nil user: around others", opts: optsAttrNil,
			in: `{"user":1,"a":1,"user":2,"user":3,"b":2,"user":4}`, want: `{"a":1,"b":2}`, res: edited},
		{name: "nil user: whitespace", opts: optsAttrNil,
			in: "{ \"user\" : 1 , \"a\" : 2 ,\n \"user\"\t:\n\"x\"\n}", want: "{   \"a\" : 2 \n}", res: edited},
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
		{name: "gateway tags only", opts: optsAttr,
			in: `{"providerOptions":{"gateway":{"tags":[]}}}`, want: `{"providerOptions":{"gateway":{}}}`, res: edited},
		{name: "gateway tags first and duplicated", opts: optsAttr,
			in:   `{"providerOptions":{"gateway":{"tags":["a"],"models":["x"],"TAGS":"b","t\u0061gs":{"c":1}}}}`,
			want: `{"providerOptions":{"gateway":{"models":["x"]}}}`, res: edited},
		{name: "gateway cased and escaped", opts: optsAttr,
			in:   `{"PROVIDEROPTIONS":{"Gate\u0077ay":{"TAGS":["a"],"User":"x"}}}`,
			want: `{"PROVIDEROPTIONS":{"Gate\u0077ay":{"User":"proxy-user"}}}`, res: edited},
		{name: "gateway duplicated", opts: optsAttr,
			in:   `{"providerOptions":{"gateway":{"tags":["a"]},"gateway":{"tags":["b"],"user":"u"}},"providerOptions":{"gateway":{"user":1}}}`,
			want: `{"providerOptions":{"gateway":{},"gateway":{"user":"proxy-user"}},"providerOptions":{"gateway":{"user":"proxy-user"}}}`, res: edited},
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
	streamed := bodyEditResult{Streamed: true}
	streamedEdited := bodyEditResult{Streamed: true, Edited: true}
	runBodyEditCases(t, []bodyEditCase{
		{name: "stream without options", opts: optsUsage,
			in: `{"model":"m","stream":true}`, want: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "stream alone, spaces", opts: optsUsage,
			in: "{ \"stream\" : true }\n", want: "{ \"stream\" : true ,\"stream_options\":{\"include_usage\":true}}\n", res: streamedEdited},
		{name: "stream false", opts: optsUsage,
			in: `{"model":"m","stream":false}`},
		{name: "no stream", opts: optsUsage,
			in: `{"model":"m"}`},
		{name: "empty object", opts: optsBoth, in: `{}`},
		{name: "stream twice, last false", opts: optsUsage,
			in: `{"stream":true,"model":"m","stream":false}`},
		{name: "stream twice, last true", opts: optsUsage,
			in: `{"stream":false,"stream":true}`, want: `{"stream":false,"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "stream a string", opts: optsUsage,
			in: `{"stream":"true"}`},
		{name: "stream cased", opts: optsUsage,
			in: `{"STREAM":true}`, want: `{"STREAM":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "stream inside a message", opts: optsUsage,
			in: `{"messages":[{"stream":true}],"x":{"stream":true}}`},
		{name: "options after stream, include_usage false", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":false}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options after stream, include_usage true", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":true}}`, res: bodyEditResult{Streamed: true, ClientUsage: true}},
		{name: "options before stream, include_usage true", opts: optsUsage,
			in: `{"stream_options":{"include_usage":true},"stream":true}`, res: bodyEditResult{Streamed: true, ClientUsage: true}},
		{name: "options before stream, include_usage false", opts: optsUsage,
			in: `{"stream_options":{"include_usage":false},"stream":true}`, want: `{"stream_options":{"include_usage":true},"stream":true}`, res: streamedEdited},
		{name: "options empty", opts: optsUsage,
			in: `{"stream":true,"stream_options":{}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "options with other members", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"x":[1,{"include_usage":false}] , "y" : 2 }}`, want: `{"stream":true,"stream_options":{"x":[1,{"include_usage":false}] , "y" : 2 ,"include_usage":true}}`, res: streamedEdited},
		{name: "include_usage a string", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":"true"}}`, want: `{"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "include_usage cased and twice", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"INCLUDE_USAGE":true,"include_\u0075sage":false}}`, want: `{"stream":true,"stream_options":{"INCLUDE_USAGE":true,"include_\u0075sage":true}}`, res: streamedEdited},
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
		{name: "client's last options win", opts: optsUsage,
			in: `{"stream_options":{"include_usage":true},"stream_options":null,"stream":true}`, want: `{"stream_options":{"include_usage":true},"stream_options":null,"stream":true,"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "client's last options object wins", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}`, want: `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}}`, res: streamedEdited},
		{name: "client's last include_usage wins", opts: optsUsage,
			in: `{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, want: `{"stream":true,"stream_options":{"include_usage":true,"include_usage":true}}`, res: streamedEdited},
		{name: "usage off still reports", opts: optsAttr,
			in: `{"stream":true,"stream_options":{"include_usage":true}}`, res: bodyEditResult{Streamed: true, ClientUsage: true}},
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

func TestBodyEditMalformed(t *testing.T) {
	malformed := bodyEditResult{Malformed: true}
	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	runBodyEditCases(t, []bodyEditCase{
		{name: "empty", opts: optsBoth, in: "", res: malformed},
		{name: "whitespace", opts: optsBoth, in: " \n\t", res: malformed},
		{name: "array", opts: optsBoth, in: `[{"user":"a","stream":true}]`, res: malformed},
		{name: "string", opts: optsBoth, in: `"user"`, res: malformed},
		{name: "not JSON", opts: optsBoth, in: "user=a&stream=true", res: malformed},
		{name: "byte order mark", opts: optsBoth, in: "\xef\xbb\xbf {\"user\":\"a\"}", want: "\xef\xbb\xbf {\"user\":\"proxy-user\"}", res: edited},
		{name: "half a byte order mark", opts: optsBoth, in: "\xef\xbb{\"user\":\"a\"}", res: malformed},
		{name: "byte order mark after whitespace", opts: optsBoth, in: " \xef\xbb\xbf{\"user\":\"a\"}", res: malformed},
		{name: "two byte order marks", opts: optsBoth, in: "\xef\xbb\xbf\xef\xbb\xbf{\"user\":\"a\"}", res: malformed},
		{name: "gzip", opts: optsBoth, in: "\x1f\x8b\x08\x00\x00\x00", res: malformed},
		{name: "truncated in a name", opts: optsAttr, in: `{"model":"m","us`, res: malformed},
		{name: "truncated in a held name", opts: optsAttrNil, in: `{"model":"m" , "us`, res: malformed},
		{name: "truncated in a removed member", opts: optsAttrNil,
			in: `{"model":"m","user":"ab`, want: `{"model":"m"`, res: bodyEditResult{Malformed: true, Edited: true}},
		{name: "truncated in a replaced value", opts: optsAttr,
			in: `{"model":"m","user":"ab`, want: `{"model":"m","user":"proxy-user"`, res: bodyEditResult{Malformed: true, Edited: true}},
		{name: "truncated in a message", opts: optsBoth, in: `{"messages":[{"content":"abc\`, res: malformed},
		{name: "truncated before the closing brace", opts: optsBoth, in: `{"stream":true `, res: bodyEditResult{Malformed: true, Streamed: true}},
		{name: "trailing garbage", opts: optsAttr,
			in: `{"user":"a"} x {"user":"b"}`, want: `{"user":"proxy-user"} x {"user":"b"}`, res: bodyEditResult{Malformed: true, Edited: true}},
		{name: "second object", opts: optsAttr,
			in: `{"a":1}{"user":"b"}`, res: malformed},
		{name: "trailing whitespace", opts: optsAttr, in: "{\"a\":1} \r\n\t"},
		{name: "double comma", opts: optsAttr, in: `{"a":1,,"user":"b"}`, res: malformed},
		{name: "trailing comma", opts: optsAttrNil, in: `{"a":1,}`, res: malformed},
		{name: "missing colon", opts: optsAttr, in: `{"a" 1,"user":"b"}`, res: malformed},
		{name: "missing value", opts: optsAttr, in: `{"a":,"user":"b"}`, res: malformed},
		{name: "missing comma", opts: optsAttr, in: `{"a":1 "user":"b"}`, res: malformed},
		{name: "single quotes", opts: optsAttr, in: `{'user':'b'}`, res: malformed},
		{name: "bad value start", opts: optsAttr, in: `{"a":'x", "user": "v"'}`, res: malformed},
		{name: "garbage after a scalar", opts: optsAttr, in: `{"a":1"user":"v"}`, res: malformed},
		{name: "unterminated deep nesting", opts: optsBoth, in: `{"messages":` + strings.Repeat("[", 100_000), res: malformed},
		{name: "deep nesting", opts: optsBoth,
			in:   `{"messages":` + deep + `,"user":"a"}`,
			want: `{"messages":` + deep + `,"user":"proxy-user"}`, res: edited},
		{name: "deep nesting of objects", opts: optsBoth,
			in: `{"m":` + strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000) + `}`},
		{name: "invalid UTF-8", opts: optsAttr,
			in: "{\"content\":\"\xff\xfe\xc0\x80\xed\xa0\x80\",\"\xffuser\":1,\"user\":\"\xff\"}", want: "{\"content\":\"\xff\xfe\xc0\x80\xed\xa0\x80\",\"\xffuser\":1,\"user\":\"proxy-user\"}", res: edited},
		{name: "control bytes in strings", opts: optsAttr,
			in: "{\"content\":\"a\x00\x01\nb\",\"user\":\"x\"}", want: "{\"content\":\"a\x00\x01\nb\",\"user\":\"proxy-user\"}", res: edited},
		{name: "whitespace everywhere", opts: optsBoth,
			in:   " \n\t{ \n \"user\" \t:\r\n \"a\" , \"stream\"\n:\ttrue \n, \"providerOptions\" : { \"gateway\" : { \"tags\" : [ ] , \"only\" : [ \"x\" ] } } }\n ",
			want: " \n\t{ \n \"user\" \t:\r\n \"proxy-user\" , \"stream\"\n:\ttrue \n, \"providerOptions\" : { \"gateway\" : {   \"only\" : [ \"x\" ] } } ,\"stream_options\":{\"include_usage\":true}}\n ",
			res:  bodyEditResult{Streamed: true, Edited: true}},
	})
}

// Names longer than bodyEditMaxName raw bytes are passed on as they
// stream, and the longest spelling of a name that is edited is not one;
// long strings anywhere stream through or are dropped whole.
func TestBodyEditLongTokens(t *testing.T) {
	long := strings.Repeat("x", 5000)
	var esc strings.Builder
	for _, r := range "providerOptions" {
		esc.WriteString(`\u00` + strings.ToLower(string("0123456789ABCDEF"[r>>4])+string("0123456789ABCDEF"[r&15])))
	}
	if esc.Len() != 90 {
		t.Fatalf("escaped name is %d bytes", esc.Len())
	}
	runBodyEditCases(t, []bodyEditCase{
		{name: "long name", opts: optsBothNil,
			in: `{"` + long + `":1,"user":"a","` + long + `\"` + long + `":2}`, want: `{"` + long + `":1,"` + long + `\"` + long + `":2}`, res: edited},
		{name: "long name ending in an escape", opts: optsAttr,
			in: `{"` + strings.Repeat("\\\\", 60) + `":1,"user":"a"}`, want: `{"` + strings.Repeat("\\\\", 60) + `":1,"user":"proxy-user"}`, res: edited},
		{name: "longest escaped name", opts: optsAttr,
			in: `{"` + esc.String() + `":{"gateway":{"tags":["a"]}}}`, want: `{"` + esc.String() + `":{"gateway":{}}}`, res: edited},
		{name: "huge strings", opts: optsBoth,
			in:   `{"messages":[{"role":"tool","content":"` + strings.Repeat(`line \"quoted\"\n`, 16<<10) + `"},{"role":"user","content":"` + strings.Repeat("QUJD", 64<<10) + `"}],"stream":true,"user":"` + strings.Repeat("u", 256<<10) + `"}`,
			want: `{"messages":[{"role":"tool","content":"` + strings.Repeat(`line \"quoted\"\n`, 16<<10) + `"},{"role":"user","content":"` + strings.Repeat("QUJD", 64<<10) + `"}],"stream":true,"user":"proxy-user","stream_options":{"include_usage":true}}`,
			res:  bodyEditResult{Edited: true, Streamed: true}},
		{name: "long user value", opts: optsAttr,
			in: `{"user":"` + long + `"}`, want: `{"user":"proxy-user"}`, res: edited},
	})
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
			out, res := editAllWays(t, []byte(tc.in), optsAttrNil)
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
	out, _ := editAllWays(t, []byte(in), optsBoth)
	if want := `{"a":1,` + pad + `"user":"proxy-user"}`; string(out) != want {
		t.Fatalf("got %q", trunc(out))
	}
}

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
		ed := newBodyEditor(io.NopCloser(bytes.NewReader(in)), optsBoth)
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
		ed := newBodyEditor(io.NopCloser(iotest.HalfReader(bytes.NewReader(in))), optsBoth)
		if err := iotest.TestReader(ed, []byte(want)); err != nil {
			t.Fatal(err)
		}
		ed = newBodyEditor(io.NopCloser(iotest.DataErrReader(bytes.NewReader(in))), optsBoth)
		if err := iotest.TestReader(ed, []byte(want)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("source error", func(t *testing.T) {
		boom := errors.New("connection reset")
		src := io.MultiReader(bytes.NewReader(in[:20]), iotest.ErrReader(boom))
		ed := newBodyEditor(io.NopCloser(src), optsBoth)
		out, err := io.ReadAll(ed)
		if !errors.Is(err, boom) {
			t.Fatalf("err %v, want the source's", err)
		}
		if string(out) != string(in[:20]) {
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
		ed := newBodyEditor(io.NopCloser(iotest.TimeoutReader(bytes.NewReader(in))), optsBoth)
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
		ed := newBodyEditor(io.NopCloser(iotest.DataErrReader(strings.NewReader("[1]"))), optsBoth)
		out, err := io.ReadAll(ed)
		if err != nil || string(out) != "[1]" {
			t.Fatalf("%q, %v", out, err)
		}
		if r := ed.Result(); !r.Done || !r.Malformed {
			t.Fatalf("%+v", r)
		}
	})

	t.Run("empty reads", func(t *testing.T) {
		ed := newBodyEditor(io.NopCloser(bytes.NewReader(in)), optsBoth)
		if n, err := ed.Read(nil); n != 0 || err != nil {
			t.Fatalf("Read(nil) = %d, %v", n, err)
		}
	})

	t.Run("close", func(t *testing.T) {
		src := &chunkedReader{data: in}
		ed := newBodyEditor(src, optsBoth)
		if _, err := ed.Read(make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		if err := ed.Close(); err != nil {
			t.Fatal(err)
		}
		if !src.closed {
			t.Fatal("source not closed")
		}
		if _, err := ed.Read(make([]byte, 5)); !errors.Is(err, errBodyEditorClosed) {
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
		ed := newBodyEditor(io.NopCloser(bytes.NewReader(big)), optsBoth)
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
