package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
)

// Metering that the request's shape cannot switch off. With metering on
// (reporting, limits or usage_metrics):
//
//   - a JSON request body is read strictly, and refused (400
//     invalid_request_body) where a parser could read it otherwise than
//     the proxy (bodyread.go); it is edited as it goes upstream
//     (jsonbody.Editor): the proxy's attribution replaces the client's (with
//     reporting), and a streamed Chat Completions request asks for its
//     usage (stream_options.include_usage), whose usage-only chunk is
//     then hidden from a client that did not ask for it;
//   - a client that hangs up once the answer's content is complete
//     (a finish_reason is out, only the usage chunk is left) does not
//     stop the proxy from reading that chunk: the upstream request
//     outlives the client by at most drainTimeout and drainMaxBytes;
//   - an answer of a generation endpoint that ends without its usage (the
//     client hung up earlier, the upstream cut it) is charged an estimate
//     from what was sent and streamed, never zero.

const (
	// drainTimeout bounds how long the upstream answer is read after its
	// client left, once only usage can follow.
	drainTimeout = 5 * time.Second
	// drainMaxBytes bounds what is read then.
	drainMaxBytes = 1 << 20
	// maxHeldLine bounds an unfinished SSE line held back while the
	// usage-only chunk may be hidden; a longer line passes as it comes.
	maxHeldLine = 16 << 10
	// bytesPerToken turns bytes into an estimate of tokens: about four
	// characters of English or code per token.
	bytesPerToken = 4
)

// generationPaths are the endpoints that run a model, paid per token:
// each reserves its worst case before it goes upstream (budget.go) and is
// charged it when its answer ends without usage (model listing and token
// counting cost no tokens). An embedding reserves its input and, with no
// output cap in its body, the default cap: more than it uses, settled to
// its figure when it ends.
var generationPaths = map[string]bool{
	"/v1/chat/completions":  true,
	"/v1/completions":       true,
	"/v1/responses":         true,
	"/v1/responses/compact": true,
	"/v1/messages":          true,
	"/v1/embeddings":        true,
}

// usagePaths are the endpoints whose streams carry usage only when asked
// for (stream_options.include_usage).
var usagePaths = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
}

var (
	bodyEditsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "request_body_edits_total",
		Help:      "Request bodies passed through the body editor (metering or reporting on), by result: edited (attribution set or usage asked for), unchanged, refused (not one well-formed UTF-8 JSON object, or a controlled member repeated or spelled otherwise: answered 400 invalid_request_body, never forwarded whole).",
	}, []string{"result"})

	usageEstimatesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "usage_estimates_total",
		Help:      "Answers of generation endpoints that ended without their usage and were charged an estimate, by reason: client_gone (the client hung up before the usage), no_usage (the answer ended without it).",
	}, []string{"reason"})

	clientEstimatedTokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_estimated_tokens_total",
		Help:      "The part of client_tokens_total that was estimated (answers that ended without usage), per client and direction. The client label is capped like client_tokens_total's.",
	}, []string{"client", "direction"})
)

// the body editor's results, looked up once: every metered request
// counts one
var (
	bodyEditsEdited    = bodyEditsTotal.WithLabelValues("edited")
	bodyEditsUnchanged = bodyEditsTotal.WithLabelValues("unchanged")
	bodyEditsRefused   = bodyEditsTotal.WithLabelValues("refused")
)

func init() {
	collectors = append(collectors, bodyEditsTotal, usageEstimatesTotal, clientEstimatedTokensTotal)
}

// errClientGone stops reverse_proxy's copy once the client has left and
// the answer is not complete yet.
var errClientGone = errors.New("the client went away")

// meterWriter passes the response to the client and reads the usage out
// of it on the way. It wraps the client's writer, outside the replay
// machinery: only the answer the client gets is metered.
type meterWriter struct {
	caddyhttp.ResponseWriterWrapper
	spend  *spend
	id     string // the client's id
	policy string // the client's policy's name (policies.go)
	// the client's policy's model check (modelcheck.go), nil without an allowlist
	modelCheck  func(jsonbody.Fields) error
	r           *http.Request
	wroteHeader bool
	status      int
	scan        jsonbody.UsageScanner

	body *jsonbody.Editor // nil when the body is not read as JSON
	// refusalAnswered: the editor's refusal was answered (refusedAsItStreamed)
	refusalAnswered bool
	readAhead       heldBody // a small body read ahead (bodyread.go)
	injected        bool     // the editor asks for usage on the client's behalf
	generation      bool     // an estimate is charged if the answer ends without usage
	streamed        bool     // the body streams through the editor (not read ahead)

	// the request's admission (budget.go): its limits, its ticket (nil
	// once ended) and the worst case it reserved; the model its body
	// named; the refusal held when its body's end was not admitted
	cfg      limits.Config
	ticket   *limits.Ticket
	worst    limits.Amount
	model    string
	admitRef *refusal

	// the usage-only chunk the proxy asked for is hidden from a client
	// that did not: lines are forwarded whole
	hiding    bool
	held      []byte
	passing   bool // the rest of a held line too long to hold
	dropBlank bool // the blank line that ends a hidden event

	// a client that leaves does not end the upstream read once only usage
	// can follow (see meterWriter.watch)
	final     atomic.Bool
	gone      bool
	unflushed bool // bytes (or the header) went to the client since the last flush
	drained   int64
	cancel    context.CancelFunc
	stopWatch func() bool
}

