package caddymodule

import (
	"errors"
	"net/http"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/policy"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The model check. Under an allowlist (the client's policy's, or the
// block's allow_models), every model a request could make the gateway
// run must be allowed, or the request gets 403 model_not_allowed in its
// SDK's shape and no inference runs:
//
//   - a JSON body's top-level `model` and its fallback models
//     (providerOptions.gateway.models, and a top-level `models`), as the
//     body editor reads them strictly (case variants and duplicates of
//     `model` are refused 400 by the editor). The check runs in the
//     editor's AtEnd hook, once the body is read and before its last
//     byte goes upstream: a refused body's upstream request is aborted
//     unfinished, so the gateway never runs it, however late `model`
//     comes. Nothing is held but what the editor holds anyway.
//   - a generation endpoint's body without `model` is refused: the
//     gateway would pick a model the allowlist was not asked about.
//   - a fallback outside the allowlist refuses the request rather than
//     being filtered out: a list rewritten behind the client's back would
//     change silently which model runs, and a refusal says what to fix.
//   - the multipart endpoints (/v1/audio/transcriptions,
//     /v1/images/edits) carry their model in a form field the proxy does
//     not read: under an allowlist they are refused (a client whose
//     allow_models is `**`, or who has none, may use them).
//   - GET /v1/models/<id>[/endpoints] for a model not allowed: 403, like
//     a request for it (the list leaves it out: modellist.go).
//
// A client with no allowlist pays nothing for any of this: its policy's
// hooks are nil.

// formModelPaths are the endpoints whose model is a multipart form field.
var formModelPaths = map[string]bool{
	"/v1/audio/transcriptions": true,
	"/v1/images/edits":         true,
}

var modelRefusalsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: metricsNamespace,
	Name:      "model_refusals_total",
	Help:      "Requests refused with 403 model_not_allowed, by the client's policy (\"\" for the block's own allow_models).",
}, []string{"policy"})

func init() {
	collectors = append(collectors, modelRefusalsTotal)
}

// modelRefusal is the error the model check gives the body editor: the
// editor's Read returns it (the upstream request is aborted) and the
// handler answers it 403.
type modelRefusal struct {
	policy  string
	message string // for the client: names the model, never the globs
}

func (e *modelRefusal) Error() string { return "request body: " + e.message }

// buildChecks makes the policy's model checks, once, so that a request
// allocates nothing for them.
func (ap *activePolicy) buildChecks() {
	m := ap.models
	if m == nil {
		return
	}
	name := ap.name
	ap.checkIfNamed = func(f jsonbody.Fields) error {
		if !f.HasModel && len(f.Fallbacks) == 0 {
			return nil
		}
		return checkModels(m, name, f)
	}
	ap.check = func(f jsonbody.Fields) error {
		if !f.HasModel {
			return &modelRefusal{policy: name, message: "the request names no model; this client may use only some models, " +
				"so every request must name its model (provider/model, as GET /v1/models lists them)"}
		}
		return checkModels(m, name, f)
	}
}

func checkModels(m *policy.Models, name string, f jsonbody.Fields) error {
	var ref *policy.Refusal
	if f.HasModel {
		ref = m.CheckRequest(f.Model, f.Fallbacks)
	} else if ref = m.CheckRequest(f.Fallbacks[0], f.Fallbacks[1:]); ref != nil {
		ref.Fallback++ // fallbacks only: the first is fallback 0
	}
	if ref != nil {
		return &modelRefusal{policy: name, message: ref.Message()}
	}
	return nil
}

// modelCheck is the hook the body editor runs at the end of r's body for
// the client's policy: nil without an allowlist.
func (ap *activePolicy) modelCheck(path string) func(jsonbody.Fields) error {
	if ap.models == nil {
		return nil
	}
	if jsonPaths[strings.TrimRight(path, "/")] { // every JSON endpoint names its model (bodyread.go)
		return ap.check
	}
	return ap.checkIfNamed
}

// checkRequestModel refuses, before anything else is read, a request
// whose model the client's allowlist cannot admit: a model the path
// names, or a multipart upload (whose model field is not read).
func checkRequestModel(r *http.Request, clientName any, pol *activePolicy) *refusal {
	if pol.models == nil {
		return nil
	}
	path := strings.TrimRight(r.URL.Path, "/")
	if formModelPaths[path] {
		return modelNotAllowed(r, clientName, pol.name, "this endpoint is not available to this client: its model is a form field "+
			"this proxy does not read, and this client may use only some models")
	}
	for _, id := range pathModels(path) {
		if id != "" && !pol.models.Allows(id) {
			ref := pol.models.CheckRequest(id, nil)
			return modelNotAllowed(r, clientName, pol.name, ref.Message())
		}
	}
	return nil
}

// pathModels are the model ids GET /v1/models/<id>[/endpoints] may name,
// read from the decoded path, so that /v1/models/openai%2Fgpt-5 and
// /v1/models/openai/gpt-5 name the same model (and the first goes
// upstream as the second: useCanonicalModelPath). With a one-segment id,
// <x>/endpoints reads two ways: the endpoints of the model x, or the
// model x/endpoints (AI Gateway's routes are /v1/models/{creator}/{model}
// and /v1/models/{creator}/{model}/endpoints); under an allowlist, both
// must be allowed.
func pathModels(path string) [2]string {
	id, ok := strings.CutPrefix(path, "/v1/models/")
	if !ok || id == "" {
		return [2]string{}
	}
	bare, ok := strings.CutSuffix(id, "/endpoints")
	switch {
	case !ok:
		return [2]string{id}
	case strings.Contains(bare, "/"):
		return [2]string{bare}
	default:
		return [2]string{bare, id}
	}
}

// modelNotAllowed is the 403 model_not_allowed refusal; message names the
// model, the log names the policy.
func modelNotAllowed(r *http.Request, clientName any, policyName, message string) *refusal {
	return &refusal{
		status: http.StatusForbidden, errType: errPermission, code: policy.RefusalCode, message: message,
		counter: forbiddenCounter, also: modelRefusalsTotal.WithLabelValues(policyName),
		level: zapcore.InfoLevel, event: "request forbidden",
		fields: func() []zap.Field {
			return []zap.Field{zap.String("reason", safetext.Clipped(message)), zap.Any("client", clientName),
				zap.String("policy", policyName), zap.String("remote_ip", remoteIP(r)), zap.String("method", r.Method)}
		},
	}
}

// asModelRefusal is the 403 for an error of the body editor that the
// model check gave, if it is one.
func asModelRefusal(r *http.Request, clientName any, err error) (*refusal, bool) {
	mr, ok := errors.AsType[*modelRefusal](err)
	if !ok {
		return nil, false
	}
	return modelNotAllowed(r, clientName, mr.policy, mr.message), true
}

// AtEnd is the body editor's AtEnd hook (metering.go): the model check,
// then, for a generation, its reservation (budget.go), so that a model
// refused reserves nothing.
func (m *meterWriter) AtEnd(f jsonbody.Fields) error {
	if m.modelCheck != nil {
		if err := m.modelCheck(f); err != nil {
			return err
		}
	}
	if m.generation {
		return m.admitBody(f)
	}
	m.model = f.Model
	return nil
}
