package jsonbody

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
)

// usageCase is a response shaped as AI Gateway sends it, with the usage
// it reports (none: Usage is nil).
type usageCase struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
	Usage       *struct {
		Input   int64   `json:"input"`
		Output  int64   `json:"output"`
		Cost    float64 `json:"cost"`
		HasCost bool    `json:"has_cost"`
	} `json:"usage"`
}

// want is the Usage the case reports, and whether it reports one.
func (c usageCase) want() (Usage, bool) {
	if c.Usage == nil {
		return Usage{}, false
	}
	return Usage{Input: c.Usage.Input, Output: c.Usage.Output, Cost: c.Usage.Cost, HasCost: c.Usage.HasCost}, true
}

// legacy is u with only the fields answers.json has (the module's
// metering tests read the same file); usage_gateway_test.go tests the
// others.
func legacy(u Usage) Usage {
	return Usage{Input: u.Input, Output: u.Output, Cost: u.Cost, HasCost: u.HasCost}
}

// usageCases are the answers of testdata/answers.json (the module's
// metering tests read the same file): every API's JSON and SSE answers,
// a "usage" key inside a string and in a tool schema, cumulative
// Anthropic deltas, malformed usage objects, a body that is neither.
var usageCases = func() []usageCase {
	b, err := os.ReadFile("testdata/answers.json")
	if err != nil {
		panic(err)
	}
	var cases []usageCase
	if err := json.Unmarshal(b, &cases); err != nil {
		panic(err)
	}
	return cases
}()

// scanAll runs a body through a scanner in pieces of size n (0: whole).
func scanAll(t testing.TB, contentType, body string, status, n int, hdr http.Header) (Usage, bool) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Content-Type", contentType)
	var s UsageScanner
	s.Start(status, hdr)
	b := []byte(body)
	for n > 0 && len(b) > n {
		s.Write(b[:n])
		b = b[n:]
	}
	s.Write(b)
	return s.Finish()
}

func TestUsageScanner(t *testing.T) {
	for _, tc := range usageCases {
		want, wantFound := tc.want()
		t.Run(tc.Name, func(t *testing.T) {
			// every way of splitting the body gives the same answer
			for _, n := range []int{0, 1, 2, 3, 7, 64, 1000} {
				got, found := scanAll(t, tc.ContentType, tc.Body, http.StatusOK, n, nil)
				if found != wantFound || legacy(got) != want {
					t.Fatalf("pieces of %d: got %+v (found %v), want %+v (found %v)", n, got, found, want, wantFound)
				}
			}
		})
	}
}

// Nothing is read from error answers or compressed bodies.
func TestUsageScannerSkips(t *testing.T) {
	body := usageCases[0].Body
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
		var s UsageScanner
		s.Start(http.StatusOK, http.Header{"Content-Type": {tc.ct}})
		b := []byte(tc.body)
		for len(b) > 0 {
			n := min(len(b), 32<<10)
			s.Write(b[:n])
			b = b[n:]
			if cap(s.carry) > 2*maxUsageCarry {
				t.Fatalf("%s: carry grew to %d bytes", tc.ct, cap(s.carry))
			}
		}
		if got, found := s.Finish(); !found || legacy(got) != (Usage{Input: 1, Output: 2}) {
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
		want Usage
		ok   bool
	}{
		{"data: {\"output\":\"" + pad + "\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}\n", Usage{Input: 1, Output: 2}, true},
		{"data: {\"usage\":{\"input_tokens\":1,\"output_tokens\":2},\"output\":\"" + pad + "\"}\n", Usage{}, false},
	} {
		for _, piece := range []int{1000, 4093, 70 << 10} {
			var s UsageScanner
			s.Start(http.StatusOK, http.Header{"Content-Type": {"text/event-stream"}})
			for b := []byte(tc.line); len(b) > 0; {
				n := min(len(b), piece)
				s.Write(b[:n])
				b = b[n:]
				if cap(s.carry) > 2*maxUsageCarry {
					t.Fatalf("pieces of %d: carry grew to %d bytes", piece, cap(s.carry))
				}
			}
			if cap(s.carry) > maxIdleCarry {
				t.Errorf("pieces of %d: carry kept %d bytes after the line", piece, cap(s.carry))
			}
			s.Write([]byte("event: ping\n"))
			if got, found := s.Finish(); found != tc.ok || legacy(got) != tc.want {
				t.Errorf("pieces of %d: got %+v (found %v), want %+v (found %v)", piece, got, found, tc.want, tc.ok)
			}
		}
	}
}

func BenchmarkUsageScannerSSE(b *testing.B) {
	body := []byte(usageCases[2].Body)
	hdr := http.Header{"Content-Type": {"text/event-stream"}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var s UsageScanner
		s.Start(http.StatusOK, hdr)
		for _, ev := range bytes.SplitAfter(body, []byte("\n\n")) {
			s.Write(ev)
		}
		s.Finish()
	}
}

