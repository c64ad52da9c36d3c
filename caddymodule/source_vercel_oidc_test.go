package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// currentValue is the token the source would send now, or "".
func currentValue(s *VercelOIDCSource) string {
	if c := s.Current(time.Now()); c != nil {
		return valueOf(c)
	}
	return ""
}

func TestOIDCEnvValid(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	tok := oidctest.OIDCToken(t, exp)
	t.Setenv("AIGW_TEST_OIDC_VALID", tok)
	s := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_OIDC_VALID", RefreshBefore: caddyDuration(10 * time.Minute)})

	c := s.Current(time.Now())
	if c == nil || valueOf(c) != tok {
		t.Fatal("Current does not return the env token")
	}
	if c.Method() != credential.MethodOIDC || !c.Expires().Equal(jwtExp(exp)) {
		t.Errorf("method %q, expires %v", c.Method(), c.Expires())
	}
	if f, err := s.Fetch(context.Background()); err != nil || valueOf(f) != valueOf(c) {
		t.Errorf("Fetch = %v, %v", f, err)
	}
	if s.Current(jwtExp(exp)) != nil {
		t.Error("Current returns the token at its exp")
	}
	st := s.Status(time.Now())
	if !st.Usable || st.Kind != "vercel_oidc" || st.Method != "oidc" || st.Expires == nil || !st.Expires.Equal(jwtExp(exp)) {
		t.Errorf("Status = %+v", st)
	}
	if st.NextRefresh == nil || !st.NextRefresh.Equal(jwtExp(exp).Add(-10*time.Minute)) {
		t.Errorf("next refresh %v, want refresh_before (10m) ahead of exp", st.NextRefresh)
	}
	b, _ := json.Marshal(st)
	assertNotContains(t, "status", string(b), tok)
}

// With no input configured, VERCEL_OIDC_TOKEN is read.
func TestOIDCEnvDefault(t *testing.T) {
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("VERCEL_OIDC_TOKEN", tok)
	s := provisionOIDC(t, &VercelOIDCSource{})
	if currentValue(s) != tok {
		t.Error("VERCEL_OIDC_TOKEN not read by default")
	}
}

func TestOIDCEnvUnusable(t *testing.T) {
	expired := oidctest.OIDCToken(t, time.Now().Add(-time.Second))
	noExp := oidctest.OIDCToken(t, time.Time{}, func(c jwt.MapClaims) { delete(c, "exp") })
	for _, tc := range []struct{ name, value, want string }{
		{"expired", expired, "env AIGW_TEST_OIDC_BAD: token expired at"},
		{"no exp", noExp, "env AIGW_TEST_OIDC_BAD: token has no exp claim"},
		{"garbage", "definitely-not-a-jwt", "env AIGW_TEST_OIDC_BAD: not a JWT"},
		{"unset", "", "env AIGW_TEST_OIDC_BAD: not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AIGW_TEST_OIDC_BAD", tc.value)
			s := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_OIDC_BAD"})
			if c := s.Current(time.Now()); c != nil {
				t.Fatalf("Current returned a credential expiring %v", c.Expires())
			}
			_, err := s.Fetch(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Fetch error %v, want %q", err, tc.want)
			}
			assertNotContains(t, "error", err.Error(), tc.value)
			// a second Fetch while backing off answers at once with the reason
			_, err = s.Fetch(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "next attempt in") {
				t.Errorf("second Fetch error %v", err)
			}
			st := s.Status(time.Now())
			if st.Usable || !strings.Contains(st.LastError, tc.want) {
				t.Errorf("Status = %+v", st)
			}
			b, _ := json.Marshal(st)
			assertNotContains(t, "status", string(b), tc.value)
		})
	}
}

func TestOIDCFileRawAndDotenv(t *testing.T) {
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	for _, tc := range []struct{ name, env, content string }{
		{"raw JWT", "", tok + "\n"},
		{"dotenv one line", "", "VERCEL_OIDC_TOKEN=" + tok + "\n"},
		{"vercel env pull", "", "# Created by Vercel CLI\nVERCEL=\"1\"\nVERCEL_ENV=\"development\"\n" +
			"VERCEL_OIDC_TOKEN=\"" + tok + "\"\nVERCEL_URL=\"\"\n"},
		{"export, quotes, comments", "", "# comment\nexport OTHER=x.y.z\nexport VERCEL_OIDC_TOKEN='" + tok + "' # fresh\n"},
		{"named variable", "AIGW_TEST_OIDC_FILE_VAR", "VERCEL_OIDC_TOKEN=stale.stale.stale\nAIGW_TEST_OIDC_FILE_VAR=\"" + tok + "\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), ".env.local", tc.content)
			s := provisionOIDC(t, &VercelOIDCSource{Env: tc.env, File: path})
			if currentValue(s) != tok {
				t.Errorf("token not read from the file")
			}
		})
	}
}

