package oidctest

import (
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fixtures are what the tests that use them assume: a token Sign
// makes verifies with the key the JWKS publishes under Kid, and the JWKS
// counts its fetches.
func TestFixtures(t *testing.T) {
	jwks := NewJWKS(t)
	res, err := http.Get(jwks.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var doc struct {
		Keys []struct{ Kid, Kty string } `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Keys) != 1 || doc.Keys[0].Kid != Kid || doc.Keys[0].Kty != "RSA" {
		t.Fatalf("JWKS document %s (%v)", body, err)
	}
	if jwks.Fetches() != 1 {
		t.Errorf("%d fetches counted, want 1", jwks.Fetches())
	}

	tok := OIDCToken(t, time.Now().Add(time.Hour))
	var claims jwt.MapClaims
	if _, err := jwt.ParseWithClaims(tok, &claims, func(tk *jwt.Token) (any, error) {
		if tk.Header["kid"] != Kid {
			t.Errorf("kid %v", tk.Header["kid"])
		}
		return &Key().PublicKey, nil
	}); err != nil {
		t.Fatalf("a signed test token does not verify: %v", err)
	}
	if claims["owner_id"] != Team || claims["project_id"] != Project {
		t.Errorf("claims %v", claims)
	}
	if _, err := jwt.Parse(SignWith(jwt.SigningMethodRS256, OtherKey(), Kid, Claims("iss", time.Now().Add(time.Hour))),
		func(*jwt.Token) (any, error) { return &Key().PublicKey, nil }); err == nil {
		t.Error("a token signed with OtherKey verifies with Key")
	}
	jwks.SetKeys(map[string]*rsa.PublicKey{})
	if jwks.Fetches() != 1 {
		t.Error("SetKeys fetched")
	}
}
