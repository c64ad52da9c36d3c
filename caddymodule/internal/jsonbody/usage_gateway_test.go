package jsonbody

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

// usageFixtures are AI Gateway's answers recorded live, copied from
// vercel/ai packages/gateway/src/__fixtures__/ (the issue-17326 ones):
// two Messages streams with the gateway's metadata, and one whose events
// are JSON lines (no "data:"), as the AI SDK's test reads them.
var usageFixtures = []string{
	"issue-17326-anthropic-claude-haiku-4.5.chunks.txt",
	"issue-17326-xai-grok-4.5.chunks.txt",
	"issue-17326-anthropic-stream.chunks.txt",
}

// TestUsageScannerRecordings counts the recorded answers exactly: their
// tokens, what the account pays in nano-dollars, and the generation,
// however the stream is cut into writes.
func TestUsageScannerRecordings(t *testing.T) {
	want := map[string]Usage{
		// cost "0.000038", gatewayCost "0.000138" (the surcharge 0.0001)
		usageFixtures[0]: {Input: 13, Output: 5, CostNanoUSD: 38_000, GatewayCostNanoUSD: 138_000, GenerationID: "gen_01KY071V9GQK1EBS343E5TY39W"},
		// input_tokens 84 and cache_read_input_tokens 128: 212 in all
		usageFixtures[1]: {Input: 212, Output: 30, CacheReadTokens: 128, CostNanoUSD: 386_400, GatewayCostNanoUSD: 486_400, GenerationID: "gen_01KY071N0WCYNCDGM7C24J29GY"},
		// no cost in this one: generationId alone
		usageFixtures[2]: {Input: 13, Output: 5, CostNanoUSD: -1, GatewayCostNanoUSD: -1, GenerationID: "gen_01KY06SC3SZGWANWA1VYE729WE"},
	}
	for _, name := range usageFixtures {
		body, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 7, 100, 1000} {
			got, found := scanAll(t, "text/event-stream", string(body), http.StatusOK, n, nil)
			if !found || got != want[name] {
				t.Errorf("%s in pieces of %d: got %+v (found %v)\nwant %+v", name, n, got, found, want[name])
			}
		}
	}
}

// TestUsageScannerGatewayShapes: the costs, cache tokens and generation
// ids of every API's answers, in AI Gateway's shapes (the fake gateway's
// too), and what is not taken for one.
func TestUsageScannerGatewayShapes(t *testing.T) {
	const gen = "gen_01KY071V9GQK1EBS343E5TY39W"
	none := Usage{CostNanoUSD: -1, GatewayCostNanoUSD: -1}
	for _, tc := range []struct {
		name, ct, body string
		want           Usage
		found          bool
	}{
		{
			"chat json: cost, gateway_cost, cached tokens", "application/json",
			`{"id":"` + gen + `","object":"chat.completion","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":40},"cost":0.00123,"gateway_cost":"0.00133"}}`,
			Usage{Input: 100, Output: 20, CacheReadTokens: 40, Cost: 0.00123, HasCost: true, CostNanoUSD: 1_230_000, GatewayCostNanoUSD: 1_330_000, GenerationID: gen}, true,
		},
		{
			"chat stream: the usage chunk's metadata", "text/event-stream",
			"data: {\"id\":\"" + gen + "\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
				"data: {\"id\":\"" + gen + "\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
				"data: {\"id\":\"" + gen + "\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"cost\":1.5e-7},\"provider_metadata\":{\"gateway\":{\"cost\":\"0.00000015\",\"gatewayCost\":\"0.00010015\",\"generationId\":\"" + gen + "\"}}}\n\ndata: [DONE]\n\n",
			Usage{Input: 7, Output: 3, Cost: 1.5e-7, HasCost: true, CostNanoUSD: 150, GatewayCostNanoUSD: 100_150, GenerationID: gen}, true,
		},
		{
			"responses stream", "text/event-stream",
			"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"" + gen + "\",\"output\":[],\"usage\":null}}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"" + gen + "\",\"output\":[{\"id\":\"msg_1\"}],\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":20},\"output_tokens\":10,\"output_tokens_details\":{\"reasoning_tokens\":4},\"cost\":\"0.0004\"}}}\n\n",
			Usage{Input: 50, Output: 10, CacheReadTokens: 20, Cost: 0.0004, HasCost: true, CostNanoUSD: 400_000, GatewayCostNanoUSD: -1, GenerationID: gen}, true,
		},
		{
			"messages json: cache writes", "application/json",
			`{"id":"` + gen + `","type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":200,"output_tokens":9}}`,
			Usage{Input: 305, Output: 9, CacheReadTokens: 200, CacheWriteTokens: 100, CostNanoUSD: -1, GatewayCostNanoUSD: -1, GenerationID: gen}, true,
		},
		{
			"an id that is not a generation's", "application/json",
			`{"id":"chatcmpl-abc","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":0}}`,
			Usage{Input: 1, Output: 1, HasCost: true, CostNanoUSD: 0, GatewayCostNanoUSD: -1}, true,
		},
		{
			"only the answer's own id", "application/json",
			`{"id":"msg_1","content":[{"type":"tool_use","id":"gen_not_this"}],"usage":{"input_tokens":1,"output_tokens":1}}`,
			Usage{Input: 1, Output: 1, CostNanoUSD: -1, GatewayCostNanoUSD: -1}, true,
		},
		{
			"ids that cannot be generation ids", "text/event-stream",
			"data: {\"id\":\"gen_" + strings.Repeat("a", maxGenerationID) + "\",\"usage\":null}\n\n" +
				"data: {\"usage\":{\"prompt_tokens\":1},\"provider_metadata\":{\"gateway\":{\"generationId\":\"gen_a b\",\"cost\":\"-1\",\"gatewayCost\":\"1e400\"}}}\n\n",
			Usage{Input: 1, CostNanoUSD: -1, GatewayCostNanoUSD: -1}, true,
		},
		{
			"cut before the usage: the generation is known", "text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"" + gen + "\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n",
			Usage{CostNanoUSD: -1, GatewayCostNanoUSD: -1, GenerationID: gen}, true,
		},
		{"no usage", "application/json", `{"id":"` + gen + `","data":[]}`, Usage{CostNanoUSD: -1, GatewayCostNanoUSD: -1, GenerationID: gen}, false},
		{"nothing", "application/json", `{}`, none, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{0, 1, 5, 64} {
				got, found := scanAll(t, tc.ct, tc.body, http.StatusOK, n, nil)
				if found != tc.found || got != tc.want {
					t.Fatalf("pieces of %d: got %+v (found %v)\nwant %+v (found %v)", n, got, found, tc.want, tc.found)
				}
			}
		})
	}
}

