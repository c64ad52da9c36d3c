package caddymodule

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// FuzzBodyEdit checks the editor against encoding/json as the oracle.
// For any input: reading it in random small pieces from a source that
// hands it out in random small pieces gives the same output and result as
// one big read; an output that differs from the input says Edited; with no
// edit asked for, the output is the input. For any input that
// encoding/json accepts as an object: the output is valid JSON and,
// decoded in order (duplicates kept), equals the input decoded with the
// edits applied by a second implementation below; Streamed and
// ClientUsage agree with it; and an input with nothing to edit comes out
// byte for byte.
func FuzzBodyEdit(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi \"there\"\n","user":"x"}],"stream":true,"user":"sandbox"}`,
		`{"user":1,"USER":{"a":[1,2]},"us\u0065r":null,"uſer":"x","n":-1.5e+3}`,
		`{"providerOptions":{"gateway":{"order":["a"],"user":"x","tags":["t"],"TAGS":[],"only":["b"]},"openai":{"user":"k"}}}`,
		`{"providerOptions":{"x":{"gateway":{"user":"x"}}},"providerOptions":[1],"providerOptions":{"gateway":null}}`,
		`{"stream_options":null,"stream":true}`,
		`{"stream_options":{"include_usage":false,"x":1},"stream":true,"stream":false,"stream":true}`,
		`{"stream":true,"stream_options":{"include_usage":true,"INCLUDE_USAGE":false}}`,
		`{"stream":true,"stream_options":7,"stream_options":{}}`,
		" \n{ \"user\" : \"a\" ,\t\"stream\" :true , \"b\":[ ] }\r\n",
		`{"a":[[[[{"user":"x","stream":true}]]]],"b":"\\\"\u00e9\ud83d\ude00"}`,
		"{\"content\":\"\xff\xfe\",\"\xffuser\":1,\"user\":\"\xff\"}",
		`{"a":1,,"user":"b"}`,
		`{"user":"a"} {"user":"b"}`,
		`[{"user":"a"}]`,
		``,
		`{"stream":tru`,
		`{"us\er":1,"stream":"true"}`,
		`{"` + strings.Repeat("x", 120) + `":1,"user":2}`,
		`{"a":1,` + strings.Repeat(" ", 500) + `"user":2}`,
		`{}`,
	}
	for i, s := range seeds {
		for mode := range uint8(16) {
			f.Add([]byte(s), mode, uint64(i))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, mode uint8, seed uint64) {
		opts := bodyEditOptions{Attribution: mode&1 != 0, IncludeUsage: mode&4 != 0}
		if mode&2 == 0 {
			opts.User = strPtr(testReportingUser)
			if mode&8 != 0 {
				opts.User = strPtr("ü\"<x>\\\x01\xff")
			}
		}
		out, res := editAll(t, in, opts)

		// Any pieces give the same output.
		rng := rand.New(rand.NewPCG(seed, uint64(len(in))))
		sizes := func() []int {
			s := make([]int, 1+rng.IntN(16))
			for i := range s {
				s[i] = 1 + rng.IntN(1+rng.IntN(300))
			}
			return s
		}
		ed := newBodyEditor(&chunkedReader{data: in, sizes: sizes()}, opts)
		if got := readAllIn(t, ed, sizes()); !bytes.Equal(got, out) {
			t.Fatalf("in pieces:\n%q\none read:\n%q", got, out)
		}
		if r := ed.Result(); r != res {
			t.Fatalf("in pieces: %+v; one read: %+v", r, res)
		}
		if !res.Done {
			t.Fatalf("not Done: %+v", res)
		}
		if !res.Edited && !bytes.Equal(out, in) {
			t.Fatalf("not Edited, but\n%q\nbecame\n%q", in, out)
		}
		if !opts.Attribution && !opts.IncludeUsage && !bytes.Equal(out, in) {
			t.Fatalf("no edit asked, but\n%q\nbecame\n%q", in, out)
		}

		// Valid objects: the oracle.
		if !json.Valid(in) || bytes.TrimLeft(in, " \t\r\n")[0] != '{' {
			return
		}
		if res.Malformed {
			t.Fatalf("a valid object is Malformed: %q", in)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output\n%q\nfrom\n%q", out, in)
		}
		inTree, err := decodeOrdered(in)
		if err != nil {
			t.Fatal(err)
		}
		want, streamed, clientUsage, noEdit := expectBodyEdit(inTree.(jsonObject), opts)
		got, err := decodeOrdered(out)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("input\n%s\noutput\n%s\ndecoded %v\nwant %v", in, out, got, want)
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

// jsonObject is a decoded object that keeps its members' order and
// duplicates.
type jsonObject []jsonMember

type jsonMember struct {
	Name  string
	Value any
}

func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return decodeOrderedValue(dec)
}

func decodeOrderedValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := jsonObject{}
		for dec.More() {
			name, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeOrderedValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, jsonMember{name.(string), v})
		}
		_, err = dec.Token()
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeOrderedValue(dec)
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
// one the editor may change.
func expectBodyEdit(in jsonObject, opts bodyEditOptions) (out jsonObject, streamed, clientUsage, noEdit bool) {
	fold := strings.EqualFold
	var user string // as a JSON parser reads it back
	if opts.User != nil {
		b, _ := json.Marshal(*opts.User)
		json.Unmarshal(b, &user)
	}
	usageTrue := jsonObject{{"include_usage", true}}
	out, noEdit = jsonObject{}, true
	soOK := false
	for _, m := range in {
		switch {
		case opts.Attribution && fold(m.Name, "user"):
			noEdit = false
			if opts.User == nil {
				continue
			}
			m.Value = user
		case opts.Attribution && fold(m.Name, "providerOptions"):
			po, ok := m.Value.(jsonObject)
			if !ok {
				break
			}
			edited := jsonObject{}
			for _, pm := range po {
				if gw, ok := pm.Value.(jsonObject); ok && fold(pm.Name, "gateway") {
					g := jsonObject{}
					for _, gm := range gw {
						switch {
						case fold(gm.Name, "tags"), fold(gm.Name, "quotaEntityId"):
							noEdit = false
							continue
						case fold(gm.Name, "user"):
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
		case fold(m.Name, "stream"):
			streamed = m.Value == true
		case fold(m.Name, "stream_options"):
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
				if fold(sm.Name, "include_usage") {
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
			out = append(out, jsonMember{"stream_options", usageTrue})
		}
	}
	return out, streamed, clientUsage, noEdit
}
