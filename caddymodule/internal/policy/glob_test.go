package policy

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// refMatch is the obvious matcher, memoised: the rule as written, to hold
// the fast one to.
func refMatch(pattern, s string) bool {
	type tok struct {
		c    byte
		star int // 0: literal c, 1: '*', 2: "**"
	}
	var toks []tok
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '*' {
			if i+1 < len(pattern) && pattern[i+1] == '*' {
				toks = append(toks, tok{star: 2})
				i++
			} else {
				toks = append(toks, tok{star: 1})
			}
			continue
		}
		toks = append(toks, tok{c: pattern[i]})
	}
	memo := make([]int8, (len(toks)+1)*(len(s)+1)) // 0: not known, 1: no, 2: yes
	var m func(pi, si int) bool
	m = func(pi, si int) bool {
		if pi == len(toks) {
			return si == len(s)
		}
		k := pi*(len(s)+1) + si
		if memo[k] != 0 {
			return memo[k] == 2
		}
		var v bool
		switch t := toks[pi]; t.star {
		case 0:
			v = si < len(s) && s[si] == t.c && m(pi+1, si+1)
		case 1:
			v = m(pi+1, si) || si < len(s) && s[si] != '/' && m(pi, si+1)
		case 2:
			v = m(pi+1, si) || si < len(s) && m(pi, si+1)
		}
		memo[k] = 1
		if v {
			memo[k] = 2
		}
		return v
	}
	return m(0, 0)
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern string
		yes, no []string
	}{
		{"key:alice", []string{"key:alice"}, []string{"key:alicex", "key:Alice", "key:alic", "xkey:alice", ""}},
		{"**", []string{"", "a", "a/b/c", "sandbox:t/p/s"}, nil},
		{"*", []string{"", "gpt-5", "key:alice"}, []string{"openai/gpt-5", "/"}},
		{"openai/*", []string{"openai/gpt-5", "openai/"}, []string{"openai", "openai/x/y", "gpt-5", "OpenAI/gpt-5", "anthropic/x"}},
		{"openai/**", []string{"openai/gpt-5", "openai/x/y", "openai/"}, []string{"openai", "gpt-5"}},
		{"anthropic/claude-haiku-*", []string{"anthropic/claude-haiku-4.5", "anthropic/claude-haiku-"}, []string{"anthropic/claude-sonnet-4", "anthropic/claude-haiku-4/5"}},
		{"sandbox:team_acme/prj_web/*", []string{"sandbox:team_acme/prj_web/sbx_1"}, []string{"sandbox:team_acme/prj_web/a/b", "sandbox:team_acme/prj_api/sbx_1"}},
		{"sandbox:team_acme/*/*", []string{"sandbox:team_acme/p/s"}, []string{"sandbox:team_acme/p", "sandbox:team_acme/p/s/t"}},
		{"sandbox:*/prj_web/*", []string{"sandbox:t/prj_web/s"}, []string{"sandbox:t/u/prj_web/s"}},
		{"sandbox:**/sbx_1", []string{"sandbox:t/p/sbx_1", "sandbox:/sbx_1"}, []string{"sandbox:t/p/sbx_12"}},
		{"*/gpt-*-mini", []string{"openai/gpt-5-mini", "azure/gpt-4.1-mini"}, []string{"openai/gpt-5-mini-x", "a/b/gpt-5-mini", "openai/gpt-5/x-mini"}},
		{"**-mini", []string{"openai/gpt-5-mini", "a/b/c-mini", "-mini"}, []string{"openai/gpt-5-minis"}},
		{"**/x/**", []string{"a/x/b", "/x/", "a/b/x/c/d"}, []string{"x/b", "a/x", "ax/b"}},
		{"a*b*c", []string{"abc", "aXbYc", "abbc", "abcbc"}, []string{"ab/c", "a/bc", "acb"}},
		{"key:ns/*", []string{"key:ns/alice", "key:ns/a%2Fb"}, []string{"key:ns/a/b", "key:alice"}},
	} {
		g, err := Compile(c.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", c.pattern, err)
		}
		if g.String() != c.pattern {
			t.Errorf("String() = %q, want %q", g.String(), c.pattern)
		}
		for _, s := range c.yes {
			if !g.Match(s) {
				t.Errorf("%q does not match %q", c.pattern, s)
			}
		}
		for _, s := range c.no {
			if g.Match(s) {
				t.Errorf("%q matches %q", c.pattern, s)
			}
		}
	}
	if (Glob{}).Match("") || (Glob{}).Match("x") {
		t.Error("the zero Glob matches")
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, p := range []string{
		"", "a b", "a\tb", "key:alice\n", "a\x00", "a\x7f", "ключ", "a***", "***", "a****b",
		"gpt-?", "[ab]", "{a,b}", `a\*`, strings.Repeat("a", MaxGlobLen+1),
	} {
		if g, err := Compile(p); err == nil {
			t.Errorf("Compile(%q) = %v, want an error", p, g)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("error for %q spans lines: %v", p, err)
		}
	}
	if _, err := Compile(strings.Repeat("a", MaxGlobLen)); err != nil {
		t.Errorf("a glob of MaxGlobLen bytes: %v", err)
	}
}

