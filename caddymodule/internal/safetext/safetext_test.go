package safetext

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestRefusalTexts(t *testing.T) {
	err := Refuse("token expired", "token from /run/secret/token expired at 12:00")
	if err.Error() != "token from /run/secret/token expired at 12:00" {
		t.Errorf("Error() = %q: the log's reason", err.Error())
	}
	wrapped := fmt.Errorf("%w (next attempt in 3s)", err)
	if got := Public(wrapped, "fallback"); got != "token expired" {
		t.Errorf("Public of a wrapped refusal = %q", got)
	}
	if got := Public(errors.New("dial tcp 10.0.0.1:443: refused"), "unavailable"); got != "unavailable" {
		t.Errorf("Public of a plain error = %q: it must never be shown", got)
	}
	if got := Public(Refuse("", "reason"), "fallback"); got != "fallback" {
		t.Errorf("Public of a refusal with no public text = %q", got)
	}
}

func TestClippedAndQuoted(t *testing.T) {
	short := "kid-1"
	if Clipped(short) != short || Quoted(short) != `"kid-1"` {
		t.Errorf("a short value changed: %q %q", Clipped(short), Quoted(short))
	}
	// a multibyte rune straddles the limit: the cut falls before it
	long := strings.Repeat("a", MaxLogged-1) + "é" + strings.Repeat("b", 1000)
	c := Clipped(long)
	if c != strings.Repeat("a", MaxLogged-1)+"…" {
		t.Errorf("Clipped cut inside a rune or at the wrong place: %q", c)
	}
	q := Quoted(long)
	if !strings.HasSuffix(q, "… (1101 bytes)") || len(q) > MaxLogged+30 {
		t.Errorf("Quoted = %q", q)
	}
}

func TestTransportError(t *testing.T) {
	err := &url.Error{Op: "Get", URL: "https://user:pw@example.com/x?token=abc", Err: errors.New("connection refused")}
	if got := TransportError(fmt.Errorf("fetch: %w", err)); got != "connection refused" {
		t.Errorf("TransportError = %q: the URL must not be repeated", got)
	}
	if got := TransportError(errors.New("plain")); got != "plain" {
		t.Errorf("TransportError(plain) = %q", got)
	}
}
