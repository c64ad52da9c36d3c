package credential

import (
	"errors"
	"fmt"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
)

// ParseToken reads a Vercel OIDC token's claims without verifying its
// signature and returns it as a credential obtained at now. A token that
// is not a JWT, has no exp, or has expired is an error; the error never
// contains the token.
func ParseToken(token string, now time.Time) (*Credential, *oidc.Claims, error) {
	claims, err := oidc.UnverifiedClaims(token)
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
	c := New(token, MethodOIDC, exp, now)
	if claims.IssuedAt != nil && claims.IssuedAt.Before(exp) {
		// the margin is a tenth of the token's whole life, not of what is
		// left of it when the proxy first sees it
		c.setExpiryMargin(defaultExpiryMargin(exp.Sub(claims.IssuedAt.Time)))
	}
	c.ownerID, c.projectID = claims.OwnerID, claims.ProjectID
	return c, claims, nil
}
