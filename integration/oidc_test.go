package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMintRotation runs clients against a proxy that mints tokens living
// 20 seconds: the proxy keeps minting new ones ahead of expiry (one mint at
// a time however many requests are waiting), the gateway verifies each,
// including after the fake Vercel rotates its signing key, and no client
// request fails.
func TestMintRotation(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	// 20 s: the refresh comes at half-life, 10 s ahead of expiry, which a
	// busy CI machine once overran by 6 s with 8 s tokens
	v.SetTTL(20 * time.Second)
	gw := newFakeGateway(t, v)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, mintSite(v, gw.URL(), "refresh_before 5m"))
	tc := newTestClient(t)

	if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("first request: status %d: %s", res.Status, res.Body)
	}
	v.RotateKey() // the next tokens have a kid the gateway has not seen yet

	// Four clients, until the gateway has seen three distinct tokens.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		done     = make(chan struct{})
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				res, err := tc.tryChat(p.URL, "sk-placeholder")
				if err == nil && res.Status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", res.Status, res.Body)
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	distinct := func() []string {
		var toks []string
		seen := map[string]bool{}
		for _, r := range gw.Requests() {
			if !seen[r.Credential] {
				seen[r.Credential] = true
				toks = append(toks, r.Credential)
			}
		}
		return toks
	}
	eventually(t, waitTimeout, "the proxy rotates through three minted tokens", func() string {
		if n := len(distinct()); n < 3 {
			return fmt.Sprintf("the gateway has seen %d distinct tokens", n)
		}
		return ""
	})
	close(done)
	wg.Wait()

	for _, f := range failures {
		t.Error("a client request failed during rotation: " + f)
	}
	for _, r := range gw.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("the gateway refused a forwarded token: %s", r.Reject)
		}
		assertForwarded(t, r, r.Credential, "oidc")
	}
	if n := v.MaxConcurrentMints(); n != 1 {
		t.Errorf("%d mint calls ran at once, want one at a time", n)
	}
	// Each token was minted while the one before it was still valid: the
	// refresh happens ahead of expiry (at half of a 20 s life here), not
	// when requests start failing.
	toks := distinct()
	for i := 1; i < len(toks); i++ {
		prevExp, ok1 := v.expOf(toks[i-1])
		_, ok2 := v.expOf(toks[i])
		if !ok1 || !ok2 {
			t.Fatal("the gateway saw a token the fake Vercel did not mint")
		}
		mintedAt := signedAt(v, toks[i])
		if !mintedAt.Before(prevExp) {
			t.Errorf("token %d was minted at %s, not before token %d expired at %s", i+1, mintedAt.Format(time.StampMilli), i, prevExp.Format(time.StampMilli))
		}
	}
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}

// signedAt is when the fake Vercel signed token.
func signedAt(v *fakeVercel, token string) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, it := range v.issued {
		if it.Token == token {
			return it.Signed
		}
	}
	return time.Time{}
}

// outcome is one client request during a test that watches time.
type outcome struct {
	sent, received time.Time
	res            response
	exp            time.Time // of the token the gateway got, for a 200
}

