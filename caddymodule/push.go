package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
)

// PushConfig makes the handler accept fresh OIDC tokens POSTed to Path by
// something that has one (a dashboard's cron, a deploy hook). There is no
// shared secret: the pushed JWT itself is verified against its issuer's
// JWKS and must be for the expected team and project.
type PushConfig struct {
	// The path that accepts pushes, e.g. /ai-gateway-auth/token. Required.
	Path string `json:"path,omitempty"`
	// The accepted issuer; when set, the only one. Default: the issuers
	// the configuration implies, never a path a token picks:
	// https://oidc.vercel.com (Vercel's global issuer),
	// https://oidc.vercel.com/<team> for the push team and for the mint
	// block's team (an id or a slug), and the issuer of the token the
	// source already holds from its env, file or mint input. A project
	// whose tokens carry another team issuer (e.g. the slug, on a
	// push-only source) needs issuer set. With jwks_url set and no
	// issuer, any https://oidc.vercel.com[/<one segment>] is accepted:
	// the keys then come only from jwks_url, so no path causes a fetch.
	Issuer string `json:"issuer,omitempty"`
	// Where the issuer's keys are. Default: <iss>/.well-known/jwks.
	JWKSURL string `json:"jwks_url,omitempty"`
	// The required owner_id. Default: the mint block's team if it is an
	// id (team_…), else the owner_id of the token the source already has.
	Team string `json:"team,omitempty"`
	// The required project_id. Default: the mint block's project if it
	// is an id (prj_…), else the project_id of the token the source
	// already has.
	Project string `json:"project,omitempty"`
}

// maxPushBody is the largest push body read: a JWT is a few KiB.
const maxPushBody = 64 * 1024

// pushTarget is a source accepting pushes with its resolved expectations.
type pushTarget struct {
	source  *VercelOIDCSource
	policy  oidc.IssuerPolicy
	team    string
	project string
}

// pushUnresolved fails a load whose push team or project is given but
// resolves to nothing (an unset {env.X}), naming it: such a push block
// would otherwise compare pushes with nothing until the source holds a
// token.
func pushUnresolved(p *PushConfig) error {
	if p == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	for _, o := range [][2]string{{"team", p.Team}, {"project", p.Project}} {
		if o[1] != "" && strings.TrimSpace(repl.ReplaceAll(o[1], "")) == "" {
			return fmt.Errorf("push %s %s resolved to nothing: set the variable, or leave %s out", o[0], o[1], o[0])
		}
	}
	return nil
}

// resolvePush resolves p; mint, if not nil, supplies defaults.
func resolvePush(p *PushConfig, mint *MintConfig) *credential.PushRules {
	if p == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	resolve := func(v string) string { return strings.TrimSpace(repl.ReplaceAll(v, "")) }
	rp := &credential.PushRules{Issuer: resolve(p.Issuer), JWKSURL: resolve(p.JWKSURL), Team: resolve(p.Team), Project: resolve(p.Project)}
	var mintTeam string
	if mint != nil {
		// only ids can be compared with the token's owner_id/project_id;
		// a slug or project name leaves the default to the current token
		mintTeam = resolve(mint.Team)
		if rp.Team == "" && strings.HasPrefix(mintTeam, "team_") {
			rp.Team = mintTeam
		}
		if project := resolve(mint.Project); rp.Project == "" && strings.HasPrefix(project, "prj_") {
			rp.Project = project
		}
	}
	if rp.Issuer == "" {
		rp.Issuers = []string{oidc.VercelIssuer("")}
		for _, team := range []string{rp.Team, mintTeam} {
			if iss := oidc.VercelIssuer(team); team != "" && !slices.Contains(rp.Issuers, iss) {
				rp.Issuers = append(rp.Issuers, iss)
			}
		}
	}
	return rp
}

// newPushTarget is the push target of source s.
func newPushTarget(s *VercelOIDCSource) *pushTarget {
	rp := resolvePush(s.Push, s.Mint)
	policy := oidc.NewIssuerPolicy(rp.Issuer, rp.JWKSURL, rp.Issuers...)
	if rp.Issuer == "" {
		policy.Current = s.state.Issuer // a token the source holds: its own inputs' or a verified push's
		// With the keys pinned by jwks_url, the iss path adds nothing a
		// client could use (no fetch follows it), so the documented
		// default holds: https://oidc.vercel.com or any path under it.
		// The token's owner_id and project_id are still checked.
		policy.AnyVercelIssuer = rp.JWKSURL != ""
	}
	return &pushTarget{source: s, policy: policy, team: rp.Team, project: rp.Project}
}

