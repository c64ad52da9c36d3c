package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakDuration is how long TestSoak runs: AIGW_SOAK_DURATION (a Go
// duration), default 3 minutes.
func soakDuration(t testing.TB) time.Duration {
	s := os.Getenv("AIGW_SOAK_DURATION")
	if s == "" {
		return 3 * time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("AIGW_SOAK_DURATION=%q: want a positive duration such as 10m", s)
	}
	return d
}

// caddyGoroutines is the number of goroutines in the Caddy process, from
// the admin endpoint's /debug/pprof/goroutine?debug=1.
func caddyGoroutines(t testing.TB, p *caddyProc) int {
	t.Helper()
	resp, err := http.Get(p.Admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	if err != nil {
		t.Fatalf("goroutine profile: %q", line)
	}
	return n
}

// TestSoak runs every kind of client against one Caddy for
// AIGW_SOAK_DURATION (default 3m) while the ground shifts under it:
// minted tokens living 20 s, the mint API failing for 3 s around every
// other refresh (well within a token's remaining life, so no request may
// fail), a
// token file rewritten every 8 s, new sandbox tokens every 30 s, a revoked
// client, bursts of 200 concurrent requests. It checks that every request
// gets exactly the answer it should (200, or 401 for bad and revoked
// keys), every stream ends, the gateway never sees an expired token, one
// mint runs at a time and no more often than the token lifetime needs,
// and Caddy's goroutines do not pile up. Run it with AIGW_SOAK=1.
func TestSoak(t *testing.T) {
	if os.Getenv("AIGW_SOAK") != "1" {
		t.Skip("a long run: set AIGW_SOAK=1 to run it (and AIGW_SOAK_DURATION, default 3m)")
	}
	t.Parallel()
	duration := soakDuration(t)
	const ttl = 20 * time.Second
	v := newFakeVercel(t)
	v.SetTTL(ttl)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, v, apiKey)
	mint := newFaultyMint(t, v, mintOK)
	secretKey := newClientKeySecret()
	dir := t.TempDir()
	revokedFile, tokenFile := filepath.Join(dir, "revoked"), filepath.Join(dir, "oidc-token")
	if err := os.WriteFile(revokedFile, []byte("revoked-sandbox\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(v.Token(ttl)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := mintEnv(v)
	env["AI_GATEWAY_API_KEY"] = apiKey
	env["CLIENT_KEY_SECRET"] = secretKey
	p := startCaddy(t, caddyOptions{Env: env},
		// minted tokens; signed keys, revocation and sandboxes
		fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
			refresh_before 10s
		}
		client_key_secret {env.CLIENT_KEY_SECRET}
		client_keys_revoked_file %s
		vercel_sandbox {
			audience %s
			team     %s
			project  %s
			issuer   %s
			jwks_url %s/%s/.well-known/jwks
		}
	}
	reverse_proxy %s`, mintBlock(mint.URL()), revokedFile, sandboxAudience, v.TeamID, v.ProjectID, v.Issuer(), v.URL(), v.TeamSlug, gw.URL()),
		// a static key
		staticSite(gw.URL()),
		// a token file
		fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			file %s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, tokenFile, gw.URL()))
	identity, static, file := p.URLs[0], p.URLs[1], p.URLs[2]
	tc := newTestClient(t)

	var (
		stop      = make(chan struct{})
		bg        sync.WaitGroup
		sandboxMu sync.Mutex
		sandboxes = []string{signSandboxToken(t, v, sandboxClaims(v, "soak-sandbox-0"))}
		outages   atomic.Int32
	)
	every := func(d time.Duration, f func(i int)) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			tick := time.NewTicker(d)
			defer tick.Stop()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
					f(i)
				}
			}
		}()
	}
	// The mint API fails for 3 s around every other refresh: from 9 s after
	// a mint (the next refresh is due at 10 s, half the token's life) to
	// 12 s, well before that token's exp at 20 s.
	bg.Add(1)
	go func() {
		defer bg.Done()
		sleep := func(d time.Duration) bool {
			select {
			case <-time.After(d):
				return true
			case <-stop:
				return false
			}
		}
		seen, _ := mint.counts()
		for cycle := 0; ; {
			if ok, _ := mint.counts(); ok == seen {
				if !sleep(20 * time.Millisecond) {
					return
				}
				continue
			} else {
				seen = ok
			}
			if cycle++; cycle%2 == 1 {
				continue
			}
			if !sleep(9 * time.Second) {
				return
			}
			outages.Add(1)
			mint.set(mintGarbage)
			sleep(3 * time.Second)
			mint.set(mintOK)
		}
	}()
	every(8*time.Second, func(int) { // vercel env pull, again
		writeFileAtomic(t, tokenFile, "VERCEL_OIDC_TOKEN="+v.Token(ttl)+"\n")
	})
	every(30*time.Second, func(i int) { // a new sandbox
		tok := signSandboxToken(t, v, sandboxClaims(v, fmt.Sprintf("soak-sandbox-%d", i)))
		sandboxMu.Lock()
		sandboxes = append(sandboxes, tok)
		sandboxMu.Unlock()
	})

	// kinds of request, each with the status it must get.
	type kind struct {
		name string
		want int
		send func() (response, error)
	}
	streamBody := `{"model":"openai/gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	kinds := []kind{
		{"signed key", 200, func() (response, error) {
			return tc.tryChat(identity, signedClientKey(fmt.Sprintf("sandbox-%d", time.Now().UnixNano()%20), secretKey))
		}},
		{"signed key, stream", 200, func() (response, error) {
			return tc.try(http.MethodPost, identity+"/v1/chat/completions",
				map[string]string{"Authorization": "Bearer " + signedClientKey("streamer", secretKey), "Accept": "text/event-stream"}, streamBody)
		}},
		{"sandbox", 200, func() (response, error) {
			sandboxMu.Lock()
			tok := sandboxes[len(sandboxes)-1]
			sandboxMu.Unlock()
			return tc.try(http.MethodPost, identity+"/forward/v1/chat/completions", forwardedHeaders(tok, "/v1/chat/completions"), chatBody)
		}},
		{"revoked", 401, func() (response, error) {
			return tc.tryChat(identity, signedClientKey("revoked-sandbox", secretKey))
		}},
		{"bad key", 401, func() (response, error) { return tc.tryChat(identity, "sk-aigw-nobody.not-a-signature") }},
		{"static", 200, func() (response, error) { return tc.tryChat(static, "sk-placeholder") }},
		{"token file", 200, func() (response, error) { return tc.tryChat(file, "sk-placeholder") }},
	}
	var (
		mu       sync.Mutex
		failures = map[string]int{}
		firstErr = map[string]string{}
		sent     atomic.Int64
	)
	do := func(k kind) {
		res, err := k.send()
		sent.Add(1)
		msg := ""
		switch {
		case err != nil:
			msg = err.Error()
		case res.Status != k.want:
			msg = fmt.Sprintf("status %d, want %d: %.300s", res.Status, k.want, res.Body)
		case strings.Contains(k.name, "stream") && !strings.HasSuffix(string(res.Body), "data: [DONE]\n\n"):
			msg = "a stream did not end with [DONE]"
		}
		if msg != "" {
			mu.Lock()
			failures[k.name]++
			if _, ok := firstErr[k.name]; !ok {
				firstErr[k.name] = time.Now().Format(time.StampMilli) + ": " + msg
			}
			mu.Unlock()
		}
	}

	// Warm up, then take Caddy's goroutine count as the baseline.
	for _, k := range kinds {
		do(k)
	}
	baseline := caddyGoroutines(t, p)
	deadline := time.Now().Add(duration)
	every(30*time.Second, func(int) { // a burst
		var wg sync.WaitGroup
		for j := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				do(kinds[j%len(kinds)])
			}()
		}
		wg.Wait()
	})
	var workers sync.WaitGroup
	for w := range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := w; time.Now().Before(deadline); i++ {
				do(kinds[i%len(kinds)])
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	workers.Wait()
	close(stop)
	bg.Wait()

	t.Logf("%s: %d requests, %d mint outages, %d successful mints", duration, sent.Load(), outages.Load(), len(v.Mints()))
	names := make([]string, 0, len(failures))
	for name := range failures {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Errorf("%s: %d requests failed; the first at %s", name, failures[name], firstErr[name])
	}
	for _, r := range gw.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("the gateway refused a forwarded request: %s", r.Reject)
			break
		}
	}
	if n := v.MaxConcurrentMints(); n != 1 {
		t.Errorf("%d mint calls ran at once, want 1", n)
	}
	// A refresh every half lifetime, plus one per outage that delayed one.
	ok, _ := mint.counts()
	if most := int(duration/(ttl/2)) + int(outages.Load()) + 2; ok > most {
		t.Errorf("%d successful mints in %s, want at most %d: a refresh storm", ok, duration, most)
	}
	if least := int(duration/ttl) - 1; ok < least {
		t.Errorf("%d successful mints in %s, want at least %d: the token was not kept fresh", ok, duration, least)
	}
	if n := readAdminMetric(t, p, `caddy_ai_gateway_auth_requests_total{outcome="no_credential"}`); n != 0 {
		t.Errorf("requests_total{outcome=\"no_credential\"} is %v, want 0", n)
	}
	// Caddy is back near its baseline: a few hundred goroutines more at
	// most, for kept-alive connections (to the gateway: up to 32 per
	// site), not thousands for tens of thousands of requests.
	eventually(t, waitTimeout, "Caddy's goroutines return to their baseline", func() string {
		if n := caddyGoroutines(t, p); n > baseline+400 {
			return fmt.Sprintf("%d goroutines, %d after the warm-up", n, baseline)
		}
		return ""
	})

	p.stop()
	logs := p.Logs()
	secrets := append(secretsOf(v), secret{"the API key", apiKey}, secret{"the client key secret", secretKey})
	sandboxMu.Lock()
	for i, tok := range sandboxes {
		secrets = append(secrets, secret{fmt.Sprintf("sandbox token %d", i), tok})
	}
	sandboxMu.Unlock()
	assertNoSecrets(t, "caddy's logs", logs, secrets...)
	if !strings.Contains(logs, "credential refresh failed") {
		t.Error("no refresh failed during the outages: the soak proved less than it claims")
	}
}