// Every pattern over a small alphabet against every id over it, up to a
// length: the fast matcher says what the rule says.
func TestGlobAgreesWithRule(t *testing.T) {
	alpha := []string{"a", "b", "/", "*", "**"}
	ids := allStrings("ab/", 6)
	var patterns []string
	var gen func(p string, n int)
	gen = func(p string, n int) {
		if p != "" {
			patterns = append(patterns, p)
		}
		if n == 0 {
			return
		}
		for _, a := range alpha {
			gen(p+a, n-1)
		}
	}
	gen("", 4)
	checked := 0
	for _, p := range patterns {
		g, err := Compile(p)
		if err != nil {
			continue // "***"
		}
		for _, s := range ids {
			if got, want := g.Match(s), refMatch(p, s); got != want {
				t.Fatalf("Match(%q, %q) = %v, want %v", p, s, got, want)
			}
			checked++
		}
	}
	t.Logf("%d pattern/id pairs", checked)
}

func allStrings(alpha string, maxLen int) []string {
	out := []string{""}
	prev := []string{""}
	for n := 1; n <= maxLen; n++ {
		var next []string
		for _, p := range prev {
			for i := 0; i < len(alpha); i++ {
				next = append(next, p+alpha[i:i+1])
			}
		}
		out = append(out, next...)
		prev = next
	}
	return out
}

func TestGlobAgreesWithRuleRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	parts := []string{"a", "b", "ab", "/", "a/", "/b", "*", "**", "x"}
	for range 200_000 {
		var p strings.Builder
		for range 1 + r.IntN(7) {
			p.WriteString(parts[r.IntN(len(parts))])
		}
		g, err := Compile(p.String())
		if err != nil {
			continue
		}
		var s strings.Builder
		for range r.IntN(14) {
			s.WriteByte("ab/x"[r.IntN(4)])
		}
		if got, want := g.Match(s.String()), refMatch(p.String(), s.String()); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", p.String(), s.String(), got, want)
		}
	}
}

// workBound is the linear bound the matcher's work is held to: every byte
// of s looked at no more than (the pattern's '/' count + 3) times, plus the
// pattern's length for each '/' in s and once more.
func workBound(pattern, s string) int {
	return (len(s)+1)*(strings.Count(pattern, "/")+3) + len(pattern)*(strings.Count(s, "/")+2)
}

// Hostile ids against patterns that make a backtracking matcher take
// exponential (or quadratic) time: the work stays linear, counted in
// bytes looked at, not timed.
func TestGlobWorstCases(t *testing.T) {
	stars := func(lit string, n int) string { return strings.Repeat("*"+lit, n) }
	for _, c := range []struct{ pattern, head, unit string }{
		{stars("a", 30) + "*b", "", "a"},
		{stars("a", 30) + "b", "", "a"},
		{"**a" + stars("a", 30) + "*b**", "", "a"},
		{"**a" + stars("a", 30) + "b**c", "", "a"},
		{"**a" + stars("a", 30) + "b**c", "", "aaaa/"},
		{"**a" + stars("a/", 10) + "b**", "", "aa/"},
		{"**/*/*/*/*/*/x**", "", "/"},
		{"**/*/*/*/*/*/x", "", "/a"},
		{"**" + strings.Repeat("a/", 20) + "b**", "", "a/"},
		{"**" + strings.Repeat("a", 60) + "b", "", "a"},
		{"**" + strings.Repeat("a", 60) + "b**x", "", "a"},
		{strings.Repeat("a*", 40) + "*" + strings.Repeat("a*", 40) + "b", "", "a"},
		{"x" + stars("a", 30) + "**b" + stars("a", 30), "x", "a"},
		{"**a**a**a**a**a**a**a**a**b", "", "a"},
		{"**a*a**a*a**a*a**a*a**b", "", "a/"},
		{"sandbox:**a" + stars("a", 20) + "/x", "sandbox:", "a"},
	} {
		g := MustCompile(c.pattern)
		if g.kind != globGeneral {
			t.Fatalf("%q is not a general pattern", c.pattern)
		}
		var works [2]int
		for i, n := range []int{4096, 8192} {
			s := c.head + strings.Repeat(c.unit, n/len(c.unit))
			ok, work := matchChunks(g.chunks, s)
			if ok != refMatch(c.pattern, s) {
				t.Errorf("Match(%q, long id) = %v, the rule says otherwise", c.pattern, ok)
			}
			if bound := workBound(c.pattern, s); work > bound {
				t.Errorf("Match(%.40q…, %d-byte id): work %d > linear bound %d", c.pattern, len(s), work, bound)
			}
			works[i] = work
		}
		// Twice the id, at most twice the work (and a little): linear.
		if float64(works[1]) > 2.05*float64(works[0])+float64(2*len(c.pattern)+8) {
			t.Errorf("Match(%.40q…): work %d on 4 KiB, %d on 8 KiB: not linear", c.pattern, works[0], works[1])
		}
		t.Logf("%.32q… work on 4 KiB %d, on 8 KiB %d", c.pattern, works[0], works[1])
	}
}

