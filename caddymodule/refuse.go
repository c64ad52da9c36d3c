package caddymodule

import (
	"net/http"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Refusals: a request the proxy answers itself, never forwarded (whole).
// A step of ServeHTTP (or of the push route) that refuses a request
// returns a *refusal, built by one of the functions below; refuse is the
// one place that counts it, logs it and writes the error in the shape the
// client's SDK parses (errors.go). What a client reads (message) says
// what is wrong in terms it can act on; what names the configuration
// (reasons, paths, addresses) goes to the log only.

// refusal is what the proxy answers, counts and logs for a request it
// refuses.
type refusal struct {
	status  int
	errType string // the SDK's error type
	code    string // the error code, and the X-Ai-Gateway-Auth-Error header
	message string // what the client reads
	// header values to set: Retry-After (formatted) and Allow, if not ""
	retryAfter string
	allow      string
	// counted: an outcome of requests_total and, if not nil, one more
	counter, also prometheus.Counter
	// logged: event at level, with fields (built only when logged); no
	// event: not logged
	level  zapcore.Level
	event  string
	fields func() []zap.Field
}

// refuse counts, logs and answers a refusal.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, f *refusal) error {
	if f.counter != nil {
		f.counter.Inc()
	}
	if f.also != nil {
		f.also.Inc()
	}
	if f.event != "" {
		if c := h.logger.Check(f.level, f.event); c != nil {
			c.Write(f.fields()...)
		}
	}
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	if f.allow != "" {
		w.Header().Set("Allow", f.allow)
	}
	return writeError(w, r, f.status, f.errType, f.code, f.message)
}

// rejected is a 401 for a missing, unknown or revoked client key. client
// is a revoked client (its key is valid), nil otherwise: an unverified
// key names no one.
func rejected(r *http.Request, client *identity.Principal, reason string) *refusal {
	msg := reason + ": this proxy accepts only the client keys it is configured with; " +
		"set your SDK's API key (sent as Authorization: Bearer, x-api-key or api-key) to the key you were given"
	if reason == identity.RejectRevoked {
		msg = reason + ": this client's access has been revoked"
	}
	return &refusal{
		status: http.StatusUnauthorized, errType: errAuthentication, code: "invalid_api_key", message: msg,
		counter: clientRejectedCounter,
		level:   zapcore.InfoLevel, event: "client rejected",
		fields: func() []zap.Field {
			fields := []zap.Field{zap.String("reason", reason), zap.String("remote_ip", remoteIP(r)),
				zap.String("method", r.Method), zap.String("path", safetext.Clipped(r.URL.Path))}
			if client != nil {
				fields = append(fields, zap.Any("client", client.Name()))
			}
			return fields
		},
	}
}

// forbidden is a 403 with message, which says what is wrong in general
// terms; reason, which may name configured values, goes to the log only.
func forbidden(r *http.Request, code, message, reason string) *refusal {
	return &refusal{
		status: http.StatusForbidden, errType: errPermission, code: code, message: message,
		counter: forbiddenCounter,
		level:   zapcore.InfoLevel, event: "request forbidden",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("reason", reason), zap.String("remote_ip", remoteIP(r)),
				zap.String("method", r.Method)}
		},
	}
}

// badRequest is a 400 for a request the module refuses to forward.
func badRequest(r *http.Request, client any, code, message string) *refusal {
	return &refusal{
		status: http.StatusBadRequest, errType: errInvalidRequest, code: code, message: message,
		counter: badRequestCounter,
		level:   zapcore.InfoLevel, event: "request refused",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("code", code), zap.Any("client", client), zap.String("remote_ip", remoteIP(r)),
				zap.String("method", r.Method)}
		},
	}
}

// noCredential is a 503: no source had a usable credential (err says
// why), and the soonest any may have one again is retry from now.
func noCredential(client any, err error, retry time.Duration) *refusal {
	return &refusal{
		status: http.StatusServiceUnavailable, errType: errUnavailable, code: "no_upstream_credential",
		// The client learns which sources were tried and why in
		// categories ("vercel_oidc (mint: failed)"); names, paths and
		// addresses are for the log and the admin status route.
		message: "the proxy has no usable upstream credential right now; tried " + safetext.Public(err, "every source") +
			"; retry after the time in the Retry-After header",
		retryAfter: retryAfterSeconds(retry),
		counter:    noCredentialCounter,
		// the whole reasons name env variables, files and API
		// addresses: they go to the log (and the admin status route),
		// never to a client
		level: zapcore.ErrorLevel, event: "no upstream credential",
		fields: func() []zap.Field { return []zap.Field{zap.Any("client", client), zap.Error(err)} },
	}
}

