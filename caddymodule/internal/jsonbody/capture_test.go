package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fieldsAllWays edits in every way of readWays, with the edits of
// optsBoth and an AtEnd that records what it gets and returns ret. It
// fails unless AtEnd was called once per way (none for a refused body)
// with the same Fields every time.
func fieldsAllWays(t *testing.T, in string, ret error) (Fields, []byte, Result, error) {
	t.Helper()
	var got []Fields
	opts := optsBoth
	opts.AtEnd = AtEndFunc(func(f Fields) error {
		got = append(got, f)
		return ret
	})
	out, res, err := edit(t, []byte(in), opts, nil, nil)
	for _, w := range readWays[1:] {
		o, r, e := edit(t, []byte(in), opts, w.src, w.out)
		if !bytes.Equal(o, out) || r != res || fmt.Sprint(e) != fmt.Sprint(err) {
			t.Fatalf("source reads %v, reads %v: %q %+v %v; one read %q %+v %v", w.src, w.out, trunc(o), r, e, trunc(out), res, err)
		}
	}
	if errors.Is(err, ErrRefused) {
		if len(got) != 0 {
			t.Fatalf("AtEnd called for a refused body: %+v", got)
		}
		return Fields{}, out, res, err
	}
	if len(got) != len(readWays) {
		t.Fatalf("AtEnd called %d times for %d edits", len(got), len(readWays))
	}
	for _, f := range got[1:] {
		if !reflect.DeepEqual(f, got[0]) {
			t.Fatalf("AtEnd got %+v, and %+v", f, got[0])
		}
	}
	return got[0], out, res, err
}

