package policy

import (
	"fmt"
	"strings"
	"testing"
)

func globs(patterns ...string) []Glob {
	out := make([]Glob, len(patterns))
	for i, p := range patterns {
		out[i] = MustCompile(p)
	}
	return out
}

func models(t testing.TB, patterns ...string) *Models {
	t.Helper()
	m, err := NewModels(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSelect(t *testing.T) {
	def := models(t, "openai/gpt-5-mini")
	trusted := models(t, "openai/*", "anthropic/*")
	set, err := NewSet([]Policy{
		{Name: "trusted", Clients: globs("key:alice", "sandbox:team_acme/prj_web/*"), Models: trusted, Limits: "trusted-limits"},
		{Name: "bots", Clients: globs("key:bots/*", "sandbox:team_acme/**"), Reporting: "bots-tags"},
	}, def)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id, policy string
		matched    bool
		models     *Models
	}{
		{"key:alice", "trusted", true, trusted},
		{"sandbox:team_acme/prj_web/sbx_1", "trusted", true, trusted},
		{"sandbox:team_acme/prj_api/sbx_1", "bots", true, def}, // no allow_models: the block's
		{"key:bots/b1", "bots", true, def},
		{"key:bob", "", false, def},
		{"placeholder", "", false, def},
		{"key:alice2", "", false, def},
		{"", "", false, def},
	} {
		p, ok := set.Select(c.id)
		if p == nil || p.Name != c.policy || ok != c.matched || p.Models != c.models {
			t.Errorf("Select(%q) = %+v, %v; want policy %q, %v", c.id, p, ok, c.policy, c.matched)
		}
	}
	if p, _ := set.Select("key:alice"); p.Limits != "trusted-limits" || p.Reporting != nil {
		t.Errorf("trusted's slots = %v, %v", p.Limits, p.Reporting)
	}
	if p, ok := (*Set)(nil).Select("key:alice"); p == nil || ok || p.Models != nil {
		t.Errorf("a nil Set selects %+v, %v", p, ok)
	}
	if got := len(set.Policies()); got != 2 {
		t.Errorf("%d policies", got)
	}
}

// The first policy that matches wins, whatever comes later.
func TestSelectFirstWins(t *testing.T) {
	set, err := NewSet([]Policy{
		{Name: "a", Clients: globs("key:x*")},
		{Name: "b", Clients: globs("key:xy")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := set.Select("key:xy"); p.Name != "a" {
		t.Errorf("key:xy selects %q", p.Name)
	}
}

// NewSet copies what it is given: changing the caller's slices later
// changes nothing.
func TestNewSetCopies(t *testing.T) {
	cl := globs("key:alice")
	ps := []Policy{{Name: "a", Clients: cl}}
	set, err := NewSet(ps, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl[0] = MustCompile("key:bob")
	ps[0].Name = "changed"
	if p, ok := set.Select("key:alice"); !ok || p.Name != "a" {
		t.Errorf("Select after the caller's change = %+v, %v", p, ok)
	}
}

func TestNewSetRefuses(t *testing.T) {
	ok := globs("key:alice")
	for _, c := range []struct {
		ps   []Policy
		want string
	}{
		{[]Policy{{Name: "", Clients: ok}}, "needs a name"},
		{[]Policy{{Name: "a b", Clients: ok}}, "may hold only"},
		{[]Policy{{Name: "a.b", Clients: ok}}, "may hold only"},
		{[]Policy{{Name: "tr\u00fcsted", Clients: ok}}, "may hold only"},
		{[]Policy{{Name: strings.Repeat("a", 65), Clients: ok}}, "longer than 64"},
		{[]Policy{{Name: "a", Clients: ok}, {Name: "a", Clients: ok}}, "comes earlier"},
		{[]Policy{{Name: "a"}}, "no clients"},
		{[]Policy{{Name: "a", Clients: []Glob{{}}}}, "not compiled"},
		{[]Policy{{Name: "a", Clients: globs("alice")}}, "can match no client id"},
		{[]Policy{{Name: "a", Clients: globs("key:alice", "keys:bob")}}, "can match no client id"},
		{[]Policy{{Name: "a", Clients: globs("sandbox-team/*")}}, "can match no client id"},
	} {
		_, err := NewSet(c.ps, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewSet(%+v) = %v; want an error saying %q", c.ps, err, c.want)
		}
	}
	if _, err := NewSet([]Policy{{Name: "A-z_0", Clients: globs("*")}, {Name: strings.Repeat("b", 64), Clients: globs("placeholder")}}, nil); err != nil {
		t.Errorf("good names refused: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	all := ClientKinds{Placeholder: true, KeyNamespaces: []string{"", "ops"}, Sandbox: true}
	for _, c := range []struct {
		name  string
		ps    []Policy
		kinds ClientKinds
		want  []string // names
	}{
		{"reachable", []Policy{
			{Name: "a", Clients: globs("key:alice")},
			{Name: "b", Clients: globs("key:*", "sandbox:team_a/**")},
			{Name: "c", Clients: globs("**")},
		}, all, nil},
		{"after **", []Policy{
			{Name: "any", Clients: globs("**")},
			{Name: "b", Clients: globs("key:alice")},
		}, all, []string{"b"}},
		{"the same glob earlier", []Policy{
			{Name: "a", Clients: globs("sandbox:team_a/prj/*")},
			{Name: "b", Clients: globs("sandbox:team_a/prj/*", "key:ops/alice")},
			{Name: "c", Clients: globs("key:ops/alice")},
		}, all, []string{"c"}},
		{"prefix earlier", []Policy{
			{Name: "a", Clients: globs("sandbox:team_a/**")},
			{Name: "b", Clients: globs("sandbox:team_a/prj/*", "sandbox:team_a/p*/x")},
		}, all, []string{"b"}},
		{"kind not configured", []Policy{
			{Name: "a", Clients: globs("sandbox:team_a/**")},
			{Name: "b", Clients: globs("key:ops2/*")},
			{Name: "c", Clients: globs("placeholder")},
			{Name: "d", Clients: globs("key:alice")},
		}, ClientKinds{KeyNamespaces: []string{"ops"}}, []string{"a", "b", "c", "d"}},
		{"namespace needs a slash", []Policy{
			{Name: "a", Clients: globs("key:*")},
			{Name: "b", Clients: globs("key:ops/*")},
		}, ClientKinds{KeyNamespaces: []string{"ops"}}, []string{"a"}},
		{"sandbox ids have two slashes", []Policy{
			{Name: "a", Clients: globs("sandbox:*/*")},
			{Name: "b", Clients: globs("sandbox:*/*/*/*")},
			{Name: "c", Clients: globs("sandbox:**/x/y/z")},
			{Name: "d", Clients: globs("sandbox:**")},
		}, ClientKinds{Sandbox: true}, []string{"a", "b", "c"}},
		{"one live glob is enough", []Policy{
			{Name: "a", Clients: globs("key:*")},
			{Name: "b", Clients: globs("key:alice", "sandbox:t/p/*")},
		}, all, nil},
		{"covered by two globs is not known", []Policy{
			{Name: "a", Clients: globs("key:a*")},
			{Name: "b", Clients: globs("key:b*")},
			{Name: "c", Clients: globs("key:*")}, // covered by nothing single: still named reachable
		}, all, nil},
		{"no kinds", []Policy{{Name: "a", Clients: globs("**")}}, ClientKinds{}, []string{"a"}},
	} {
		set, err := NewSet(c.ps, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []string
		for _, u := range set.Unreachable(c.kinds) {
			got = append(got, u.Name)
			if !strings.Contains(u.Why, "clients glob") {
				t.Errorf("%s: %s: why = %q", c.name, u.Name, u.Why)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: Unreachable = %v, want %v", c.name, got, c.want)
		}
	}
	set, _ := NewSet([]Policy{{Name: "a", Clients: globs("key:*")}, {Name: "b", Clients: globs("key:alice", "key:ops2/*")}}, nil)
	u := set.Unreachable(all)
	if len(u) != 1 || u[0].Why != `clients glob "key:alice": every client it matches is matched first by "key:*" of policy a; `+
		`clients glob "key:ops2/*": no client of the kinds configured has such an id` {
		t.Errorf("Unreachable = %+v", u)
	}
}

// Unreachable is sound: a policy it names selects no id, over ids of
// every configured kind built from a few names.
func TestUnreachableSound(t *testing.T) {
	kinds := ClientKinds{Placeholder: true, KeyNamespaces: []string{"", "ops"}, Sandbox: true}
	names := []string{"a", "ab", "b", "team_a", "prj", "x"}
	var ids []string
	ids = append(ids, "placeholder")
	for _, n := range names {
		ids = append(ids, "key:"+n, "key:ops/"+n)
		for _, m := range names {
			for _, o := range names {
				ids = append(ids, "sandbox:"+n+"/"+m+"/"+o)
			}
		}
	}
	pats := []string{"**", "*", "key:*", "key:**", "key:a*", "key:ab", "key:ops/*", "key:ops/**", "key:o*", "sandbox:**",
		"sandbox:team_a/**", "sandbox:team_a/prj/*", "sandbox:*/prj/*", "sandbox:*/*/x", "placeholder", "p*", "key:*b"}
	for i, a := range pats {
		for j, b := range pats {
			for _, c := range pats[:5] {
				set, err := NewSet([]Policy{
					{Name: "p1", Clients: globs(a)}, {Name: "p2", Clients: globs(b)}, {Name: "p3", Clients: globs(c, b)},
				}, nil)
				if err != nil {
					t.Fatal(err)
				}
				dead := map[string]bool{}
				for _, u := range set.Unreachable(kinds) {
					dead[u.Name] = true
				}
				for _, id := range ids {
					if p, ok := set.Select(id); ok && dead[p.Name] {
						t.Fatalf("policies %q, %q, %q: %s selects %s, said unreachable", pats[i], pats[j], c, id, p.Name)
					}
				}
			}
		}
	}
}

func TestUnmatchedModels(t *testing.T) {
	catalog := []string{"openai/gpt-5", "openai/gpt-5-mini", "anthropic/claude-haiku-4.5", "vmc/cheap", "odd id"}
	got := UnmatchedModels([]string{"openai/*", "anthropic/claude-haiku-*", "anthropic/claude-hiaku-*", "*", "gpt-5", "odd*", "**", "a b"}, catalog)
	if fmt.Sprint(got) != "[anthropic/claude-hiaku-* * gpt-5 odd* a b]" {
		t.Errorf("UnmatchedModels = %q", got)
	}
	if got := UnmatchedModels(nil, catalog); got != nil {
		t.Errorf("no patterns: %q", got)
	}
}

// 20 policies of 5 globs each, of the shapes a fleet writes; the client
// matches the last glob of the last policy, or none.
func benchSet(b testing.TB) *Set {
	var ps []Policy
	for i := range 20 {
		ps = append(ps, Policy{Name: fmt.Sprintf("p%d", i), Clients: globs(
			fmt.Sprintf("key:agent-%d", i),
			fmt.Sprintf("key:ops/team-%d-*", i),
			fmt.Sprintf("sandbox:team_%d/**", i),
			fmt.Sprintf("sandbox:team_acme/prj_%d/*", i),
			fmt.Sprintf("sandbox:*/prj_shared_%d/*", i),
		)})
	}
	set, err := NewSet(ps, nil)
	if err != nil {
		b.Fatal(err)
	}
	return set
}

func TestSelectAllocatesNothing(t *testing.T) {
	set := benchSet(t)
	for _, id := range []string{"sandbox:team_x/prj_shared_19/sbx_1", "key:nobody", "key:agent-0"} {
		if n := testing.AllocsPerRun(100, func() { set.Select(id) }); n != 0 {
			t.Errorf("Select(%q) allocates %v times", id, n)
		}
	}
}

func BenchmarkSelect(b *testing.B) {
	set := benchSet(b)
	for _, c := range []struct{ name, id, want string }{
		{"first", "key:agent-0", "p0"},
		{"last-glob-of-last", "sandbox:team_x/prj_shared_19/sbx_Ab12Cd34Ef56Gh78", "p19"},
		{"none", "sandbox:team_x/prj_y/sbx_Ab12Cd34Ef56Gh78", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p, _ := set.Select(c.id); p.Name != c.want {
					b.Fatalf("selected %q", p.Name)
				}
			}
		})
	}
}