// unsupportedBody is a 415 for a body the proxy cannot read as AI
// Gateway would (a content coding, a foreign charset) while metering.
func unsupportedBody(r *http.Request, name, message string) *refusal {
	const code = "request_encoding_not_allowed"
	return &refusal{
		status: http.StatusUnsupportedMediaType, errType: errInvalidRequest, code: code, message: message,
		counter: badRequestCounter,
		level:   zapcore.InfoLevel, event: "request refused",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("code", code), zap.String("client", name), zap.String("method", r.Method)}
		},
	}
}

// invalidBody is a 400 for a body the body editor refused, before it
// went upstream or as it streamed.
func invalidBody(r *http.Request, name string, ref *jsonbody.Refusal) *refusal {
	const code = "invalid_request_body"
	return &refusal{
		status: http.StatusBadRequest, errType: errInvalidRequest, code: code, message: ref.Error(),
		counter: badRequestCounter, also: bodyEditsRefused,
		level: zapcore.InfoLevel, event: "request refused",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("code", code), zap.String("client", name), zap.String("method", r.Method),
				zap.String("reason", ref.Reason())}
		},
	}
}

// errRateLimit is the error type both SDKs map to a rate limit error
// (with status 429).
const errRateLimit = "rate_limit_error"

// overLimit is a 429: the engine refused the client's request (a limit,
// when it may retry, and for a budget whether its worst case can fit at
// all: the message then says to lower the output cap).
func overLimit(name string, ref *limits.Refusal) *refusal {
	return &refusal{
		status: http.StatusTooManyRequests, errType: errRateLimit, code: ref.Code(), message: ref.Message(),
		retryAfter: retryAfterSeconds(ref.RetryAfter),
		counter:    limitedCounter, also: limitRefusalsTotal.WithLabelValues(ref.Limit),
		level: zapcore.InfoLevel, event: "client over its limit",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("client", name), zap.String("limit", ref.Limit), zap.Duration("retry_after", ref.RetryAfter),
				zap.Bool("never_fits", ref.NeverFits)}
		},
	}
}

// catalogRetry is the Retry-After of catalog_unavailable: the catalog is
// being read in the background.
const catalogRetry = 5 * time.Second

// catalogUnavailable is a 503: a dollar limit applies and no catalog of
// the gateway's prices was ever read, so the request's worst case cannot
// be priced.
func catalogUnavailable(name string) *refusal {
	const code = "catalog_unavailable"
	return &refusal{
		status: http.StatusServiceUnavailable, errType: errUnavailable, code: code,
		message: "this proxy has not read the gateway's model prices yet, and this client has a budget in US dollars; " +
			"retry after the time in the Retry-After header",
		retryAfter: retryAfterSeconds(catalogRetry),
		counter:    limitedCounter, // a dollar limit that cannot be checked holds the request
		level:      zapcore.WarnLevel, event: "no catalog to price a request",
		fields: func() []zap.Field { return []zap.Field{zap.String("client", name)} },
	}
}

// pushRefused is a push the push route refuses with status: err's public
// text goes to the pusher, its reason to the log.
func pushRefused(r *http.Request, status int, code string, err error) *refusal {
	return &refusal{
		status: status, errType: errInvalidRequest, code: code,
		message: "token push refused: " + safetext.Public(err, "the token could not be verified"),
		counter: pushesTotal.WithLabelValues("refused"),
		level:   zapcore.WarnLevel, event: "token push refused",
		fields: func() []zap.Field { return pushRefusedFields(r, status, err.Error()) },
	}
}

// pushNotPost is a 405 for a push that is not a POST; it is neither
// counted nor logged.
func pushNotPost() *refusal {
	return &refusal{
		status: http.StatusMethodNotAllowed, errType: errInvalidRequest, code: "method_not_allowed",
		message: "push a token with POST", allow: http.MethodPost,
	}
}

func remoteIP(r *http.Request) string {
	if addr, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && addr != "" {
		return addr
	}
	return r.RemoteAddr
}
