package identity

import (
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	dto "github.com/prometheus/client_model/go"
)

// A cached verdict ends with the token (exp plus the leeway it was
// verified with): after that the token is verified again, and refused.
// On synctest's fake clock, with the JWKS served in process.
func TestSandboxCacheEndsWithToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const iss = "https://oidc.vercel.com/" + oidctest.Team // what the team implies
		jwks := oidc.NewCache()
		rt, _ := oidctest.InProcess(func() (int, []byte) {
			return http.StatusOK, oidctest.JWKSDocument(map[string]*rsa.PublicKey{oidctest.Kid: &oidctest.Key().PublicKey})
		})
		jwks.SetTransport(rt)
		v, err := NewSandboxVerifier(SandboxConfig{Audience: oidctest.ForwardURL, Teams: []string{oidctest.Team}}, jwks), error(nil)
		if err != nil {
			t.Fatal(err)
		}
		claims := oidctest.SandboxClaims(iss)
		claims["exp"] = time.Now().Add(10 * time.Second).Unix()
		token := oidctest.Sign(t, claims)
		identify := func() error {
			r := sandboxRequest(token)
			_, err := v.Identify(r)
			return err
		}
		before := verifications()
		if err := identify(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second) // past exp, within the leeway
		if err := identify(); err != nil {
			t.Fatalf("within the leeway: %v", err)
		}
		if n := verifications() - before; n != 1 {
			t.Errorf("%v verifications, want 1", n)
		}
		time.Sleep(time.Minute)
		if err := identify(); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("after exp+leeway: %v, want expired", err)
		}
		if n := verifications() - before; n != 2 {
			t.Errorf("%v verifications, want 2 (the expired token verified again)", n)
		}
	})
}

// The verification cache is bounded.
func TestSandboxCacheBounded(t *testing.T) {
	jwks := oidctest.NewJWKS(t)
	v, err := NewSandboxVerifier(SandboxConfig{Audience: oidctest.ForwardURL, Teams: []string{oidctest.Team}, Issuer: jwks.URL}, oidc.NewCache()), error(nil)
	if err != nil {
		t.Fatal(err)
	}
	// fill the cache with entries (cheaper than verifying 10000 tokens)
	v.mu.Lock()
	for i := range maxVerifiedSandboxTokens {
		v.verified[[32]byte{byte(i), byte(i >> 8), 1}] = verifiedSandbox{client: KeyPrincipal("", "x"), expires: time.Now().Add(time.Hour)}
	}
	v.mu.Unlock()
	if _, err := v.Identify(sandboxRequest(oidctest.Sign(t, oidctest.SandboxClaims(jwks.URL)))); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	n := len(v.verified)
	v.mu.Unlock()
	if n > maxVerifiedSandboxTokens {
		t.Errorf("%d cached verdicts, bound is %d", n, maxVerifiedSandboxTokens)
	}
}

// sandboxRequest is a request as the sandbox firewall forwards it, with
// token (if not empty).
func sandboxRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/forward", strings.NewReader(`{"model":"openai/gpt-5"}`))
	if token != "" {
		r.Header.Set(HeaderSandboxToken, token)
	}
	r.Header.Set(HeaderForwardedHost, "ai-gateway.vercel.sh")
	r.Header.Set(HeaderForwardedPath, "/v1/chat/completions")
	return r
}

// verifications is the value of sandbox_token_verifications_total.
func verifications() float64 {
	var m dto.Metric
	if err := sandboxVerificationsTotal.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
