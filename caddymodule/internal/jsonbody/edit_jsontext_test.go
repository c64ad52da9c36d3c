//go:build goexperiment.jsonv2

package jsonbody

// The measurement behind edit.go's choice of a byte-level scanner
// over encoding/json/jsontext (the standard library's copy of
// github.com/go-json-experiment/json/jsontext, built only with
// GOEXPERIMENT=jsonv2):
//
//	GOEXPERIMENT=jsonv2 go test ./caddymodule/internal/jsonbody -run '^$' -bench BodyEditJSONText -benchmem
//
// Both edit the same 2 MiB agent body whose last message carries a 1 MiB
// base64 string (a screenshot), replacing its top-level user. The
// prototype is the smallest streaming editor jsontext allows: tokens read
// from a Decoder and written to an Encoder, the top-level `user` value
// skipped and replaced; "jsontext-skip" is the Decoder alone, reading the
// top-level names and skipping their values. "peak-buf-B" is the largest
// buffer the Decoder was seen to hold (cap of its unread buffer after a
// token). Measured on the shared 2-core development machine (Go 1.26.8):
//
//	jsontext-tokens  4.9 ms/op   446 MB/s  peak-buf 1048551 B  5366328 B/op  49 allocs/op
//	jsontext-skip    2.7 ms/op   806 MB/s  peak-buf 1048546 B  4195165 B/op  29 allocs/op
//	scanner          0.71 ms/op  3093 MB/s                         3136 B/op   5 allocs/op
//
// The Decoder materialises each token, so its buffer grows to the
// largest string in the body, and SkipValue buffers the whole value it
// skips (all of `messages`: 4.2 MB allocated for a 2 MiB body): per
// concurrent request, memory follows the body and the attacker's largest
// string, where the scanner's is fixed (the scanner's 5 allocs include the
// benchmark's own reader). The token copy also re-encodes what it passes
// on (the Encoder's own spelling of strings and numbers, its whitespace),
// so byte-for-byte passthrough would need the raw input kept beside it,
// and the default options refuse duplicate names and invalid UTF-8 that
// must pass through.

import (
	"bytes"
	"encoding/base64"
	"encoding/json/jsontext"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// jsontextEdit is the prototype: src to dst, the top-level user replaced.
// It returns the largest buffer the Decoder held.
func jsontextEdit(dst io.Writer, src io.Reader, user string, write bool) (peak int, err error) {
	opts := []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
	dec := jsontext.NewDecoder(src, opts...)
	enc := jsontext.NewEncoder(dst, opts...)
	for {
		if dec.StackDepth() == 1 && !write {
			// Decoder only: read the name, skip the value.
			if dec.PeekKind() == '}' {
				if _, err := dec.ReadToken(); err != nil {
					return peak, err
				}
				continue
			}
			if _, err := dec.ReadToken(); err != nil {
				return peak, err
			}
			if err := dec.SkipValue(); err != nil {
				return peak, err
			}
			peak = max(peak, cap(dec.UnreadBuffer()))
			continue
		}
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return peak, nil
		}
		if err != nil {
			return peak, err
		}
		peak = max(peak, cap(dec.UnreadBuffer()))
		if !write {
			continue
		}
		if err := enc.WriteToken(tok); err != nil {
			return peak, err
		}
		if dec.StackDepth() != 1 || tok.Kind() != '"' {
			continue
		}
		if _, n := dec.StackIndex(1); n%2 == 1 && strings.EqualFold(tok.String(), "user") {
			if err := dec.SkipValue(); err != nil {
				return peak, err
			}
			if err := enc.WriteToken(jsontext.String(user)); err != nil {
				return peak, err
			}
		}
	}
}

// screenshotAgentBody: a 1 MiB conversation, then a message with a 1 MiB
// base64 string, stream:true and a user.
func screenshotAgentBody() []byte {
	conv := realisticAgentBody(1<<20, false, false)
	msgs := conv[bytes.Index(conv, []byte(`[`)):bytes.LastIndex(conv, []byte(`,"tools"`))]
	img := make([]byte, 768<<10)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	var b bytes.Buffer
	b.WriteString(`{"model":"openai/gpt-5","messages":`)
	b.Write(msgs[:len(msgs)-1])
	b.WriteString(`,{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,`)
	b.WriteString(base64.StdEncoding.EncodeToString(img))
	b.WriteString(`"}}]}],"stream":true,"user":"sandbox-7f3a"}`)
	return b.Bytes()
}

func BenchmarkBodyEditJSONText(b *testing.B) {
	body := screenshotAgentBody()
	want, _, _ := edit(b, body, optsAttr, nil, nil)
	for _, bc := range []string{"jsontext-tokens", "jsontext-skip", "scanner"} {
		b.Run(bc, func(b *testing.B) {
			buf := make([]byte, 32<<10)
			src := bytes.NewReader(body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			peak := 0
			for b.Loop() {
				src.Reset(body)
				switch bc {
				case "scanner":
					ed := NewEditor(readerOnly{src}, optsAttr)
					if _, err := io.CopyBuffer(discardOnly{}, ed, buf); err != nil {
						b.Fatal(err)
					}
				default:
					p, err := jsontextEdit(discardOnly{}, readerOnly{src}, testReportingUser, bc == "jsontext-tokens")
					if err != nil {
						b.Fatal(err)
					}
					peak = max(peak, p)
				}
			}
			if peak > 0 {
				b.ReportMetric(float64(peak), "peak-buf-B")
			}
		})
	}
	// The prototype does edit: its output is the same JSON.
	var out bytes.Buffer
	if _, err := jsontextEdit(&out, bytes.NewReader(body), testReportingUser, true); err != nil {
		b.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(out.Bytes()), want) {
		b.Fatalf("prototype output differs from the scanner's (%d vs %d bytes)", out.Len(), len(want))
	}
}
