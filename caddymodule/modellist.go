package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/policy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// GET /v1/models per client: under an allowlist, AI Gateway's model list
// is filtered as it streams through (policy.ModelListFilter: one model
// element held at a time), so a client, and the SDKs and agents that read
// the list, see only the models its policy allows. A list the filter
// cannot read (not JSON, encoded) is answered 502 while nothing of it has
// gone out, and cut short after; an error answer (not 2xx) passes
// untouched. GET /v1/models/<id> of a model not allowed is refused 403
// before it goes upstream (modelcheck.go).

// forwardFor forwards the request, its answer filtered when it is the
// model list and the client's policy has an allowlist.
func (h *Handler) forwardFor(pol *activePolicy, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, src int, cred *credential.Credential) error {
	if pol.models == nil || r.Method != http.MethodGet || strings.TrimRight(r.URL.Path, "/") != "/v1/models" {
		return h.forward(w, r, next, src, cred)
	}
	delete(r.Header, "Accept-Encoding") // the filter reads the list as it is, uncompressed
	lw := &modelListWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, models: pol.models}
	err := h.forward(lw, r, next, src, cred)
	if ferr := lw.finish(); ferr != nil {
		if c := h.logger.Check(zap.WarnLevel, "model list not filtered"); c != nil {
			c.Write(zap.Error(ferr), zap.Bool("answered", lw.sent))
		}
		if !lw.sent {
			return writeError(w, r, http.StatusBadGateway, errUnavailable, "model_list_unreadable",
				"the gateway's model list could not be read to filter it for this client; retry later")
		}
		// part of the list went out: cut the answer short, as
		// reverse_proxy does, so that the client sees it incomplete
		panic(http.ErrAbortHandler)
	}
	return err
}

// modelListWriter filters a 2xx answer through the model list filter,
// sending the status line only with the filter's first bytes (so that
// an unreadable list can still be answered 502).
type modelListWriter struct {
	caddyhttp.ResponseWriterWrapper
	models  *policy.Models
	filter  *policy.ModelListFilter // nil: the answer passes untouched
	status  int
	decided bool // the status is known
	sent    bool // the status was written to the client
	err     error
}

func (m *modelListWriter) WriteHeader(status int) {
	if m.decided || status < 200 { // an informational status passes
		m.ResponseWriter.WriteHeader(status)
		return
	}
	m.decided, m.status = true, status
	switch enc := m.Header().Get("Content-Encoding"); {
	case status > 299: // an error answer is no list: untouched
		m.sent = true
		m.ResponseWriter.WriteHeader(status)
	case enc != "" && !strings.EqualFold(enc, "identity"):
		m.err = errors.New("the model list is encoded (" + enc + ")")
	default:
		m.Header().Del("Content-Length") // models come out: the length changes
		m.filter = policy.NewModelListFilter(listOut{m}, m.models.Allows)
	}
}

// Write filters p. An error before anything went out is kept for finish
// (answered 502) and the rest of the list is taken in silence; after, it
// is returned, and reverse_proxy cuts the answer short.
func (m *modelListWriter) Write(p []byte) (int, error) {
	if !m.decided {
		m.WriteHeader(http.StatusOK)
	}
	switch {
	case m.err != nil && !m.sent:
		return len(p), nil
	case m.err != nil:
		return 0, m.err
	case m.filter == nil:
		return m.ResponseWriter.Write(p)
	}
	if _, err := m.filter.Write(p); err != nil {
		m.err = err
		if !m.sent {
			return len(p), nil
		}
		return 0, err
	}
	return len(p), nil
}

// ReadFrom keeps io.Copy from bypassing Write.
func (m *modelListWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{m}, r)
}

// Flush flushes only what the filter wrote on.
func (m *modelListWriter) Flush() {
	if m.sent {
		_ = http.NewResponseController(m.ResponseWriter).Flush()
	}
}

// finish ends the filtered list: the error that kept it from being
// written whole, if any.
func (m *modelListWriter) finish() error {
	if m.err != nil {
		return m.err
	}
	if m.filter == nil {
		return nil
	}
	if err := m.filter.Close(); err != nil {
		return err
	}
	if !m.sent { // an empty upstream answer: the filter refuses it
		m.sent = true
		m.ResponseWriter.WriteHeader(m.status)
	}
	return nil
}

// listOut is where the filter writes: the status line goes with the
// first bytes.
type listOut struct{ m *modelListWriter }

func (o listOut) Write(p []byte) (int, error) {
	if !o.m.sent {
		o.m.sent = true
		o.m.ResponseWriter.WriteHeader(o.m.status)
	}
	return o.m.ResponseWriter.Write(p)
}
