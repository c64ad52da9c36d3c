package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Budgets that hold (issue 22): every generation reserves its worst case
// before it goes upstream, so bursts, hang-ups and a fleet cannot spend
// past a limit. The tests use the faithful fake gateway (input tokens =
// the body's bytes / 4, as the proxy estimates them; output tokens = the
// configured length, here the reserved cap), so a request's worst case
// is exactly what it is billed, and compare what the gateway billed with
// what the proxy charged.

// budgetBody is a chat completion whose body is exactly n bytes (a
// multiple of 4 at least 80), so that its input is n/4 tokens for the
// proxy and for the faithful fake.
func budgetBody(n int) string {
	head, tail := `{"model":"openai/gpt-5","messages":[{"role":"user","content":"`, `"}]}`
	return head + strings.Repeat("b", n-len(head)-len(tail)) + tail
}

// budgetClient is one client's status under a handler, as
// GET /ai_gateway_auth/status?client=<id> shows it.
type budgetClient struct {
	Client string `json:"client"`
	From   string `json:"from"`
	Today  struct {
		Tokens, InputTokens, OutputTokens, Requests, EstimatedTokens int64
		USD                                                          float64
	} `json:"today"`
	Month struct {
		Tokens int64
	} `json:"month"`
	Reserved struct {
		Tokens int64
		USD    float64
	} `json:"reserved"`
	InFlight int64              `json:"in_flight"`
	Left     map[string]float64 `json:"left"`
}

