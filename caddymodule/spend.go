package caddymodule

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Spend per client: reporting headers, limits and usage metering, hooked
// into ServeHTTP by one call before forwarding (spend.begin) and one
// response writer that reads usage from what the client receives. With
// none of reporting, limits or usage_metrics configured, h.spend is nil
// and nothing of this runs.

// spend is a handler's provisioned reporting, limits and metering.
type spend struct {
	h        *Handler  // the catalog and reconciliation (pricing.go)
	reporter *reporter // nil without reporting
	limits   Limits
	limited  bool
	cfg      limits.Config // limits.config(), or zero: meter only
	// defaultCap is the output cap reservations assume when neither the
	// body nor the catalog gives one (default_max_tokens)
	defaultCap int64
	// store counts every client: the process's ledger and, when the
	// limits name one, a Redis (limits.go); redisKey is its pool key
	ledger   *limits.Ledger
	store    *limits.Store
	redisKey string
	logger   *zap.Logger
}

// provisionSpend sets up reporting, limits and metering, if configured.
func (h *Handler) provisionSpend() error {
	if h.Reporting == nil && h.Limits == nil && !h.UsageMetrics && !h.policiesNeedMetering() {
		return nil
	}
	h.spend = &spend{h: h, ledger: acquireLedger(), logger: h.logger, defaultCap: h.Limits.outputCap()}
	if h.Reporting != nil {
		rp, err := newReporter(*h.Reporting)
		if err != nil {
			return err
		}
		h.spend.reporter = rp
	}
	policyLimits := h.policiesLimited()
	if l := h.Limits; l != nil {
		if err := l.checkWith(policyLimits); err != nil {
			return err
		}
		h.spend.limits, h.spend.limited, h.spend.cfg = *l, true, l.config()
		h.spend.ledger.Register(h.spend, l.MaxClients)
	}
	if !h.spend.limited && policyLimits {
		h.spend.limited = true // a policy's limits only (policies.go)
		h.spend.ledger.Register(h.spend, 0)
	}
	return h.spend.provisionStore(h.Limits)
}

// cleanupSpend releases the ledger; safe after a partial Provision.
func (h *Handler) cleanupSpend() {
	if h.spend != nil {
		h.spend.releaseStore()
		h.spend.ledger.Unregister(h.spend)
		releaseLedger()
		h.spend = nil
	}
}

// begin refuses a body the proxy could not read as AI Gateway would (a
// content coding, a foreign charset) and a client over its limits,
// stamps the reporting headers, sets up the body's reading and edits
// (refusing a small body the editor refuses, bodyread.go) and returns
// the writer that meters the response and the request to forward. err
// is the client's own error reading a small body (Caddy answers it). Call
// refusedAsItStreamed once the request is forwarded, then end, on the
// writer.
func (s *spend) begin(w http.ResponseWriter, r *http.Request, client *identity.Principal, pol *activePolicy) (*meterWriter, *http.Request, *refusal, error) {
	name, _ := client.ID().(string)
	if encodedBody(r) {
		// a compressed body could carry attribution past the editor
		return nil, r, unsupportedBody(r, name, "send the request body uncompressed: this proxy checks what it carries (no Content-Encoding)"), nil
	}
	if foreignCharset(r) { // bodyread.go
		return nil, r, unsupportedBody(r, name, "send the request body as UTF-8 JSON: this proxy reads it as such (no charset but utf-8 in Content-Type)"), nil
	}
	// pol is the client's policy, chosen once (ServeHTTP: policyFor): its
	// cfg is the limits the client is admitted under, the policy's or
	// the block's (what limitsFor gave before policies)
	mw := &meterWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, spend: s, id: name, r: r, cfg: pol.cfg, policy: pol.name}
	if ref := mw.admitAtStart(); ref != nil { // budget.go
		return nil, r, ref, nil
	}
	var user *string
	if pol.reporter != nil {
		user = pol.reporter.stamp(r, name)
	}
	// Usage is read from the answer as it passes. Without the client's
	// Accept-Encoding, reverse_proxy's transport asks for gzip itself and
	// hands on the answer decompressed, so a gzipped JSON answer (AI
	// Gateway compresses whole answers for clients that accept it) is
	// metered too; the leg between proxy and gateway stays compressed.
	delete(r.Header, "Accept-Encoding")
	req, err := mw.prepare(r, pol.reporter != nil, user, pol.modelCheck(r.URL.Path))
	if err != nil { // a body refused before anything went upstream (bodyread.go)
		mw.abandon()
		if ref := mw.refusedAtEnd(err); ref != nil {
			return nil, r, ref, nil
		}
		ref, err := bodyError(r, name, err)
		return nil, r, ref, err
	}
	return mw, req, nil, nil
}

// encodedBody reports whether r has a body in a content coding: any
// Content-Encoding element but identity, in any of the header's lines
// (a client can send several, and a comma list in each; reading only the
// first line let `identity` then `gzip` through). Empty elements are
// ignored, as RFC 9110's list syntax says.
func encodedBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	for _, line := range r.Header["Content-Encoding"] {
		for coding := range strings.SplitSeq(line, ",") {
			if coding = textproto.TrimString(coding); coding != "" && !strings.EqualFold(coding, "identity") {
				return true
			}
		}
	}
	return false
}