// servePush handles POST <push path>. It answers 204 when the token is
// valid (it is used if it expires later than the cached one; the header
// Ai-Gateway-Auth-Token-Used says whether it was), 400 for a body that
// holds no token, 401 for a token that does not verify, 413 for a body
// too large, 422 for a valid token for another team or project. A
// refusal's body says what is wrong in general terms; the reason, with
// the configured values, goes to the log.
func (h *Handler) servePush(w http.ResponseWriter, r *http.Request, t *pushTarget) error {
	if r.Method != http.MethodPost {
		return h.refuse(w, r, pushNotPost())
	}
	cred, ref := h.verifyPush(w, r, t)
	if ref != nil {
		return h.refuse(w, r, ref)
	}
	used := t.source.Offer(cred)
	h.logger.Info("token pushed", pushFields(r, cred, used)...)
	observePush(used)
	w.Header().Set("Ai-Gateway-Auth-Token-Used", fmt.Sprint(used))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// verifyPush reads the pushed token and returns it if it verifies and is
// for the source's team and project, else the push's refusal.
func (h *Handler) verifyPush(w http.ResponseWriter, r *http.Request, t *pushTarget) (*credential.Credential, *refusal) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, pushRefused(r, http.StatusRequestEntityTooLarge, "payload_too_large",
			safetext.Refuse("the body is larger than 64 KiB", "body is larger than 64 KiB"))
	}
	if err != nil {
		return nil, pushRefused(r, http.StatusBadRequest, "invalid_request",
			safetext.Refuse("the body could not be read", "reading body: "+err.Error()))
	}
	token, err := tokenFromPushBody(body)
	if err != nil {
		return nil, pushRefused(r, http.StatusBadRequest, "invalid_request", safetext.Refuse(err.Error(), err.Error()))
	}
	var claims oidc.Claims
	if err := h.jwks.Verify(r.Context(), token, t.policy, "", &claims); err != nil {
		return nil, pushRefused(r, http.StatusUnauthorized, "invalid_token",
			safetext.Refuse(pushTokenProblems[oidc.ProblemOf(err)], err.Error()))
	}
	if err := t.expected(&claims); err != nil {
		return nil, pushRefused(r, http.StatusUnprocessableEntity, "unexpected_token", err)
	}
	cred, _, err := credential.ParseToken(token, time.Now())
	if err != nil { // verified, so expired within the leeway
		return nil, pushRefused(r, http.StatusUnauthorized, "invalid_token",
			safetext.Refuse(pushTokenProblems[oidc.ProblemExpired], err.Error()))
	}
	return cred, nil
}

// expected says why a verified token is not for the source's team and
// project (the push block's, else those of the token the source holds).
func (t *pushTarget) expected(claims *oidc.Claims) error {
	team, project := t.team, t.project
	if cur := t.source.state.Latest(); cur != nil {
		if team == "" {
			team = cur.OwnerID()
		}
		if project == "" {
			project = cur.ProjectID()
		}
	}
	if team == "" || project == "" {
		return safetext.Refuse("this proxy cannot check which project a pushed token is for yet",
			"no expected team and project to check the token against: set push { team … project … }")
	}
	if claims.OwnerID != team || claims.ProjectID != project {
		return safetext.Refuse("the token is not for this proxy's team and project",
			fmt.Sprintf("token is for owner %s project %s, not %q %q",
				safetext.Quoted(claims.OwnerID), safetext.Quoted(claims.ProjectID), team, project))
	}
	return nil
}

// What a pusher is told when its token does not verify.
var pushTokenProblems = map[oidc.Problem]string{
	oidc.ProblemUnverified:    "the token could not be verified",
	oidc.ProblemExpired:       "the token has expired",
	oidc.ProblemNotYetValid:   "the token is not valid yet",
	oidc.ProblemWrongAudience: "the token could not be verified",
}

// tokenFromPushBody accepts {"token":"<jwt>"} or the raw JWT.
func tokenFromPushBody(body []byte) (string, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return "", errors.New("empty body: send {\"token\":\"<jwt>\"} or the raw JWT")
	}
	token := string(body)
	if body[0] == '{' {
		var v struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return "", errors.New("body is not valid JSON")
		}
		token = strings.TrimSpace(v.Token)
	}
	if !oidc.LooksLikeJWT(token) {
		return "", errors.New("no JWT in the body: send {\"token\":\"<jwt>\"} or the raw JWT")
	}
	return token, nil
}