// UnmarshalJSON reads the snake_case fields the anonymous structs name
// in Go case.
func (c *budgetClient) UnmarshalJSON(b []byte) error {
	type spent struct {
		Tokens          int64   `json:"tokens"`
		InputTokens     int64   `json:"input_tokens"`
		OutputTokens    int64   `json:"output_tokens"`
		Requests        int64   `json:"requests"`
		EstimatedTokens int64   `json:"estimated_tokens"`
		USD             float64 `json:"usd"`
	}
	var raw struct {
		Client   string `json:"client"`
		From     string `json:"from"`
		Today    spent  `json:"today"`
		Month    spent  `json:"month"`
		Reserved struct {
			Tokens int64   `json:"tokens"`
			USD    float64 `json:"usd"`
		} `json:"reserved"`
		InFlight int64              `json:"in_flight"`
		Left     map[string]float64 `json:"left"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	c.Client, c.From, c.InFlight, c.Left = raw.Client, raw.From, raw.InFlight, raw.Left
	c.Today.Tokens, c.Today.InputTokens, c.Today.OutputTokens = raw.Today.Tokens, raw.Today.InputTokens, raw.Today.OutputTokens
	c.Today.Requests, c.Today.EstimatedTokens, c.Today.USD = raw.Today.Requests, raw.Today.EstimatedTokens, raw.Today.USD
	c.Month.Tokens = raw.Month.Tokens
	c.Reserved.Tokens, c.Reserved.USD = raw.Reserved.Tokens, raw.Reserved.USD
	return nil
}

// clientBudget reads one client's status from an instance (its first
// handler), and the raw answer for messages.
func clientBudget(t *testing.T, p *caddyProc, id string) (budgetClient, string) {
	t.Helper()
	res := newTestClient(t).do(t, http.MethodGet, p.Admin+"/ai_gateway_auth/status?client="+url.QueryEscape(id), nil, "")
	var st struct {
		Handlers []struct {
			Client *budgetClient `json:"client"`
		} `json:"handlers"`
	}
	if err := json.Unmarshal(res.Body, &st); err != nil || len(st.Handlers) == 0 || st.Handlers[0].Client == nil {
		t.Fatalf("status for %s: %v: %s", id, err, res.Body)
	}
	return *st.Handlers[0].Client, string(res.Body)
}

// settledBudget is clientBudget once the client has nothing in flight:
// a request is settled when its handler ends, which may be a moment after
// its client has read the whole answer.
func settledBudget(t *testing.T, p *caddyProc, id string) (budgetClient, string) {
	t.Helper()
	var c budgetClient
	var raw string
	eventually(t, waitTimeout, id+"'s requests settled", func() string {
		if c, raw = clientBudget(t, p, id); c.InFlight != 0 {
			return raw
		}
		return ""
	})
	return c, raw
}

// refusalCode reads a refusal's error code: in the body (OpenAI's
// shape), else in the header every refusal carries (Anthropic's shape
// has no code).
func refusalCode(res response) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(res.Body, &e)
	if e.Error.Code == "" {
		return res.Header.Get("X-Ai-Gateway-Auth-Error")
	}
	return e.Error.Code
}

// burst sends n requests of one client at once, spread over the
// instances, while the gateway holds its answers: every admitted request
// is in flight when the others are decided. It waits until each request
// is either held by the gateway or refused, then lets the answers go, and
// returns how many were served and the refusals' codes.
func burst(t *testing.T, gw *fakeGateway, fleet []*caddyProc, key, body string, n int) (served int, codes map[string]int) {
	t.Helper()
	return burstAt(t, gw, fleet, "/v1/chat/completions", key, body, n)
}

// burstAt is burst on another endpoint.
func burstAt(t *testing.T, gw *fakeGateway, fleet []*caddyProc, path, key, body string, n int) (served int, codes map[string]int) {
	t.Helper()
	gw.HoldAnswers(0)
	tc := newTestClient(t)
	var mu sync.Mutex
	codes = map[string]int{}
	refused := 0
	var wg sync.WaitGroup
	results := make(chan response, n)
	for i := range n {
		p := fleet[i%len(fleet)]
		wg.Go(func() {
			res := tc.do(t, http.MethodPost, p.URL+path, map[string]string{"Authorization": "Bearer " + key}, body)
			if res.Status != http.StatusOK {
				mu.Lock()
				refused++
				mu.Unlock()
			}
			results <- res
		})
	}
	eventually(t, waitTimeout, "every request of the burst held or refused", func() string {
		mu.Lock()
		defer mu.Unlock()
		if held := gw.HeldAnswers(); held+refused != n {
			return fmt.Sprintf("%d held, %d refused of %d", held, refused, n)
		}
		return ""
	})
	gw.ReleaseAnswers()
	wg.Wait()
	close(results)
	for res := range results {
		switch res.Status {
		case http.StatusOK:
			served++
		case http.StatusTooManyRequests:
			codes[refusalCode(res)]++
			if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("a refusal without Retry-After: %q", res.Header.Get("Retry-After"))
			}
		default:
			t.Errorf("burst: status %d: %s", res.Status, res.Body)
		}
	}
	return served, codes
}

// checkBurst asserts that a burst under tokens_per_day served exactly
// ⌊limit/worst⌋ requests, that the gateway billed at most the limit, and
// that the proxy charged exactly what it billed.
func checkBurst(t *testing.T, gw *fakeGateway, p *caddyProc, id string, served int, codes map[string]int, limit, worst int64) {
	t.Helper()
	if want := int(limit / worst); served != want {
		t.Errorf("served %d of the burst, want ⌊%d/%d⌋ = %d (refusals %v)", served, limit, worst, want, codes)
	}
	if codes["tokens_per_day_exceeded"] != 40-served {
		t.Errorf("refusals %v, want %d tokens_per_day_exceeded", codes, 40-served)
	}
	billed := gw.BilledTotal()
	if got := int64(billed.Input + billed.Output); got > limit || got != int64(served)*worst {
		t.Errorf("the gateway billed %d tokens, want %d × %d, at most the limit %d", got, served, worst, limit)
	}
	eventually(t, waitTimeout, "the proxy charged what the gateway billed", func() string {
		c, raw := settledBudget(t, p, id)
		if c.Today.Tokens != int64(billed.Input+billed.Output) || c.InFlight != 0 || c.Reserved.Tokens != 0 || c.Today.EstimatedTokens != 0 ||
			c.Left["tokens_per_day"] != float64(limit-int64(served)*worst) {
			return raw
		}
		return ""
	})
}

// TestBudgetBurst: 40 parallel requests of one client, each with a known
// worst case (400 input tokens + a cap of 100, billed exactly that),
// under tokens_per_day 2600: 5 are served, 35 refused with 429
// tokens_per_day_exceeded, and the gateway bills 2500 tokens, all
// counted. (Before reservations, all 40 went upstream.) On one instance,
// and across 3 instances counting in one Redis.
func TestBudgetBurst(t *testing.T) {
	t.Parallel()
	const limit, input, outCap = 2600, 400, 100
	body := budgetBody(4 * input)
	limits := fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t\tdefault_max_tokens %d\n\t\t}", limit, outCap)

	t.Run("one instance", func(t *testing.T) {
		if nearUTCMidnight(time.Now()) {
			t.Skip("UTC midnight is within 2 minutes")
		}
		apiKey := newAPIKey()
		gw := newFakeGateway(t, nil, apiKey)
		gw.SetOutputTokens(outCap)
		p, secret := signedKeysProxy(t, gw.URL(), apiKey, limits)
		served, codes := burst(t, gw, []*caddyProc{p}, signedClientKey("burst", secret), body, 40)
		checkBurst(t, gw, p, "key:burst", served, codes, limit, input+outCap)
	})

	t.Run("three instances on one Redis", func(t *testing.T) {
		if nearUTCMidnight(time.Now()) {
			t.Skip("UTC midnight is within 2 minutes")
		}
		rp := startRedis(t, "budget-burst-pw-51c0")
		apiKey := newAPIKey()
		gw := newFakeGateway(t, nil, apiKey)
		gw.SetOutputTokens(outCap)
		secret := newClientKeySecret()
		env := map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret, "LIMITS_REDIS_URL": rp.URL()}
		site := fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		limits {
			tokens_per_day     %d
			default_max_tokens %d
			redis {env.LIMITS_REDIS_URL} {
				timeout 2s
			}
		}
	}
	reverse_proxy %s`, limit, outCap, gw.URL())
		fleet := startFleet(t, 3, t.TempDir(), caddyOptions{Env: env}, site)
		waitLimitsHealthy(t, fleet, true)
		served, codes := burst(t, gw, fleet, signedClientKey("fleet-burst", secret), body, 40)
		checkBurst(t, gw, fleet[1], "key:fleet-burst", served, codes, limit, input+outCap)
		if c, raw := clientBudget(t, fleet[2], "key:fleet-burst"); c.From != "redis" {
			t.Errorf("status from %q, want redis: %s", c.From, raw)
		}
	})

	// The limits are a policy's, and the block's limits name only the
	// Redis: the policy's clients are counted there all the same.
	t.Run("a policy's limits, three instances on the block's Redis", func(t *testing.T) {
		if nearUTCMidnight(time.Now()) {
			t.Skip("UTC midnight is within 2 minutes")
		}
		rp := startRedis(t, "budget-policy-pw-7e21")
		apiKey := newAPIKey()
		gw := newFakeGateway(t, nil, apiKey)
		gw.SetOutputTokens(outCap)
		secret := newClientKeySecret()
		env := map[string]string{"AI_GATEWAY_API_KEY": apiKey, "CLIENT_KEY_SECRET": secret, "LIMITS_REDIS_URL": rp.URL()}
		site := fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key_secret {env.CLIENT_KEY_SECRET}
		limits {
			default_max_tokens %d
			redis {env.LIMITS_REDIS_URL} {
				timeout 2s
			}
		}
		policy fleet {
			clients key:*
			limits {
				tokens_per_day %d
			}
		}
	}
	reverse_proxy %s`, outCap, limit, gw.URL())
		fleet := startFleet(t, 3, t.TempDir(), caddyOptions{Env: env}, site)
		waitLimitsHealthy(t, fleet, true)
		served, codes := burst(t, gw, fleet, signedClientKey("policy-burst", secret), body, 40)
		checkBurst(t, gw, fleet[0], "key:policy-burst", served, codes, limit, input+outCap)
		if c, raw := clientBudget(t, fleet[1], "key:policy-burst"); c.From != "redis" {
			t.Errorf("status from %q, want redis: %s", c.From, raw)
		}
	})
}

// TestBudgetHangUps: five 400 KB requests of one client, each abandoned
// before the gateway sends its headers (AI Gateway sends them after
// prefill and reasoning, and bills the generation all the same), under
// tokens_per_day 150000. The first is admitted and, with no answer and no
// generation id to reconcile by, charged its worst case (102,400 input
// tokens estimated + the default cap of 8,192), at least what the
// gateway billed; from the second on, the worst case cannot fit what is
// left, and the requests are refused before they go upstream. (Before,
// all five were charged nothing.)
func TestBudgetHangUps(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	const limit, size = 150_000, 400 << 10
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.Faithful()
	gw.HoldAnswers(0) // until the client hangs up
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t}", limit))
	key := signedClientKey("hangs-up", secret)
	body := budgetBody(size)
	worst := int64(size/4 + 8192)
	tc := newTestClient(t)
	var statuses []int
	for i := range 5 {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		done := make(chan int, 1)
		go func() {
			res, err := tc.HTTP.Do(req)
			if err != nil {
				done <- 0 // hung up
				return
			}
			res.Body.Close()
			done <- res.StatusCode
		}()
		var status int
		eventually(t, waitTimeout, fmt.Sprintf("request %d held by the gateway or refused", i+1), func() string {
			select {
			case status = <-done:
				return ""
			default:
			}
			if gw.HeldAnswers() == 1 {
				return ""
			}
			return "waiting"
		})
		if status == 0 { // held: hang up before the headers
			cancel()
			status = <-done
			eventually(t, waitTimeout, "the hang-up settled", func() string {
				if c, raw := clientBudget(t, p, "key:hangs-up"); c.InFlight != 0 || gw.HeldAnswers() != 0 {
					return raw
				}
				return ""
			})
		}
		cancel()
		statuses = append(statuses, status)
	}
	if statuses[0] != 0 || statuses[1] != http.StatusTooManyRequests {
		t.Errorf("statuses %v (0: hung up), want the first admitted and the others refused with 429", statuses)
	}
	for i, s := range statuses[2:] {
		if s != http.StatusTooManyRequests {
			t.Errorf("request %d: %d, want 429", i+3, s)
		}
	}
	billed := gw.BilledTotal()
	if len(gw.Billed()) != 1 {
		t.Errorf("the gateway billed %d generations, want 1", len(gw.Billed()))
	}
	c, raw := clientBudget(t, p, "key:hangs-up")
	if c.Today.Tokens != worst || c.Today.EstimatedTokens != worst || c.Today.Tokens < int64(billed.Input+billed.Output) {
		t.Errorf("charged %+v, want the worst case %d (estimated), at least the %d tokens billed: %s", c.Today, worst, billed.Input+billed.Output, raw)
	}
	if got := readAdminMetric(t, p, `caddy_ai_gateway_auth_usage_estimates_total{reason="no_answer"}`); got != 1 {
		t.Errorf(`usage_estimates_total{reason="no_answer"} = %v, want 1`, got)
	}
}

// TestBudgetNewLimits: concurrent_requests (a third request while two
// are in flight gets 429 concurrent_requests_exceeded, Retry-After 1;
// once they end it is served), tokens_per_month (429
// tokens_per_month_exceeded, Retry-After to 00:00 UTC on the 1st), and
// the status route for one client (what is reserved and in flight while
// requests run, what is left after; an unknown client is zeros).
func TestBudgetNewLimits(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.SetOutputTokens(100)
	const perMonth = 2500
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf(
		"limits {\n\t\t\tconcurrent_requests 2\n\t\t\ttokens_per_month %d\n\t\t\tdefault_max_tokens 100\n\t\t}", perMonth))
	tc := newTestClient(t)
	body := budgetBody(1600) // 400 input tokens + 100: 500 reserved and billed
	send := func(client string) response {
		return tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey(client, secret)}, body)
	}

	t.Run("concurrent_requests", func(t *testing.T) {
		gw.HoldAnswers(0)
		results := make(chan response, 2)
		for range 2 {
			go func() { results <- send("parallel") }()
		}
		eventually(t, waitTimeout, "two requests in flight", func() string {
			if n := gw.HeldAnswers(); n != 2 {
				return fmt.Sprintf("%d held", n)
			}
			return ""
		})
		c, raw := clientBudget(t, p, "key:parallel")
		if c.InFlight != 2 || c.Reserved.Tokens != 1000 || c.Left["concurrent_requests"] != 0 {
			t.Errorf("status while two are in flight: %s", raw)
		}
		res := send("parallel")
		if res.Status != http.StatusTooManyRequests || refusalCode(res) != "concurrent_requests_exceeded" || res.Header.Get("Retry-After") != "1" {
			t.Errorf("a third in flight: %d %s (Retry-After %q), want 429 concurrent_requests_exceeded, Retry-After 1",
				res.Status, res.Body, res.Header.Get("Retry-After"))
		}
		gw.ReleaseAnswers()
		for range 2 {
			if res := <-results; res.Status != http.StatusOK {
				t.Errorf("a request in flight: %d %s", res.Status, res.Body)
			}
		}
		if res := send("parallel"); res.Status != http.StatusOK {
			t.Errorf("once they ended: %d %s", res.Status, res.Body)
		}
	})

	t.Run("tokens_per_month", func(t *testing.T) {
		now := time.Now().UTC()
		first := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		if first.Sub(now) < 2*time.Minute {
			t.Skip("the month ends within 2 minutes")
		}
		for i := range perMonth / 500 { // 500 each: all of the month's tokens
			if res := send("monthly"); res.Status != http.StatusOK {
				t.Fatalf("request %d: %d %s", i+1, res.Status, res.Body)
			}
		}
		res := send("monthly")
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		want := time.Until(first).Seconds()
		if res.Status != http.StatusTooManyRequests || refusalCode(res) != "tokens_per_month_exceeded" || err != nil || float64(ra) < want-60 || float64(ra) > want+60 {
			t.Errorf("over the month: %d %s (Retry-After %q), want 429 tokens_per_month_exceeded, Retry-After about %.0f s (the 1st, 00:00 UTC)",
				res.Status, res.Body, res.Header.Get("Retry-After"), want)
		}
		c, raw := settledBudget(t, p, "key:monthly")
		if c.Month.Tokens != perMonth || c.Left["tokens_per_month"] != 0 || c.InFlight != 0 {
			t.Errorf("status after the month's tokens: %s", raw)
		}
	})

	t.Run("an unknown client", func(t *testing.T) {
		c, raw := clientBudget(t, p, "key:never-seen")
		if c.Client != "key:never-seen" || c.Today.Tokens != 0 || c.Month.Tokens != 0 || c.InFlight != 0 || c.Left["concurrent_requests"] != 2 {
			t.Errorf("status of a client never seen: %s", raw)
		}
		if strings.Contains(raw, apiKey) || strings.Contains(raw, secret) {
			t.Error("the status shows a credential")
		}
	})
}

// TestBudgetCapAtTheEnd: the model and the output cap after a 256 KiB
// messages array (the OpenAI Python SDK writes messages first). The
// proxy reads them as the body streams and decides at its end: a request
// whose cap does not fit what is left is refused 429 with a message that
// says to lower the cap, its upstream request aborted before the body
// ended (the gateway runs nothing); the same request with a lower cap is
// served at once.
func TestBudgetCapAtTheEnd(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	gw.Faithful()
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "limits {\n\t\t\ttokens_per_day 140000\n\t\t}")
	tc := newTestClient(t)
	content := strings.Repeat("m", 256<<10)
	send := func(outCap int) response {
		body := fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"model":"openai/gpt-5","max_tokens":%d}`, content, outCap)
		return tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + signedClientKey("late-cap", secret)}, body)
	}
	// about 65,600 input tokens + 1000: fits, and is billed 65,600 + 200
	if res := send(1000); res.Status != http.StatusOK {
		t.Fatalf("the first request: %d %s", res.Status, res.Body)
	}
	billed := len(gw.Billed())
	res := send(20000) // 65,800 spent + 85,600 > 140,000
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(res.Body, &e)
	if res.Status != http.StatusTooManyRequests || e.Error.Code != "tokens_per_day_exceeded" || !strings.Contains(e.Error.Message, "lower output cap") {
		t.Errorf("a cap that does not fit: %d %s, want 429 tokens_per_day_exceeded saying to lower the cap", res.Status, res.Body)
	}
	if n := len(gw.Billed()); n != billed {
		t.Errorf("the gateway ran %d refused requests", n-billed)
	}
	if res := send(1000); res.Status != http.StatusOK { // 65,800 + 66,600 fit
		t.Errorf("the same request with a lower cap: %d %s", res.Status, res.Body)
	}
	c, raw := settledBudget(t, p, "key:late-cap")
	if total := gw.BilledTotal(); c.Today.Tokens != int64(total.Input+total.Output) || c.Today.Requests != 2 {
		t.Errorf("charged %+v, want exactly the %d tokens of the 2 billed requests: %s", c.Today, total.Input+total.Output, raw)
	}
}

