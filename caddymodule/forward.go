package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// forward hands the request to the next handler, with a replay after a
// 401 when the credential's source can replace it.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, src int, cred *credential.Credential) error {
	if h.refusables[src] == nil { // a static key: no replay
		err := next.ServeHTTP(w, r)
		countForwarded(w)
		return err
	}
	return h.serveWithReplay(w, r, next, src, cred, h.refusables[src])
}

// credential returns the first usable credential in priority order,
// waiting (up to credential_wait) only when no source has one cached.
func (h *Handler) credential(ctx context.Context) (int, *credential.Credential, error) {
	now := time.Now()
	for i, s := range h.sources {
		if c := s.Current(now); c != nil {
			return i, c, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.CredentialWait))
	defer cancel()
	var reasons, public []string
	for i, s := range h.sources {
		c, err := s.Fetch(ctx)
		if err == nil {
			return i, c, nil
		}
		reasons = append(reasons, s.Kind()+": "+err.Error())
		public = append(public, s.Kind()+" ("+safetext.Public(err, "unavailable")+")")
	}
	return -1, nil, safetext.Refuse(strings.Join(public, "; "), strings.Join(reasons, "; "))
}

// retryAfter is the soonest any source may have a credential again (0:
// none says).
func (h *Handler) retryAfter() time.Duration {
	var retry time.Duration
	for _, s := range h.sources {
		if ra, ok := s.(interface{ RetryAfter() time.Duration }); ok {
			if d := ra.RetryAfter(); retry == 0 || d < retry {
				retry = d
			}
		}
	}
	return retry
}

// setUpstreamAuth removes every credential the client sent (and the
// Vercel Sandbox forwarding headers) and sets the upstream credential.
// One pass over the header map is cheaper than a delete per name; the
// header slices are the credential's own, built once.
func setUpstreamAuth(hdr http.Header, cred *credential.Credential) {
	for k := range hdr {
		if controlledHeader(k) || controlledHeaderAlias(k) { // X_Api_Key and the like
			delete(hdr, k) // Authorization and the method are set below
		}
	}
	setCredential(hdr, cred)
}

// setCredential sets the upstream credential and its method. The header
// slices are the credential's own, built once.
func setCredential(hdr http.Header, cred *credential.Credential) {
	hdr["Authorization"] = cred.AuthHeader()
	hdr["Ai-Gateway-Auth-Method"] = cred.MethodHeader()
}

// serveWithReplay forwards the request; if the upstream answers 401
// before anything reached the client, it drops the credential, gets a
// fresh one and replays the request once (if its body could be kept).
func (h *Handler) serveWithReplay(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler,
	src int, cred *credential.Credential, source refusable) error {
	origBody := r.Body
	h.replayBudget.Enter()
	defer h.replayBudget.Leave()
	a := replay.Begin(w, r, h.RetryBodyLimit, h.replayBudget)
	defer a.End()
	err := next.ServeHTTP(a.Writer(), r)
	if !a.Held() {
		r.Body = origBody
		countForwarded(w)
		return err
	}

	// The source decides whether the 401 costs the credential: only a
	// different token replaces it (see refresher.Refused).
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.CredentialWait))
	fresh := source.Refused(ctx, cred)
	cancel()
	if fresh == nil {
		forwardedCounter.Inc()
		return a.SendHeld()
	}
	body, err := a.Body()
	if errors.Is(err, jsonbody.ErrRefused) {
		// the body editor refused the rest: answered 400 (refusedAsItStreamed)
		a.Discard(w.Header())
		return err
	}
	if err != nil {
		// The credential is replaced, so sending the request again works:
		// the SDKs (OpenAI's, Anthropic's) retry an answer so marked at
		// once, whatever its status; the 401 itself stays the gateway's.
		w.Header().Set("X-Should-Retry", "true")
		h.logNoReplay(src, err)
		forwardedCounter.Inc()
		return a.SendHeld()
	}
	a.Discard(w.Header()) // the held 401 is not needed while the replay streams
	if origBody == nil || origBody == http.NoBody {
		r.Body = origBody
	} else {
		r.Body = body
	}
	// only the credential changes: the client's headers are already gone,
	// and the module's own (reporting) must stay
	setCredential(r.Header, fresh)
	replayedCounter.Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "replaying request with a fresh credential"); c != nil {
		c.Write(zap.String("source", h.sources[src].Kind()), zap.Time("expires", fresh.Expires()))
	}
	err = next.ServeHTTP(w, r)
	r.Body = origBody
	return err
}

// logNoReplay says why a request refused with a replaceable credential
// was not replayed.
func (h *Handler) logNoReplay(src int, why error) {
	kind := zap.String("source", h.sources[src].Kind())
	switch why {
	case replay.ErrBodyTooLarge:
		h.logger.Warn("upstream refused the credential; request body too large to replay",
			kind, zap.Int64("retry_body_limit", h.RetryBodyLimit))
	case replay.ErrMemory:
		h.logger.Warn("upstream refused the credential; replay memory in use, request body not kept",
			kind, zap.Int64("retry_memory_limit", h.replayBudget.Limit()))
	default:
		h.logger.Warn("upstream refused the credential; request body could not be read again",
			kind, zap.Error(why))
	}
}

// refusable is a source whose credential can be replaced after the
// upstream refused it: Refused returns the credential to replay with, or
// nil when the request's 401 must go to the client as it is.
type refusable interface {
	Refused(ctx context.Context, c *credential.Credential) *credential.Credential
}