// TestMintOutage: when the Vercel API starts failing, requests keep
// working with the token the proxy holds until that token's exp, then
// fail fast with 503, Retry-After and a JSON error naming the source and
// why; no request is ever forwarded with an expired token; and once the
// API is back the proxy recovers by itself.
func TestMintOutage(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	v.SetTTL(6 * time.Second)
	gw := newFakeGateway(t, v)
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, mintSite(v, gw.URL(), ""))
	tc := newTestClient(t)

	if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("first request: status %d: %s", res.Status, res.Body)
	}
	v.SetFailing(http.StatusInternalServerError)
	var lastExp time.Time    // of the last token the proxy could have
	var lastUsable time.Time // lastExp less the expiry margin
	for _, it := range v.Issued() {
		if it.Exp.After(lastExp) {
			lastExp, lastUsable = it.Exp, v.usableUntil(it.Token)
		}
	}
	t.Logf("outage from now on; the last token expires in %s", time.Until(lastExp).Round(time.Millisecond))

	// Requests until well after that exp: beyond the gateway's 1s leeway,
	// so that a proxy forwarding an expired token would get the gateway's
	// 401 instead of the proxy's 503.
	var outcomes []outcome
	deadline := time.Now().Add(waitTimeout)
	for {
		o := outcome{sent: time.Now()}
		o.res = tc.chat(t, p.URL, "sk-placeholder")
		o.received = time.Now()
		if o.res.Status == http.StatusOK || o.res.Status == http.StatusUnauthorized {
			o.exp, _ = v.expOf(lastRequest(t, gw).Credential)
		}
		outcomes = append(outcomes, o)
		if o.sent.After(lastExp.Add(2 * time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the outage phase did not end")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ok, unavailable int
	for _, o := range outcomes {
		switch o.res.Status {
		case http.StatusOK:
			ok++
			if !o.sent.Before(o.exp) {
				t.Errorf("a request sent %s after the exp of its token was forwarded", o.sent.Sub(o.exp))
			}
		case http.StatusServiceUnavailable:
			unavailable++
			if o.received.Before(lastUsable) {
				t.Errorf("503 %s before the token's exp less the expiry margin, while the proxy still had a valid token: %s", lastUsable.Sub(o.received), o.res.Body)
			}
			checkUnavailable(t, p, o.res, "mint")
		case http.StatusUnauthorized:
			// sent before exp less the margin, but seen by the gateway
			// after exp plus its 1 s leeway: only on a loaded machine,
			// and only for a token close to its exp
			if d := o.sent.Sub(o.exp); d < -5*time.Second || d > 5*time.Second {
				t.Errorf("401 for a token %s from its exp: %s", d, o.res.Body)
			}
			t.Logf("the gateway saw the token after its exp (machine busy); not a proxy error")
		default:
			t.Errorf("status %d during the outage, want 200 before exp and 503 after: %s", o.res.Status, o.res.Body)
		}
	}
	t.Logf("during the outage: %d requests answered 200, %d answered 503", ok, unavailable)
	if unavailable == 0 {
		t.Error("no 503 after the token expired")
	}
	// The proxy retried the mint with exponential backoff (1s, 2s, 4s…,
	// each with at most 20% jitter off), not on every request. Only lower
	// bounds are checked: a slow machine makes the gaps longer, never
	// shorter.
	var failed []time.Time
	for _, m := range v.Mints() {
		if m.Status != http.StatusOK {
			failed = append(failed, m.At)
		}
	}
	if len(failed) == 0 {
		t.Error("the proxy never tried to mint during the outage")
	}
	for i := 1; i < len(failed); i++ {
		gap, want := failed[i].Sub(failed[i-1]), time.Duration(0.75*float64(min(time.Second<<(i-1), 30*time.Second)))
		if gap < want {
			t.Errorf("failed mint %d came %s after the one before, want at least %s (backoff)", i+1, gap.Round(time.Millisecond), want)
		}
	}
	t.Logf("%d failed mint attempts during the outage", len(failed))

	// The Anthropic SDK gets the error in its own shape.
	res := tc.do(t, http.MethodPost, p.URL+"/v1/messages", map[string]string{"X-Api-Key": "sk-placeholder", "Anthropic-Version": "2023-06-01"},
		`{"model":"anthropic/claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
	if res.Status != http.StatusServiceUnavailable {
		t.Errorf("/v1/messages during the outage: status %d: %s", res.Status, res.Body)
	} else if e := decodeJSON[anthropicError](t, res.Body); e.Type != "error" || e.Error.Type != "api_error" || e.Error.Message == "" {
		t.Errorf("/v1/messages during the outage: body %s, want an Anthropic api_error", res.Body)
	}

	// The API comes back: the proxy recovers without help.
	v.SetFailing(0)
	eventually(t, waitTimeout, "the proxy recovers after the outage", func() string {
		res := tc.chat(t, p.URL, "sk-placeholder")
		if res.Status != http.StatusOK {
			return fmt.Sprintf("status %d: %s", res.Status, res.Body)
		}
		return ""
	})
	if exp, _ := v.expOf(lastRequest(t, gw).Credential); !exp.After(lastExp) {
		t.Error("after the outage the gateway did not get a newly minted token")
	}
	for _, r := range gw.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("the gateway refused a forwarded request: %s", r.Reject)
		}
	}
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}

// checkUnavailable checks a 503 from the proxy: Retry-After in whole
// seconds, and an OpenAI-shaped error with the stable code
// no_upstream_credential that names the vercel_oidc source and why in a
// word; the log has a "no upstream credential" line naming the source
// and wantReason (env names, paths and causes in full).
func checkUnavailable(t testing.TB, p *caddyProc, res response, wantReason string) {
	t.Helper()
	if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("503 with Retry-After %q, want a number of seconds >= 1", res.Header.Get("Retry-After"))
	}
	e := decodeJSON[openAIError](t, res.Body)
	if e.Error.Type == "" || e.Error.Code == nil || *e.Error.Code != "no_upstream_credential" || e.Error.Message == "" {
		t.Errorf("503 body %s, want an OpenAI-shaped error with code no_upstream_credential", res.Body)
	}
	// which sources were tried, and why in a word (TestErrorBodiesNameNoConfig
	// checks that no configured name, path or address is in it)
	if !strings.Contains(e.Error.Message, "vercel_oidc (") {
		t.Errorf("503 body %s: want it to name the vercel_oidc source", res.Body)
	}
	eventually(t, waitTimeout, "a log line saying why there is no credential", func() string {
		if loggedNoCredential(p, wantReason) {
			return ""
		}
		return "no \"no upstream credential\" log line naming vercel_oidc and " + strconv.Quote(wantReason)
	})
}

// loggedNoCredential reports whether Caddy logged a 503 of the
// vercel_oidc source whose reason contains reason.
func loggedNoCredential(p *caddyProc, reason string) bool {
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, "no upstream credential") && strings.Contains(line, "vercel_oidc") && strings.Contains(line, reason) {
			return true
		}
	}
	return false
}

// TestTokenFile: a token file (raw JWT, or a dotenv file as `vercel env
// pull` writes .env.local) is re-read when it changes, whether replaced by
// a rename or rewritten in place; with no token in it the proxy answers
// 503 naming the file; a token is used until its exp and never after;
// when the file's last token has expired the proxy answers 503 saying so;
// a fresh token in the file brings it back.
func TestTokenFile(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	tokenFile := filepath.Join(t.TempDir(), ".env.local")
	// No token yet: the short-lived ones are written once Caddy runs, so
	// that a slow start cannot outlast them.
	if err := os.WriteFile(tokenFile, []byte("# vercel env pull has not run yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCaddy(t, caddyOptions{}, fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			file %s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, tokenFile, gw.URL()))
	tc := newTestClient(t)

	// checked sends a request and applies the rules of every phase: a 200
	// only if the request was sent before the exp of the token the gateway
	// got; a 503 only once the token the proxy is sure to know of (exp
	// minExp) has expired.
	checked := func(minExp time.Time) response {
		t.Helper()
		sent := time.Now()
		res := tc.chat(t, p.URL, "sk-placeholder")
		received := time.Now()
		switch res.Status {
		case http.StatusOK:
			if exp, _ := v.expOf(lastRequest(t, gw).Credential); !sent.Before(exp) {
				t.Fatalf("a request sent %s after the exp of its token was forwarded", sent.Sub(exp))
			}
		case http.StatusServiceUnavailable:
			if received.Before(minExp) {
				t.Fatalf("503 %s before a token expired: %s", minExp.Sub(received), res.Body)
			}
		case http.StatusUnauthorized:
			// The proxy sent the token before its exp less the margin
			// (checked in the 200 case), but on a loaded machine it
			// reached the gateway after exp plus the fake's 1 s leeway.
			// Only a token close to its exp may be refused so.
			exp, _ := v.expOf(lastRequest(t, gw).Credential)
			if d := sent.Sub(exp); d < -5*time.Second || d > 5*time.Second {
				t.Fatalf("401 for a token %s from its exp: %s", d, res.Body)
			}
			t.Logf("the gateway saw the token after its exp (machine busy); not a proxy error")
		default:
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		return res
	}

	res := checked(time.Time{})
	if res.Status != http.StatusServiceUnavailable {
		t.Fatalf("status %d with no token in the file, want 503: %s", res.Status, res.Body)
	}
	checkUnavailable(t, p, res, tokenFile)

	// A raw JWT, rewritten in place.
	tokA := v.Token(6 * time.Second)
	if err := os.WriteFile(tokenFile, []byte(tokA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "the raw token in the file is used", func() string {
		if res := checked(time.Time{}); res.Status != http.StatusOK || lastRequest(t, gw).Credential != tokA {
			return fmt.Sprintf("status %d, or the gateway got another token", res.Status)
		}
		return ""
	})

	// Replaced by a rename with a dotenv file holding a later token.
	tokB := v.Token(9 * time.Second)
	writeFileAtomic(t, tokenFile, "# Created by Vercel CLI\nVERCEL_ENV=\"development\"\nVERCEL_OIDC_TOKEN=\""+tokB+"\"\n")
	eventually(t, waitTimeout, "the token from the renamed dotenv file is used", func() string {
		if res := checked(v.usableUntil(tokA)); res.Status != http.StatusOK || lastRequest(t, gw).Credential != tokB {
			return fmt.Sprintf("status %d, gateway got another token", res.Status)
		}
		return ""
	})

	// Nobody renews it: once it expires, 503 saying so.
	eventually(t, waitTimeout, "503 once the file's token has expired", func() string {
		if res = checked(v.usableUntil(tokB)); res.Status != http.StatusServiceUnavailable {
			return fmt.Sprintf("status %d", res.Status)
		}
		return ""
	})
	checkUnavailable(t, p, res, "expired")

	// Rewritten in place with a fresh token: back without a reload.
	tokC := v.Token(time.Hour)
	if err := os.WriteFile(tokenFile, []byte("VERCEL_OIDC_TOKEN="+tokC+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "the token from the rewritten file is used", func() string {
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			return fmt.Sprintf("status %d: %s", res.Status, res.Body)
		}
		return ""
	})
	r := lastRequest(t, gw)
	if r.Credential != tokC {
		t.Error("the gateway did not get the token from the rewritten file")
	}
	assertForwarded(t, r, tokC, "oidc")
	for _, r := range gw.Requests() {
		if r.Status == http.StatusOK {
			continue
		}
		if late, ok := arrivedJustAfterExp(v, r); ok { // as checked allows
			t.Logf("the gateway saw a token %s after its exp (machine busy); not a proxy error", late)
			continue
		}
		t.Errorf("the gateway refused a forwarded token: %s", r.Reject)
	}
	assertNoSecrets(t, "responses", tc.Transcript(), secretsOf(v)...)
}

// arrivedJustAfterExp reports whether the gateway refused r because its
// token had expired, less than 5 s before r arrived. A token the proxy
// sent before its exp less the margin may still reach the gateway after
// exp plus its 1 s leeway on a loaded machine; only then, and only close
// to its exp, is such a refusal not the proxy's error.
func arrivedJustAfterExp(v *fakeVercel, r gatewayRequest) (time.Duration, bool) {
	exp, ok := v.expOf(r.Credential)
	late := r.At.Sub(exp)
	return late, ok && r.Status == http.StatusUnauthorized && strings.Contains(r.Reject, "expired") && late < 5*time.Second
}

// TestLatestExpiryWins: with a token in the env variable and another in
// the file, the proxy sends the valid one that expires last, whichever
// input it comes from, and switches when the file gets a later one.
func TestLatestExpiryWins(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	tokenFile := filepath.Join(t.TempDir(), "oidc-token")
	envTok := v.Token(time.Hour)
	if err := os.WriteFile(tokenFile, []byte(v.Token(30*time.Minute)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"VERCEL_OIDC_TOKEN": envTok}}, fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
			file %s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, tokenFile, gw.URL()))
	tc := newTestClient(t)

	if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	if lastRequest(t, gw).Credential != envTok {
		t.Fatal("the gateway did not get the env token, which expires after the file's")
	}
	later := v.Token(2 * time.Hour)
	writeFileAtomic(t, tokenFile, later)
	eventually(t, waitTimeout, "the file's later token is used", func() string {
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("status %d: %s", res.Status, res.Body)
		}
		if lastRequest(t, gw).Credential != later {
			return "the gateway still gets another token"
		}
		return ""
	})
	assertForwarded(t, lastRequest(t, gw), later, "oidc")
}

// TestCredentialWait: a request that arrives before the first token is
// minted waits for it, but no longer than credential_wait; then it gets a
// 503 while the mint is still under way.
func TestCredentialWait(t *testing.T) {
	t.Parallel()
	short, long := newFakeVercel(t), newFakeVercel(t)
	long.AccessToken = short.AccessToken // one VERCEL_TOKEN for both sites
	long.TeamID, long.ProjectID = short.TeamID, short.ProjectID
	gwShort, gwLong := newFakeGateway(t, short), newFakeGateway(t, long)
	site := func(v *fakeVercel, gw *fakeGateway, wait string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
		}
		client_key sk-placeholder
		credential_wait %s
	}
	reverse_proxy %s`, mintBlock(v.URL(), "timeout      5m"), wait, gw.URL())
	}
	heldShort, releaseShort := short.Hold()
	heldLong, releaseLong := long.Hold()
	p := startCaddy(t, caddyOptions{Env: mintEnv(short)},
		site(short, gwShort, "1s"), site(long, gwLong, "50s"))
	shortURL, longURL := p.URLs[0], p.URLs[1]
	tc := newTestClient(t)

	t.Run("bounded", func(t *testing.T) {
		// The mint is held until after the answer: only credential_wait
		// can end the wait.
		res := tc.chat(t, shortURL, "sk-placeholder")
		if res.Status != http.StatusServiceUnavailable {
			t.Fatalf("status %d while the first mint is held, want 503: %s", res.Status, res.Body)
		}
		checkUnavailable(t, p, res, "")
		select {
		case <-heldShort:
		case <-time.After(waitTimeout):
			t.Fatal("the proxy never called the mint API")
		}
		releaseShort()
		eventually(t, waitTimeout, "the proxy works once the mint answers", func() string {
			if res := tc.chat(t, shortURL, "sk-placeholder"); res.Status != http.StatusOK {
				return fmt.Sprintf("status %d: %s", res.Status, res.Body)
			}
			return ""
		})
		if len(gwShort.Requests()) == 0 {
			t.Fatal("no request reached the gateway")
		}
	})

	t.Run("waits", func(t *testing.T) {
		// The mint is released only once it is under way, while the request
		// waits: the request must get the token, not a 503.
		type result struct {
			res response
			err error
		}
		ch := make(chan result, 1)
		go func() {
			res, err := tc.tryChat(longURL, "sk-placeholder")
			ch <- result{res, err}
		}()
		select {
		case <-heldLong:
		case <-time.After(waitTimeout):
			t.Fatal("the proxy never called the mint API")
		}
		releaseLong()
		var res response
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
			res = r.res
		case <-time.After(waitTimeout):
			t.Fatal("no answer")
		}
		if res.Status != http.StatusOK {
			t.Fatalf("status %d, want 200 once the first token is minted: %s", res.Status, res.Body)
		}
		r := lastRequest(t, gwLong)
		assertForwarded(t, r, r.Credential, "oidc")
	})
}
