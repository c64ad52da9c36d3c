package jsonbody

import (
	"bytes"
	"net/http"
	"os"
	"testing"
)

// FuzzUsageScanner: any response body, split anywhere, with SSE events
// cut across writes or malformed, never panics, gives the same usage
// however it is split, and never reports a negative count.
func FuzzUsageScanner(f *testing.F) {
	for _, tc := range usageCases {
		f.Add(tc.ContentType == "text/event-stream", tc.Body, uint16(len(tc.Body)/3), uint16(len(tc.Body)/2))
	}
	f.Add(true, "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n", uint16(9), uint16(30))
	f.Add(true, "data: {\"usage\":{\"input_tokens\":1,\"output_tokens\"", uint16(3), uint16(20))
	f.Add(true, "data: {\"usage\":{\"a\":{\"b\":[\"}\\\"\",{}]},\"output_tokens\":3}}\r\n\r\n", uint16(5), uint16(40))
	f.Add(false, "{\"usage\":{\"cost\":\"1e400\",\"output_tokens\":999999999999999}}", uint16(1), uint16(2))
	f.Add(false, "{\"usage\":{\"input_tokens\":1,\"usage\":{\"output_tokens\":2}}}", uint16(0), uint16(0))
	for _, name := range usageFixtures {
		body, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(true, string(body), uint16(len(body)/3), uint16(len(body)/2))
	}
	f.Add(false, `{"id":"gen_01","usage":{"prompt_tokens":1,"cost":1.5e-10,"gateway_cost":"0.1"},"provider_metadata":{"gateway":{"cost":"2","generationId":"gen_02"}}}`, uint16(3), uint16(9))
	f.Fuzz(func(t *testing.T, sse bool, body string, a, b uint16) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		whole, wholeFound := scanAll(t, ct, body, http.StatusOK, 0, nil)
		i, j := min(int(a), len(body)), min(int(b), len(body))
		if i > j {
			i, j = j, i
		}
		var s UsageScanner
		s.Start(http.StatusOK, http.Header{"Content-Type": {ct}})
		s.Write([]byte(body[:i]))
		s.Write([]byte(body[i:j]))
		s.Write([]byte(body[j:]))
		split, splitFound := s.Finish()
		if split != whole || splitFound != wholeFound {
			t.Fatalf("split at %d and %d: %+v (%v); whole: %+v (%v)", i, j, split, splitFound, whole, wholeFound)
		}
		if whole.Input < 0 || whole.Output < 0 || whole.Cost < 0 || whole.CacheReadTokens < 0 || whole.CacheWriteTokens < 0 ||
			whole.CostNanoUSD < -1 || whole.GatewayCostNanoUSD < -1 {
			t.Fatalf("negative usage %+v", whole)
		}
		if id := whole.GenerationID; id != "" && (len(id) > maxGenerationID || generationID([]byte(`"`+id+`"`)) == nil) {
			t.Fatalf("generation id %q", id)
		}
	})
}

// FuzzHasUsageObject: the search from the key's second byte finds what
// a plain search for the whole key finds.
func FuzzHasUsageObject(f *testing.F) {
	for _, s := range []string{`{"usage":{}}`, `{"x":"usage","usage" : {"a":1}}`, `usage":{}`, `{"xusage":{},"usage":null}`,
		`"usage"usage":{}`, `{"a":"\"usage\":{}"}`, `""usage":{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := false
		for i := 0; i+len(usageKey) <= len(b) && !want; i++ {
			if bytes.Equal(b[i:i+len(usageKey)], usageKey) {
				j := skipSpace(b, i+len(usageKey))
				if j < len(b) && b[j] == ':' {
					j = skipSpace(b, j+1)
					want = j < len(b) && b[j] == '{'
				}
			}
		}
		if got := HasUsageObject(b); got != want {
			t.Fatalf("HasUsageObject(%q) = %v, want %v", b, got, want)
		}
	})
}

// FuzzLineKeys: lineKeys finds what a walk over every quote of the line
// finds (the implementation before keyAt, kept here as the reference).
func FuzzLineKeys(f *testing.F) {
	for _, s := range []string{`data: {"choices":[{"finish_reason":"stop"}],"usage":null}`, `{"finish_reason":null,"finish_reason":"x"}`,
		`{"stop_reason" : "end_turn"}`, `{"type":"response.completed"}`, `"xfinish_reason":"stop"`, `{"a":"usage","b":1}`, `"usage`} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, line []byte, finish bool) {
		wantFinal, wantUsage := lineKeysWalk(line, finish)
		if final, usage := lineKeys(line, finish); final != wantFinal || usage != wantUsage {
			t.Fatalf("lineKeys(%q, %v) = %v, %v; the walk over the quotes: %v, %v", line, finish, final, usage, wantFinal, wantUsage)
		}
	})
}

func lineKeysWalk(line []byte, finish bool) (final, usage bool) {
	var finishSeen, stopSeen bool
	for i := 0; ; {
		q := bytes.IndexByte(line[i:], '"')
		if q < 0 {
			return final, usage
		}
		i += q + 1
		rest := line[i:]
		switch {
		case len(rest) < 6:
		case rest[0] == 'u':
			usage = usage || bytes.HasPrefix(rest, usageKey[1:])
		case !finish || final:
		case rest[0] == 'f' && !finishSeen && bytes.HasPrefix(rest, finishKey[1:]):
			finishSeen, final = true, reasonFollows(line, i+len(finishKey)-1)
		case rest[0] == 's' && !stopSeen && bytes.HasPrefix(rest, stopKey[1:]):
			stopSeen, final = true, reasonFollows(line, i+len(stopKey)-1)
		case rest[0] == 'r':
			final = bytes.HasPrefix(rest, responseCompleted[1:])
		}
	}
}
