package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
)

// Budgets that hold (docs/spend.md): every request of a metered handler
// is admitted by the limits engine before it goes upstream, and the
// ticket it gets is ended exactly once, when the request ends.
//
//   - A generation (a JSON body on a generation endpoint) reserves its
//     worst case: its input estimated from the body's size, plus its
//     output cap (the body's, else the catalog's max_tokens for its model,
//     else default_max_tokens) times its choices (n, best_of), priced at
//     its model's prices (the catalog's highest for a model it does not
//     know).
//   - Any other request reserves nothing; it still counts toward
//     requests_per_minute and concurrent_requests, and a used-up budget
//     refuses it too.
//   - When the answer ends, its figure replaces the reservation: the
//     gateway's cost from the answer, else its usage priced from the
//     catalog. An answer that ends without its usage is charged the
//     worst case, marked estimated, and corrected from the gateway's
//     ledger when its generation id was seen. A request whose body went
//     upstream whole but that got no answer (the client hung up before
//     the headers, the connection failed) is charged its worst case too:
//     the gateway bills prefill and reasoning, and no generation id was
//     seen to reconcile by. A request that never went upstream whole is
//     abandoned: nothing is charged.

// errAdmission stops a body whose request was not admitted: the
// meterWriter holds the refusal to answer.
var errAdmission = errors.New("the request was not admitted under the client's limits")

// statusClientClosed is the status reverse_proxy writes when the client
// left before the upstream answered (nginx's "client closed request").
const statusClientClosed = 499

// isGeneration reports whether r is a generation: a JSON body on a
// generation endpoint, which reserves its worst case.
func isGeneration(r *http.Request) bool {
	return generationPaths[strings.TrimRight(r.URL.Path, "/")] && jsonRequest(r)
}

// admitAtStart admits a request that is not a generation before its body
// is read; a generation is admitted at its body's end (admitBody).
func (m *meterWriter) admitAtStart() *refusal {
	if isGeneration(m.r) {
		return nil
	}
	return m.admit(limits.Amount{})
}

// admitBody admits a generation once the editor read its body whole
// (jsonbody.Options.AtEnd, before the body's last byte goes upstream): it
// reserves the worst case, or holds the refusal and returns errAdmission,
// which stops the body before its end.
func (m *meterWriter) admitBody(f jsonbody.Fields) error {
	cat := m.spend.h.currentCatalog()
	usdLimit := m.cfg.USDPerDay > 0 || m.cfg.USDPerMonth > 0
	if cat == nil && usdLimit {
		cat = m.spend.h.awaitCatalog(m.r.Context()) // the first read may be under way
	}
	worst, _, err := worstCase(cat, f, m.spend.defaultCap)
	if err != nil {
		if usdLimit {
			m.admitRef = catalogUnavailable(m.id)
			return errAdmission
		}
		worst.USD = 0 // no catalog, no dollar limit: the tokens still count
	}
	m.model = f.Model
	if ref := m.admit(worst); ref != nil {
		m.admitRef = ref
		return errAdmission
	}
	return nil
}

// admit asks the engine for a ticket for worst.
func (m *meterWriter) admit(worst limits.Amount) *refusal {
	t, ref := m.spend.store.Admit(m.id, m.cfg, worst, time.Now())
	if ref != nil {
		return overLimit(m.id, ref)
	}
	m.ticket, m.worst = t, worst
	return nil
}

// abandon ends the ticket of a request that never went upstream.
func (m *meterWriter) abandon() {
	if m.ticket != nil {
		m.ticket.Abandon()
		m.ticket = nil
	}
}

// refusedAtEnd is the refusal held when err is the body stopped because
// its request was not admitted (a small body, read before anything went
// upstream).
func (m *meterWriter) refusedAtEnd(err error) *refusal {
	if m.admitRef != nil && errors.Is(err, errAdmission) {
		return m.admitRef
	}
	return nil
}

// sentWhole reports whether the request's body went upstream whole: the
// transport read a small body to its end, or the editor a streamed one.
// A request without a body reserved nothing.
func (m *meterWriter) sentWhole() bool {
	switch {
	case m.worst == (limits.Amount{}):
		return true
	case m.streamed:
		return m.body.Result().Done
	}
	return m.readAhead.sent.Load()
}

// settle ends the ticket with what the request used (see the file
// comment), and returns it for the metrics and placeholders; estimated
// says why it was estimated ("" when it was not).
func (m *meterWriter) settle(u jsonbody.Usage, found bool) (amt limits.Amount, priced bool, estimated string) {
	t := m.ticket
	if t == nil {
		return amt, false, ""
	}
	m.ticket = nil
	now := time.Now()
	// reverse_proxy records a client that left before the answer's
	// headers as 499, written here: no answer came
	answered := m.wroteHeader && m.status != statusClientClosed
	switch {
	case !answered && !m.sentWhole():
		t.Abandon()
		return amt, false, ""
	case !answered && m.worst != (limits.Amount{}):
		estimated = "no_answer"
	case m.generation && m.status >= 200 && m.status < 300 && !m.scan.Complete():
		estimated = "no_usage"
		if m.gone || m.r.Context().Err() != nil { // m.r has the client's own context
			estimated = "client_gone"
		}
	}
	if estimated != "" {
		amt = m.worst
		if used := u.Input + u.Output; used > amt.Tokens { // what did arrive, if more
			amt.Tokens, amt.Input = used, max(u.Input, amt.Input)
		}
		t.Settle(amt, true, now)
		if id := u.GenerationID; id != "" {
			m.spend.h.reconcileLater(id, func(a limits.Amount) { t.Correct(a, time.Now()) })
		}
		return amt, true, estimated
	}
	if found {
		amt, priced = answerAmount(m.spend.h.currentCatalog(), m.model, u)
	}
	t.Settle(amt, false, now) // a NaN USD (not priced) is charged the worst case's
	if !priced {
		amt.USD = 0
	}
	return amt, priced, ""
}
