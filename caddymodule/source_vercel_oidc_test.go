package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// currentValue is the token the source would send now, or "".
func currentValue(s *VercelOIDCSource) string {
	if c := s.Current(time.Now()); c != nil {
		return c.value
	}
	return ""
}

func TestOIDCEnvValid(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	tok := oidctest.OIDCToken(t, exp)
	t.Setenv("AIGW_TEST_OIDC_VALID", tok)
	s := provisionOIDC(t, &VercelOIDCSource{Env: "AIGW_TEST_OIDC_VALID", RefreshBefore: caddyDuration(10 * time.Minute)})

	c := s.Current(time.Now())
	if c == nil || c.value != tok {
		t.Fatal("Current does not return the env token")
	}
	if c.method != methodOIDC || !c.expires.Equal(jwtExp(exp)) {
		t.Errorf("method %q, expires %v", c.method, c.expires)
	}
	if f, err := s.Fetch(context.Background()); err != nil || f.value != c.value {
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
				t.Fatalf("Current returned a credential expiring %v", c.expires)
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

// The file is re-read whenever it changes, however it changes; a file
// that disappears or breaks never takes away a still-valid token; an
// older token never replaces a fresher one.
func TestOIDCFileChanges(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	// tokens of different lengths, so each rewrite changes the size even
	// within one mtime tick
	tokN := func(hours int) string {
		return oidctest.OIDCToken(t, now.Add(time.Duration(hours)*time.Hour), func(c jwt.MapClaims) {
			c["pad"] = strings.Repeat("x", hours)
		})

	}
	tok1, tok2, tok3, tokOld, tok4, tok5 := tokN(1), tokN(2), tokN(3), tokN(0), tokN(4), tokN(5)
	path := writeFile(t, dir, "oidc-token", tok1)
	s := provisionOIDC(t, &VercelOIDCSource{File: path})
	if currentValue(s) != tok1 {
		t.Fatal("file token not used at provision")
	}

	// rewritten in place (same inode)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "VERCEL_OIDC_TOKEN=%s\n", tok2)
	f.Close()
	eventually(t, "in-place rewrite picked up", func() bool { return currentValue(s) == tok2 })

	// atomic rename over the file
	writeFile(t, dir, "oidc-token.tmp", tok3)
	if err := os.Rename(filepath.Join(dir, "oidc-token.tmp"), path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "atomic rename picked up", func() bool { return currentValue(s) == tok3 })

	// an earlier-expiring token does not replace the fresher one (tokOld
	// expires now, so it is not even usable)
	writeFile(t, dir, "oidc-token", tokOld)
	eventually(t, "expired file token reported", func() bool {
		return strings.Contains(loadErrorOrEmpty(s), "token expired at")
	})
	if currentValue(s) != tok3 {
		t.Error("an older token replaced a fresher one")
	}
	writeFile(t, dir, "oidc-token", tok4)
	eventually(t, "fresher token picked up", func() bool { return currentValue(s) == tok4 })

	// deleted: the still-valid token stays; the reason is reported
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deletion noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "no such file") })
	if currentValue(s) != tok4 {
		t.Error("token lost when the file was deleted")
	}

	// replaced by a directory
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	eventually(t, "directory noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "is not a regular file") })
	if currentValue(s) != tok4 {
		t.Error("token lost when the file became a directory")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// truncated
	writeFile(t, dir, "oidc-token", "")
	eventually(t, "empty file noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "no token in it") })
	if currentValue(s) != tok4 {
		t.Error("token lost when the file was truncated")
	}

	// and back
	writeFile(t, dir, "oidc-token", tok5)
	eventually(t, "file back", func() bool { return currentValue(s) == tok5 })
}

// loadErrorOrEmpty is the reason the source's inputs give for having no
// token (what a 503 and the status report), ignoring the cached token; ""
// when an input has one.
func loadErrorOrEmpty(s *VercelOIDCSource) string {
	if _, err := s.state.load(context.Background(), nil, false); err != nil {
		return err.Error()
	}
	return ""
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
	// the shared state logs through the newest config's logger, not the
	// one of the config that created it (and will be unloaded first)
	if a.logger == b.logger {
		t.Fatal("both configs have the same logger: this test cannot tell them apart")
	}
	if st.logger.Load() != b.logger || st.refresher.log() != b.logger {
		t.Error("after a reload the shared state still logs through the old config's logger")
	}
	_ = currentValue(&a) // starts the refresher loop
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if currentValue(&b) != tok {
		t.Error("the new config lost the token when the old one was cleaned up")
	}
	select {
	case <-st.refresher.done:
		t.Fatal("refresher stopped while a config still uses it")
	default:
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.refresher.done:
	case <-time.After(20 * time.Second):
		t.Fatal("refresher still running after the last config was cleaned up")
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
	if err != nil || c.value != tok {
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

// A token file that does not exist yet is not a config error (e.g.
// `vercel env pull` runs after the proxy starts): the token is used as
// soon as the file appears.
func TestOIDCFileAppearsLater(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env.local")
	s := provisionOIDC(t, &VercelOIDCSource{File: path})
	if c := s.Current(time.Now()); c != nil {
		t.Fatal("a token from nowhere")
	}
	if msg := loadErrorOrEmpty(s); !strings.Contains(msg, "file "+path) || !strings.Contains(msg, "no such file") {
		t.Errorf("reason %q does not name the missing file", msg)
	}
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	writeFile(t, dir, ".env.local.tmp", "VERCEL_OIDC_TOKEN=\""+tok+"\"\n")
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "token used once the file appears", func() bool { return currentValue(s) == tok })
}
