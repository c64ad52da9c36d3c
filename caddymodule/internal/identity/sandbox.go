package identity

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/golang-jwt/jwt/v5"
)

// Vercel Sandbox forwardURL mode: a sandbox whose network policy forwards
// ai-gateway.vercel.sh to this proxy sends each request with a
// vercel-sandbox-oidc-token header (an RS256 JWT from oidc.vercel.com
// whose aud is the forwardURL) and vercel-forwarded-* headers naming the
// host it meant to reach.

// The headers of a forwarded request, by their canonical names: the
// module removes every one of them before the request goes upstream.
const (
	HeaderSandboxToken    = "Vercel-Sandbox-Oidc-Token"
	HeaderForwardedHost   = "Vercel-Forwarded-Host"
	HeaderForwardedScheme = "Vercel-Forwarded-Scheme"
	HeaderForwardedPort   = "Vercel-Forwarded-Port"
	HeaderForwardedPath   = "Vercel-Forwarded-Path"
)

const (
	defaultGatewayHost = "ai-gateway.vercel.sh"
	// maxVerifiedSandboxTokens bounds the verification cache.
	maxVerifiedSandboxTokens = 10000
)

// SandboxConfig is a vercel_sandbox block with its placeholders
// resolved: the module checks that it names an audience and a team.
type SandboxConfig struct {
	// Audience is the forwardURL exactly as the sandbox network policy
	// names it; the token's aud must equal it (a trailing slash is
	// ignored).
	Audience string
	// Teams are the allowed team_id values.
	Teams []string
	// Projects are the allowed project_id values; none: any project of an
	// allowed team.
	Projects []string
	// Issuer, when set, is the only accepted issuer; else what the teams
	// imply, https://oidc.vercel.com/<team> for each team.
	Issuer string
	// JWKSURL is where the issuer's keys are; "": <iss>/.well-known/jwks.
	JWKSURL string
	// ForwardedHosts are the hosts a sandbox may have meant
	// (vercel-forwarded-host), in any case; none: ai-gateway.vercel.sh.
	ForwardedHosts []string
}

// sandboxClaims are the claims of a sandbox OIDC token.
type sandboxClaims struct {
	TeamID      string `json:"team_id"`
	ProjectID   string `json:"project_id"`
	SandboxID   string `json:"sandbox_id"`
	SandboxName string `json:"sandbox_name"`
	jwt.RegisteredClaims
}

// SandboxVerifier verifies sandbox tokens and caches each verified token
// until its exp, so a busy sandbox costs one RSA verification, not one
// per request.
type SandboxVerifier struct {
	cfg      SandboxConfig
	audience string
	policy   oidc.IssuerPolicy
	jwks     *oidc.Cache

	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedSandbox
}

type verifiedSandbox struct {
	client  *Principal
	expires time.Time
}

// NewSandboxVerifier verifies the tokens of the sandboxes cfg allows,
// with the keys of jwks.
func NewSandboxVerifier(cfg SandboxConfig, jwks *oidc.Cache) *SandboxVerifier {
	hosts := make([]string, 0, len(cfg.ForwardedHosts))
	for _, host := range cfg.ForwardedHosts {
		hosts = append(hosts, strings.ToLower(host))
	}
	if len(hosts) == 0 {
		hosts = []string{defaultGatewayHost}
	}
	cfg.ForwardedHosts = hosts
	var issuers []string
	for _, team := range cfg.Teams {
		issuers = append(issuers, oidc.VercelIssuer(team))
	}
	return &SandboxVerifier{
		cfg:      cfg,
		audience: strings.TrimRight(cfg.Audience, "/"),
		policy:   oidc.NewIssuerPolicy(cfg.Issuer, cfg.JWKSURL, issuers...),
		jwks:     jwks,
		verified: map[[sha256.Size]byte]verifiedSandbox{},
	}
}

// Policy is the issuers the verifier trusts and where their keys are.
func (v *SandboxVerifier) Policy() oidc.IssuerPolicy { return v.policy }

