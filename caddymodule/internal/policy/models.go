package policy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxModelIDLen is the longest model id an allowlist admits, in bytes.
const MaxModelIDLen = 256

// Refusal codes and status: a model an allowlist does not admit is
// refused with HTTP 403 and this code, in the client's SDK's error shape.
const (
	RefusalCode   = "model_not_allowed"
	RefusalStatus = 403
)

// Models is a model allowlist: globs over AI Gateway model ids. A nil
// *Models is no allowlist: it allows every model, whatever its id. It is
// immutable: share it freely.
type Models struct {
	globs []Glob
}

// NewModels compiles an allowlist. No patterns (nil or empty) is no
// allowlist: it returns nil, which allows every model. A pattern is a
// glob (see the package comment) of the bytes a model id may hold
// (A-Z a-z 0-9 . _ : / @ + -) and '*'; any other byte can match no model
// id and is refused as a mistake.
func NewModels(patterns []string) (*Models, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	m := &Models{globs: make([]Glob, 0, len(patterns))}
	for _, p := range patterns {
		g, err := Compile(p)
		if err != nil {
			return nil, fmt.Errorf("allow_models: %w", err)
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; c != '*' && !modelIDByte(c) {
				return nil, fmt.Errorf("allow_models: glob %s holds %q, which no model id holds (AI Gateway ids are provider/model, of A-Z a-z 0-9 . _ : / @ + -)", quoteClipped(p), c)
			}
		}
		m.globs = append(m.globs, g)
	}
	return m, nil
}

// Patterns are the allowlist's globs as given; nil for no allowlist.
func (m *Models) Patterns() []string {
	if m == nil {
		return nil
	}
	out := make([]string, len(m.globs))
	for i := range m.globs {
		out[i] = m.globs[i].pattern
	}
	return out
}

// Allows says whether the allowlist admits the model id: a valid model id
// (see [CheckModelID]) that one of its globs matches. A nil *Models
// allows every id.
func (m *Models) Allows(modelID string) bool {
	if m == nil {
		return true
	}
	return CheckModelID(modelID) == "" && m.match(modelID)
}

func (m *Models) match(id string) bool {
	for i := range m.globs {
		if m.globs[i].match(id) {
			return true
		}
	}
	return false
}

// CheckModelID says why id can be no model id an allowlist admits, or ""
// when it can be: 1 to MaxModelIDLen bytes of A-Z a-z 0-9 . _ : / @ + -.
func CheckModelID(id string) string {
	switch {
	case id == "":
		return "it is empty"
	case len(id) > MaxModelIDLen:
		return "it is longer than " + strconv.Itoa(MaxModelIDLen) + " bytes"
	}
	for i := 0; i < len(id); i++ {
		if !modelIDByte(id[i]) {
			return "it holds a character outside A-Z a-z 0-9 . _ : / @ + -"
		}
	}
	return ""
}

func modelIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-'
}

// CheckRequest decides a request's models: its model, then each fallback
// in order (AI Gateway's providerOptions.gateway.models, and a top-level
// models array, which other gateways read as fallbacks: the caller passes
// both, read strictly). It returns nil when the allowlist admits them all,
// else the first it does not. A request is refused rather than its
// fallbacks filtered: rewriting the list would change silently which
// model runs. A nil *Models admits every request.
func (m *Models) CheckRequest(model string, fallbacks []string) *Refusal {
	if m == nil {
		return nil
	}
	if r := m.check(model, -1); r != nil {
		return r
	}
	for i, f := range fallbacks {
		if r := m.check(f, i); r != nil {
			return r
		}
	}
	return nil
}

func (m *Models) check(id string, fallback int) *Refusal {
	if why := CheckModelID(id); why != "" {
		return &Refusal{Model: id, Fallback: fallback, Invalid: why}
	}
	if m.match(id) {
		return nil
	}
	return &Refusal{Model: id, Fallback: fallback}
}

// Refusal is a request refused for a model: status [RefusalStatus], code
// [RefusalCode].
type Refusal struct {
	// Model is the refused id as the client sent it, whole: clip it for a
	// log line ([Refusal.Message] does).
	Model string
	// Fallback is the refused id's index in the fallbacks given to
	// CheckRequest, or -1 for the request's model.
	Fallback int
	// Invalid says why Model is no model id at all; "" when it is one
	// that the allowlist does not name.
	Invalid string
}

// Code is the refusal's error code, model_not_allowed.
func (r *Refusal) Code() string { return RefusalCode }

// Message is the refusal's text for the client: it names the model
// (quoted, escaped, clipped to 100 bytes), never the policy or its globs.
func (r *Refusal) Message() string {
	var b strings.Builder
	if r.Fallback >= 0 {
		b.WriteString("fallback ")
	}
	b.WriteString("model ")
	b.WriteString(quoteID(r.Model))
	b.WriteString(" is not allowed for this client on this proxy")
	switch {
	case r.Invalid != "":
		b.WriteString(": ")
		b.WriteString(r.Invalid)
		b.WriteString(", so it is no AI Gateway model id")
	case strings.IndexByte(r.Model, '/') < 0:
		b.WriteString("; AI Gateway model ids name their provider (provider/model, as GET /v1/models lists them)")
	}
	if r.Fallback >= 0 {
		b.WriteString("; remove it from the request's fallback models (providerOptions.gateway.models or models)")
	}
	return b.String()
}

// quoteID is id quoted with every non-printable or non-ASCII rune (or
// byte of invalid UTF-8) escaped, cut after 100 bytes of that.
func quoteID(id string) string {
	const max = 100
	b := []byte{'"'}
	for i := 0; i < len(id); {
		if len(b) > max {
			return string(b) + "\"…"
		}
		_, w := utf8.DecodeRuneInString(id[i:])
		q := strconv.QuoteToASCII(id[i : i+w])
		b = append(b, q[1:len(q)-1]...)
		i += w
	}
	return string(append(b, '"'))
}
