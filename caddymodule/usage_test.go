package caddymodule

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// Responses shaped as AI Gateway sends them, with the usage each reports.
var usageCases = []struct {
	name        string
	contentType string
	body        string
	want        usage
	found       bool
}{
	{
		name:        "openai chat json",
		contentType: "application/json",
		body: `{"id":"chatcmpl-1","object":"chat.completion","model":"openai/gpt-5","choices":[{"index":0,` +
			`"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 999} is text"},"finish_reason":"stop"}],` +
			`"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4},"cost":0.000123}}`,
		want: usage{input: 12, output: 7, cost: 0.000123, hasCost: true}, found: true,
	},
	{
		name:        "openai chat json, pretty and without cost",
		contentType: "application/json; charset=utf-8",
		body:        "{\n  \"choices\": [],\n  \"usage\" : {\n    \"prompt_tokens\": 3,\n    \"completion_tokens\": 4\n  }\n}\n",
		want:        usage{input: 3, output: 4}, found: true,
	},
	{
		name:        "openai chat stream with include_usage",
		contentType: "text/event-stream",
		body: "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
			"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
			"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
			"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5,\"total_tokens\":25,\"cost\":\"0.5\"}}\n\n" +
			"data: [DONE]\n\n",
		want: usage{input: 20, output: 5, cost: 0.5, hasCost: true}, found: true,
	},
	{
		name:        "openai chat stream without usage",
		contentType: "text/event-stream",
		body:        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
	},
	{
		name:        "responses json",
		contentType: "application/json",
		body: `{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],` +
			`"tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"usage":{"type":"string"}}}}],` +
			`"usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"total_tokens":39},"user":null,"metadata":{}}`,
		want: usage{input: 30, output: 9}, found: true,
	},
	{
		name:        "responses stream",
		contentType: "text/event-stream",
		body: "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n" +
			"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
			"event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\"," +
			"\"output\":[],\"usage\":{\"input_tokens\":41,\"output_tokens\":13,\"total_tokens\":54}}}\r\n\r\n",
		want: usage{input: 41, output: 13}, found: true,
	},
	{
		name:        "anthropic json",
		contentType: "application/json",
		body: `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",` +
			`"usage":{"input_tokens":50,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":8}}`,
		want: usage{input: 155, output: 8}, found: true,
	},
	{
		name:        "anthropic stream: message_delta is cumulative",
		contentType: "text/event-stream",
		body: "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":60,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":10}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":25}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		want: usage{input: 60, output: 25}, found: true,
	},
	{
		name:        "anthropic stream without a final newline",
		contentType: "text/event-stream",
		body:        "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}",
		want:        usage{input: 2, output: 3}, found: true,
	},
	{
		name:        "malformed usage objects are ignored",
		contentType: "text/event-stream",
		body: "data: {\"usage\":{\"input_tokens\":-1}}\n\ndata: {\"usage\":{\"input_tokens\":\"7\"}}\n\n" +
			"data: {\"usage\":{\"output_tokens\":1e3}}\n\ndata: {\"usage\":{\"output_tokens\":4\n\n" +
			"data: {\"usage\":{}}\n\ndata: {\"usage\":[1,2]}\n\n",
	},
	{
		name:        "not JSON or SSE",
		contentType: "text/plain",
		body:        `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`,
	},
}

// scanAll runs a body through a scanner in pieces of size n (0: whole).
func scanAll(t testing.TB, contentType, body string, status, n int, hdr http.Header) (usage, bool) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Content-Type", contentType)
	var s usageScanner
	s.start(status, hdr)
	b := []byte(body)
	for n > 0 && len(b) > n {
		s.write(b[:n])
		b = b[n:]
	}
	s.write(b)
	return s.finish()
}

func TestUsageScanner(t *testing.T) {
	for _, tc := range usageCases {
		t.Run(tc.name, func(t *testing.T) {
			// every way of splitting the body gives the same answer
			for _, n := range []int{0, 1, 2, 3, 7, 64, 1000} {
				got, found := scanAll(t, tc.contentType, tc.body, http.StatusOK, n, nil)
				if found != tc.found || got != tc.want {
					t.Fatalf("pieces of %d: got %+v (found %v), want %+v (found %v)", n, got, found, tc.want, tc.found)
				}
			}
		})
	}
}