// Identify checks a forwarded request and returns its sandbox. The error
// is the reason for a 403: its Error for the log, its safetext.Public for
// the client.
func (v *SandboxVerifier) Identify(r *http.Request) (*Principal, error) {
	if host := r.Header.Get(HeaderForwardedHost); host != "" {
		h := strings.ToLower(host)
		if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
			h = h[:i]
		}
		if !slices.Contains(v.cfg.ForwardedHosts, h) {
			return nil, safetext.Refuse("the request was forwarded for a host this proxy does not serve",
				"forwarded host "+safetext.Quoted(host)+" is not an allowed gateway host")

		}
	}
	token := r.Header.Get(HeaderSandboxToken)
	now := time.Now()
	digest := sha256.Sum256([]byte(token))
	v.mu.Lock()
	hit, ok := v.verified[digest]
	v.mu.Unlock()
	if ok && now.Before(hit.expires) {
		return hit.client, nil
	}
	claims, err := v.verify(r.Context(), token)
	if err != nil {
		return nil, err
	}
	entry := verifiedSandbox{client: sandboxPrincipal(claims), expires: claims.ExpiresAt.Add(oidc.Leeway)}
	v.mu.Lock()
	if len(v.verified) >= maxVerifiedSandboxTokens {
		for k, e := range v.verified {
			if !now.Before(e.expires) || len(v.verified) >= maxVerifiedSandboxTokens {
				delete(v.verified, k)
			}
		}
	}
	v.verified[digest] = entry
	v.mu.Unlock()
	return entry.client, nil
}

func (v *SandboxVerifier) verify(ctx context.Context, token string) (*sandboxClaims, error) {
	sandboxVerificationsTotal.Inc()
	var claims sandboxClaims
	if err := v.jwks.Verify(ctx, token, v.policy, "", &claims); err != nil {
		return nil, safetext.Refuse(sandboxTokenProblems[oidc.ProblemOf(err)], "sandbox token: "+err.Error())
	}
	if !slices.ContainsFunc(claims.Audience, func(a string) bool { return strings.TrimRight(a, "/") == v.audience }) {
		return nil, safetext.Refuse(sandboxTokenProblems[oidc.ProblemWrongAudience], "sandbox token: audience is not this proxy's forwardURL")
	}
	if !slices.Contains(v.cfg.Teams, claims.TeamID) {
		return nil, safetext.Refuse(sandboxNotAllowed, "sandbox token: team "+safetext.Quoted(claims.TeamID)+" is not allowed")
	}
	if len(v.cfg.Projects) > 0 && !slices.Contains(v.cfg.Projects, claims.ProjectID) {
		return nil, safetext.Refuse(sandboxNotAllowed, "sandbox token: project "+safetext.Quoted(claims.ProjectID)+" is not allowed")
	}
	if claims.SandboxID == "" { // the sandbox's identity: a name alone could be anyone's
		return nil, safetext.Refuse("the sandbox token names no sandbox", "sandbox token: no sandbox_id")
	}
	return &claims, nil
}

// What a sandbox is told when its token is refused: categories, never a
// configured value or what the token carried.
var sandboxTokenProblems = map[oidc.Problem]string{
	oidc.ProblemUnverified:    "the sandbox token could not be verified",
	oidc.ProblemExpired:       "the sandbox token has expired",
	oidc.ProblemNotYetValid:   "the sandbox token is not valid yet",
	oidc.ProblemWrongAudience: "the sandbox token is not for this proxy's forward URL",
}

const sandboxNotAllowed = "the sandbox's team or project may not use this proxy"

// UseForwardedPath takes the path the sandbox meant from
// vercel-forwarded-path, when there is one (the headers themselves are
// removed with the client's credentials by the module).
func UseForwardedPath(r *http.Request) {
	p := FirstValue(r.Header, HeaderForwardedPath)
	if p == "" || p[0] != '/' {
		return
	}
	u, err := url.ParseRequestURI(p)
	if err != nil {
		return
	}
	r.URL.Path, r.URL.RawPath = u.Path, u.RawPath
	if u.RawQuery != "" && r.URL.RawQuery == "" {
		r.URL.RawQuery = u.RawQuery
	}
}
