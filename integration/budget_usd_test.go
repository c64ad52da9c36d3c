package integration

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Dollar budgets: the proxy reads the gateway's catalog (the fake's, by
// `gateway`), reserves each generation's worst case in dollars, and
// settles it from the answer's cost or, where the answer has none, from
// its tokens at the catalog's prices.

// usdTolerance is how far two dollar sums may differ: the proxy counts
// nano-dollars, rounded per request.
const usdTolerance = 1e-8

// waitCatalog sends a generation (to start the catalog's background
// read, refused 503 catalog_unavailable or served) and waits until the
// proxy has read the catalog.
func waitCatalog(t *testing.T, p *caddyProc, key, body string) {
	t.Helper()
	newTestClient(t).do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key}, body)
	eventually(t, waitTimeout, "the catalog read", func() string {
		if cs := adminCatalogs(t, p); len(cs) == 0 || cs[0] == nil || cs[0].Models == 0 {
			return fmt.Sprintf("%+v", cs)
		}
		return ""
	})
}

// billedUSD is what the gateway billed the account for one test client's
// requests (cost plus surcharge).
func billedUSD(gw *fakeGateway, client string) (usd float64, n int) {
	for _, r := range gw.Billed() {
		if r.Header.Get("X-Test-Client") == client {
			usd += r.Billed.Cost + r.Billed.Surcharge
			n++
		}
	}
	return usd, n
}

// TestBudgetUSD: usd_per_day holds under a burst and caps every
// generation endpoint, with or without a cost in the answers.
//
//   - Burst: 40 parallel chat completions of one client, each with a
//     known worst case ($0.0015: 400 input tokens at $1.25/M and a cap of
//     100 at $10/M, billed exactly that), under usd_per_day 0.01: 6 are
//     served, the gateway bills $0.009, and the proxy counted exactly
//     that.
//   - usd_per_day alone caps /v1/chat/completions, /v1/responses and
//     /v1/messages, their answers with a cost and without one (priced
//     from the catalog): each client is refused usd_per_day_exceeded once
//     its next worst case does not fit, having been billed at most the
//     limit, and counted what it was billed. (Before, 20 Messages and
//     Responses answers counted $0.)
func TestBudgetUSD(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	const limit = 0.01
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetOutputTokens(100)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("gateway %s\n\t\tlimits {\n\t\t\tusd_per_day %v\n\t\t}", gw.URL(), limit))
	waitCatalog(t, p, signedClientKey("warm-up", secret), chatBody)

	t.Run("burst", func(t *testing.T) {
		body := withCap(budgetBody(1600-len(`"max_tokens":100,`)), 100) // 1600 bytes: 400 input tokens
		served, codes := burst(t, gw, []*caddyProc{p}, signedClientKey("usd-burst", secret), body, 40)
		if served != 6 || codes["usd_per_day_exceeded"] != 34 {
			t.Errorf("served %d, refusals %v; want 6 served (⌊0.01/0.0015⌋) and 34 usd_per_day_exceeded", served, codes)
		}
		var billed float64
		for _, r := range gw.Billed() {
			if string(r.Body) == body {
				billed += r.Billed.Cost + r.Billed.Surcharge
			}
		}
		if billed > limit || math.Abs(billed-6*0.0015) > usdTolerance {
			t.Errorf("the gateway billed $%v, want $0.009, at most $%v", billed, limit)
		}
		eventually(t, waitTimeout, "the proxy counted what the gateway billed", func() string {
			if c, raw := clientBudget(t, p, "key:usd-burst"); math.Abs(c.Today.USD-billed) > usdTolerance || c.InFlight != 0 || c.Reserved.USD != 0 {
				return raw
			}
			return ""
		})
	})

	bodies := map[string]string{
		"/v1/chat/completions": `{"model":"openai/gpt-5","max_tokens":100,"messages":[{"role":"user","content":"%s"}]}`,
		"/v1/responses":        `{"model":"openai/gpt-5","max_output_tokens":100,"input":"%s"}`,
		"/v1/messages":         `{"model":"anthropic/claude-sonnet-4","max_tokens":100,"messages":[{"role":"user","content":"%s"}]}`,
	}
	tc := newTestClient(t)
	for _, mode := range []costMode{costPresent, costAbsent} {
		for _, path := range []string{"/v1/chat/completions", "/v1/responses", "/v1/messages"} {
			t.Run(fmt.Sprintf("%s, cost %s", path, mode), func(t *testing.T) {
				gw.SetCostMode(path, mode)
				client := fmt.Sprintf("usd-%s-%s", strings.ReplaceAll(strings.Trim(path, "/"), "/", "-"), mode)
				var last response
				for i := range 60 {
					last = tc.do(t, http.MethodPost, p.URL+path, map[string]string{"Authorization": "Bearer " + signedClientKey(client, secret), "X-Test-Client": client},
						fmt.Sprintf(bodies[path], strings.Repeat("u", 400+i)))
					if last.Status != http.StatusOK {
						break
					}
				}
				if last.Status != http.StatusTooManyRequests || refusalCode(last) != "usd_per_day_exceeded" {
					t.Fatalf("never refused usd_per_day_exceeded: last %d %s", last.Status, last.Body)
				}
				billed, n := billedUSD(gw, client)
				// a worst case here is at most about $0.002 (its input at the
				// model's highest input price, its cap at the output price)
				if billed > limit || billed < limit-0.002 || n < 3 {
					t.Errorf("billed $%v in %d requests before the refusal, want at most $%v and within a worst case of it", billed, n, limit)
				}
				if c, raw := clientBudget(t, p, "key:"+client); math.Abs(c.Today.USD-billed) > usdTolerance || c.Today.EstimatedTokens != 0 {
					t.Errorf("counted $%v, want the $%v billed: %s", c.Today.USD, billed, raw)
				}
			})
		}
	}
}