// prepare sets up the request for metering: for a JSON request, its
// body read strictly and edited as asked (bodyread.go); and, for
// a generation endpoint, an upstream request that outlives its client
// long enough to read the usage. It returns the request to forward, or
// the body's refusal (or the client's error reading a small body).
func (m *meterWriter) prepare(r *http.Request, attribution bool, user *string, modelCheck func(jsonbody.Fields) error) (*http.Request, error) {
	path := strings.TrimRight(r.URL.Path, "/") // the gateway may route /v1/chat/completions/ as without its slash
	m.generation = generationPaths[path]
	if jsonRequest(r) {
		m.injected = usagePaths[path]
		opts := jsonbody.Options{Attribution: attribution, User: user, IncludeUsage: m.injected}
		if m.generation || modelCheck != nil {
			// the model check first (modelcheck.go: nil without an
			// allowlist), then the reservation (budget.go)
			m.modelCheck = modelCheck
			opts.AtEnd = m
		}
		if err := m.readJSONBody(r, opts); err != nil {
			return r, err
		}
	}
	if !m.generation {
		return r, nil
	}
	return m.watch(r), nil
}

// watch detaches the upstream request from its client's cancellation:
// when the client leaves, the upstream read is cancelled at once unless
// the answer's content is complete, and then drainTimeout later.
func (m *meterWriter) watch(r *http.Request) *http.Request {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	m.cancel = cancel
	m.stopWatch = context.AfterFunc(r.Context(), func() {
		if m.final.Load() {
			time.AfterFunc(drainTimeout, cancel)
		} else {
			cancel()
		}
	})
	return r.WithContext(ctx)
}

func (m *meterWriter) WriteHeader(status int) {
	if !m.wroteHeader && status >= 200 {
		m.wroteHeader = true
		m.status = status
		m.scan.Start(status, m.Header())
		m.hiding = m.injected && m.body != nil && m.scan.SSE()
	}
	m.ResponseWriter.WriteHeader(status)
	m.unflushed = true
}

