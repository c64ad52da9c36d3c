package caddymodule

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
)

// Vercel Sandbox forwardURL mode: a sandbox whose network policy forwards
// ai-gateway.vercel.sh to this proxy sends each request with a
// vercel-sandbox-oidc-token header (an RS256 JWT from oidc.vercel.com
// whose aud is the forwardURL) and vercel-forwarded-* headers naming the
// host it meant to reach.

const (
	headerSandboxToken    = "Vercel-Sandbox-Oidc-Token"
	headerForwardedHost   = "Vercel-Forwarded-Host"
	headerForwardedScheme = "Vercel-Forwarded-Scheme"
	headerForwardedPort   = "Vercel-Forwarded-Port"
	headerForwardedPath   = "Vercel-Forwarded-Path"
	defaultGatewayHost    = "ai-gateway.vercel.sh"
	// maxVerifiedSandboxTokens bounds the verification cache.
	maxVerifiedSandboxTokens = 10000
)

// VercelSandbox accepts requests forwarded by a Vercel Sandbox firewall
// forwardURL rule, identified by their verified sandbox OIDC token.
type VercelSandbox struct {
	// The forwardURL exactly as the sandbox network policy names it; the
	// token's aud must equal it (a trailing slash is ignored). Required.
	Audience string `json:"audience,omitempty"`
	// Allowed team_id values. At least one is required.
	Teams []string `json:"teams,omitempty"`
	// Allowed project_id values. Empty: any project of an allowed team.
	Projects []string `json:"projects,omitempty"`
	// The accepted token issuer; when set, the only one. Default: what
	// the teams imply, https://oidc.vercel.com/<team> for each team (live
	// sandbox tokens carry the team id in iss), never a path a token
	// picks: a token from any other issuer is refused before any fetch.
	Issuer string `json:"issuer,omitempty"`
	// Where the issuer's keys are. Default: <iss>/.well-known/jwks.
	JWKSURL string `json:"jwks_url,omitempty"`
	// Hosts a sandbox may have meant (vercel-forwarded-host); others are
	// refused with 403, never followed: the upstream is the one in the
	// config. Default: ai-gateway.vercel.sh.
	ForwardedHosts []string `json:"forwarded_hosts,omitempty"`
}

// sandboxClaims are the claims of a sandbox OIDC token.
type sandboxClaims struct {
	TeamID      string `json:"team_id"`
	ProjectID   string `json:"project_id"`
	SandboxID   string `json:"sandbox_id"`
	SandboxName string `json:"sandbox_name"`
	jwt.RegisteredClaims
}

// sandboxVerifier verifies sandbox tokens and caches each verified token
// until its exp, so a busy sandbox costs one RSA verification, not one
// per request.
type sandboxVerifier struct {
	cfg      VercelSandbox
	audience string
	policy   oidc.IssuerPolicy
	jwks     *oidc.Cache

	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedSandbox
}

type verifiedSandbox struct {
	client  *principal
	expires time.Time
}

func newSandboxVerifier(cfg VercelSandbox, jwks *oidc.Cache) (*sandboxVerifier, error) {
	// placeholders ({env.X}) are resolved here, as everywhere in the config
	repl := caddy.NewReplacer()
	resolve := func(vs []string) []string {
		var out []string
		for _, v := range vs {
			if v = strings.TrimSpace(repl.ReplaceAll(v, "")); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	configuredTeams := cfg.Teams // as written, to name them if they resolve to nothing
	cfg.Audience = strings.TrimSpace(repl.ReplaceAll(cfg.Audience, ""))
	cfg.Issuer = strings.TrimSpace(repl.ReplaceAll(cfg.Issuer, ""))
	cfg.JWKSURL = strings.TrimSpace(repl.ReplaceAll(cfg.JWKSURL, ""))
	cfg.Teams, cfg.Projects = resolve(cfg.Teams), resolve(cfg.Projects)
	cfg.ForwardedHosts = resolve(cfg.ForwardedHosts)
	for i, host := range cfg.ForwardedHosts {
		cfg.ForwardedHosts[i] = strings.ToLower(host)
	}
	if len(cfg.ForwardedHosts) == 0 {
		cfg.ForwardedHosts = []string{defaultGatewayHost}
	}
	if cfg.Audience == "" {
		return nil, errors.New("vercel_sandbox needs `audience <forwardURL>`: the URL of the sandbox policy's forwardURL (is its placeholder set?)")
	}
	if len(cfg.Teams) == 0 {
		return nil, fmt.Errorf("vercel_sandbox needs at least one `team team_…`: the teams whose sandboxes may use the proxy (%s resolved to nothing: are the variables set?)", strings.Join(configuredTeams, " "))
	}

	var issuers []string
	for _, team := range cfg.Teams {
		issuers = append(issuers, oidc.VercelIssuer(team))
	}
	return &sandboxVerifier{
		cfg:      cfg,
		audience: strings.TrimRight(cfg.Audience, "/"),
		policy:   oidc.NewIssuerPolicy(cfg.Issuer, cfg.JWKSURL, issuers...),
		jwks:     jwks,
		verified: map[[sha256.Size]byte]verifiedSandbox{},
	}, nil
}

// identify checks a forwarded request and returns its sandbox. The error
// is the reason for a 403: its Error for the log, its publicText for the
// client.
func (v *sandboxVerifier) identify(r *http.Request) (*principal, error) {
	if host := r.Header.Get(headerForwardedHost); host != "" {
		h := strings.ToLower(host)
		if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
			h = h[:i]
		}
		if !slices.Contains(v.cfg.ForwardedHosts, h) {
			return nil, safetext.Refuse("the request was forwarded for a host this proxy does not serve",
				"forwarded host "+safetext.Quoted(host)+" is not an allowed gateway host")

		}
	}
	token := r.Header.Get(headerSandboxToken)
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

func (v *sandboxVerifier) verify(ctx context.Context, token string) (*sandboxClaims, error) {
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

// useForwardedPath takes the path the sandbox meant from
// vercel-forwarded-path, when there is one (the headers themselves are
// removed with the client's credentials in setUpstreamAuth).
func useForwardedPath(r *http.Request) {
	p := firstValue(r.Header, headerForwardedPath)
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
