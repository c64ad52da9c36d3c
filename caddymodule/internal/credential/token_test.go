package credential

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

func TestParseOIDCTokenValid(t *testing.T) {
	now := time.Now()
	exp := now.Add(time.Hour)
	tok := oidctest.OIDCToken(t, exp)

	c, claims, err := ParseToken(tok, now)
	if err != nil {
		t.Fatalf("parseOIDCToken: %v", err)
	}
	if c.value != tok {
		t.Error("credential value is not the token")
	}
	if c.method != MethodOIDC {
		t.Errorf("method = %q, want %q", c.method, MethodOIDC)
	}
	if !c.expires.Equal(jwtExp(exp)) {
		t.Errorf("expires = %v, want %v", c.expires, jwtExp(exp))
	}
	if got := c.authHeader; len(got) != 1 || got[0] != "Bearer "+tok {
		t.Error("auth header is not Bearer <token>")
	}
	if claims.OwnerID != oidctest.Team || claims.ProjectID != oidctest.Project {
		t.Errorf("claims owner_id=%q project_id=%q", claims.OwnerID, claims.ProjectID)
	}
	// the margin before exp is a tenth of the lifetime, at most 5s
	if !c.Usable(jwtExp(exp).Add(-5*time.Second - time.Millisecond)) {
		t.Error("token not usable before exp")
	}
	if c.Usable(jwtExp(exp).Add(-time.Second)) {
		t.Error("token usable in its last second")
	}
	if c.Usable(jwtExp(exp)) {
		t.Error("token usable at exp")
	}
}

func TestParseOIDCTokenRejects(t *testing.T) {
	now := time.Now()
	expired := oidctest.OIDCToken(t, now.Add(-time.Minute))
	atExp := oidctest.OIDCToken(t, now) // exp == now (truncated to the second): not usable
	noExp := oidctest.OIDCToken(t, time.Time{}, func(c jwt.MapClaims) { delete(c, "exp") })
	badExp := oidctest.OIDCToken(t, time.Time{}, func(c jwt.MapClaims) { c["exp"] = "tomorrow" })
	parts := strings.Split(oidctest.OIDCToken(t, now.Add(time.Hour)), ".")
	badPayload := parts[0] + ".bm90LWpzb24." + parts[2] // base64url of "not-json"

	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", expired, "token expired at " + jwtExp(now.Add(-time.Minute)).UTC().Format(time.RFC3339)},
		{"at exp", atExp, "token expired at"},
		{"no exp", noExp, "token has no exp claim"},
		{"exp not a number", badExp, "not a valid JWT"},
		{"garbage", "this is not a token", "not a JWT"},
		{"empty", "", "not a JWT"},
		{"api key", "vck_1234567890abcdef", "not a JWT"},
		{"two parts", parts[0] + "." + parts[1], "not a JWT"},
		{"four parts", strings.Join(parts, ".") + ".x", "not a JWT"},
		{"bad base64 payload", badPayload, "not a valid JWT: malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := ParseToken(tc.token, now)
			if err == nil {
				t.Fatalf("accepted %s token (expires %v)", tc.name, c.expires)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if tc.token != "" {
				assertNotContains(t, "error", err.Error(), tc.token, parts[1])
			}
		})
	}
}

// A credential's value must not leak through formatting or marshaling.
func TestCredentialNeverPrintsValue(t *testing.T) {
	secret := "vck_super_secret_value"
	c := New(secret, MethodAPIKey, time.Time{}, time.Now())
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	o := New("eyJ.secret-oidc.sig", MethodOIDC, exp, time.Now())
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c),
		fmt.Sprintf("%v %+v %#v", o, o, o),
		fmt.Sprint([]*Credential{c, o}),
		fmt.Sprintf("%v", struct{ C *Credential }{c}),
		fmt.Sprintf("%+v", struct{ C *Credential }{o}),
	} {
		assertNotContains(t, "formatted credential", s, secret, "secret-oidc")
	}
	if got := c.String(); got != "api-key credential (no expiry)" {
		t.Errorf("String() = %q", got)
	}
	if got := o.String(); got != "oidc credential expiring 2030-01-02T03:04:05Z" {
		t.Errorf("String() = %q", got)
	}
	if got := (*Credential)(nil).String(); got != "<no credential>" {
		t.Errorf("nil String() = %q", got)
	}
	b, err := json.Marshal(c) //nolint:staticcheck // SA9005 is the point: a credential marshals to nothing
	if err != nil {
		t.Fatal(err)
	}
	assertNotContains(t, "JSON credential", string(b), secret)
}