// refMatchLong is refMatch for long ids where the memo would be big: only
// used where it stays small enough.
func refMatchLong(pattern, s string) bool { return refMatch(pattern, s) }

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"openai/*", "openai/gpt-5"}, {"**", ""}, {"a*b**c*d", "axb/y/cxd"}, {"**/x/**", "a/x/b"},
		{"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaa"}, {"sandbox:*/p/*", "sandbox:t/p/s"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		g, err := Compile(pattern)
		if err != nil {
			return
		}
		if len(s) > 512 || len(pattern) > 64 {
			return // keep the reference's memo small
		}
		want := refMatch(pattern, s)
		if got := g.Match(s); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", pattern, s, got, want)
		}
		if g.kind == globGeneral {
			_, work := matchChunks(g.chunks, s)
			if bound := workBound(pattern, s); work > bound {
				t.Fatalf("Match(%q, %q): work %d > %d", pattern, s, work, bound)
			}
		}
	})
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"**", "key:alice", true},
		{"**", "sandbox:*/*/*", true},
		{"key:*", "key:alice", true},
		{"key:*", "key:ns/alice", false},
		{"key:**", "key:ns/*", true},
		{"key:ns/**", "key:ns/a*", true},
		{"key:ns/**", "key:n*", false},
		{"sandbox:team_a/**", "sandbox:team_a/prj/*", true},
		{"sandbox:team_a/*", "sandbox:team_a/prj/*", false},
		{"key:a*", "key:ab*", true},
		{"key:a*", "key:a/b*", false},
		{"key:a*", "key:a**", false},
		{"sandbox:t/p/*", "sandbox:t/p/*", true},
		{"sandbox:t/*/s", "sandbox:t/p/s", true},
		{"sandbox:t/*/s", "sandbox:t/*/s*", false}, // true, but not a case it knows: conservative
		{"key:alice", "key:*", false},
		{"*", "key:*", true},
		{"*", "key:a/*", false},
	} {
		a, b := MustCompile(c.a), MustCompile(c.b)
		if got := covers(&a, &b); got != c.want {
			t.Errorf("covers(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// covers is sound: whenever it says a covers b, every id b matches (over
// a small alphabet) a matches too.
func TestCoversSound(t *testing.T) {
	alpha := []string{"a", "b", "/", "*", "**"}
	var patterns []string
	var gen func(p string, n int)
	gen = func(p string, n int) {
		if _, err := Compile(p); p != "" && err == nil {
			patterns = append(patterns, p)
		}
		if n == 0 {
			return
		}
		for _, a := range alpha {
			gen(p+a, n-1)
		}
	}
	gen("", 3)
	ids := allStrings("ab/", 5)
	for _, pa := range patterns {
		a := MustCompile(pa)
		for _, pb := range patterns {
			b := MustCompile(pb)
			if !covers(&a, &b) {
				continue
			}
			for _, s := range ids {
				if b.Match(s) && !a.Match(s) {
					t.Fatalf("covers(%q, %q), yet %q matches only the second", pa, pb, s)
				}
			}
		}
	}
}

func BenchmarkGlobMatch(b *testing.B) {
	id := "sandbox:team_aZ3kq9Xw1lL0mN2pQ4rS/prj_8hJ2kL4mN6pQ8rS0tU2v/sbx_Ab12Cd34Ef56Gh78"
	for _, p := range []string{
		"sandbox:team_aZ3kq9Xw1lL0mN2pQ4rS/prj_8hJ2kL4mN6pQ8rS0tU2v/sbx_Ab12Cd34Ef56Gh78",
		"sandbox:team_aZ3kq9Xw1lL0mN2pQ4rS/**",
		"sandbox:team_aZ3kq9Xw1lL0mN2pQ4rS/prj_8hJ2kL4mN6pQ8rS0tU2v/*",
		"sandbox:*/prj_8hJ2kL4mN6pQ8rS0tU2v/*",
		"**/sbx_Ab12*",
	} {
		g := MustCompile(p)
		b.Run(p[max(0, len(p)-24):], func(b *testing.B) {
			for b.Loop() {
				if !g.Match(id) {
					b.Fatal("no match")
				}
			}
		})
	}
	hostile := strings.Repeat("a", 4096)
	g := MustCompile("**a" + strings.Repeat("*a", 30) + "b**")
	b.Run("hostile-4KiB", func(b *testing.B) {
		b.SetBytes(int64(len(hostile)))
		for b.Loop() {
			if g.Match(hostile) {
				b.Fatal("match")
			}
		}
	})
}
