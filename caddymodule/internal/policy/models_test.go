package policy

import (
	"strings"
	"testing"
)

func TestModelsAllows(t *testing.T) {
	m, err := NewModels([]string{"openai/gpt-5-mini", "anthropic/claude-haiku-*", "vmc/*"})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{
		"openai/gpt-5-mini":          true,
		"anthropic/claude-haiku-4.5": true,
		"vmc/cheap":                  true,
		"openai/gpt-5":               false,
		"openai/gpt-5-mini/x":        false,
		"OpenAI/gpt-5-mini":          false, // case-sensitive
		"gpt-5-mini":                 false, // a bare id is an id like any other
		"anthropic/claude-opus-4.1":  false,
		"":                           false,
	} {
		if got := m.Allows(id); got != want {
			t.Errorf("Allows(%q) = %v, want %v", id, got, want)
		}
	}
	if got := strings.Join(m.Patterns(), " "); got != "openai/gpt-5-mini anthropic/claude-haiku-* vmc/*" {
		t.Errorf("Patterns() = %q", got)
	}
}

// A bare id (no provider) is matched literally: "openai/*" never admits
// gpt-5, and an allowlist admits it only by naming it (or by a glob that
// matches it as it is, such as "*").
func TestBareModelID(t *testing.T) {
	m, _ := NewModels([]string{"openai/*", "openai/**"})
	if m.Allows("gpt-5") {
		t.Error("openai/* admits gpt-5")
	}
	r := m.CheckRequest("gpt-5", nil)
	if r == nil || !strings.Contains(r.Message(), "provider/model") {
		t.Errorf("CheckRequest(gpt-5) = %+v; want a refusal that says ids name their provider", r)
	}
	m, _ = NewModels([]string{"openai/*", "gpt-5"})
	if !m.Allows("gpt-5") || m.Allows("gpt-5-mini") {
		t.Error("an allowlist naming gpt-5 does not admit exactly it")
	}
}

// Without an allowlist every model passes, odd ones too: the gateway
// decides. Under one, an id that is no model id never passes, whatever
// the globs say.
func TestInvalidModelIDs(t *testing.T) {
	var none *Models
	if m, err := NewModels(nil); m != nil || err != nil {
		t.Fatalf("NewModels(nil) = %v, %v; want nil, nil", m, err)
	}
	if m, err := NewModels([]string{}); m != nil || err != nil {
		t.Fatalf("NewModels(empty) = %v, %v; want nil, nil", m, err)
	}
	all, _ := NewModels([]string{"**"})
	for _, id := range []string{
		"", strings.Repeat("a", MaxModelIDLen+1), "openai/gpt 5", "openai/gpt-5\x00", "openai/gpt-5\n",
		"openai/gpt-5\u200b", "openai/gpt-5%2F", "openai/gpt-5?x", `openai/gpt-5"`, "ＯpenAI/gpt-5",
	} {
		if !none.Allows(id) || none.CheckRequest(id, []string{id}) != nil {
			t.Errorf("no allowlist refuses %q", id)
		}
		if all.Allows(id) {
			t.Errorf("allow_models ** admits %q", id)
		}
		r := all.CheckRequest(id, nil)
		if r == nil || r.Invalid == "" || r.Code() != "model_not_allowed" {
			t.Fatalf("CheckRequest(%q) = %+v", id, r)
		}
		msg := r.Message()
		if len(msg) > 400 || strings.ContainsAny(msg, "\x00\n\u200b") {
			t.Errorf("message for %q is not client-safe: %q", id, msg)
		}
	}
	if !all.Allows(strings.Repeat("a", MaxModelIDLen)) || !all.Allows("a-z.A_Z:0/9@+-") {
		t.Error("allow_models ** refuses a valid id")
	}
}

func TestNewModelsRefuses(t *testing.T) {
	for _, p := range []string{"", "openai/gpt 5", "openai/?", "openai/%", "openai/gpt-5,", "a***", "openai/ü"} {
		if _, err := NewModels([]string{"openai/*", p}); err == nil {
			t.Errorf("NewModels(%q) accepted", p)
		} else if !strings.HasPrefix(err.Error(), "allow_models: ") {
			t.Errorf("error %q does not say allow_models", err)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	m, _ := NewModels([]string{"openai/*", "anthropic/claude-haiku-*"})
	if r := m.CheckRequest("openai/gpt-5", []string{"anthropic/claude-haiku-4.5", "openai/gpt-5-mini"}); r != nil {
		t.Errorf("allowed request refused: %+v", r)
	}
	r := m.CheckRequest("anthropic/claude-opus-4.1", []string{"openai/gpt-5"})
	if r == nil || r.Model != "anthropic/claude-opus-4.1" || r.Fallback != -1 || r.Invalid != "" {
		t.Fatalf("refusal = %+v", r)
	}
	if got := r.Message(); got != `model "anthropic/claude-opus-4.1" is not allowed for this client on this proxy` {
		t.Errorf("message = %q", got)
	}
	// The first disallowed fallback, by its index.
	r = m.CheckRequest("openai/gpt-5", []string{"openai/gpt-5-mini", "anthropic/claude-opus-4.1", "xai/grok-4"})
	if r == nil || r.Model != "anthropic/claude-opus-4.1" || r.Fallback != 1 {
		t.Fatalf("refusal = %+v", r)
	}
	if got := r.Message(); !strings.HasPrefix(got, `fallback model "anthropic/claude-opus-4.1" is not allowed`) ||
		!strings.Contains(got, "providerOptions.gateway.models") {
		t.Errorf("message = %q", got)
	}
	// A hostile id is quoted, escaped and clipped.
	long := "openai/" + strings.Repeat("x", 1000) + "\"}\n"
	r = m.CheckRequest(long, nil)
	if msg := r.Message(); len(msg) > 300 || !strings.Contains(msg, "…") || strings.Contains(msg, "\n") {
		t.Errorf("message for a long id: %q", msg)
	}
	r = m.CheckRequest("openai/gpt-5", []string{""})
	if r == nil || r.Fallback != 0 || r.Invalid == "" {
		t.Errorf("an empty fallback: %+v", r)
	}
}

func FuzzCheckRequest(f *testing.F) {
	f.Add("openai/gpt-5", "anthropic/claude-haiku-4.5")
	f.Add("gpt-5", "")
	f.Add("openai/\u00e9", "openai/"+strings.Repeat("a", 300))
	m, _ := NewModels([]string{"openai/*", "anthropic/claude-haiku-*", "**-mini"})
	f.Fuzz(func(t *testing.T, model, fallback string) {
		r := m.CheckRequest(model, []string{fallback})
		allowed := m.Allows(model) && m.Allows(fallback)
		if (r == nil) != allowed {
			t.Fatalf("CheckRequest(%q, [%q]) = %+v, Allows says %v", model, fallback, r, allowed)
		}
		if r == nil {
			if CheckModelID(model) != "" || len(model) > MaxModelIDLen {
				t.Fatalf("admitted %q", model)
			}
			return
		}
		msg := r.Message()
		for _, c := range msg {
			if c < 0x20 || c >= 0x7f && c != '…' {
				t.Fatalf("message holds %q: %q", c, msg)
			}
		}
		if len(msg) > 400 {
			t.Fatalf("message of %d bytes", len(msg))
		}
	})
}
