package caddymodule

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// Refusals of untrusted input (sandbox tokens, pushed tokens) carry two
// texts: a generic one for the client, which says what is wrong in terms
// the client can act on, and the whole reason for the log. Configured
// values (ids, issuers, URLs, paths) and transport errors appear only in
// the latter.

// refusal is an error whose Error is the reason for the log and whose
// public text may be sent to the client.
type refusal struct {
	public string
	reason string
}

func (e *refusal) Error() string { return e.reason }

// refuse returns a refusal with the client's text public and the log's
// reason.
func refuse(public, reason string) error { return &refusal{public: public, reason: reason} }

// publicText is the text of err that a client may see: the refusal's
// public text, or fallback for any other error.
func publicText(err error, fallback string) string {
	if r, ok := errors.AsType[*refusal](err); ok && r.public != "" {
		return r.public
	}
	return fallback
}

// maxLoggedValue bounds a client-supplied value (an issuer, a kid, a
// path, a claim) in a log line: a hostile client must not fill the logs.
const maxLoggedValue = 100

// logValue is s quoted for a log line, cut to maxLoggedValue bytes with
// its full length noted.
func logValue(s string) string {
	head, cut := clip(s)
	if !cut {
		return strconv.Quote(s)
	}
	return strconv.Quote(head) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// clipped is s cut to at most maxLoggedValue bytes, with "…" if it was.
func clipped(s string) string {
	if head, cut := clip(s); cut {
		return head + "…"
	}
	return s
}

// clip is s cut to at most maxLoggedValue bytes on a rune boundary, and
// whether it was cut.
func clip(s string) (string, bool) {
	if len(s) <= maxLoggedValue {
		return s, false
	}
	n := maxLoggedValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}
