package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

const spendTestSecret = "spend-test-secret-0123456789abcdef"

// spendHandler is a handler accepting signed keys under spendTestSecret,
// with the given spend options.
func spendHandler(t *testing.T, edit func(*Handler)) *Handler {
	t.Helper()
	h := &Handler{
		CredentialsRaw:   []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeySecrets: []string{spendTestSecret},
	}
	edit(h)
	return provisionHandler(t, h)
}

// clientRequest is a POST from the client name (a signed key).
func clientRequest(t testing.TB, name, path string) *http.Request {
	t.Helper()
	key, err := identity.SignKey(name, spendTestSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"model":"openai/gpt-5"}`))
	r.Header.Set("Authorization", "Bearer "+key)
	r, _ = withReplacer(r)
	return r
}

// answering is a next handler that answers like the gateway: the body
// with the content type, after recording the request headers.
func answering(contentType, body string, seen *http.Header) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if seen != nil {
			*seen = r.Header.Clone()
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		for _, line := range strings.SplitAfter(body, "\n") { // as it streams
			_, _ = w.Write([]byte(line))
			http.NewResponseController(w).Flush()
		}
		return nil
	})
}

// A client cannot attribute its spend to someone else: every spelling of
// the reporting headers it sends is gone, ours are set, and placeholders
// in tags are resolved per request.
func TestReportingHeadersReplaced(t *testing.T) {
	t.Setenv("SPEND_TEST_ENV", "staging")
	h := spendHandler(t, func(h *Handler) {
		h.Reporting = &Reporting{Tags: []string{"sandboxes", "{env.SPEND_TEST_ENV}", "{test.team}", "{env.SPEND_TEST_UNSET}"}}
	})
	r := clientRequest(t, "sandbox-7", "/v1/chat/completions")
	// as net/http stores what a client sends: canonical names, repeated
	// values, underscores kept
	r.Header["Ai-Reporting-User"] = []string{"victim", "victim2"}
	r.Header["Ai-Reporting-Tags"] = []string{"a,b"}
	r.Header["Ai_reporting_tags"] = []string{"c"}
	r.Header["Ai_reporting_user"] = []string{"victim3"}
	replacerOf(r).Set("test.team", strings.Repeat("t", 100)) // too long for a tag
	var seen http.Header
	w := serve(t, h, r, answering("application/json", "{}", &seen))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	var reporting []string
	for k, v := range seen {
		if k == headerReportingUser || k == headerReportingTags || controlledHeaderAlias(k) {
			reporting = append(reporting, k+": "+strings.Join(v, "|"))
		}
	}
	wantTags := "sandboxes,staging," + reportingValue(strings.Repeat("t", 100), maxReportingTag)
	// the default user is the client's id, never a name another client could have
	if len(reporting) != 2 || seen.Get(headerReportingUser) != "key:sandbox-7" || len(seen[headerReportingUser]) != 1 ||
		seen.Get(headerReportingTags) != wantTags || len(seen[headerReportingTags]) != 1 {
		t.Errorf("upstream got reporting headers %q; want user key:sandbox-7 and tags %q", reporting, wantTags)
	}
	if len(wantTags) > 3*maxReportingTag || strings.Count(wantTags, ",") != 2 {
		t.Errorf("tags %q", wantTags)
	}
}

// A value AI Gateway would refuse becomes a stable short form within the
// limit; a valid one is kept as it is.
func TestReportingValue(t *testing.T) {
	long := strings.Repeat("sandbox-", 40) // 320 characters
	for _, tc := range []struct {
		in  string
		max int
	}{{long, maxReportingUser}, {"tag,with,commas", maxReportingTag}, {"naïve\n", maxReportingUser}, {strings.Repeat("é", 40), maxReportingTag}} {
		got := reportingValue(tc.in, tc.max)
		if checkReportingValue(got, tc.max) != nil || got == "" {
			t.Errorf("reportingValue(%q) = %q, which the gateway refuses", tc.in, got)
		}
		if again := reportingValue(tc.in, tc.max); again != got {
			t.Errorf("not stable: %q then %q", got, again)
		}
		if other := reportingValue(tc.in+"x", tc.max); other == got {
			t.Errorf("two values share the short form %q", got)
		}
	}
	if got := reportingValue("sandbox-1", maxReportingUser); got != "sandbox-1" {
		t.Errorf("a valid value was changed to %q", got)
	}
}

// Static values the gateway would refuse are configuration errors.
func TestReportingConfigErrors(t *testing.T) {
	for name, rp := range map[string]Reporting{
		"long user":    {User: strings.Repeat("u", 257)},
		"eleven tags":  {Tags: strings.Fields("a b c d e f g h i j k")},
		"long tag":     {Tags: []string{strings.Repeat("t", 65)}},
		"comma in tag": {Tags: []string{"a,b"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := tryProvisionHandler(t, &Handler{
				CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
				ClientKeys:     []string{"sk-placeholder"},
				Reporting:      &rp,
			})
			if err == nil || !strings.Contains(err.Error(), "reporting") {
				t.Errorf("got %v, want a reporting error", err)
			}
		})
	}
}

// meteringAnswer is an answer of internal/jsonbody/testdata/answers.json
// (the usage scanner's own cases) and the usage it reports, if any.
type meteringAnswer struct {
	Name        string       `json:"name"`
	ContentType string       `json:"content_type"`
	Body        string       `json:"body"`
	Usage       *answerUsage `json:"usage"`
}

type answerUsage struct {
	Input   int64   `json:"input"`
	Output  int64   `json:"output"`
	Cost    float64 `json:"cost"`
	HasCost bool    `json:"has_cost"`
}

func meteringAnswers(t *testing.T) []meteringAnswer {
	t.Helper()
	b, err := os.ReadFile("internal/jsonbody/testdata/answers.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []meteringAnswer
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

// Usage read from streamed and whole answers of every API lands in the
// client's counters and in the placeholders for the access log.
func TestMeteringPerClient(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	name := fmt.Sprintf("meter-%d", time.Now().UnixNano())
	client := "key:" + name // metrics and the status count by id
	var wantIn, wantOut, wantCost float64
	cases := meteringAnswers(t)
	for _, tc := range cases {
		// not a generation endpoint: answers without usage are not
		// estimated here (TestUsageEstimates)
		r := clientRequest(t, name, "/v1/rerank")
		w := serve(t, h, r, answering(tc.ContentType, tc.Body, nil))
		if w.Body.String() != tc.Body {
			t.Fatalf("%s: the client got a changed body", tc.Name)
		}
		repl := replacerOf(r)
		in, inOK := repl.Get("ai_gateway_auth.usage.input_tokens")
		out, outOK := repl.Get("ai_gateway_auth.usage.output_tokens")
		found := tc.Usage != nil
		if !found {
			tc.Usage = &answerUsage{}
		}
		if found != inOK || found != outOK || found && (in != tc.Usage.Input || out != tc.Usage.Output) {
			t.Errorf("%s: placeholders %v/%v (%v, %v), want %d/%d", tc.Name, in, out, inOK, outOK, tc.Usage.Input, tc.Usage.Output)
		}
		wantIn += float64(tc.Usage.Input)
		wantOut += float64(tc.Usage.Output)
		wantCost += tc.Usage.Cost
	}
	for series, c := range map[string]struct {
		got, want float64
	}{
		"client_tokens_total input":  {counterValue(clientTokensTotal.WithLabelValues(client, "input")), wantIn},
		"client_tokens_total output": {counterValue(clientTokensTotal.WithLabelValues(client, "output")), wantOut},
		"client_requests_total":      {counterValue(clientRequestsTotal.WithLabelValues(client)), float64(len(cases))},
		"client_cost_total":          {counterValue(clientCostTotal.WithLabelValues(client)), wantCost},
	} {
		if c.got != c.want {
			t.Errorf("%s{client=%q} = %v, want %v", series, client, c.got, c.want)
		}
	}
	top, _ := h.spend.store.Top(time.Now(), 10)
	found := false
	for _, c := range top {
		if c.Client == client {
			found = c.InputTokens == int64(wantIn) && c.OutputTokens == int64(wantOut) && c.Requests == int64(len(cases))
		}
	}
	if !found {
		t.Errorf("status top clients %+v lack %s with %v/%v tokens", top, client, wantIn, wantOut)
	}
}

// requests_per_minute trips at the right request, in each SDK's shape,
// with Retry-After and without reaching the upstream; tokens_per_day
// trips once the day's tokens reach the limit.
func TestLimitsRefuse(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.Limits = &Limits{RequestsPerMinute: 3, TokensPerDay: 1000, DefaultMaxTokens: 10} })
	stamp := time.Now().UnixNano()
	chat := `{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}`
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		client := fmt.Sprintf("rpm-%d-%d", stamp, len(path))
		for i := 1; i <= 3; i++ {
			if w := serve(t, h, clientRequest(t, client, path), answering("application/json", chat, nil)); w.Code != http.StatusOK {
				t.Fatalf("%s: request %d got %d", path, i, w.Code)
			}
		}
		w := serve(t, h, clientRequest(t, client, path), neverNext(t))
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("%s: request 4 got %d, want 429", path, w.Code)
		}
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 61 {
			t.Errorf("Retry-After %q", w.Header().Get("Retry-After"))
		}
		msg := assertErrorShape(t, w.Body.Bytes(), path == "/v1/messages", errRateLimit, "requests_per_minute_exceeded")
		if strings.Contains(msg, "3") {
			t.Errorf("the message shows the configured limit: %q", msg)
		}
	}

	if nearUTCMidnight(time.Now()) {
		t.Log("tokens_per_day not checked: UTC midnight is within 2 minutes, the day could change between requests")
		return
	}
	client := fmt.Sprintf("tpd-%d", stamp)
	big := `{"choices":[],"usage":{"prompt_tokens":600,"completion_tokens":300}}`
	h2 := spendHandler(t, func(h *Handler) { h.Limits = &Limits{TokensPerDay: 1000, DefaultMaxTokens: 300} })
	// a worst case of about 300 tokens fits; 900 are charged; the next
	// worst case does not fit what is left
	for i, want := range []int{200, 429} {
		w := serve(t, h2, clientRequest(t, client, "/v1/chat/completions"), answering("application/json", big, nil))
		if w.Code != want {
			t.Fatalf("request %d: got %d, want %d", i+1, w.Code, want)
		}
		if want == 429 {
			msg := assertErrorShape(t, w.Body.Bytes(), false, errRateLimit, "tokens_per_day_exceeded")
			if !strings.Contains(msg, "lower output cap") {
				t.Errorf("the message does not say to lower the cap: %q", msg)
			}
			if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); ra < 1 || ra > 86400 {
				t.Errorf("Retry-After %q", w.Header().Get("Retry-After"))
			}
		}
	}
}

// nearUTCMidnight reports whether now is within 2 minutes of a UTC
// midnight, when a check of the day's tokens on the real clock could see
// the day change between its requests.
func nearUTCMidnight(now time.Time) bool {
	since := now.UTC().Sub(now.UTC().Truncate(24 * time.Hour))
	return since < 2*time.Minute || since > 24*time.Hour-2*time.Minute
}

// The rolling minute and the UTC day, on a fake clock: at most N
// requests in any 60 s, none more at a minute boundary, one more as soon
// as the oldest leaves the window; tokens start again at midnight UTC.
func TestLimitsWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := Limits{RequestsPerMinute: 3, TokensPerDay: 100, DefaultMaxTokens: 10}
		s := &spend{h: &Handler{}, ledger: limits.NewLedger(), limits: l, cfg: l.config(), defaultCap: 10, limited: true, logger: zap.NewNop()}
		s.store = limits.NewStore(s.ledger, nil, 0)
		client := identity.KeyPrincipal("", "clock")
		serveAnswer := func(answer string) (int, string) {
			w := httptest.NewRecorder()
			r := clientRequest(t, "clock", "/v1/chat/completions")
			mw, _, ref, err := s.begin(w, r, client, &activePolicy{cfg: s.cfg})
			if err != nil {
				t.Fatal(err)
			}
			if ref != nil {
				return ref.status, ref.retryAfter
			}
			_, _ = io.Copy(io.Discard, r.Body)
			mw.Header().Set("Content-Type", "application/json")
			_, _ = mw.Write([]byte(answer))
			mw.end()
			return http.StatusOK, ""
		}
		admit := func() (int, string) { return serveAnswer(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`) }
		// the fake clock starts at midnight UTC, 2000-01-01; move to 00:00:50
		time.Sleep(50 * time.Second)
		for i := 0; i < 3; i++ {
			if code, _ := admit(); code != 200 {
				t.Fatalf("request %d refused", i+1)
			}
		}
		time.Sleep(15 * time.Second) // 00:01:05: a new minute, but not 60 s later
		if code, ra := admit(); code != 429 || ra != "46" {
			t.Fatalf("after the minute boundary: %d (Retry-After %s), want 429 (46)", code, ra)
		}
		time.Sleep(46 * time.Second) // 00:01:51: the three left the window
		for i := 0; i < 3; i++ {
			if code, _ := admit(); code != 200 {
				t.Fatalf("after the window: request %d refused", i+1)
			}
		}

		time.Sleep(2 * time.Minute)
		if code, _ := serveAnswer(`{"usage":{"prompt_tokens":60,"completion_tokens":40}}`); code != 200 {
			t.Fatal("a request under tokens_per_day was refused")
		}
		if code, ra := admit(); code != 429 || ra != strconv.Itoa(86400-50-15-46-120) {
			t.Fatalf("over tokens_per_day: %d (Retry-After %s)", code, ra)
		}
		time.Sleep(24 * time.Hour) // the next UTC day
		if code, _ := admit(); code != 200 {
			t.Fatal("tokens_per_day did not start again at midnight")
		}
	})
}