func (m *meterWriter) Write(p []byte) (int, error) {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	// what the upstream sent is metered, whether or not the client is
	// still there to get it
	m.scan.Write(p)
	if m.scan.Final() && !m.final.Load() {
		m.final.Store(true)
	}
	if m.gone {
		return m.discard(len(p))
	}
	var err error
	if m.hiding {
		err = m.writeHiding(p)
	} else {
		err = m.toClient(p)
	}
	if err != nil {
		m.gone = true
		if _, derr := m.discard(len(p)); derr != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// discard takes n bytes the client will not get: read on for the usage
// once only usage can follow, within drainMaxBytes; else stop.
func (m *meterWriter) discard(n int) (int, error) {
	m.drained += int64(n)
	if !m.final.Load() || m.drained > drainMaxBytes {
		return 0, errClientGone
	}
	return n, nil
}

// writeHiding writes p without the usage-only chunk the proxy asked for
// on behalf of a client that did not ask. Lines pass in runs of p, as they
// are (no copy); an unfinished line is held until its end.
func (m *meterWriter) writeHiding(p []byte) error {
	if len(m.held) == 0 && !m.passing && len(p) > 0 && p[len(p)-1] == '\n' && !m.dropBlank && !m.scan.MayHaveUsageKey() {
		return m.toClient(p) // the common case: whole lines, no usage key (the scanner just read them)
	}
	from, i := 0, 0 // p[from:i] passes, not written yet; the next line starts at i
	for {
		n := bytes.IndexByte(p[i:], '\n')
		if n < 0 {
			break
		}
		line, next := p[i:i+n+1], i+n+1
		switch {
		case m.passing: // the end of a line too long to hold
			m.passing = false
		case len(m.held) > 0: // the end of the held line (p's first)
			m.held = append(m.held, line...)
			if !m.hides(m.held) {
				if err := m.toClient(m.held); err != nil {
					return err
				}
			}
			m.held, from = m.held[:0], next
		case m.hides(line):
			if err := m.writeRun(p[from:i]); err != nil {
				return err
			}
			from = next
		}
		i = next
	}
	if err := m.writeRun(p[from:i]); err != nil {
		return err
	}
	if rest := p[i:]; len(rest) > 0 {
		if m.passing || len(m.held)+len(rest) > maxHeldLine {
			err := m.writeRun(m.held)
			m.held, m.passing = m.held[:0], true
			if err != nil {
				return err
			}
			return m.writeRun(rest)
		}
		m.held = append(m.held, rest...)
	}
	if cap(m.held) > maxHeldLine {
		m.held = nil
	}
	return nil
}

// writeRun writes lines that pass, if any.
func (m *meterWriter) writeRun(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return m.toClient(b)
}

// toClient writes b to the client, to be flushed by the next flush.
func (m *meterWriter) toClient(b []byte) error {
	m.unflushed = true
	_, err := m.ResponseWriter.Write(b)
	return err
}

// hides reports whether a whole line is hidden: the usage-only chunk,
// or the blank line that ends its event.
func (m *meterWriter) hides(line []byte) bool {
	switch {
	case m.dropBlank && len(bytes.TrimSpace(line)) == 0:
		m.dropBlank = false
		return true
	case m.hideUsageChunk(line):
		m.dropBlank = true
		return true
	}
	m.dropBlank = false
	return false
}

// hideUsageChunk reports whether line is the usage-only chunk of a
// Chat Completions stream (no choices, a usage object) that the client
// did not ask for.
func (m *meterWriter) hideUsageChunk(line []byte) bool {
	if res := m.body.Result(); !res.Done || !res.Streamed || res.ClientUsage {
		return false // the cheap test first
	}
	data, ok := jsonbody.UsageLine(line)
	return ok && jsonbody.UsageOnlyChunk(data)
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
	if m.gone {
		_, err := m.discard(0)
		return err
	}
	if !m.unflushed {
		return nil // nothing since the last flush: a hidden usage chunk
	}
	m.unflushed = false
	if err := http.NewResponseController(m.ResponseWriter).Flush(); err != nil {
		m.gone = true
		if _, derr := m.discard(0); derr != nil {
			return err
		}
	}
	return nil
}

// Flush implements http.Flusher.
func (m *meterWriter) Flush() { _ = m.FlushError() }

// end counts the finished request and what it used: per-client metrics,
// the ledger (limits, status) and the usage placeholders for the access
// log. An answer of a generation endpoint that ended without its usage is
// charged an estimate.
func (m *meterWriter) end() {
	defer m.recycleBody()
	if m.stopWatch != nil {
		m.stopWatch()
		m.cancel()
	}
	if len(m.held) > 0 && !m.gone { // a last line without its newline
		_, _ = m.ResponseWriter.Write(m.held)
		m.held = nil
	}
	if m.body != nil {
		// a refusal answered 400 was counted by its refusal (invalidBody)
		if res := m.body.Result(); res.Refused && !m.refusalAnswered {
			bodyEditsRefused.Inc()
		} else if res.Done {
			if res.Edited {
				bodyEditsEdited.Inc()
			} else {
				bodyEditsUnchanged.Inc()
			}
		}
	}
	u, found := m.scan.Finish()
	amt, priced, estimated := m.settle(u, found)
	series := clientSeriesFor(m.id)
	series.requests.Inc()
	if estimated != "" {
		usageEstimatesTotal.WithLabelValues(estimated).Inc()
		series.estimatedInput.Add(float64(amt.Input))
		series.estimatedOutput.Add(float64(amt.Tokens - amt.Input))
	} else if !found {
		return
	}
	series.input.Add(float64(amt.Input))
	series.output.Add(float64(amt.Tokens - amt.Input))
	if priced && amt.USD > 0 {
		series.cost.Add(amt.USD)
	}
	m.countModel(amt, priced) // per model and policy (modelmetrics.go)
	if repl, ok := m.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.usage.input_tokens", amt.Input)
		repl.Set("ai_gateway_auth.usage.output_tokens", amt.Tokens-amt.Input)
	}
}

// recycleBody gives back the editor of a body read ahead, once the
// request is done: nothing else holds it (the transport reads the
// bytes it produced, held apart: bodyread.go). A streamed body's editor
// is the transport's to read, even after ServeHTTP returns: never.
func (m *meterWriter) recycleBody() {
	if m.body != nil && !m.streamed {
		m.body.Recycle()
		m.body = nil
	}
}
