package oidc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the Vercel OIDC claims the proxy reads. The signature is
// not checked when they are read with UnverifiedClaims: the gateway
// verifies what it is sent; the proxy only needs to know when a token
// expires and whom it is for. Cache.Verify checks them.
type Claims struct {
	OwnerID   string `json:"owner_id"`
	ProjectID string `json:"project_id"`
	jwt.RegisteredClaims
}

// LooksLikeJWT is a cheap check for three non-empty dot-separated parts
// of base64url characters. The character check matters: a dotenv file
// whose only dots are the token's ("VERCEL_OIDC_TOKEN=eyJ….….…") must not
// pass for a raw JWT.
func LooksLikeJWT(s string) bool {
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

// UnverifiedClaims reads a token's claims, checking neither its
// signature nor its times; the error never contains the token.
func UnverifiedClaims(token string) (*Claims, error) {
	if !LooksLikeJWT(token) {
		return nil, errors.New("not a JWT")
	}
	var claims Claims
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

// CheckProject verifies that a token is for the expected team and project
// when those are known as ids (team_…, prj_…); names and slugs cannot be
// compared with the token's id claims.
func CheckProject(c *Claims, team, project string) error {
	if strings.HasPrefix(project, "prj_") && c.ProjectID != project {
		return fmt.Errorf("token is for project %q, not %q", c.ProjectID, project)
	}
	if strings.HasPrefix(team, "team_") && c.OwnerID != team {
		return fmt.Errorf("token is for owner %q, not %q", c.OwnerID, team)
	}
	return nil
}