// 10,000 distinct clients: the client label takes at most
// maxClientLabels values (the rest count as "other", nothing lost), and
// the ledger stays within its bound. The test runs with a small cap and
// a label table of its own, and puts the process-wide table back after:
// left full, it would make the clients of later tests "other".
func TestClientCardinalityCap(t *testing.T) {
	const maxLedgerClients = 2000
	clientLabels.mu.Lock()
	savedCap, savedSeries, savedOther := maxClientLabels, clientLabels.series, clientLabels.other
	maxClientLabels, clientLabels.series = 100, nil
	clientLabels.mu.Unlock()
	t.Cleanup(func() {
		clientLabels.mu.Lock()
		defer clientLabels.mu.Unlock()
		for label := range clientLabels.series { // the series this test made
			if _, kept := savedSeries[label]; !kept {
				clientTokensTotal.DeleteLabelValues(label, "input")
				clientTokensTotal.DeleteLabelValues(label, "output")
				clientRequestsTotal.DeleteLabelValues(label)
				clientCostTotal.DeleteLabelValues(label)
			}
		}
		maxClientLabels, clientLabels.series, clientLabels.other = savedCap, savedSeries, savedOther
	})

	h := spendHandler(t, func(h *Handler) { h.Limits = &Limits{RequestsPerMinute: 1000, MaxClients: maxLedgerClients} })
	next := answering("application/json", `{"usage":{"prompt_tokens":1,"completion_tokens":2}}`, nil)
	otherIn := clientTokensTotal.WithLabelValues(otherClientLabel, "input")
	before := counterValue(otherIn)
	prefix := fmt.Sprintf("card-%d-", time.Now().UnixNano())
	const clients = 10_000
	for i := range clients {
		if w := serve(t, h, clientRequest(t, prefix+strconv.Itoa(i), "/v1/chat/completions"), next); w.Code != 200 {
			t.Fatalf("client %d: %d", i, w.Code)
		}
	}
	// the label values this test's clients got, as exported
	labels := map[string]bool{}
	ch := make(chan prometheus.Metric)
	go func() { clientRequestsTotal.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "client" && strings.HasPrefix(l.GetValue(), "key:"+prefix) {
				labels[l.GetValue()] = true
			}
		}
	}
	if len(labels) > maxClientLabels {
		t.Errorf("%d client label values (and \"other\"), want at most %d", len(labels), maxClientLabels)
	}
	// every client's tokens are counted: its own series or "other"
	own := 0.0
	for label := range labels {
		own += counterValue(clientTokensTotal.WithLabelValues(label, "input"))
	}
	if got := own + counterValue(otherIn) - before; got != clients {
		t.Errorf("input tokens counted: %v, want %d", got, clients)
	}
	if n := h.spend.ledger.Clients(); n > maxLedgerClients {
		t.Errorf("the ledger holds %d clients, over its bound of %d", n, maxLedgerClients)
	}
}

// A writer flushed before any header still streams (and meters nothing
// from an answer without a content type).
func TestMeterWriterPassesThrough(t *testing.T) {
	h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	client := fmt.Sprintf("pass-%d", time.Now().UnixNano())
	var calls atomic.Int32
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		_, err := w.Write([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`))
		return err
	})
	// not a generation endpoint: an answer without usage is not estimated
	w := serve(t, h, clientRequest(t, client, "/v1/rerank"), next)
	if !w.Flushed || calls.Load() != 1 {
		t.Errorf("flushed %v, calls %d", w.Flushed, calls.Load())
	}
	// no Content-Type: not scanned
	if got := counterValue(clientTokensTotal.WithLabelValues("key:"+client, "input")); got != 0 {
		t.Errorf("tokens counted from an untyped answer: %v", got)
	}
}

func replacerOf(r *http.Request) *caddy.Replacer {
	return r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
}