// TestBudgetEmbeddingsBurst: embeddings are paid per token too, and a
// burst of them is held like any generation: each reserves its input
// estimate plus the default output cap (an embedding has none in its
// body), so under tokens_per_day at most ⌊L/worst⌋ of 40 parallel ones
// go upstream, and the gateway bills at most L.
func TestBudgetEmbeddingsBurst(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	const limit, outCap = 3000, 100
	input := strings.Repeat("z", 1600-len(`{"model":"openai/text-embedding-3-small","input":""}`))
	body := `{"model":"openai/text-embedding-3-small","input":"` + input + `"}` // 1600 bytes: 400 tokens estimated
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("limits {\n\t\t\ttokens_per_day %d\n\t\t\tdefault_max_tokens %d\n\t\t}", limit, outCap))
	served, codes := burstAt(t, gw, []*caddyProc{p}, "/v1/embeddings", signedClientKey("embed", secret), body, 40)
	if want := limit / (400 + outCap); served != want || codes["tokens_per_day_exceeded"] != 40-served {
		t.Errorf("served %d of 40 embeddings, want ⌊%d/%d⌋ = %d (refusals %v)", served, limit, 400+outCap, want, codes)
	}
	billed := 0
	for _, r := range gw.Billed() {
		billed += r.Usage.Input + r.Usage.Output
	}
	if billed > limit {
		t.Errorf("the gateway billed %d tokens, over the limit of %d", billed, limit)
	}
}
