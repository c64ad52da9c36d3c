package caddymodule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// oidcClaims are the Vercel OIDC claims the proxy reads. The signature is
// not checked here: the gateway verifies what it is sent; the proxy only
// needs to know when a token expires and whom it is for.
type oidcClaims struct {
	OwnerID   string `json:"owner_id"`
	ProjectID string `json:"project_id"`
	jwt.RegisteredClaims
}

// looksLikeJWT is a cheap check for three non-empty dot-separated parts
// of base64url characters. The character check matters: a dotenv file
// whose only dots are the token's ("VERCEL_OIDC_TOKEN=eyJ….….…") must not
// pass for a raw JWT.
func looksLikeJWT(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	a, rest, ok := strings.Cut(s, ".")
	if !ok || a == "" {
		return false
	}
	b, c, ok := strings.Cut(rest, ".")
	return ok && b != "" && c != "" && !strings.Contains(c, ".")
}

// parseOIDCToken reads a Vercel OIDC token's claims without verifying its
// signature and returns it as a credential obtained at now. A token that
// is not a JWT, has no exp, or has expired is an error; the error never
// contains the token.
func parseOIDCToken(token string, now time.Time) (*Credential, *oidcClaims, error) {
	claims, err := unverifiedClaims(token)
	if err != nil {
		return nil, nil, err
	}
	if claims.ExpiresAt == nil {
		return nil, nil, errors.New("token has no exp claim")
	}
	exp := claims.ExpiresAt.Time
	if !now.Before(exp) {
		return nil, nil, fmt.Errorf("token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	c := newCredential(token, methodOIDC, exp, now)
	if claims.IssuedAt != nil && claims.IssuedAt.Before(exp) {
		// the margin is a tenth of the token's whole life, not of what is
		// left of it when the proxy first sees it
		c.setExpiryMargin(defaultExpiryMargin(exp.Sub(claims.IssuedAt.Time)))
	}
	c.ownerID, c.projectID = claims.OwnerID, claims.ProjectID
	return c, claims, nil
}

// unverifiedClaims reads a token's claims, checking neither its
// signature nor its times; the error never contains the token.
func unverifiedClaims(token string) (*oidcClaims, error) {
	if !looksLikeJWT(token) {
		return nil, errors.New("not a JWT")
	}
	var claims oidcClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return nil, fmt.Errorf("not a valid JWT: %s", jwtErrorReason(err))
	}
	return &claims, nil
}

// jwtErrorReason strips golang-jwt's wrapping down to the reason; it
// never quotes the token.
func jwtErrorReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable"
	default:
		return "invalid claims"
	}
}

// checkClaims verifies that a token is for the expected team and project
// when those are known as ids (team_…, prj_…); names and slugs cannot be
// compared with the token's id claims.
func checkClaims(c *oidcClaims, team, project string) error {
	if strings.HasPrefix(project, "prj_") && c.ProjectID != project {
		return fmt.Errorf("token is for project %q, not %q", c.ProjectID, project)
	}
	if strings.HasPrefix(team, "team_") && c.OwnerID != team {
		return fmt.Errorf("token is for owner %q, not %q", c.OwnerID, team)
	}
	return nil
}
