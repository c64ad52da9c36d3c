package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
)

func provisionStatic(t *testing.T, key string) *StaticSource {
	t.Helper()
	s := &StaticSource{Key: key}
	if err := s.Provision(newTestContext(t)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return s
}

func TestStaticSourceSet(t *testing.T) {
	t.Setenv("AIGW_TEST_STATIC_KEY", "  "+testStaticKey+"\n")
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(testStaticKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, config := range []string{"{env.AIGW_TEST_STATIC_KEY}", "{file." + keyFile + "}", testStaticKey} {
		s := provisionStatic(t, config)
		c := s.Current(time.Now())
		if c == nil {
			t.Fatalf("%s: no credential", config)
		}
		if valueOf(c) != testStaticKey {
			t.Errorf("%s: value not trimmed to the key", config)
		}
		if c.Method() != credential.MethodAPIKey || !c.Expires().IsZero() {
			t.Errorf("%s: method %q, expires %v; want api-key, never", config, c.Method(), c.Expires())
		}
		if !c.Usable(time.Now().Add(10000 * time.Hour)) {
			t.Error("a static key expires")
		}
		f, err := s.Fetch(context.Background())
		if err != nil || f != c {
			t.Errorf("Fetch = %v, %v", f, err)
		}
		st := s.Status(time.Now())
		if !st.Usable || st.Kind != "static" || st.Method != "api-key" || st.LastError != "" {
			t.Errorf("Status = %+v", st)
		}
		b, _ := json.Marshal(st)
		assertNotContains(t, "status", string(b), testStaticKey)
	}
}

// An empty key (unset variable) makes the source skip, with a reason that
// names the placeholder.
func TestStaticSourceEmpty(t *testing.T) {
	t.Setenv("AIGW_TEST_STATIC_EMPTY", "   ")
	for _, tc := range []struct{ config, want string }{
		{"{env.AIGW_TEST_STATIC_EMPTY}", "key is empty ({env.AIGW_TEST_STATIC_EMPTY} resolved to nothing)"},
		{"{env.AIGW_TEST_STATIC_NEVER_SET}", "key is empty ({env.AIGW_TEST_STATIC_NEVER_SET} resolved to nothing)"},
		{"", "no key configured"},
	} {
		s := provisionStatic(t, tc.config)
		if c := s.Current(time.Now()); c != nil {
			t.Errorf("%q: Current = %v, want nil", tc.config, c)
		}
		if _, err := s.Fetch(context.Background()); err == nil || err.Error() != tc.want {
			t.Errorf("%q: Fetch error %v, want %q", tc.config, err, tc.want)
		}
		if st := s.Status(time.Now()); st.Usable || !strings.Contains(st.LastError, tc.want) {
			t.Errorf("%q: Status = %+v", tc.config, st)
		}
	}
}
