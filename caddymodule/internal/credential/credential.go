// Package credential owns the upstream credentials: the [Credential]
// itself (a value with its expiry and the header values built once), the
// [Source] interface every credential kind implements, and the runtime of
// a Vercel OIDC source ([OIDCSource]): its inputs (an env variable, a
// token file, minting through the Vercel API with a [Minter], pushed
// tokens, the fleet's copy in Caddy's storage) and the refresher that
// serves the cached token lock-free and refreshes it ahead of expiry in
// the background, one refresh at a time, backing off after failures.
//
// It never logs, marshals or writes a credential's value into an error or
// a status, never takes a client's word for a token (a pushed token is
// verified by the caller; an upstream 401 only forces a refresh, at most
// once per interval), and never imports Caddy's HTTP packages: the
// module's source modules (static, vercel_oidc) are thin configuration
// around it. certmagic's Storage interface is the only Caddy type it
// knows, for the fleet's shared token.
package credential

import (
	"context"
	"crypto/sha256"
	"time"
)

// Authentication methods, as the Vercel AI SDK names them in the
// ai-gateway-auth-method header.
const (
	// MethodAPIKey is an AI Gateway API key.
	MethodAPIKey = "api-key"
	// MethodOIDC is a Vercel OIDC token.
	MethodOIDC = "oidc"
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

// New is a credential of method (MethodAPIKey, MethodOIDC) holding value,
// obtained at obtained and expiring at expires (zero: never).
func New(value, method string, expires, obtained time.Time) *Credential {
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

// Usable reports whether the credential may be sent at now: a token is
// never forwarded in the last moments before its exp (see usableUntil),
// let alone at or after it.
func (c *Credential) Usable(now time.Time) bool {
	return c != nil && (c.expires.IsZero() || now.Before(c.usableUntil))
}

// Expires is when the credential expires; zero: never.
func (c *Credential) Expires() time.Time { return c.expires }

// Method is MethodAPIKey or MethodOIDC.
func (c *Credential) Method() string { return c.method }

// OwnerID and ProjectID are whom an OIDC token is for (its owner_id and
// project_id claims).
func (c *Credential) OwnerID() string { return c.ownerID }

// ProjectID is the token's project_id claim.
func (c *Credential) ProjectID() string { return c.projectID }

// AuthHeader is the Authorization header's value, "Bearer <value>", as
// a header slice built once: set it, never write into it.
func (c *Credential) AuthHeader() []string { return c.authHeader }

// MethodHeader is the ai-gateway-auth-method header's value, likewise.
func (c *Credential) MethodHeader() []string { return c.methodHeader }

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

// Source is a provider of upstream credentials: the module's guest
// modules in the http.handlers.ai_gateway_auth.credentials namespace
// implement it.
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