// Nothing is read from error answers or compressed bodies.
func TestUsageScannerSkips(t *testing.T) {
	body := usageCases[0].body
	if _, found := scanAll(t, "application/json", body, http.StatusBadRequest, 0, nil); found {
		t.Error("usage read from a 400 answer")
	}
	if _, found := scanAll(t, "application/json", body, http.StatusOK, 0, http.Header{"Content-Encoding": {"gzip"}}); found {
		t.Error("usage read from a gzip body")
	}
	if _, found := scanAll(t, "application/json", body, http.StatusOK, 0, http.Header{"Content-Encoding": {"identity"}}); !found {
		t.Error("usage not read from an identity-encoded body")
	}
}

// Bodies far larger than the carry are scanned in bounded memory: the
// usage at the end of a 1 MiB JSON body, or of a 1 MiB SSE line, is found
// and the carry never grows past its cap.
func TestUsageScannerBounded(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	for _, tc := range []struct{ ct, body string }{
		{"application/json", `{"output":[{"text":"` + big + `"}],"usage":{"input_tokens":1,"output_tokens":2}}`},
		{"text/event-stream", "data: {\"type\":\"response.completed\",\"response\":{\"output\":\"" + big + "\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n"},
	} {
		var s usageScanner
		s.start(http.StatusOK, http.Header{"Content-Type": {tc.ct}})
		b := []byte(tc.body)
		for len(b) > 0 {
			n := min(len(b), 32<<10)
			s.write(b[:n])
			b = b[n:]
			if cap(s.carry) > 2*maxUsageCarry {
				t.Fatalf("%s: carry grew to %d bytes", tc.ct, cap(s.carry))
			}
		}
		if got, found := s.finish(); !found || got != (usage{input: 1, output: 2}) {
			t.Errorf("%s: got %+v (found %v)", tc.ct, got, found)
		}
	}
}

// A long SSE line written in small pieces is trimmed to its tail (usage
// at its end is found, usage only in its cut-off head is not), and once
// it is scanned its large buffer is dropped rather than kept for the
// rest of the stream.
func TestUsageScannerLongLineReleased(t *testing.T) {
	pad := strings.Repeat("x", 3*maxUsageCarry)
	for _, tc := range []struct {
		line string
		want usage
		ok   bool
	}{
		{"data: {\"output\":\"" + pad + "\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}\n", usage{input: 1, output: 2}, true},
		{"data: {\"usage\":{\"input_tokens\":1,\"output_tokens\":2},\"output\":\"" + pad + "\"}\n", usage{}, false},
	} {
		for _, piece := range []int{1000, 4093, 70 << 10} {
			var s usageScanner
			s.start(http.StatusOK, http.Header{"Content-Type": {"text/event-stream"}})
			for b := []byte(tc.line); len(b) > 0; {
				n := min(len(b), piece)
				s.write(b[:n])
				b = b[n:]
				if cap(s.carry) > 2*maxUsageCarry {
					t.Fatalf("pieces of %d: carry grew to %d bytes", piece, cap(s.carry))
				}
			}
			if cap(s.carry) > maxIdleCarry {
				t.Errorf("pieces of %d: carry kept %d bytes after the line", piece, cap(s.carry))
			}
			s.write([]byte("event: ping\n"))
			if got, found := s.finish(); found != tc.ok || got != tc.want {
				t.Errorf("pieces of %d: got %+v (found %v), want %+v (found %v)", piece, got, found, tc.want, tc.ok)
			}
		}
	}
}

func BenchmarkUsageScannerSSE(b *testing.B) {
	body := []byte(usageCases[2].body)
	hdr := http.Header{"Content-Type": {"text/event-stream"}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var s usageScanner
		s.start(http.StatusOK, hdr)
		for _, ev := range bytes.SplitAfter(body, []byte("\n\n")) {
			s.write(ev)
		}
		s.finish()
	}
}