// Among env and file, the valid token that expires last is used.
func TestOIDCFreshestInputWins(t *testing.T) {
	now := time.Now()
	envTok := oidctest.OIDCToken(t, now.Add(2*time.Hour))
	fileTok := oidctest.OIDCToken(t, now.Add(time.Hour))
	t.Setenv("AIGW_TEST_OIDC_FRESHEST", envTok)
	dir := t.TempDir()
	path := writeFile(t, dir, "tok", fileTok)
	s := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_OIDC_FRESHEST", File: path})
	if currentValue(s) != envTok {
		t.Fatal("the file's earlier-expiring token won over env")
	}
	later := oidctest.OIDCToken(t, now.Add(3*time.Hour))
	writeFile(t, dir, "tok", later+"\n")
	eventually(t, "later file token used", func() bool { return currentValue(s) == later })
}

// Two configs with the same source (a reload) share one cache; the last
// one to go stops its goroutines.
func TestOIDCStateSharedAcrossReload(t *testing.T) {
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("AIGW_TEST_OIDC_SHARED", tok)
	cfg := VercelOIDCSource{Env: "AIGW_TEST_OIDC_SHARED"}
	a, b := cfg, cfg
	// provisioned by hand: this test cleans them up itself
	if err := a.Provision(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.Provision(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	if a.state != b.state {
		t.Fatal("the same source config got two caches")
	}
	st := a.state
	// (the shared state logs through the newest config's logger:
	// credential's TestAdoptTakesTheNewestLogger)
	_ = currentValue(&a) // starts the refresher loop
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if currentValue(&b) != tok {
		t.Error("the new config lost the token when the old one was cleaned up")
	}
	if refs, ok := oidcStates.References(b.key); !ok || refs != 1 {
		t.Fatalf("the state has %d references (present %v) while a config still uses it, want 1", refs, ok)
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := oidcStates.References(b.key); ok {
		t.Fatal("the state is still in the pool after the last config was cleaned up: its goroutines run on")
	}

	// a different token in the variable is a different source
	t.Setenv("AIGW_TEST_OIDC_SHARED", oidctest.OIDCToken(t, time.Now().Add(2*time.Hour)))
	c := cfg
	provisionOIDC(t, &c)
	if c.state == st || currentValue(&c) == tok {
		t.Error("a changed env value reused the old cache")
	}
}

// Minting through the source: the first Fetch mints, later requests use
// the cache.
func TestOIDCMint(t *testing.T) {
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, `{"token":%q}`, tok)
	}))
	defer srv.Close()
	t.Setenv("AIGW_TEST_MINT_ACCESS", "vercel-access-token-secret")
	s := provisionOIDC(t, &VercelOIDCSource{Mint: &MintConfig{
		Project: oidctest.Project, Team: oidctest.Team, AccessToken: "{env.AIGW_TEST_MINT_ACCESS}", API: srv.URL,
	}})
	if hits.Load() != 0 {
		t.Fatal("Provision called the mint API")
	}
	c, err := s.Fetch(context.Background())
	if err != nil || valueOf(c) != tok {
		t.Fatalf("Fetch = %v, %v", c, err)
	}
	for range 10 {
		if currentValue(s) != tok {
			t.Fatal("minted token not cached")
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("mint API called %d times, want 1", n)
	}
}

func TestOIDCProvisionErrors(t *testing.T) {
	s := &VercelOIDCSource{RefreshBefore: caddyDuration(-time.Second)}
	if err := s.Provision(newTestContext(t)); err == nil {
		t.Error("negative refresh_before accepted")
	}
	s = &VercelOIDCSource{Mint: &MintConfig{Project: "p", AccessToken: "a", API: "http://example.com"}}
	t.Cleanup(func() { _ = s.Cleanup() })
	if err := s.Provision(newTestContext(t)); err == nil || !strings.Contains(err.Error(), "only allowed on loopback") {
		t.Errorf("http mint api: %v", err)
	}
}

// Without a storage (a context not made from a config), share is refused
// at provision rather than panicking.
func TestShareNeedsStorage(t *testing.T) {
	s := &VercelOIDCSource{Env: "AIGW_TEST_SHARE_NONE", Share: true}
	ctx := newTestContext(t)
	t.Cleanup(func() { _ = s.Cleanup() })
	if err := s.Provision(ctx); err == nil || !strings.Contains(err.Error(), "no storage") {
		t.Fatalf("Provision = %v", err)
	}
}
