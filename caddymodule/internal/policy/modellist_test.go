package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// filterAll writes in through a filter in chunks of the given size.
func filterAll(in []byte, chunk int, allow func(string) bool) ([]byte, *ModelListFilter, error) {
	var out bytes.Buffer
	f := NewModelListFilter(&out, allow)
	for len(in) > 0 {
		n := min(chunk, len(in))
		if _, err := f.Write(in[:n]); err != nil {
			return out.Bytes(), f, err
		}
		in = in[n:]
	}
	return out.Bytes(), f, f.Close()
}

type member struct {
	key string
	raw string
}

// readList is what encoding/json reads of a model list, with the rules of
// ModelListFilter written out plainly: the elements it keeps (raw, as
// written), the other top-level members, and whether it is a list at all.
func readList(in []byte, allow func(string) bool) (kept []string, others []member, ok bool) {
	if !json.Valid(in) {
		return nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return nil, nil, false
	}
	var data []json.RawMessage
	seen := 0
	for dec.More() {
		kt, _ := dec.Token()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			panic(err)
		}
		key := kt.(string)
		if strings.EqualFold(key, "data") {
			seen++
			if raw[0] != '[' {
				return nil, nil, false
			}
			if err := json.Unmarshal(raw, &data); err != nil {
				panic(err)
			}
			continue
		}
		others = append(others, member{key, string(raw)})
	}
	if seen != 1 {
		return nil, nil, false
	}
	for _, el := range data {
		if keepElement(el, allow) {
			kept = append(kept, string(el))
		}
	}
	return kept, others, true
}

func keepElement(el json.RawMessage, allow func(string) bool) bool {
	if el[0] != '{' {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(el))
	dec.Token()
	exact, variant := 0, 0
	var id string
	isString := false
	for dec.More() {
		kt, _ := dec.Token()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			panic(err)
		}
		switch k := kt.(string); {
		case k == "id":
			exact++
			if raw[0] == '"' {
				isString = true
				if err := json.Unmarshal(raw, &id); err != nil {
					panic(err)
				}
			}
		case strings.EqualFold(k, "id"):
			variant++
		}
	}
	return exact == 1 && variant == 0 && isString && len(id) <= maxListID &&
		utf8.ValidString(id) && !strings.ContainsRune(id, utf8.RuneError) && allow(id)
}

// checkFiltered holds the filter's answer to what encoding/json reads.
func checkFiltered(t *testing.T, in, out []byte, f *ModelListFilter, err error, allow func(string) bool) {
	t.Helper()
	kept, others, ok := readList(in, allow)
	if !ok {
		if err == nil {
			t.Fatalf("filter accepted what is no model list: %q", in)
		}
		if !f.Wrote() && len(out) > 0 {
			t.Fatalf("Wrote() is false, yet %q was written", out)
		}
		return
	}
	if err != nil {
		t.Fatalf("filter refused a model list: %v\n%q", err, in)
	}
	if !json.Valid(out) {
		t.Fatalf("output is not JSON: %q (from %q)", out, in)
	}
	gotKept, gotOthers, ok := readList(out, func(string) bool { return true })
	if !ok {
		t.Fatalf("output is no model list: %q", out)
	}
	if fmt.Sprintf("%q", gotKept) != fmt.Sprintf("%q", kept) {
		t.Fatalf("kept %q, want %q (from %q)", gotKept, kept, in)
	}
	if fmt.Sprintf("%q", gotOthers) != fmt.Sprintf("%q", others) {
		t.Fatalf("other members %q, want %q", gotOthers, others)
	}
	if st := f.Stats(); st.Kept != len(kept) {
		t.Fatalf("Stats %+v, %d kept", st, len(kept))
	}
}

func noX(id string) bool { return id != "" && !strings.Contains(id, "x") }

