package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestFakes checks the fakes themselves, without the proxy: the other
// tests are only as honest as the fake gateway's refusals and the fake
// Vercel API's checks.
func TestFakes(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	apiKey := newAPIKey()
	gw := newFakeGateway(t, v, apiKey)
	tc := newTestClient(t)
	valid := v.Token(time.Hour)

	forged := func(mutate func(jwt.MapClaims)) string {
		p := jwt.NewParser()
		claims := jwt.MapClaims{}
		if _, _, err := p.ParseUnverified(valid, claims); err != nil {
			t.Fatal(err)
		}
		mutate(claims)
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["kid"] = v.keys[0].kid
		s, err := tok.SignedString(testRSAKey(0))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherKey := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": v.Issuer(), "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = v.keys[0].kid
		s, _ := tok.SignedString(testRSAKey(1))
		return s
	}

	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"oidc token", map[string]string{"Authorization": "Bearer " + valid, "Ai-Gateway-Auth-Method": "oidc"}, 200},
		{"api key", map[string]string{"Authorization": "Bearer " + apiKey, "Ai-Gateway-Auth-Method": "api-key"}, 200},
		{"api key in x-api-key", map[string]string{"X-Api-Key": apiKey}, 200},
		{"x-api-key wins even when invalid", map[string]string{"Authorization": "Bearer " + valid, "X-Api-Key": "sk-placeholder"}, 401},
		{"unknown api key", map[string]string{"Authorization": "Bearer sk-placeholder"}, 401},
		{"no credential", nil, 401},
		{"wrong auth method header", map[string]string{"Authorization": "Bearer " + valid, "Ai-Gateway-Auth-Method": "api-key"}, 401},
		{"expired token", map[string]string{"Authorization": "Bearer " + v.Token(-time.Minute)}, 401},
		{"token not yet valid", map[string]string{"Authorization": "Bearer " + forged(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Minute).Unix() })}, 401},
		{"wrong audience", map[string]string{"Authorization": "Bearer " + forged(func(c jwt.MapClaims) { c["aud"] = "https://vercel.com/other" })}, 401},
		{"wrong issuer", map[string]string{"Authorization": "Bearer " + forged(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" + v.TeamSlug })}, 401},
		{"another project", map[string]string{"Authorization": "Bearer " + forged(func(c jwt.MapClaims) { c["project_id"] = "prj_other" })}, 401},
		{"bad signature", map[string]string{"Authorization": "Bearer " + otherKey()}, 401},
		{"tampered payload", map[string]string{"Authorization": "Bearer " + strings.Replace(valid, ".", ".e30", 1)}, 401},
	} {
		res := tc.do(t, http.MethodPost, gw.URL()+"/v1/chat/completions", c.header, `{"model":"openai/gpt-5","messages":[]}`)
		if res.Status != c.want {
			t.Errorf("%s: gateway answered %d, want %d: %s", c.name, res.Status, c.want, res.Body)
			continue
		}
		if c.want == 401 {
			if e := decodeJSON[openAIError](t, res.Body); e.Error.Type != "authentication_error" || e.Error.Message == "" {
				t.Errorf("%s: gateway's 401 body is %s, want AI Gateway's authentication_error", c.name, res.Body)
			}
		}
	}

	// The mint endpoint: the access token is required; the token it
	// answers verifies at the gateway, also after a key rotation.
	mintURL := v.URL() + "/v1/projects/" + v.ProjectID + "/token?source=test&teamId=" + v.TeamID
	if res := tc.do(t, http.MethodPost, mintURL, map[string]string{"Authorization": "Bearer " + valid}, ""); res.Status != http.StatusForbidden {
		t.Errorf("mint with an OIDC token instead of an access token: %d, want 403", res.Status)
	}
	v.RotateKey()
	res := tc.do(t, http.MethodPost, mintURL, map[string]string{"Authorization": "Bearer " + v.AccessToken}, "")
	var answer struct{ Token string }
	if res.Status != http.StatusOK || json.Unmarshal(res.Body, &answer) != nil || answer.Token == "" {
		t.Fatalf("mint: %d %s", res.Status, res.Body)
	}
	if res := tc.do(t, http.MethodGet, gw.URL()+"/v1/models", map[string]string{"Authorization": "Bearer " + answer.Token}, ""); res.Status != http.StatusOK {
		t.Errorf("a freshly minted token (new kid) was refused: %d %s", res.Status, res.Body)
	}
}