func TestBodyEditFields(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"` + strings.Repeat("long conversation ", 16<<10) + `","model":"not/this","max_tokens":1}]`
	for _, tc := range []struct {
		name, in string
		want     Fields // Bytes is len(in); Choices 1 unless given
	}{
		{"chat", `{"model":"openai/gpt-5","messages":[],"max_tokens":100}`, Fields{Model: "openai/gpt-5", HasModel: true, OutputCap: 100}},
		{"model after 300 KB of messages", `{` + msgs + `,"stream":true,"model":"anthropic/claude-sonnet-4.5"}`, Fields{Model: "anthropic/claude-sonnet-4.5", HasModel: true, OutputCap: -1}},
		{"no model", `{"input":"x"}`, Fields{OutputCap: -1}},
		{"escaped model", `{"model":"openai\/gpt-5\u002dmini"}`, Fields{Model: "openai/gpt-5-mini", HasModel: true, OutputCap: -1}},
		{"model of 256 bytes", `{"model":"` + strings.Repeat("m", 256) + `"}`, Fields{Model: strings.Repeat("m", 256), HasModel: true, OutputCap: -1}},
		{"model of 256 escaped bytes", `{"model":"` + strings.Repeat(`\u006d`, 256) + `"}`, Fields{Model: strings.Repeat("m", 256), HasModel: true, OutputCap: -1}},
		{"the largest cap", `{"max_tokens":10,"max_output_tokens":2000,"max_completion_tokens":300}`, Fields{OutputCap: 2000}},
		{"null caps", `{"max_tokens":null,"max_completion_tokens":null}`, Fields{OutputCap: -1}},
		{"a null and a cap", `{"max_tokens":null,"max_completion_tokens":0}`, Fields{OutputCap: 0}},
		{"a cap of 2^53-1", `{"max_tokens":9007199254740991}`, Fields{OutputCap: 9007199254740991}},
		{"caps elsewhere are not read", `{"reasoning":{"max_tokens":5},"thinking":{"budget_tokens":9}}`, Fields{OutputCap: -1}},
		{"n", `{"model":"openai/gpt-5","max_tokens":1000,"n":8}`, Fields{Model: "openai/gpt-5", HasModel: true, OutputCap: 1000, Choices: 8}},
		{"the largest of n and best_of", `{"best_of":20,"n":3,"max_tokens":16}`, Fields{OutputCap: 16, Choices: 20}},
		{"n above best_of", `{"n":128,"best_of":2}`, Fields{OutputCap: -1, Choices: 128}},
		{"n of one", `{"n":1}`, Fields{OutputCap: -1, Choices: 1}},
		{"null choices", `{"n":null,"best_of":null}`, Fields{OutputCap: -1, Choices: 1}},
		{"choices elsewhere are not read", `{"messages":[{"n":99}],"providerOptions":{"openai":{"n":500}},"stream_options":{"n":0}}`, Fields{OutputCap: -1}},
		{
			"gateway fallbacks",
			`{"model":"openai/gpt-5","providerOptions":{"gateway":{"order":["vertex"],"only":["x"],"models":["anthropic/claude-opus-4.7","google/gemini-3.1-pro-preview"]}}}`,
			Fields{Model: "openai/gpt-5", HasModel: true, OutputCap: -1, Fallbacks: []string{"anthropic/claude-opus-4.7", "google/gemini-3.1-pro-preview"}},
		},
		{
			"decision fallback objects",
			`{"providerOptions":{"gateway":{"models":[{"when":{"question":"intent","confidenceBelow":0.6},"model":"openai/gpt-6-astra"}, "a/b" ]}}}`,
			Fields{OutputCap: -1, Fallbacks: []string{"openai/gpt-6-astra", "a/b"}},
		},
		{
			"top-level models, in body order",
			`{"models":["x/1"],"providerOptions":{"gateway":{"models":["y/2"]}},"model":"z/3"}`,
			Fields{Model: "z/3", HasModel: true, OutputCap: -1, Fallbacks: []string{"x/1", "y/2"}},
		},
		{"empty and null lists", `{"models":null,"providerOptions":{"gateway":{"models":[]}}}`, Fields{OutputCap: -1}},
		{"32 fallbacks", `{"models":["a"` + strings.Repeat(`,"a"`, 31) + `]}`, Fields{OutputCap: -1, Fallbacks: slicesRepeat("a", 32)}},
		{"lists elsewhere are not read", `{"providerOptions":{"openai":{"models":[1]},"gateway":{"x":{"models":[2]}}},"messages":[{"models":[3]}]}`, Fields{OutputCap: -1}},
		{"byte order mark and trailing space", "\xef\xbb\xbf {\"model\":\"m\"} \r\n", Fields{Model: "m", HasModel: true, OutputCap: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, out, res, err := fieldsAllWays(t, tc.in, nil)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			tc.want.Bytes = int64(len(tc.in))
			if tc.want.Choices == 0 {
				tc.want.Choices = 1
			}
			if !reflect.DeepEqual(f, tc.want) {
				t.Errorf("got %+v\nwant %+v", f, tc.want)
			}
			plain, plainRes, _ := editAllWays(t, []byte(tc.in), optsBoth)
			if !bytes.Equal(out, plain) || res != plainRes {
				t.Errorf("with AtEnd %q %+v; without %q %+v", trunc(out), res, trunc(plain), plainRes)
			}
		})
	}
}

func slicesRepeat(s string, n int) []string {
	r := make([]string, n)
	for i := range r {
		r[i] = s
	}
	return r
}

// TestBodyEditFieldRefusals: what AtEnd would read other than the
// gateway may is refused, at the member, with a message that names it;
// without AtEnd the same bodies pass (their members are not read).
func TestBodyEditFieldRefusals(t *testing.T) {
	long := strings.Repeat("m", 257)
	for _, tc := range []struct{ name, in, msg string }{
		{"model a number", `{"model":1}`, `member "model" at byte 9 must be a string`},
		{"model null", `{"model":null}`, `member "model" at byte 9 must be a string`},
		{"model an array", `{"model":["a"]}`, `must be a string`},
		{"model empty", `{"model":""}`, `member "model" at byte 9 must be a model id: 1 to 256 printable ASCII`},
		{"model too long", `{"model":"` + long + `"}`, `must be a model id`},
		{"model too long escaped", `{"model":"` + strings.Repeat(`\/`, 257) + `"}`, `must be a model id`},
		{"model not ASCII", `{"model":"openai/gpt-5é"}`, `must be a model id`},
		{"model escaped not ASCII", `{"model":"openai/gpt-5\u00e9"}`, `must be a model id`},
		{"model with a newline", `{"model":"openai/gpt-5\n"}`, `must be a model id`},
		{"model with NUL", `{"model":"openai\u0000/gpt-5"}`, `must be a model id`},
		{"model with DEL", "{\"model\":\"a\x7f\"}", `must be a model id`},
		{"cap with an exponent", `{"max_tokens":1e3}`, `member "max_tokens" at byte 14 must be a plain non-negative integer`},
		{"cap with a fraction", `{"max_completion_tokens":100.0}`, `member "max_completion_tokens" at byte 25 must be a plain`},
		{"cap of zero with an exponent", `{"max_tokens":0E+0}`, `must be a plain`},
		{"cap negative", `{"max_output_tokens":-1}`, `member "max_output_tokens" at byte 21 must be a non-negative integer or null`},
		{"cap negative zero", `{"max_tokens":-0}`, `must be a non-negative integer or null`},
		{"cap a string", `{"max_tokens":"100"}`, `must be a non-negative integer or null`},
		{"cap true", `{"max_tokens":true}`, `must be a non-negative integer or null`},
		{"cap of 2^53", `{"max_tokens":9007199254740992}`, `member "max_tokens" at byte 14 is above 9007199254740991`},
		{"cap huge", `{"max_tokens":1` + strings.Repeat("0", 400) + `}`, `is above 9007199254740991`},
		{"n zero", `{"n":0}`, `member "n" at byte 5 must be a positive integer or null`},
		{"best_of zero", `{"best_of":0}`, `member "best_of" at byte 11 must be a positive integer or null`},
		{"n negative", `{"n":-8}`, `member "n" at byte 5 must be a positive integer or null`},
		{"n a string", `{"n":"8"}`, `must be a positive integer or null`},
		{"n true", `{"n":true}`, `must be a positive integer or null`},
		{"n an array", `{"n":[8]}`, `must be a positive integer or null`},
		{"n with a fraction", `{"n":8.0}`, `member "n" at byte 5 must be a plain positive integer (no fraction, no exponent)`},
		{"n with an exponent", `{"n":1e2}`, `must be a plain positive integer`},
		{"best_of with an exponent", `{"best_of":2E0}`, `member "best_of" at byte 11 must be a plain positive integer`},
		{"n of 129", `{"max_tokens":1000,"n":129}`, `member "n" at byte 23 is above 128, the most completions one request may ask for`},
		{"best_of of 129", `{"best_of":129}`, `member "best_of" at byte 11 is above 128`},
		{"n huge", `{"n":1` + strings.Repeat("0", 400) + `}`, `is above 128`},
		{"models a string", `{"models":"a/b"}`, `member "models" at byte 10 must be an array of model ids, or null`},
		{"gateway models an object", `{"providerOptions":{"gateway":{"models":{"model":"a"}}}}`, `member "models" in providerOptions.gateway at byte 40 must be an array`},
		{"entry a number", `{"models":["a",1]}`, `entry 2 of models at byte 15 must be a model id (a string) or an object`},
		{"entry null", `{"providerOptions":{"gateway":{"models":[null]}}}`, `entry 1 of providerOptions.gateway.models at byte 41 must be a model id`},
		{"entry an array", `{"models":[["a"]]}`, `must be a model id (a string) or an object`},
		{"entry empty", `{"models":[""]}`, `entry 1 of models at byte 11 must be a model id: 1 to 256`},
		{"entry too long", `{"models":["` + long + `"]}`, `entry 1 of models at byte 11 must be a model id`},
		{"entry not ASCII", `{"models":["a","ünicode"]}`, `entry 2 of models at byte 15 must be a model id`},
		{"33 entries", `{"models":["a"` + strings.Repeat(`,"a"`, 32) + `]}`, `models has more than 32 entries (at byte 139)`},
		{"object entry without model", `{"providerOptions":{"gateway":{"models":[{"when":{"model":"x"}}]}}}`, `entry 1 of providerOptions.gateway.models ends at byte 62 without a "model"`},
		{"object entry's model a number", `{"models":[{"model":7}]}`, `member "model" of entry 1 of models at byte 20 must be a string`},
		{"object entry's model not ASCII", `{"models":[{"model":"\ud83d\ude00"}]}`, `member "model" of entry 1 of models at byte 20 must be a model id`},
		{"object entry's model twice", `{"models":[{"model":"a","model":"b"}]}`, `duplicate member "model" in an entry of a fallback list at byte 24`},
		{"object entry's model in capitals", `{"models":[{"Model":"a"}]}`, `member "Model" in an entry of a fallback list at byte 12 is a case variant of "model"`},
		{"object entry's model escaped", `{"models":[{"mod\u0065l":"a"}]}`, `is an escaped spelling of "model"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out, res, err := fieldsAllWays(t, tc.in, nil)
			if err == nil {
				t.Fatalf("accepted, output %q", trunc(out))
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("refusal %q, want it to say %q", err, tc.msg)
			}
			if !res.Refused || res.Done || json.Valid(out) {
				t.Fatalf("result %+v, output %q", res, trunc(out))
			}
			if _, _, err := editAllWays(t, []byte(tc.in), optsBoth); err != nil {
				t.Fatalf("refused without AtEnd: %v", err)
			}
		})
	}
}