func TestModelListCatalog(t *testing.T) {
	in, err := os.ReadFile("../gateway/testdata/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	m := models(t, "anthropic/*", "openai/gpt-5-mini")
	want, _, _ := readList(in, m.Allows)
	if len(want) < 2 {
		t.Fatalf("the catalog keeps %d models: a poor test", len(want))
	}
	var first []byte
	for chunk := 1; chunk <= len(in); chunk += 1 + chunk/64 {
		out, f, err := filterAll(in, chunk, m.Allows)
		checkFiltered(t, in, out, f, err, m.Allows)
		if first == nil {
			first = out
		} else if !bytes.Equal(out, first) {
			t.Fatalf("chunks of %d give another answer", chunk)
		}
	}
	var list struct {
		Data []struct{ ID string }
	}
	if err := json.Unmarshal(first, &list); err != nil {
		t.Fatal(err)
	}
	for _, d := range list.Data {
		if !m.Allows(d.ID) {
			t.Errorf("%s is listed", d.ID)
		}
	}
	t.Logf("%d of the catalog's models listed", len(list.Data))
}

func TestModelListElements(t *testing.T) {
	allow := func(id string) bool { return strings.HasPrefix(id, "openai/") }
	for _, c := range []struct {
		name, in, want string
	}{
		{"first dropped: its comma goes",
			`{"object":"list","data":[{"id":"x/a"}, {"id":"openai/b"} ,{"id":"openai/c"}]}`,
			`{"object":"list","data":[ {"id":"openai/b"} ,{"id":"openai/c"}]}`},
		{"middle and last dropped",
			"{\"data\":[\n {\"id\":\"openai/a\"},\n {\"id\":\"x/b\"},\n {\"id\":\"openai/c\"},\n {\"id\":\"x/d\"}\n]}",
			"{\"data\":[\n {\"id\":\"openai/a\"},\n {\"id\":\"openai/c\"}\n]}"},
		{"all dropped", `{"data":[{"id":"x"},{"id":"y"}],"object":"list"}`, `{"data":[],"object":"list"}`},
		{"empty", `{"data":[]}`, `{"data":[]}`},
		{"escaped id, written as it came",
			`{"data":[{"name":"GPT-5","id":"\u006fpenai/gpt-5"}]}`,
			`{"data":[{"name":"GPT-5","id":"\u006fpenai/gpt-5"}]}`},
		{"escaped name of id", `{"data":[{"\u0069d":"openai/a"}]}`, `{"data":[{"\u0069d":"openai/a"}]}`},
		{"escaped slash", `{"data":[{"id":"openai\/a"}]}`, `{"data":[{"id":"openai\/a"}]}`},
		{"an escape that disallows", `{"data":[{"id":"\u0078/openai/a"}]}`, `{"data":[]}`},
		{"nested id does not count",
			`{"data":[{"pricing":{"id":"openai/a"},"name":"x"},{"id":"x/b","tags":[{"id":"openai/c"}]}]}`,
			`{"data":[]}`},
		{"nested id beside the real one",
			`{"data":[{"pricing":{"id":"x/a"},"id":"openai/a"}]}`,
			`{"data":[{"pricing":{"id":"x/a"},"id":"openai/a"}]}`},
		{"two ids", `{"data":[{"id":"openai/a","id":"openai/b"},{"id":"openai/c"}]}`, `{"data":[{"id":"openai/c"}]}`},
		{"two ids, one escaped", `{"data":[{"id":"openai/a","\u0069\u0064":"x/b"}]}`, `{"data":[]}`},
		{"a case variant", `{"data":[{"id":"openai/a","ID":"x/b"},{"Id":"openai/c"}]}`, `{"data":[]}`},
		{"id not a string", `{"data":[{"id":1},{"id":null},{"id":["openai/a"]},{"id":{"id":"openai/a"}}]}`, `{"data":[]}`},
		{"not an object", `{"data":["openai/a",1,null,true,["openai/a"],{"id":"openai/b"}]}`, `{"data":[{"id":"openai/b"}]}`},
		{"lone surrogate", `{"data":[{"id":"openai/\ud800"},{"id":"openai/\udc00a"},{"id":"openai/\ud83d\ude00"}]}`, `{"data":[{"id":"openai/\ud83d\ude00"}]}`},
		{"invalid UTF-8", "{\"data\":[{\"id\":\"openai/\xff\"},{\"id\":\"openai/\uFFFD\"}]}", `{"data":[]}`},
		{"Data in another case", `{"DATA":[{"id":"x"},{"id":"openai/a"}]}`, `{"DATA":[{"id":"openai/a"}]}`},
		{"members around data, numbers, literals",
			`{"a":[1,-2.5e+3,0,{"b":true}],"data":[ {"id":"openai/a","n":-0.1E9,"t":[true,false,null]} , {"id":"x","n":1} ] , "z" : null }  `,
			`{"a":[1,-2.5e+3,0,{"b":true}],"data":[ {"id":"openai/a","n":-0.1E9,"t":[true,false,null]} ] , "z" : null }  `},
	} {
		for chunk := 1; chunk <= len(c.in); chunk++ {
			out, f, err := filterAll([]byte(c.in), chunk, allow)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if string(out) != c.want {
				t.Fatalf("%s, chunks of %d:\n got %s\nwant %s", c.name, chunk, out, c.want)
			}
			checkFiltered(t, []byte(c.in), out, f, err, allow)
		}
	}
}

func TestModelListNotAList(t *testing.T) {
	for _, in := range []string{
		``, `   `, `{"error":{"message":"bad","type":"authentication_error"}}`, `[]`, `[{"id":"openai/a"}]`, `null`, `"data"`,
		`{"data":{}}`, `{"data":"[]"}`, `{"data":null}`, `{"data":[],"data":[]}`, `{"data":[],"Data":[]}`,
		`{"data":[]} x`, `{"data":[]}{}`, `{"data":[{"id":"openai/a"}]`, `{"data":[{"id":"openai/a"},]}`,
		`{"data":[{"id":"openai/a"}}`, `{"data":[01]}`, `{"data":[1.]}`, `{"data":[tru]}`, `{"data":["a\x01"]}`,
		`{"data":["\x"]}`, `{"data":["\u12g4"]}`, "\x1f\x8b\x08\x00", "\xef\xbb\xbf{\"data\":[]}", `{'data':[]}`,
		`{"data":[] "x":1}`, `{"data" []}`, `{,"data":[]}`, `{"data":[,]}`,
	} {
		for _, chunk := range []int{1, 3, 1 << 20} {
			out, f, err := filterAll([]byte(in), chunk, noX)
			if err == nil {
				t.Fatalf("%q accepted: %q", in, out)
			}
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "model list: ") {
				t.Errorf("error %q", err)
			}
			if _, werr := f.Write([]byte(" ")); werr == nil {
				t.Errorf("%q: Write after an error succeeds", in)
			}
			if f.Err() == nil {
				t.Errorf("%q: Err() is nil", in)
			}
			checkFiltered(t, []byte(in), out, f, err, noX)
		}
	}
	// Nothing is written until the data array begins: the caller can
	// still answer 502.
	for _, in := range []string{`{"error":{"message":"bad"}}`, `{"object":"list","data":{`, `{"object":"list","data"`} {
		out, f, err := filterAll([]byte(in), 1, noX)
		if err == nil || f.Wrote() || len(out) != 0 {
			t.Errorf("%q: err %v, wrote %v %q", in, err, f.Wrote(), out)
		}
	}
}

func TestModelListLargeElements(t *testing.T) {
	allow := func(id string) bool { return strings.HasPrefix(id, "openai/") }
	big := `{"id":"openai/big","description":"` + strings.Repeat("x", MaxListElement) + `"}`
	bigNested := `{"pricing":[` + strings.Repeat(`{"a":[1,2,"x"]},`, MaxListElement/15) + `{}],"id":"openai/big2"}`
	in := `{"object":"list","data":[{"id":"openai/a"},` + big + `,{"id":"openai/b"},` + bigNested + `,{"id":"openai/c"}]}`
	for _, chunk := range []int{1, 7, 4096, len(in)} {
		var out bytes.Buffer
		f := NewModelListFilter(&out, allow)
		peak := 0
		for rest := []byte(in); len(rest) > 0; {
			n := min(chunk, len(rest))
			if _, err := f.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
			peak = max(peak, cap(f.pend))
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if want := `{"object":"list","data":[{"id":"openai/a"},{"id":"openai/b"},{"id":"openai/c"}]}`; out.String() != want {
			t.Fatalf("chunks of %d: %.200s", chunk, out.String())
		}
		if st := f.Stats(); st != (ListStats{Kept: 3, Dropped: 2, Oversized: 2}) {
			t.Errorf("Stats() = %+v", st)
		}
		// One element at a time, within the bound (append may round up).
		if peak > 2*MaxListElement {
			t.Errorf("held up to %d bytes", peak)
		}
	}
	// Before or after the data array, the bound is an error.
	for _, in := range []string{
		`{"x":"` + strings.Repeat("a", MaxListElement) + `","data":[]}`,
		`{"data":[],"x":"` + strings.Repeat("a", MaxListElement) + `"}`,
		`{"data":[{"id":"openai/a"}` + strings.Repeat(" ", MaxListElement) + `]}`,
	} {
		if _, _, err := filterAll([]byte(in), 4096, allow); err == nil || !strings.Contains(err.Error(), "256 KiB") {
			t.Errorf("an oversized part outside the elements: %v", err)
		}
	}
	// Whitespace after the list is written on as it comes, not held.
	out, _, err := filterAll([]byte(`{"data":[]}`+strings.Repeat("\n", 2*MaxListElement)), 4096, allow)
	if err != nil || len(out) != len(`{"data":[]}`)+2*MaxListElement {
		t.Errorf("trailing whitespace: %v, %d bytes", err, len(out))
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("client went away")
	}
	return len(p), nil
}

func TestModelListWriterError(t *testing.T) {
	f := NewModelListFilter(&failWriter{n: 10}, noX)
	_, err := f.Write([]byte(`{"data":[{"id":"a"},{"id":"b"}]}`))
	if err == nil || err.Error() != "client went away" {
		t.Errorf("Write = %v", err)
	}
	if err := f.Close(); err == nil {
		t.Error("Close after a write error succeeds")
	}
	f = NewModelListFilter(&bytes.Buffer{}, noX)
	f.Write([]byte(`{"data":[]}`))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(" ")); err == nil {
		t.Error("Write after Close succeeds")
	}
	if f.Close() != nil || f.Err() != nil {
		t.Error("a second Close or Err after a good Close fails")
	}
}

func FuzzModelListFilter(f *testing.F) {
	for _, s := range []string{
		`{"object":"list","data":[{"id":"openai/a"},{"id":"x/b"}]}`,
		`{"data":[{"id":"\u006fpenai/gpt-5","pricing":{"id":"x"}},{"ID":"a"},{"id":"a","id":"b"}]}`,
		`{"data":[{"id":"\ud83d\ude00"},{"id":"\ud800"},"a",1,-0.5e3,[true,null,false]],"z":{"data":1}}`,
		`{"Data":[],"data":[]}`, `{"error":{}}`, `{"data":[{"id":"a"}]} `,
	} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(5))
	}
	in, err := os.ReadFile("../gateway/testdata/catalog.json")
	if err == nil {
		f.Add(in, uint8(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		out, flt, err := filterAll(in, int(chunk)+1, noX)
		checkFiltered(t, in, out, flt, err, noX)
	})
}

// A model list as AI Gateway gives it: a few hundred models of about a
// kilobyte each.
func benchList(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"object":"list","data":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"id":"provider%d/model-%d","object":"model","created":1754524800,"owned_by":"provider%d","name":"Model %d",`+
			`"description":"%s","context_window":400000,"max_tokens":128000,"type":"language",`+
			`"tags":["file-input","reasoning","tool-use","vision","implicit-caching"],`+
			`"pricing":{"input":"0.00000025","output":"0.000002","input_cache_read":"0.000000025","web_search":"0.01"}}`,
			i%10, i, i%10, i, strings.Repeat("A capable model. ", 30))
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func BenchmarkModelListFilter(b *testing.B) {
	in := benchList(400)
	m := models(b, "provider1/*", "provider2/model-1*")
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewModelListFilter(ioDiscard{}, m.Allows)
		for rest := in; len(rest) > 0; {
			n := min(32<<10, len(rest))
			if _, err := f.Write(rest[:n]); err != nil {
				b.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }
