package caddymodule

import (
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Spend per client: reporting headers, limits and usage metering, hooked
// into ServeHTTP by one call before forwarding (spend.begin) and one
// response writer that reads usage from what the client receives. With
// none of reporting, limits or usage_metrics configured, h.spend is nil
// and nothing of this runs.

// spend is a handler's provisioned reporting, limits and metering.
type spend struct {
	reporter *reporter // nil without reporting
	limits   Limits
	limited  bool
	ledger   *ledger
	// shared is the Redis the limits are counted in (limits_redis.go),
	// nil when each instance counts alone; sharedKey its redisPool key.
	shared    *redisLimits
	sharedKey string
	logger    *zap.Logger
}

// provisionSpend sets up reporting, limits and metering, if configured.
func (h *Handler) provisionSpend() error {
	if h.Reporting == nil && h.Limits == nil && !h.UsageMetrics {
		return nil
	}
	h.spend = &spend{ledger: acquireLedger(), logger: h.logger}
	if h.Reporting != nil {
		rp, err := newReporter(*h.Reporting)
		if err != nil {
			return err
		}
		h.spend.reporter = rp
	}
	if l := h.Limits; l != nil {
		if err := l.check(); err != nil {
			return err
		}
		h.spend.limits, h.spend.limited = *l, true
		if err := h.spend.provisionRedis(l); err != nil {
			return err
		}
	}
	return nil
}

// cleanupSpend releases the ledger; safe after a partial Provision.
func (h *Handler) cleanupSpend() {
	if h.spend != nil {
		h.spend.releaseRedis()
		releaseLedger()
		h.spend = nil
	}
}

// begin checks the client's limits (writing a 429 if one refuses the
// request, and then returning nil), stamps the reporting headers and
// returns the writer that meters the response. Call end on it when the
// request is done.
func (s *spend) begin(w http.ResponseWriter, r *http.Request, client any) (*meterWriter, error) {
	name, _ := client.(string)
	if s.limited {
		if limit, retry := s.admit(name, time.Now()); limit != "" {
			return nil, s.refuse(w, r, name, limit, retry)
		}
	}
	if s.reporter != nil {
		s.reporter.stamp(r, name)
	}
	// Usage is read from the answer as it passes. Without the client's
	// Accept-Encoding, reverse_proxy's transport asks for gzip itself and
	// hands on the answer decompressed, so a gzipped JSON answer (AI
	// Gateway compresses whole answers for clients that accept it) is
	// metered too; the leg between proxy and gateway stays compressed.
	delete(r.Header, "Accept-Encoding")
	return &meterWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, spend: s, name: name, r: r}, nil
}

// errRateLimit is the error type both SDKs map to a rate limit error
// (with status 429).
const errRateLimit = "rate_limit_error"

func (s *spend) refuse(w http.ResponseWriter, r *http.Request, name, limit string, retry time.Duration) error {
	limitedCounter.Inc()
	limitRefusalsTotal.WithLabelValues(limit).Inc()
	if c := s.logger.Check(zapcore.InfoLevel, "client over its limit"); c != nil {
		c.Write(zap.String("client", name), zap.String("limit", limit), zap.Duration("retry_after", retry))
	}
	w.Header().Set("Retry-After", retryAfterSeconds(retry))
	msg := "this client has used up its requests per minute on this proxy; retry after the time in Retry-After"
	switch limit {
	case limitTokensPerDay:
		msg = "this client has used up its tokens for today (UTC) on this proxy; retry after the time in Retry-After"
	case limitUSDPerDay:
		msg = "this client has used up its budget for today (UTC) on this proxy; retry after the time in Retry-After"
	}
	return writeError(w, r, http.StatusTooManyRequests, errRateLimit, limit+"_exceeded", msg)
}

// meterWriter passes the response to the client unchanged and reads the
// usage out of it on the way. It wraps the client's writer, outside the
// replay machinery: only the answer the client gets is metered.
type meterWriter struct {
	caddyhttp.ResponseWriterWrapper
	spend       *spend
	name        string
	r           *http.Request
	wroteHeader bool
	scan        usageScanner
}

func (m *meterWriter) WriteHeader(status int) {
	if !m.wroteHeader && status >= 200 {
		m.wroteHeader = true
		m.scan.start(status, m.Header())
	}
	m.ResponseWriter.WriteHeader(status)
}

func (m *meterWriter) Write(p []byte) (int, error) {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	n, err := m.ResponseWriter.Write(p)
	m.scan.write(p[:n])
	return n, err
}

// ReadFrom keeps io.Copy from bypassing Write.
func (m *meterWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{m}, r)
}

// FlushError flushes through to the client (SSE).
func (m *meterWriter) FlushError() error {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(m.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (m *meterWriter) Flush() { _ = m.FlushError() }

// end counts the finished request and what it used: per-client metrics,
// the ledger (limits, status) and the usage placeholders for the access
// log.
func (m *meterWriter) end() {
	u, found := m.scan.finish()
	m.spend.record(m.name, u, time.Now())
	series := clientSeriesFor(m.name)
	series.requests.Inc()
	if !found {
		return
	}
	series.input.Add(float64(u.input))
	series.output.Add(float64(u.output))
	if u.hasCost {
		series.cost.Add(u.cost)
	}
	if repl, ok := m.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.usage.input_tokens", u.input)
		repl.Set("ai_gateway_auth.usage.output_tokens", u.output)
	}
}