// withCap puts "max_tokens":n after the model of a budgetBody.
func withCap(body string, n int) string {
	return strings.Replace(body, `"model":"openai/gpt-5",`, `"model":"openai/gpt-5","max_tokens":`+strconv.Itoa(n)+`,`, 1)
}

// TestBudgetCutStreamReconciled: a Messages stream the upstream cuts
// after three events (no usage, billed whole with AI Gateway's
// surcharge) is charged its worst case, marked estimated, at once; the
// proxy then looks its generation (message_start's id) up in the
// gateway's ledger, and the charge becomes exactly the ledger's figure:
// its native tokens and its total_cost.
func TestBudgetCutStreamReconciled(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetOutputTokens(100)
	gw.SetSurcharge(0.0001)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "gateway "+gw.URL()+"\n\t\tlimits {\n\t\t\tusd_per_day 1\n\t\t}")
	key := signedClientKey("cut", secret)
	waitCatalog(t, p, key, chatBody)
	body := `{"model":"anthropic/claude-sonnet-4","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("c", 800) + `"}]}`
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set(answerHeader, "cut=3")
	resp, err := newTestClient(t).HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil || strings.Contains(string(got), "message_delta") {
		t.Fatalf("the cut stream: %d, %v: %s; want 200 and a stream cut before its usage", resp.StatusCode, err, got)
	}
	gens := gw.Generations()
	gen := gens[len(gens)-1]
	if gen.Path != "/v1/messages" {
		t.Fatalf("the last generation is %+v", gen)
	}
	c, raw := clientBudget(t, p, "key:cut")
	if c.Today.EstimatedTokens == 0 || c.Today.Tokens != c.Today.EstimatedTokens {
		t.Errorf("right after the cut: %s, want the worst case, estimated", raw)
	}
	want := gen.Usage.Cost + gen.Usage.Surcharge
	eventually(t, waitTimeout, "the charge reconciled with the gateway's ledger", func() string {
		c, raw := clientBudget(t, p, "key:cut")
		if c.Today.EstimatedTokens != 0 || c.Today.Tokens != int64(gen.Usage.Input+gen.Usage.Output) || math.Abs(c.Today.USD-want) > usdTolerance {
			return fmt.Sprintf("want %d tokens and $%v, not estimated: %s", gen.Usage.Input+gen.Usage.Output, want, raw)
		}
		return ""
	})
	if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="no_usage"}`); got != 1 {
		t.Errorf(`usage_estimates_total{reason="no_usage"} = %v, want 1`, got)
	}
}

// TestBudgetRecordings: the three Messages streams recorded live from AI
// Gateway (vercel/ai issue 17326) are counted exactly: tokens (cache
// reads included in the input) and the dollars the account pays (the
// gateway's gatewayCost where the answer carries it; the recording
// without a cost at the catalog's prices).
func TestBudgetRecordings(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	const recordingHeader = "X-Test-Recording"
	replay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b, err := os.ReadFile(filepath.Join("..", "caddymodule", "internal", "jsonbody", "testdata", filepath.Base(r.Header.Get(recordingHeader))))
		if err != nil {
			http.Error(w, "no recording", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(b)
	}))
	t.Cleanup(replay.Close)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey) // the catalog, for the recording without a cost
	gw.Faithful()                        // its whole default catalog
	p, secret := signedKeysProxy(t, replay.URL, apiKey, "gateway "+gw.URL()+"\n\t\tlimits {\n\t\t\tusd_per_day 1\n\t\t}")
	waitCatalog(t, p, signedClientKey("warm-up", secret), chatBody)
	for _, tc := range []struct {
		client, model, recording string
		tokens                   int64
		usd                      float64
	}{
		// the gateway's gatewayCost
		{"haiku", "anthropic/claude-haiku-4.5", "issue-17326-anthropic-claude-haiku-4.5.chunks.txt", 13 + 5, 0.000138},
		// gatewayCost; 128 cache reads count as input
		{"grok", "xai/grok-4.5", "issue-17326-xai-grok-4.5.chunks.txt", 84 + 128 + 30, 0.0004864},
		// no cost: at the catalog's prices for Claude Haiku 4.5
		{"no-cost", "anthropic/claude-haiku-4.5", "issue-17326-anthropic-stream.chunks.txt", 13 + 5, 13*0.000001 + 5*0.000005},
	} {
		body := `{"model":"` + tc.model + `","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hi"}]}`
		res := newTestClient(t).do(t, http.MethodPost, p.URL+"/v1/messages",
			map[string]string{"Authorization": "Bearer " + signedClientKey(tc.client, secret), recordingHeader: tc.recording}, body)
		if res.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.client, res.Status, res.Body)
		}
		c, raw := settledBudget(t, p, "key:"+tc.client)
		if c.Today.Tokens != tc.tokens || math.Abs(c.Today.USD-tc.usd) > usdTolerance || c.Today.EstimatedTokens != 0 {
			t.Errorf("%s: counted %+v, want %d tokens and $%v: %s", tc.client, c.Today, tc.tokens, tc.usd, raw)
		}
	}
}
