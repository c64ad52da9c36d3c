package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// PushConfig makes the handler accept fresh OIDC tokens POSTed to Path by
// something that has one (a dashboard's cron, a deploy hook). There is no
// shared secret: the pushed JWT itself is verified against its issuer's
// JWKS and must be for the expected team and project.
type PushConfig struct {
	// The path that accepts pushes, e.g. /ai-gateway-auth/token. Required.
	Path string `json:"path,omitempty"`
	// The accepted issuer. Default: https on host oidc.vercel.com, any
	// path.
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
	policy  issuerPolicy
	team    string
	project string
}

// servePush handles POST <push path>. It answers 204 when the token is
// valid (it is used if it expires later than the cached one; the header
// Ai-Gateway-Auth-Token-Used says whether it was), 400 for a body that
// holds no token, 401 for a token that does not verify, 413 for a body
// too large, 422 for a valid token for another team or project.
func (h *Handler) servePush(w http.ResponseWriter, r *http.Request, t *pushTarget) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeError(w, r, http.StatusMethodNotAllowed, errInvalidRequest, "method_not_allowed", "push a token with POST")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return h.pushRefused(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", "body is larger than 64 KiB")
	}
	if err != nil {
		return h.pushRefused(w, r, http.StatusBadRequest, "invalid_request", "reading body: "+err.Error())
	}
	token, err := tokenFromPushBody(body)
	if err != nil {
		return h.pushRefused(w, r, http.StatusBadRequest, "invalid_request", err.Error())
	}
	var claims oidcClaims
	if err := h.jwks.verify(r.Context(), token, t.policy, "", &claims); err != nil {
		return h.pushRefused(w, r, http.StatusUnauthorized, "invalid_token", err.Error())
	}
	team, project := t.team, t.project
	if cur := t.source.state.refresher.current.Load(); cur != nil {
		if team == "" {
			team = cur.ownerID
		}
		if project == "" {
			project = cur.projectID
		}
	}
	if team == "" || project == "" {
		return h.pushRefused(w, r, http.StatusUnprocessableEntity, "unexpected_token",
			"no expected team and project to check the token against: set push { team … project … }")
	}
	if claims.OwnerID != team || claims.ProjectID != project {
		return h.pushRefused(w, r, http.StatusUnprocessableEntity, "unexpected_token",
			fmt.Sprintf("token is for owner %q project %q, not %q %q", claims.OwnerID, claims.ProjectID, team, project))
	}
	cred, _, err := parseOIDCToken(token, time.Now())
	if err != nil {
		return h.pushRefused(w, r, http.StatusUnauthorized, "invalid_token", err.Error())
	}
	used := t.source.Offer(cred)
	h.logger.Info("token pushed", pushFields(r, cred, used)...)
	observePush(used)
	w.Header().Set("Ai-Gateway-Auth-Token-Used", fmt.Sprint(used))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) pushRefused(w http.ResponseWriter, r *http.Request, status int, code, reason string) error {
	h.logger.Warn("token push refused", pushRefusedFields(r, status, reason)...)
	pushesTotal.WithLabelValues("refused").Inc()
	return writeError(w, r, status, errInvalidRequest, code, "token push refused: "+reason)
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
	if !looksLikeJWT(token) {
		return "", errors.New("no JWT in the body: send {\"token\":\"<jwt>\"} or the raw JWT")
	}
	return token, nil
}