// TestBodyEditControlledModels: a top-level models is a controlled name,
// AtEnd or not: a variant or a repeat is refused.
func TestBodyEditControlledModels(t *testing.T) {
	for _, in := range []string{`{"models":[],"models":["a"]}`, `{"Models":["a"]}`, `{"m\u006fdels":["a"]}`} {
		for _, opts := range []Options{{}, optsAtEnd} {
			if _, _, err := editAllWays(t, []byte(in), opts); err == nil || !strings.Contains(err.Error(), `"models"`) {
				t.Errorf("%s: %v", in, err)
			}
		}
	}
}

// TestBodyEditControlledChoices: n and best_of are controlled names,
// AtEnd or not: a variant or a repeat is refused, so a body the proxy
// reads as one choice cannot be run as many (JSON.parse takes the last
// of two n).
func TestBodyEditControlledChoices(t *testing.T) {
	for _, tc := range []struct{ in, msg string }{
		{`{"n":1,"messages":[],"n":128}`, `duplicate member "n" at byte 21`},
		{`{"N":128}`, `member "N" at byte 1 is a case variant of "n"`},
		{`{"\u006e":128}`, `member "\u006e" at byte 1 is an escaped spelling of "n"`},
		{`{"best_of":1,"best_of":20}`, `duplicate member "best_of"`},
		{`{"Best_Of":20}`, `case variant of "best_of"`},
		{`{"beſt_of":20}`, `case variant of "best_of"`},
		{`{"best\u005fof":20}`, `escaped spelling of "best_of"`},
	} {
		for _, opts := range []Options{{}, optsAtEnd} {
			if _, _, err := editAllWays(t, []byte(tc.in), opts); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s (AtEnd %v): %v, want %q", tc.in, opts.AtEnd != nil, err, tc.msg)
			}
		}
	}
}

