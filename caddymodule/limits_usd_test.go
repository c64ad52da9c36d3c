package caddymodule

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// usd_per_day: once the day's cost reaches the amount, requests get 429
// usd_per_day_exceeded in each SDK's shape, with Retry-After until
// midnight UTC; answers without a cost count nothing toward it.
func TestUSDPerDayRefuses(t *testing.T) {
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes: the day's cost could start again between requests")
	}
	h := spendHandler(t, func(h *Handler) { h.Limits = &Limits{USDPerDay: 0.05} })
	stamp := time.Now().UnixNano()
	noCost := `{"choices":[],"usage":{"prompt_tokens":600,"completion_tokens":300}}`
	withCost := `{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"cost":0.03}}`
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		client := fmt.Sprintf("usd-%d-%d", stamp, len(path))
		for i := range 20 { // no cost reported: nothing counts
			if w := serve(t, h, clientRequest(t, client, path), answering("application/json", noCost, nil)); w.Code != http.StatusOK {
				t.Fatalf("%s: cost-less request %d got %d", path, i+1, w.Code)
			}
		}
		for i := range 2 { // 0.03, then 0.06: over, but it was under when sent
			if w := serve(t, h, clientRequest(t, client, path), answering("application/json", withCost, nil)); w.Code != http.StatusOK {
				t.Fatalf("%s: request %d with a cost got %d", path, i+1, w.Code)
			}
		}
		before := counterValue(limitRefusalsTotal.WithLabelValues(limitUSDPerDay))
		w := serve(t, h, clientRequest(t, client, path), neverNext(t))
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("%s: over usd_per_day got %d, want 429", path, w.Code)
		}
		now := time.Now().UTC()
		untilMidnight := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now)
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || math.Abs(float64(ra)-untilMidnight.Seconds()) > 5 {
			t.Errorf("%s: Retry-After %q, want about %v (midnight UTC)", path, w.Header().Get("Retry-After"), untilMidnight.Round(time.Second))
		}
		msg := assertErrorShape(t, w.Body.Bytes(), path == "/v1/messages", errRateLimit, "usd_per_day_exceeded")
		if strings.Contains(msg, "0.05") {
			t.Errorf("the message shows the configured amount: %q", msg)
		}
		if got := counterValue(limitRefusalsTotal.WithLabelValues(limitUSDPerDay)) - before; got != 1 {
			t.Errorf("limit_refusals_total{limit=usd_per_day} grew by %v, want 1", got)
		}
	}
}

// The day's cost starts again at midnight UTC (fake clock), and tokens
// and cost limits each refuse on their own.
func TestUSDPerDayRollsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLedger()
		lim := Limits{USDPerDay: 1, TokensPerDay: 1000}
		time.Sleep(time.Hour) // 01:00 UTC
		l.record("c", usage{input: 1, cost: 0.75, hasCost: true}, time.Now())
		if refused, _ := l.admit("c", lim, time.Now()); refused != "" {
			t.Fatalf("refused at $0.75 of $1: %s", refused)
		}
		l.record("c", usage{input: 1, cost: 0.25, hasCost: true}, time.Now())
		refused, retry := l.admit("c", lim, time.Now())
		if refused != limitUSDPerDay || retry != 23*time.Hour {
			t.Fatalf("at $1.00: %q, retry %v; want usd_per_day, 23h", refused, retry)
		}
		time.Sleep(23 * time.Hour)
		if refused, _ := l.admit("c", lim, time.Now()); refused != "" {
			t.Fatalf("the next UTC day: refused (%s)", refused)
		}
		l.record("c", usage{input: 1000}, time.Now())
		if refused, _ := l.admit("c", lim, time.Now()); refused != limitTokensPerDay {
			t.Fatalf("over tokens_per_day with no cost: %q", refused)
		}
	})
}

// A bad usd_per_day in a JSON config is refused by Provision (the
// Caddyfile parser refuses it earlier, with file and line).
func TestUSDPerDayJSON(t *testing.T) {
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"usd_per_day":5}`, true},
		{`{"usd_per_day":0.5,"requests_per_minute":10}`, true},
		{`{"usd_per_day":-1}`, false},
		{`{"usd_per_day":0}`, false}, // no limit at all
		{`{"usd_per_day":1e12}`, false},
		{`{"usd_per_day":"5"}`, false},
	} {
		var lim Limits
		if err := json.Unmarshal([]byte(tc.json), &lim); err != nil {
			if tc.ok {
				t.Errorf("%s: %v", tc.json, err)
			}
			continue
		}
		err := tryProvisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
			ClientKeys:     []string{"sk-placeholder"},
			Limits:         &lim,
		})
		if (err == nil) != tc.ok {
			t.Errorf("%s: Provision returned %v", tc.json, err)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.01} {
		if err := (Limits{USDPerDay: v}).check(); err == nil {
			t.Errorf("usd_per_day %v accepted", v)
		}
	}
}
