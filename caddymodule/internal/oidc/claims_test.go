package oidc

import (
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
)

func TestCheckProject(t *testing.T) {
	claims := &Claims{OwnerID: oidctest.Team, ProjectID: oidctest.Project}
	for _, tc := range []struct {
		team, project string
		want          string // "" means accepted
	}{
		{oidctest.Team, oidctest.Project, ""},
		{"", oidctest.Project, ""},
		{"acme", "my-project", ""}, // slugs and names cannot be compared with id claims
		{oidctest.Team, "prj_other", `token is for project "prj_testproject", not "prj_other"`},
		{"team_other", oidctest.Project, `token is for owner "team_testteam", not "team_other"`},
	} {
		err := CheckProject(claims, tc.team, tc.project)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckProject(%q, %q) = %v, want nil", tc.team, tc.project, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("CheckProject(%q, %q) = %v, want %q", tc.team, tc.project, err, tc.want)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for s, want := range map[string]bool{
		"a.b.c":     true,
		"a.b":       false,
		"a.b.c.d":   false,
		".b.c":      false,
		"a..c":      false,
		"a.b.":      false,
		"sk-abc":    false,
		"":          false,
		"eyJ.eyJ.s": true,
		"eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln-_": true,
		// a one-line dotenv file has the token's two dots only
		"VERCEL_OIDC_TOKEN=eyJ.eyJ.s": false,
		"export T=eyJ.eyJ.s":          false,
		"eyJ.eyJ.s\nX=1":              false,
		"a b.c.d":                     false,
		"a.b.c=":                      false, // base64url in JWTs is unpadded
	} {
		if got := LooksLikeJWT(s); got != want {
			t.Errorf("looksLikeJWT(%q) = %v, want %v", s, got, want)
		}
	}
}
