// Package safetext owns what the proxy may write about untrusted input
// and about its own failures: the two texts of a refusal (a generic one a
// client may read, the whole reason for the log) and client-supplied
// values bounded for a log line.
//
// It never formats a credential, never logs, and never decides what is
// refused: callers say what is wrong, this package keeps the two
// audiences apart. Configured values (ids, issuers, URLs, paths) and
// transport errors belong in a refusal's reason only.
package safetext

import (
	"errors"
	"net/url"
	"strconv"
	"unicode/utf8"
)

// Refusal is an error whose Error is the reason for the log and whose
// public text may be sent to the client. Refusals of untrusted input
// (sandbox tokens, pushed tokens) and a source's reasons for having no
// credential are Refusals.
type Refusal struct {
	public string
	reason string
}

func (e *Refusal) Error() string { return e.reason }

// Refuse returns a Refusal with the client's text public and the log's
// reason.
func Refuse(public, reason string) error { return &Refusal{public: public, reason: reason} }

// Public is the text of err that a client may see: the Refusal's public
// text (err may wrap it), or fallback for any other error.
func Public(err error, fallback string) string {
	if r, ok := errors.AsType[*Refusal](err); ok && r.public != "" {
		return r.public
	}
	return fallback
}

// MaxLogged bounds a client-supplied value (an issuer, a kid, a path, a
// claim) in a log line: a hostile client must not fill the logs.
const MaxLogged = 100

// Quoted is s quoted for a log line, cut to MaxLogged bytes with its
// full length noted.
func Quoted(s string) string {
	head, cut := clip(s)
	if !cut {
		return strconv.Quote(s)
	}
	return strconv.Quote(head) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// Clipped is s cut to at most MaxLogged bytes, with "…" if it was.
func Clipped(s string) string {
	if head, cut := clip(s); cut {
		return head + "…"
	}
	return s
}

// clip is s cut to at most MaxLogged bytes on a rune boundary, and
// whether it was cut.
func clip(s string) (string, bool) {
	if len(s) <= MaxLogged {
		return s, false
	}
	n := MaxLogged
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

// TransportError keeps a transport error's cause without repeating the
// URL (which the caller names itself, without its query).
func TransportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
