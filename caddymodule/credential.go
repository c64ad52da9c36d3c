package caddymodule

import (
	"context"
	"crypto/sha256"
	"time"
)

// Authentication methods, as the Vercel AI SDK names them in the
// ai-gateway-auth-method header.
const (
	methodAPIKey = "api-key"
	methodOIDC   = "oidc"
)

// Credential is one upstream credential. Its value is never logged,
// marshaled or written into an error.
type Credential struct {
	value   string
	expires time.Time // zero: never expires
	// usableUntil is expires less a safety margin: a token is not sent in
	// its last seconds, so clock skew and the time a request spends in
	// flight do not turn into upstream 401s.
	usableUntil time.Time
	method      string // methodAPIKey or methodOIDC
	// refreshAt is when a refresh should start; zero for credentials that
	// are never refreshed.
	refreshAt time.Time
	obtained  time.Time
	// For OIDC tokens, whom the token is for (checked against pushes).
	ownerID, projectID string

	// Header values built once per credential so that the hot path
	// allocates nothing. Shared between requests: reverse_proxy clones
	// the header map before it changes anything, and Header.Set replaces
	// the slice rather than writing into it.
	authHeader   []string
	methodHeader []string
}

func newCredential(value, method string, expires, obtained time.Time) *Credential {
	c := &Credential{
		value:        value,
		method:       method,
		expires:      expires,
		obtained:     obtained,
		authHeader:   []string{"Bearer " + value},
		methodHeader: []string{method},
	}
	c.setExpiryMargin(defaultExpiryMargin(expires.Sub(obtained)))
	return c
}

// maxDefaultExpiryMargin bounds the default margin before exp within which
// a token is no longer sent.
const maxDefaultExpiryMargin = 5 * time.Second

// defaultExpiryMargin is the smaller of 5s and a tenth of the token's
// lifetime, so that short-lived test tokens (8–10s) stay usable.
func defaultExpiryMargin(lifetime time.Duration) time.Duration {
	return max(0, min(maxDefaultExpiryMargin, lifetime/10))
}

// setExpiryMargin makes the credential unusable margin before its exp.
func (c *Credential) setExpiryMargin(margin time.Duration) {
	if !c.expires.IsZero() {
		c.usableUntil = c.expires.Add(-margin)
	}
}

// usable reports whether the credential may be sent at now: a token is
// never forwarded in the last moments before its exp (see usableUntil),
// let alone at or after it.
func (c *Credential) usable(now time.Time) bool {
	return c != nil && (c.expires.IsZero() || now.Before(c.usableUntil))
}

// String keeps the value out of any accidental %v.
func (c *Credential) String() string {
	if c == nil {
		return "<no credential>"
	}
	if c.expires.IsZero() {
		return c.method + " credential (no expiry)"
	}
	return c.method + " credential expiring " + c.expires.UTC().Format(time.RFC3339)
}

// GoString keeps the value out of %#v.
func (c *Credential) GoString() string { return c.String() }

// Source is a provider of upstream credentials: a guest module in the
// http.handlers.ai_gateway_auth.credentials namespace.
type Source interface {
	// Current returns the credential to use at now without blocking, or
	// nil when the source has none usable. It is on the hot path: no
	// locks, no I/O. It may start a background refresh.
	Current(now time.Time) *Credential

	// Fetch returns a usable credential, waiting for a refresh when the
	// source can get one that way, until ctx ends. The error says why
	// there is none and never contains a credential.
	Fetch(ctx context.Context) (*Credential, error)

	// Kind is the source's name in the config and in placeholders,
	// metrics and status: "static" or "vercel_oidc".
	Kind() string

	// Status describes the source for operators; never a credential.
	Status(now time.Time) SourceStatus
}

// SourceStatus is what the admin status endpoint reports for a source.
type SourceStatus struct {
	Kind string `json:"kind"`
	// ID is a vercel_oidc source's source_id, as in its metrics.
	ID          string     `json:"source_id,omitempty"`
	Usable      bool       `json:"usable"`
	Method      string     `json:"method,omitempty"`
	Expires     *time.Time `json:"expires,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	NextRefresh *time.Time `json:"next_refresh,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Shared is the fleet sharing of a vercel_oidc source with share on.
	Shared *SharedStatus `json:"shared,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func sha256Sum(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
