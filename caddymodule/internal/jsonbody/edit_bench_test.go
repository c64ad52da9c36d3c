package jsonbody

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// realisticAgentBody is a Chat Completions request as a coding agent sends
// it, of about size bytes: a system prompt, tool definitions, and a
// conversation of user turns, assistant tool calls and tool results
// (source files, with the escapes JSON needs for them), then, if asked,
// `"stream":true` and a `user` at the end (members in the order the
// OpenAI SDKs write them).
func realisticAgentBody(size int, stream, user bool) []byte {
	type fn struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	type call struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function fn     `json:"function"`
	}
	type msg struct {
		Role       string  `json:"role"`
		Content    *string `json:"content"`
		ToolCalls  []call  `json:"tool_calls,omitempty"`
		ToolCallID string  `json:"tool_call_id,omitempty"`
	}
	str := func(s string) *string { return &s }
	rng := rand.New(rand.NewPCG(1, 2))
	msgs := []msg{
		{Role: "system", Content: str(strings.Repeat("You are a coding agent working in a sandbox. Use the tools to read and edit files; run tests before you answer. ", 40))},
		{Role: "user", Content: str("The \"limits\" tests fail under -race after the last change; find out why and fix it.")},
	}
	total := 0
	for i := 0; total < size; i++ {
		path := fmt.Sprintf("caddymodule/file%d.go", i)
		args, _ := json.Marshal(map[string]string{"path": path})
		id := fmt.Sprintf("call_%08x", rng.Uint32())
		var src strings.Builder
		fmt.Fprintf(&src, "package caddymodule\n\n// File %d: \"generated\" for the benchmark.\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n)\n\n", i)
		for j := 0; src.Len() < 6000+rng.IntN(20000); j++ {
			fmt.Fprintf(&src, "func step%d(ctx context.Context, key string) error {\n\tif err := check(ctx, \"key-%d\", strings.TrimSpace(key)); err != nil {\n\t\treturn fmt.Errorf(\"step %d: %%w\", err)\n\t}\n\treturn nil // café ✓\n}\n\n", j, rng.IntN(1e6), j)
		}
		msgs = append(msgs,
			msg{Role: "assistant", Content: str("Let me read " + path + "."), ToolCalls: []call{{ID: id, Type: "function", Function: fn{Name: "read", Arguments: string(args)}}}},
			msg{Role: "tool", ToolCallID: id, Content: str(src.String())},
		)
		total += src.Len() + 200
	}
	m, _ := json.Marshal(msgs)
	var b bytes.Buffer
	b.WriteString(`{"model":"anthropic/claude-sonnet-4.5","messages":`)
	b.Write(m)
	b.WriteString(`,"tools":[{"type":"function","function":{"name":"read","description":"Read a file","parameters":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}}],"max_tokens":8192,"temperature":0`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	if user {
		b.WriteString(`,"user":"sandbox-7f3a"`)
	}
	b.WriteString("}")
	return b.Bytes()
}