// A JSON body larger than the tail the scanner keeps has its id read
// only from the gateway's metadata: the tail's first id is not the
// answer's.
func TestUsageScannerLargeJSONID(t *testing.T) {
	pad := strings.Repeat("x", 2*maxUsageCarry)
	body := `{"id":"gen_head","content":[{"text":"` + pad + `"},{"id":"gen_inner"}],"usage":{"input_tokens":1,"output_tokens":2}}`
	if got, _ := scanAll(t, "application/json", body, http.StatusOK, 4096, nil); got.GenerationID != "" {
		t.Errorf("id %q read from a tail", got.GenerationID)
	}
	body = strings.TrimSuffix(body, "}") + `,"provider_metadata":{"gateway":{"generationId":"gen_meta"}}}`
	if got, _ := scanAll(t, "application/json", body, http.StatusOK, 4096, nil); got.GenerationID != "gen_meta" {
		t.Errorf("id %q, want the metadata's", got.GenerationID)
	}
}

func TestParseNanoUSD(t *testing.T) {
	for in, want := range map[string]int64{
		`"0.000038"`: 38_000, `0.000038`: 38_000, `"0.0003864"`: 386_400, `1e-7`: 100, `1E-7`: 100,
		`1.5e-10`: 1, `0.0000000001`: 1, `1e-400`: 1, `0`: 0, `0.0`: 0, `0e5`: 0, `12`: 12_000_000_000,
		`0.1234567891`: 123_456_790, `1e9`: 1_000_000_000_000_000_000, `1e+2`: 100_000_000_000, `"2.5E1"`: 25_000_000_000,
		`123456789012345678901234567890e-30`: 123_456_790, `0.000000001`: 1, `0.0000000010000000000000000001`: 2,
		`9.22337203685477580e9`: 9_223_372_036_854_775_800,
	} {
		if got, ok := parseNanoUSD([]byte(in)); !ok || got != want {
			t.Errorf("parseNanoUSD(%s) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{`-0.1`, `-0`, `abc`, `1.`, `.5`, `01`, `1e`, `1e+`, `1e400`, `9.3e9`, `9.223372036854775808e9`, `""`, `"1"x`, `1.5.2`, `0x10`, `" 1"`, `null`, `true`, `1e-`} {
		if got, ok := parseNanoUSD([]byte(in)); ok {
			t.Errorf("parseNanoUSD(%s) = %d, want nothing", in, got)
		}
	}
}
