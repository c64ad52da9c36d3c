package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
)

// A mint block whose project or access token resolves to nothing fails
// every mint, naming the placeholder, and never calls the API.
func TestMintMissingValues(t *testing.T) {
	t.Setenv("AIGW_TEST_MINT_EMPTY", "")
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer api.Close()
	for _, tc := range []struct {
		edit func(*MintConfig)
		want string
	}{
		{func(c *MintConfig) { c.Project = "{env.AIGW_TEST_MINT_EMPTY}" }, "project is empty ({env.AIGW_TEST_MINT_EMPTY} resolved to nothing)"},
		{func(c *MintConfig) { c.AccessToken = "{env.AIGW_TEST_MINT_EMPTY}" }, "access_token is empty ({env.AIGW_TEST_MINT_EMPTY} resolved to nothing)"},
	} {
		cfg := MintConfig{Project: oidctest.Project, Team: oidctest.Team, AccessToken: "vercel-access-token", API: api.URL}
		tc.edit(&cfg)
		m, err := credential.NewMinter(cfg.settings())
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Mint(context.Background())
		if err == nil || err.Error() != tc.want {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the API was called %d times without a project or access token", n)
	}
}
