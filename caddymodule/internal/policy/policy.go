package policy

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest policy name.
const MaxNameLen = 64

// Policy is one group of clients and what applies to them.
type Policy struct {
	// Name is the policy's name: 1 to MaxNameLen of A-Z a-z 0-9 _ -. The
	// glue puts it in logs, the status route and a metric label. The
	// policy a Set gives when none matches has the name "".
	Name string
	// Clients are globs over client ids; a client whose id one matches
	// is the policy's (unless an earlier policy's matches it too).
	Clients []Glob
	// Models is the policy's model allowlist; nil in a Policy given to
	// NewSet means the block's (NewSet's defaultModels). In a policy a
	// Set gives, it is resolved: nil there allows every model.
	Models *Models
	// Limits and Reporting are the glue's, carried as given and never
	// read here: the engine only selects. Nil means the block's own.
	Limits, Reporting any
}

// Set is a handler's policies in order. It is immutable: share it freely.
type Set struct {
	policies []Policy
	def      Policy
}

// NewSet checks and orders policies. It refuses an empty, malformed or
// repeated name, a policy without clients, a zero Glob, and a clients
// glob that no client id can match (one that names no kind of client:
// ids start with placeholder, key: or sandbox:). A policy without Models
// takes defaultModels, as does a client no policy matches.
func NewSet(policies []Policy, defaultModels *Models) (*Set, error) {
	s := &Set{policies: make([]Policy, len(policies)), def: Policy{Models: defaultModels}}
	seen := make(map[string]bool, len(policies))
	for i, p := range policies {
		if err := checkName(p.Name); err != nil {
			return nil, err
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("policy %s: a policy of that name comes earlier", p.Name)
		}
		seen[p.Name] = true
		if len(p.Clients) == 0 {
			return nil, fmt.Errorf("policy %s: no clients (name at least one clients glob)", p.Name)
		}
		for j := range p.Clients {
			g := &p.Clients[j]
			if g.kind == globNone {
				return nil, fmt.Errorf("policy %s: clients glob %d is not compiled", p.Name, j+1)
			}
			if !namesAKind(g) {
				return nil, fmt.Errorf("policy %s: clients glob %s can match no client id (ids are placeholder, key:<name>, key:<namespace>/<name> and sandbox:<team_id>/<project_id>/<sandbox_id>)", p.Name, quoteClipped(g.pattern))
			}
		}
		p.Clients = append([]Glob(nil), p.Clients...)
		if p.Models == nil {
			p.Models = defaultModels
		}
		s.policies[i] = p
	}
	return s, nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("a policy needs a name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("policy name %s is longer than %d characters", quoteClipped(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("policy name %s may hold only A-Z, a-z, 0-9, '_' and '-'", quoteClipped(name))
		}
	}
	return nil
}

// The kinds of client ids, by the literal text they start with.
var kindPrefixes = []string{"placeholder", "key:", "sandbox:"}

// namesAKind says whether g's literal prefix could start some client id.
func namesAKind(g *Glob) bool {
	for _, k := range kindPrefixes {
		if prefixCompatible(g.prefix, k) {
			return true
		}
	}
	return false
}

// prefixCompatible says whether some string starts with both a and b.
func prefixCompatible(a, b string) bool {
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}

// Select is the policy of a client: the first whose clients globs match
// its id, and true; or, when none does, the block's defaults (Name "",
// no Clients, Models the default allowlist, Limits and Reporting nil),
// and false. It never returns nil, and allocates nothing. The policy is
// the Set's: do not modify it. A nil *Set gives a default that allows
// every model.
func (s *Set) Select(clientID string) (*Policy, bool) {
	if s == nil {
		return &noPolicy, false
	}
	for i := range s.policies {
		p := &s.policies[i]
		for j := range p.Clients {
			if p.Clients[j].match(clientID) {
				return p, true
			}
		}
	}
	return &s.def, false
}

var noPolicy Policy

// Policies are the set's policies in order, as Select gives them (each
// Models resolved). The slice is a copy; the policies' globs and Models
// are shared: do not modify them.
func (s *Set) Policies() []Policy {
	if s == nil {
		return nil
	}
	return append([]Policy(nil), s.policies...)
}
