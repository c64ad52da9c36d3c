package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzBodyEdit checks the editor against strict parsers. For any input
// and options:
//
//   - reading it in random small pieces from a source that hands it out
//     in random small pieces gives the same output, result and error as
//     one big read;
//   - either the editor refuses it, or the input was what it must accept:
//     one JSON object (encoding/json's json.Valid, and valid UTF-8) no
//     deeper than bodyEditMaxDepth, with every controlled member of an
//     inspected object spelled exactly and once, and a boolean or null
//     stream. Conversely every such input is accepted (the editor is
//     exactly that strict);
//   - when it accepts, its output is valid JSON, and a strict parser
//     (encoding/json into map[string]any: case-sensitive, the last of
//     two equal names wins, as JSON.parse) reads every controlled member
//     as the editor decided: user the proxy's or absent, no tags nor
//     quotaEntityId in providerOptions.gateway, stream as Result says,
//     include_usage true when streamed and asked. Decoded in order, the
//     output equals the input with the documented edits applied by a
//     second implementation below; an input with nothing to edit, or no
//     edit asked, comes out byte for byte.
//   - with AtEnd (mode&16), the editor also refuses what mustRefuse's
//     reading of model, the output caps, the choices (n, best_of) and
//     the fallback lists says, and
//     for an accepted body AtEnd gets what encoding/json decodes of them
//     (wantFields), the output being the same as without AtEnd. When
//     AtEnd returns an error (mode&32), Read and Stopped return it, and
//     what went out is that output without its top-level '}' and what
//     follows it: never a complete JSON text.
func FuzzBodyEdit(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi \"there\"\n","user":"x"}],"stream":true,"user":"sandbox"}`,
		`{"user":1,"n":-1.5e+3,"m":[true,false,null]}`,
		`{"providerOptions":{"gateway":{"order":["a"],"user":"x","tags":["t"],"only":["b"]},"openai":{"user":"k"}}}`,
		`{"providerOptions":{"gateway":{"quotaEntityId":"api_key_id_other","order":["a"]}}}`,
		`{"providerOptions":{"gateway":{"models":["x"],"quotaEntityId":{"id":"q"},"tags":[],"user":null}},"user":"u"}`,
		`{"providerOptions":{"gateway":{"quotaEntityId":"a","quotaEntityId":"b"}}}`,
		`{"providerOptions":{"gateway":{"QuotaEntityId":"q"}}}`,
		`{"providerOptions":{"gateway":{"quotaEntit\u0079Id":"q"}}}`,
		`{"providerOptions":{"x":{"gateway":{"user":"x"}}},"messages":[{"providerOptions":{"gateway":{"quotaEntityId":"q"}}}]}`,
		`{"stream_options":null,"stream":true}`,
		`{"stream_options":{"include_usage":false,"x":1},"stream":true}`,
		`{"stream":true,"stream_options":{"include_usage":true}}`,
		`{"stream":true,"stream_options":7}`,
		" \n{ \"user\" : \"a\" ,\t\"stream\" :true , \"b\":[ ] }\r\n",
		"\xef\xbb\xbf{\"stream\":false,\"stream\":true}",
		`{"a":[[[[{"user":"x","stream":true}]]]],"b":"\\\"\u00e9\ud83d\ude00\ud800"}`,
		`{"model":"m","stream":true,"Stream":false}`,
		`{"ſtream":false,"str\u0065am":1,"us\u0065r":"x","USER":"y"}`,
		"{\"content\":\"\xff\xfe\",\"user\":\"\xe2\x9c\"}",
		`{"a":1,,"user":"b"}`,
		`{"user":"a"} {"user":"b"}`,
		`[{"user":"a"}]`,
		``,
		`{"stream":tru`,
		`{"stream":"true"}`,
		`{"` + strings.Repeat("x", 130) + `":1,"user":2}`,
		`{"a":1,` + strings.Repeat(" ", 500) + `"user":2}`,
		`{"m":` + strings.Repeat("[", 999) + strings.Repeat("]", 999) + `}`,
		`{}`,
		`{"a":"` + strings.Repeat("QUJD", 40) + "\x01" + strings.Repeat("QUJD", 40) + `"}`,
		`{"a":"` + strings.Repeat("plain prose ", 20) + "\xc3\xa9\xff" + strings.Repeat("x", 90) + `"}`,
		`{"model":"openai\/gpt-5","max_tokens":100,"max_completion_tokens":null,"max_output_tokens":7}`,
		`{"model":"a\u0062","max_tokens":1e3,"models":["x",{"model":"y","when":{"model":1}}]}`,
		`{"model":null,"max_tokens":-1,"max_output_tokens":9007199254740992}`,
		`{"providerOptions":{"gateway":{"models":[{"Model":"a"},{"model":"b","model":"c"},{}],"order":["p"]}},"models":null}`,
		`{"providerOptions":{"gateway":{"models":["a",1,null,[]]}},"models":"x","model":"` + strings.Repeat("m", 257) + `"}`,
		`{"model":"é","models":["\u0000","\u007e\n"]}` + "  \n",
		`{"models":["a\u007f"],"model":"\u007e"}`,
		`{"model":"openai/gpt-5","max_tokens":1000,"n":128,"best_of":20}`,
		`{"n":null,"best_of":1,"messages":[{"n":0}],"N":2}`,
		`{"n":129}`,
		`{"best_of":0,"max_tokens":5}`,
		`{"n":8.0,"best_of":-1,"be\u0073t_of":2}`,
		`{"n":1e2,"n":"3","best_of":[1],"Best_of":1}`,
	}
	for i, s := range seeds {
		for mode := range uint8(64) {
			f.Add([]byte(s), mode, uint64(i))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, mode uint8, seed uint64) {
		opts := Options{Attribution: mode&1 != 0, IncludeUsage: mode&4 != 0}
		if mode&2 == 0 {
			opts.User = strPtr(testReportingUser)
			if mode&8 != 0 {
				opts.User = strPtr("ü\"<x>\\\x01\xff")
			}
		}
		var fields []Fields
		capture, stop := mode&16 != 0, mode&32 != 0
		if capture {
			opts.AtEnd = AtEndFunc(func(f Fields) error {
				fields = append(fields, f)
				if stop {
					return errFuzzStop
				}
				return nil
			})
		}
		out, res, err := edit(t, in, opts, nil, nil)

		// Any pieces give the same output.
		rng := rand.New(rand.NewPCG(seed, uint64(len(in))))
		sizes := func() []int {
			s := make([]int, 1+rng.IntN(16))
			for i := range s {
				s[i] = 1 + rng.IntN(1+rng.IntN(300))
			}
			return s
		}
		got, r, e := edit(t, in, opts, sizes(), sizes())
		if !bytes.Equal(got, out) || r != res || (e == nil) != (err == nil) || e != nil && e.Error() != err.Error() {
			t.Fatalf("in pieces: %q %+v %v\none read: %q %+v %v", got, r, e, out, res, err)
		}

		why := mustRefuse(in, capture)
		if stop && err == errFuzzStop {
			checkStopped(t, in, opts, out, res, why)
			return
		}
		if err != nil {
			if !errors.Is(err, ErrRefused) || !res.Refused || res.Done {
				t.Fatalf("error %v, result %+v", err, res)
			}
			if why == "" {
				t.Fatalf("refused %q (%v), which a strict parser reads as the proxy does", in, err)
			}
			return
		}
		if why != "" {
			t.Fatalf("accepted %q, which must be refused: %s", in, why)
		}
		if !res.Done || res.Refused {
			t.Fatalf("accepted, but %+v", res)
		}
		if capture {
			checkFields(t, in, opts, out, fields)
		}
		if !res.Edited && !bytes.Equal(out, in) {
			t.Fatalf("not Edited, but\n%q\nbecame\n%q", in, out)
		}
		if !opts.Attribution && !opts.IncludeUsage && !bytes.Equal(out, in) {
			t.Fatalf("no edit asked, but\n%q\nbecame\n%q", in, out)
		}
		body, outBody := bytes.TrimPrefix(in, bom), bytes.TrimPrefix(out, bom)
		if !json.Valid(outBody) {
			t.Fatalf("invalid output\n%q\nfrom\n%q", out, in)
		}
		checkStrictReading(t, outBody, opts, res)

		inTree, err := decodeOrdered(body)
		if err != nil {
			t.Fatal(err)
		}
		want, streamed, clientUsage, noEdit := expectBodyEdit(inTree.(jsonObject), opts)
		gotTree, err := decodeOrdered(outBody)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotTree, want) {
			t.Fatalf("input\n%s\noutput\n%s\ndecoded %v\nwant %v", in, out, gotTree, want)
		}
		if res.Streamed != streamed || res.ClientUsage != clientUsage {
			t.Fatalf("%+v, want Streamed %v, ClientUsage %v, for %s", res, streamed, clientUsage, in)
		}
		longSpace := bytes.Contains(in, bytes.Repeat([]byte(" "), bodyEditMaxHeldSpace)) // the fuzzer's likeliest padding
		if noEdit && res.Edited && !longSpace {
			t.Fatalf("nothing to edit, but\n%q\nbecame\n%q", in, out)
		}
	})
}

var bom = []byte("\xef\xbb\xbf")

// checkStrictReading decodes the output as JSON.parse would and checks
// every controlled member is as the editor decided.
func checkStrictReading(t *testing.T, out []byte, opts Options, res Result) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("a strict parser refuses the output %q: %v", out, err)
	}
	var user any // as a strict parser reads the proxy's user back
	if opts.User != nil {
		b, _ := json.Marshal(*opts.User)
		json.Unmarshal(b, &user)
	}
	userOK := func(v any, present bool) bool {
		return !opts.Attribution || !present || opts.User != nil && v == user
	}
	if v, ok := m["user"]; !userOK(v, ok) {
		t.Fatalf("the gateway reads user %v in %q", v, out)
	}
	if po, ok := m["providerOptions"].(map[string]any); ok {
		if gw, ok := po["gateway"].(map[string]any); ok && opts.Attribution {
			if v, ok := gw["user"]; !userOK(v, ok) {
				t.Fatalf("the gateway reads providerOptions.gateway.user %v in %q", v, out)
			}
			for _, name := range []string{"tags", "quotaEntityId"} {
				if v, ok := gw[name]; ok {
					t.Fatalf("the gateway reads providerOptions.gateway.%s %v in %q", name, v, out)
				}
			}
		}
	}
	if (m["stream"] == true) != res.Streamed {
		t.Fatalf("the gateway reads stream %v, the editor Streamed %v, in %q", m["stream"], res.Streamed, out)
	}
	if opts.IncludeUsage && res.Streamed {
		if so, _ := m["stream_options"].(map[string]any); so["include_usage"] != true {
			t.Fatalf("a streamed request without include_usage: %q", out)
		}
	}
}

var errFuzzStop = errors.New("stopped by AtEnd")

// checkStopped checks a body AtEnd stopped: one the editor accepts, whose
// output is the approved output without its end.
func checkStopped(t *testing.T, in []byte, opts Options, out []byte, res Result, why string) {
	t.Helper()
	if why != "" || res.Done || res.Refused {
		t.Fatalf("AtEnd stopped %q (%+v), which must be refused: %s", in, res, why)
	}
	opts.AtEnd = AtEndFunc(func(Fields) error { return nil })
	full, _, err := edit(t, in, opts, nil, nil)
	if err != nil || !bytes.HasPrefix(full, out) || json.Valid(bytes.TrimPrefix(out, bom)) {
		t.Fatalf("stopped, %q went out; approved: %q, %v", out, full, err)
	}
	if rest := full[len(out):]; len(rest) == 0 || rest[0] != '}' || len(bytes.TrimLeft(rest[1:], " \t\r\n")) > 0 {
		t.Fatalf("stopped, %q went out; approved: %q: more than the end was held", out, full)
	}
}

// checkFields checks what AtEnd got for an accepted body, edited twice
// (in one read and in pieces): once each time, what encoding/json reads;
// and that AtEnd changed nothing in the output (but for trailing
// whitespace beyond what is held).
func checkFields(t *testing.T, in []byte, opts Options, out []byte, fields []Fields) {
	t.Helper()
	if len(fields) != 2 || !reflect.DeepEqual(fields[0], fields[1]) {
		t.Fatalf("AtEnd called %d times for two edits: %+v", len(fields), fields)
	}
	tree, err := decodeOrdered(bytes.TrimPrefix(in, bom))
	if err != nil {
		t.Fatal(err)
	}
	want := wantFields(tree.(jsonObject))
	want.Bytes = int64(len(in))
	if !reflect.DeepEqual(fields[0], want) {
		t.Fatalf("AtEnd got %+v, encoding/json reads %+v, in %q", fields[0], want, in)
	}
	opts.AtEnd = nil
	plain, _, _ := edit(t, in, opts, nil, nil)
	if !bytes.Equal(bytes.TrimRight(out, " \t\r\n"), bytes.TrimRight(plain, " \t\r\n")) {
		t.Fatalf("with AtEnd %q, without %q", out, plain)
	}
}

// wantFields is what AtEnd must get of a body the editor accepts.
func wantFields(top jsonObject) Fields {
	f := Fields{OutputCap: -1, Choices: 1}
	addList := func(v any) {
		list, _ := v.([]any)
		for _, e := range list {
			if o, ok := e.(jsonObject); ok {
				e = o.get("model")
			}
			f.Fallbacks = append(f.Fallbacks, e.(string))
		}
	}
	for _, m := range top {
		switch m.Raw {
		case `"model"`:
			f.Model, f.HasModel = m.Value.(string), true
		case `"max_tokens"`, `"max_completion_tokens"`, `"max_output_tokens"`:
			if n, ok := m.Value.(json.Number); ok {
				v, _ := n.Int64()
				f.OutputCap = max(f.OutputCap, v)
			}
		case `"n"`, `"best_of"`:
			if n, ok := m.Value.(json.Number); ok {
				v, _ := n.Int64()
				f.Choices = max(f.Choices, v)
			}
		case `"models"`:
			addList(m.Value)
		case `"providerOptions"`:
			po, _ := m.Value.(jsonObject)
			if gw, ok := po.get("gateway").(jsonObject); ok {
				addList(gw.get("models"))
			}
		}
	}
	return f
}

// get is the value of o's member spelled exactly name (the input has
// one at most), or nil.
func (o jsonObject) get(name string) any {
	for _, m := range o {
		if m.Raw == `"`+name+`"` {
			return m.Value
		}
	}
	return nil
}

// captureRefusal says why the editor with AtEnd must refuse a body whose
// controlled names are all spelled exactly once, or "".
func captureRefusal(top jsonObject) string {
	isID := func(v any) bool {
		s, ok := v.(string)
		if !ok || len(s) == 0 || len(s) > maxModelID {
			return false
		}
		for _, c := range []byte(s) {
			if c < 0x20 || c > 0x7e {
				return false
			}
		}
		return true
	}
	badList := func(v any) string {
		list, ok := v.([]any)
		switch {
		case v == nil:
			return ""
		case !ok:
			return "a fallback list not an array"
		case len(list) > maxFallbacks:
			return "too many fallbacks"
		}
		for _, e := range list {
			o, ok := e.(jsonObject)
			if !ok {
				if !isID(e) {
					return "a fallback not a model id"
				}
				continue
			}
			if why := controlledNames(o, kindEntry); why != "" {
				return why
			}
			if m := o.get("model"); !isID(m) {
				return "an entry's model not a model id"
			}
		}
		return ""
	}
	for _, m := range top {
		switch m.Raw {
		case `"model"`:
			if !isID(m.Value) {
				return "model not a model id"
			}
		case `"max_tokens"`, `"max_completion_tokens"`, `"max_output_tokens"`:
			n, ok := m.Value.(json.Number)
			if m.Value != nil && (!ok || strings.Trim(string(n), "0123456789") != "") {
				return "a cap not a plain non-negative integer"
			}
			if v, err := n.Int64(); ok && (err != nil || v > maxOutputCap) {
				return "a cap too large"
			}
		case `"n"`, `"best_of"`:
			n, ok := m.Value.(json.Number)
			if m.Value != nil && (!ok || strings.Trim(string(n), "0123456789") != "") {
				return "a choice count not a plain positive integer"
			}
			if v, err := n.Int64(); ok && (err != nil || v < 1 || v > maxChoices) {
				return "a choice count out of 1 to 128"
			}
		case `"models"`:
			if why := badList(m.Value); why != "" {
				return why
			}
		case `"providerOptions"`:
			po, _ := m.Value.(jsonObject)
			if gw, ok := po.get("gateway").(jsonObject); ok {
				if why := badList(gw.get("models")); why != "" {
					return why
				}
			}
		}
	}
	return ""
}

// mustRefuse says why the editor must refuse in, or "" if it must accept
// it: the rule of edit.go, by other means (encoding/json's validity,
// its decoder's names with their raw spelling); with capture, also the
// rules of capture.go.
func mustRefuse(in []byte, capture bool) string {
	body := bytes.TrimPrefix(in, bom)
	if !json.Valid(body) || !utf8.Valid(body) {
		return "not valid UTF-8 JSON"
	}
	v, err := decodeOrdered(body)
	if err != nil {
		return "undecodable: " + err.Error()
	}
	top, ok := v.(jsonObject)
	switch {
	case !ok:
		return "not an object"
	case jsonDepth(v) > bodyEditMaxDepth:
		return "too deep"
	}
	if why := controlledNames(top, kindTop); why != "" {
		return why
	}
	for _, m := range top {
		switch m.Raw {
		case `"stream"`:
			if s := m.Value; s != true && s != false && s != nil {
				return "stream not a boolean"
			}
		case `"stream_options"`:
			if so, ok := m.Value.(jsonObject); ok {
				if why := controlledNames(so, kindStreamOpts); why != "" {
					return why
				}
			}
		case `"providerOptions"`:
			po, ok := m.Value.(jsonObject)
			if !ok {
				continue
			}
			if why := controlledNames(po, kindProvider); why != "" {
				return why
			}
			for _, pm := range po {
				if gw, ok := pm.Value.(jsonObject); ok && pm.Raw == `"gateway"` {
					if why := controlledNames(gw, kindGateway); why != "" {
						return why
					}
				}
			}
		}
	}
	if capture {
		return captureRefusal(top)
	}
	return ""
}

// controlledNames says which controlled name of an inspected object of
// kind k is repeated, or spelled other than exactly.
func controlledNames(o jsonObject, k beKind) string {
	seen := map[string]bool{}
	for _, m := range o {
		for _, c := range beControlledNames[k] {
			name := string(c.name)
			switch {
			case m.Raw == `"`+name+`"` && seen[name]:
				return "duplicate " + name
			case m.Raw == `"`+name+`"`:
				seen[name] = true
			case strings.EqualFold(m.Name, name):
				return "a variant of " + name + ": " + m.Raw
			}
		}
	}
	return ""
}

func jsonDepth(v any) int {
	d := 0
	switch v := v.(type) {
	case jsonObject:
		for _, m := range v {
			d = max(d, jsonDepth(m.Value))
		}
	case []any:
		for _, e := range v {
			d = max(d, jsonDepth(e))
		}
	default:
		return 0
	}
	return d + 1
}

// jsonObject is a decoded object that keeps its members' order and
// duplicates, and each name's raw spelling.
type jsonObject []jsonMember

type jsonMember struct {
	Name  string
	Raw   string // the name as written, with its quotes
	Value any
}

func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return decodeOrderedValue(dec, data)
}

func decodeOrderedValue(dec *json.Decoder, data []byte) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := jsonObject{}
		for dec.More() {
			from := dec.InputOffset()
			name, err := dec.Token()
			if err != nil {
				return nil, err
			}
			raw := data[from:dec.InputOffset()]
			raw = raw[bytes.IndexByte(raw, '"'):]
			v, err := decodeOrderedValue(dec, data)
			if err != nil {
				return nil, err
			}
			o = append(o, jsonMember{name.(string), string(raw), v})
		}
		_, err = dec.Token()
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeOrderedValue(dec, data)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err = dec.Token()
		return a, err
	}
	return tok, nil
}

// expectBodyEdit applies the edits to a decoded top-level object, as the
// editor's documentation states them. noEdit: nothing in the object is
// one the editor may change. Names are matched exactly: the input is one
// the editor accepts.
func expectBodyEdit(in jsonObject, opts Options) (out jsonObject, streamed, clientUsage, noEdit bool) {
	var user string // as a JSON parser reads it back
	if opts.User != nil {
		b, _ := json.Marshal(*opts.User)
		json.Unmarshal(b, &user)
	}
	usageTrue := jsonObject{{"include_usage", `"include_usage"`, true}}
	out, noEdit = jsonObject{}, true
	soOK := false
	for _, m := range in {
		switch m.Name {
		case "user":
			if !opts.Attribution {
				break
			}
			noEdit = false
			if opts.User == nil {
				continue
			}
			m.Value, m.Raw = user, `"user"`
		case "providerOptions":
			po, ok := m.Value.(jsonObject)
			if !ok || !opts.Attribution {
				break
			}
			edited := jsonObject{}
			for _, pm := range po {
				if gw, ok := pm.Value.(jsonObject); ok && pm.Name == "gateway" {
					g := jsonObject{}
					for _, gm := range gw {
						switch gm.Name {
						case "tags", "quotaEntityId":
							noEdit = false
							continue
						case "user":
							noEdit = false
							if opts.User == nil {
								continue
							}
							gm.Value = user
						}
						g = append(g, gm)
					}
					pm.Value = g
				}
				edited = append(edited, pm)
			}
			m.Value = edited
		case "stream":
			streamed = m.Value == true
		case "stream_options":
			if opts.IncludeUsage {
				noEdit = false
			}
			clientUsage, soOK = false, false
			so, ok := m.Value.(jsonObject)
			if !ok {
				if opts.IncludeUsage && streamed {
					m.Value, soOK = usageTrue, true
				}
				break
			}
			edited, seen := jsonObject{}, false
			for _, sm := range so {
				if sm.Name == "include_usage" {
					seen = true
					clientUsage = sm.Value == true
					if opts.IncludeUsage {
						sm.Value = true
					}
				}
				edited = append(edited, sm)
			}
			if opts.IncludeUsage && !seen {
				edited = append(edited, usageTrue[0])
			}
			m.Value, soOK = edited, opts.IncludeUsage
		}
		out = append(out, m)
	}
	if opts.IncludeUsage && streamed {
		noEdit = false
		if !soOK {
			out = append(out, jsonMember{"stream_options", `"stream_options"`, usageTrue})
		}
	}
	return out, streamed, clientUsage, noEdit
}