// releaseRecorder reads an editor in small pieces and records what it
// released.
type releaseRecorder struct {
	ed       *Editor
	released []byte
}

func (r *releaseRecorder) readAll(size int) error {
	buf := make([]byte, size)
	for {
		n, err := r.ed.Read(buf)
		r.released = append(r.released, buf[:n]...)
		if err != nil {
			return err
		}
	}
}

// TestBodyEditHoldsEndUntilAtEnd: no complete JSON body leaves the
// editor before AtEnd approves it: when AtEnd runs, all but the closing
// '}' (and what follows it) went out; if AtEnd approves, the rest follows
// and the body ends; if it refuses, Read returns its error from then on,
// Stopped returns it, and the body never ends.
func TestBodyEditHoldsEndUntilAtEnd(t *testing.T) {
	body := realisticAgentBody(64<<10, true, true)
	bodyWithSpace := append(append([]byte{}, body...), " \n\t\r\n"...)
	stop := errors.New("over budget")
	for _, tc := range []struct {
		name   string
		in     []byte
		atEnd  error
		err    error
		lenOut int // released when AtEnd runs: len(in)-lenOut
	}{
		{"approved", body, nil, io.EOF, 1},
		{"approved, trailing space", bodyWithSpace, nil, io.EOF, 6},
		{"stopped", body, stop, stop, 1},
		{"stopped, trailing space", bodyWithSpace, stop, stop, 6},
		{"stopped with io.EOF", body, io.EOF, io.ErrUnexpectedEOF, 1},
	} {
		for _, size := range []int{1, 7, 4096, 64 << 10} {
			t.Run(fmt.Sprintf("%s/reads of %d", tc.name, size), func(t *testing.T) {
				var rec releaseRecorder
				calls := 0
				var opts Options // no edit: what goes out is the body
				opts.AtEnd = AtEndFunc(func(f Fields) error {
					calls++
					if want := len(tc.in) - tc.lenOut; !bytes.Equal(rec.released, tc.in[:want]) {
						t.Errorf("when AtEnd ran, %d bytes were released, want %d: ...%q", len(rec.released), want, rec.released[max(0, len(rec.released)-20):])
					}
					if f.Bytes != int64(len(tc.in)) || f.Model != "anthropic/claude-sonnet-4.5" || f.OutputCap != 8192 {
						t.Errorf("fields %+v", f)
					}
					return tc.atEnd
				})
				rec.ed = NewEditor(&chunkedReader{data: tc.in, sizes: []int{size}}, opts)
				err := rec.readAll(size)
				if err != tc.err || calls != 1 {
					t.Fatalf("Read's error %v, want %v; AtEnd called %d times", err, tc.err, calls)
				}
				res := rec.ed.Result()
				if tc.atEnd == nil {
					if !bytes.Equal(rec.released, tc.in) || !res.Done || res.Edited || rec.ed.Stopped() != nil {
						t.Fatalf("approved, but %d of %d bytes out, %+v, Stopped %v", len(rec.released), len(tc.in), res, rec.ed.Stopped())
					}
					return
				}
				if json.Valid(rec.released) || len(rec.released) != len(tc.in)-tc.lenOut {
					t.Fatalf("stopped, but %d of %d bytes went out", len(rec.released), len(tc.in))
				}
				if rec.ed.Stopped() != err || rec.ed.Refusal() != nil || res.Done || res.Refused {
					t.Fatalf("Stopped %v, Refusal %v, %+v", rec.ed.Stopped(), rec.ed.Refusal(), res)
				}
				for range 2 {
					if n, again := rec.ed.Read(make([]byte, 10)); n != 0 || again != err {
						t.Fatalf("a Read after the stop: %d, %v", n, again)
					}
				}
			})
		}
	}
}

// TestBodyEditAtEndNotCalled: AtEnd runs only for a whole well-formed
// body: not for one refused, cut short, or that failed to read.
func TestBodyEditAtEndNotCalled(t *testing.T) {
	for _, in := range []string{`{"model":"a"`, `{"model":"a"} x`, `{"model":"a","Model":"b"}`, ``} {
		opts := optsAtEnd
		opts.AtEnd = AtEndFunc(func(Fields) error { t.Errorf("AtEnd called for %q", in); return nil })
		if _, _, err := editAllWays(t, []byte(in), opts); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	opts := optsAtEnd
	opts.AtEnd = AtEndFunc(func(Fields) error { t.Error("AtEnd called after a read error"); return nil })
	failing := io.NopCloser(io.MultiReader(strings.NewReader(`{"model":"a"}`), iotestErrReader{}))
	if _, err := io.ReadAll(NewEditor(failing, opts)); err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("error %v", err)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// TestBodyEditHeldSpaceBound: whitespace after the body is held with its
// '}' up to the hold's size; beyond, it is dropped (the body is Edited),
// so an attacker's megabytes of trailing whitespace are not buffered.
func TestBodyEditHeldSpaceBound(t *testing.T) {
	for _, n := range []int{bodyEditHoldSize - 1, bodyEditHoldSize, 64 << 10} {
		in := `{"model":"a"}` + strings.Repeat("\n", n)
		out, res, err := editAllWays(t, []byte(in), optsAtEnd)
		if err != nil {
			t.Fatal(err)
		}
		if keep := min(len(in), 13+bodyEditHoldSize-1); string(out) != in[:keep] || res.Edited != (keep < len(in)) {
			t.Fatalf("%d newlines: %d bytes out, %+v", n, len(out), res)
		}
	}
}

// TestInternTable: a model id named again costs no allocation, and the
// table stops growing at maxInternedIDs whatever the ids.
func TestInternTable(t *testing.T) {
	var table internTable
	id := []byte("openai/gpt-5")
	if got := table.intern(id); got != "openai/gpt-5" {
		t.Fatalf("intern = %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { _ = table.intern(id) }); n != 0 {
		t.Errorf("interning a known id: %v allocations, want 0", n)
	}
	for i := range 3 * maxInternedIDs {
		junk := []byte("junk/" + strconv.Itoa(i))
		if got := table.intern(junk); got != string(junk) {
			t.Fatalf("intern(%q) = %q", junk, got)
		}
	}
	if len(table.ids) != maxInternedIDs {
		t.Errorf("the table holds %d ids, want %d", len(table.ids), maxInternedIDs)
	}
}