// imageAgentBody is a request whose user turn carries a PNG of about
// imageSize bytes as a base64 data URL: one string of 4/3 imageSize.
func imageAgentBody(imageSize int) []byte {
	img := make([]byte, imageSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	var b bytes.Buffer
	b.WriteString(`{"model":"openai/gpt-5","messages":[{"role":"user","content":[{"type":"text","text":"What is wrong in this screenshot?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,`)
	b.WriteString(base64.StdEncoding.EncodeToString(img))
	b.WriteString(`"}}]}],"stream":true,"user":"sandbox-7f3a"}`)
	return b.Bytes()
}

// readerOnly hides everything but Read, as an HTTP request body does.
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
func (readerOnly) Close() error                 { return nil }

// discardOnly is io.Discard without ReadFrom, so io.Copy uses its buffer.
type discardOnly struct{}

func (discardOnly) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkBodyEdit edits realistic agent bodies as the proxy would: read
// by io.Copy with a 32 KiB buffer (what net/http's transport uses) from a
// source that is only a Reader. "copy" is the same copy without the
// editor.
func BenchmarkBodyEdit(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
		opts Options
		edit bool // no editor: the baseline
	}{
		{"edit/256KiB", realisticAgentBody(256<<10, true, true), optsBoth, true},
		{"edit/2MiB", realisticAgentBody(2<<20, true, true), optsBoth, true},
		{"passthrough/256KiB", realisticAgentBody(256<<10, false, false), optsBoth, true},
		{"passthrough/2MiB", realisticAgentBody(2<<20, false, false), optsBoth, true},
		{"image/2MiB", imageAgentBody(1536 << 10), optsBoth, true},
		{"atend/2MiB", realisticAgentBody(2<<20, true, true), optsAtEnd, true},
		{"copy/256KiB", realisticAgentBody(256<<10, true, true), optsBoth, false},
		{"copy/2MiB", realisticAgentBody(2<<20, true, true), optsBoth, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 32<<10)
			src := bytes.NewReader(bc.body)
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(bc.body)
				var r io.Reader
				if bc.edit {
					r = NewEditor(readerOnly{src}, bc.opts)
				} else {
					r = readerOnly{src}
				}
				if _, err := io.CopyBuffer(discardOnly{}, r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The editor's memory does not grow with the body or with any one value
// in it: editing a 5 MiB body whose 4 MiB string is a message, the user
// being replaced, or whitespace, allocates a few KiB. A buffering editor
// would allocate at least the 4 MiB; the bound is generous so that the
// test cannot flake, and it still fails if a string is ever held.
func TestBodyEditMemory(t *testing.T) {
	big := strings.Repeat("QUJD", 1<<20) // 4 MiB of base64
	filler := realisticAgentBody(1<<20, false, false)
	msgs := filler[bytes.Index(filler, []byte(`[`)):bytes.LastIndex(filler, []byte(`,"tools"`))]
	for _, tc := range []struct {
		name string
		body string
		opts Options
	}{
		{"string in a message", `{"messages":` + string(msgs[:len(msgs)-1]) + `,{"role":"user","content":"` + big + `"}],"stream":true,"user":"a"}`, optsBoth},
		{"string as user", `{"messages":` + string(msgs) + `,"user":"` + big + `","stream":true}`, optsBoth},
		{"string as gateway user", `{"messages":` + string(msgs) + `,"providerOptions":{"gateway":{"tags":["` + big + `"],"user":"x"}}}`, optsBothNil},
		{"string as a name", `{"messages":` + string(msgs) + `,"` + big + `":1}`, optsBothNil},
		{"whitespace", `{"messages":` + string(msgs) + `,` + strings.Repeat(" ", 4<<20) + `"user":1}`, optsBothNil},
		{"nesting", `{"messages":` + string(msgs) + `,"x":[` + strings.Repeat(strings.Repeat("[", 998)+strings.Repeat("]", 998)+",", 2200) + `1]}`, optsBoth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			if len(body) < 5<<20 {
				t.Fatalf("body is %d bytes", len(body))
			}
			buf := make([]byte, 32<<10)
			run := func() {
				ed := NewEditor(readerOnly{bytes.NewReader(body)}, tc.opts)
				if _, err := io.CopyBuffer(discardOnly{}, ed, buf); err != nil {
					t.Fatal(err)
				}
				if r := ed.Result(); r.Refused || !r.Done {
					t.Fatalf("result %+v", r)
				}
			}
			run()
			const runs = 5
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range runs {
				run()
			}
			runtime.ReadMemStats(&after)
			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			t.Logf("%d bytes allocated per %d-byte body", perRun, len(body))
			if perRun > 64<<10 {
				t.Fatalf("editing a %d-byte body allocated %d bytes: something is buffered", len(body), perRun)
			}
		})
	}
}
