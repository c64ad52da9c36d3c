package identity

import (
	"strings"
	"testing"
)

// TestClientIDFormats pins every kind of id exactly: what limits, the
// client metric label and AI Gateway's reports key on. A sandbox's id is
// never its (chosen) name, a namespace holds no '/', and a key's name is
// path-escaped, so that no name of one source spells an id of another.
func TestClientIDFormats(t *testing.T) {
	sandbox := func(team, project, id, name string) *Principal {
		return sandboxPrincipal(&sandboxClaims{TeamID: team, ProjectID: project, SandboxID: id, SandboxName: name})
	}
	for _, tc := range []struct {
		what     string
		p        *Principal
		name, id string
	}{
		{"literal client_key", Placeholder, "placeholder", "placeholder"},
		{"key without a namespace", KeyPrincipal("", "alice"), "alice", "key:alice"},
		{"key with a namespace", KeyPrincipal("tenant2.example.com", "alice"), "alice", "key:tenant2.example.com/alice"},
		{"key with a port namespace", KeyPrincipal(":4001", "alice"), "alice", "key::4001/alice"},
		{"keys file name with a slash", KeyPrincipal("", "tenant2/alice"), "tenant2/alice", "key:tenant2%2Falice"},
		{"keys file name with a percent", KeyPrincipal("", "a%2Fb"), "a%2Fb", "key:a%252Fb"},
		{"keys file name with a space and a question mark", KeyPrincipal("ns", "a b?"), "a b?", "key:ns/a%20b%3F"},
		{"sandbox", sandbox("team_x", "prj_y", "sbx_z", "agent-7"), "agent-7", "sandbox:team_x/prj_y/sbx_z"},
		{"sandbox without a name", sandbox("team_x", "prj_y", "sbx_z", ""), "sbx_z", "sandbox:team_x/prj_y/sbx_z"},
		{"sandbox named like another's id", sandbox("team_x", "prj_y", "sbx_z", "sandbox:team_x/prj_y/sbx_other"), "sandbox:team_x/prj_y/sbx_other", "sandbox:team_x/prj_y/sbx_z"},
		{"sandbox claims with slashes", sandbox("team/x", "prj/y", "sbx/z", "n"), "n", "sandbox:team%2Fx/prj%2Fy/sbx%2Fz"},
	} {
		if tc.p.name != tc.name || tc.p.id != tc.id {
			t.Errorf("%s: name %q id %q, want name %q id %q", tc.what, tc.p.name, tc.p.id, tc.name, tc.id)
		}
	}
	// what the escaping is for: a keys file entry named "ns/alice" is not
	// the client alice of the source with namespace ns
	if a, b := KeyPrincipal("", "ns/alice"), KeyPrincipal("ns", "alice"); a.id == b.id {
		t.Errorf("the keys file name ns/alice and alice of namespace ns share the id %v", a.id)
	}
}

func TestCheckKeyNamespace(t *testing.T) {
	for _, ns := range []string{"a", "tenant2.example.com", ":4001", "A-Z_0.9:x", strings.Repeat("n", 64)} {
		if err := CheckNamespace(ns); err != nil {
			t.Errorf("%q: %v", ns, err)
		}
	}
	for _, ns := range []string{"", "a/b", "{env.NS}", "a b", "é", strings.Repeat("n", 65), "a%2Fb"} {
		if err := CheckNamespace(ns); err == nil {
			t.Errorf("%q accepted", ns)
		}
	}
}