// The usage-only chunk of a Chat Completions stream is told apart from
// every other line, however the usage key is spaced.
func TestUsageOnlyChunk(t *testing.T) {
	for line, want := range map[string]bool{
		`data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}` + "\n": true,
		`data:{"choices":[] , "usage" :  {"prompt_tokens":1}}`:                                   true,
		`data: {"id":"c","choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}`:                  false, // content
		`data: {"id":"c","choices":[],"usage":null}`:                                             false,
		`data: {"id":"c","choices":[],"usage":"x"}`:                                              false, // not an object
		`data: {"id":"c","choices":[],"usage":[{}]}`:                                             false,
		`data: {"id":"c","choices":[],"usage":{}}`:                                               true,
		`data: {"id":"c","usage":{"prompt_tokens":1}}`:                                           false, // no choices
		`{"choices":[],"usage":{"prompt_tokens":1}}`:                                             false, // not a data line
		`data: {"choices":[],"usage":{"prompt_tokens":1}`:                                        false, // cut
		`data: [DONE]`: false,
		`data: {"choices":[ ],"usage":{}}` + "\r\n":        true,
		`data: {"Choices":[],"usage":{}}`:                  true,  // keys match without regard to case, as encoding/json's
		`data: {"choices":[],"choices":[{}],"usage":{}}`:   false, // the last of a repeated member counts
		`data: {"choices":[],"usage":{}} {}`:               false, // something after the object
		`data: {"choices":[],"usage":{"prompt_tokens" 1}}`: false, // malformed member
	} {
		data, ok := UsageLine([]byte(line))
		if got := ok && UsageOnlyChunk(data); got != want {
			t.Errorf("UsageOnlyChunk(%s) = %v, want %v", line, got, want)
		}
		if want && !HasUsageObject([]byte(line)) {
			t.Errorf("HasUsageObject(%s) = false", line)
		}
	}
}

// BenchmarkUsageOnlyChunk: the check a hidden usage chunk costs, once
// per stream whose client did not ask for usage.
func BenchmarkUsageOnlyChunk(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-bench0123456789abcdef","object":"chat.completion.chunk","created":1767225600,"model":"openai/gpt-4o-mini",` +
		`"choices":[],"usage":{"prompt_tokens":42,"completion_tokens":64,"total_tokens":106,"prompt_tokens_details":{"cached_tokens":0},"cost":0.0000447}}`)
	b.ReportAllocs()
	for b.Loop() {
		if !UsageOnlyChunk(data) {
			b.Fatal("not a usage-only chunk")
		}
	}
}

// lineKeys finds the finish markers and the usage key as bytes.Index
// would, in one pass: keys in strings (escaped quotes) do not count, and
// of finish_reason and stop_reason only the first of each.
func TestLineKeys(t *testing.T) {
	for line, want := range map[string][2]bool{
		`data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}]}`:               {false, false},
		`data: {"choices":[{"delta":{},"finish_reason" : "stop"}]}`:                        {true, false},
		`data: {"choices":[{"finish_reason":null},{"finish_reason":"stop"}]}`:              {false, false},
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{}}`:     {true, true},
		`data: {"type":"response.completed","response":{}}`:                                {true, false},
		`data: {"choices":[],"usage":{"prompt_tokens":1}}`:                                 {false, true},
		`data: {"choices":[{"delta":{"content":"\"usage\" \"finish_reason\":\"stop\""}}]}`: {false, false},
		`data: {"usage":null}`: {false, true},
		`"usage`:               {false, false},
	} {
		if f, u := lineKeys([]byte(line), true); f != want[0] || u != want[1] {
			t.Errorf("lineKeys(%s) = %v, %v, want %v, %v", line, f, u, want[0], want[1])
		}
	}
	if f, _ := lineKeys([]byte(`data: {"choices":[{"finish_reason":"stop"}]}`), false); f {
		t.Error("lineKeys looked for a finish marker it was not asked for")
	}
}

// MayHaveUsageKey is false only for whole lines without the usage key.
func TestMayHaveUsageKey(t *testing.T) {
	var s UsageScanner
	s.Start(200, http.Header{"Content-Type": {"text/event-stream"}})
	for _, step := range []struct {
		write string
		want  bool
	}{
		{"data: {\"choices\":[{\"delta\":{}}]}\n\n", false},
		{"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", true},
		{"data: {\"choices\":[{\"delta\":", true}, // unfinished
		{"{}}]}\n\n", true}, // the end of a line begun before
		{"data: [DONE]\n\n", false},
	} {
		s.Write([]byte(step.write))
		if got := s.MayHaveUsageKey(); got != step.want {
			t.Errorf("after %q: MayHaveUsageKey() = %v, want %v", step.write, got, step.want)
		}
	}
}
