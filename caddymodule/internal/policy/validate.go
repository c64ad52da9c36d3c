package policy

import (
	"strconv"
	"strings"
)

// ClientKinds are the kinds of client a handler has sources for: what
// `caddy validate` knows about which client ids can occur.
type ClientKinds struct {
	// Placeholder: a literal client_key (id placeholder).
	Placeholder bool
	// KeyNamespaces are the namespaces of the key sources (client_keys_file,
	// client_key_secret): "" for a source without one (ids key:<name>),
	// else ids key:<namespace>/<name>.
	KeyNamespaces []string
	// Sandbox: vercel_sandbox (ids sandbox:<team_id>/<project_id>/<sandbox_id>).
	Sandbox bool
}

// UnreachablePolicy is a policy that no client can select, and why.
type UnreachablePolicy struct {
	Name string
	// Why names each of its globs and why it can select no client.
	Why string
}

// Unreachable lists, in order, the policies no client can select: every
// one of their globs either can match no id of the kinds of client
// configured, or matches only ids that a glob of an earlier policy
// matches too. It is conservative: it names a policy only when that is
// certain. A glob is known to be covered by an earlier one when that one
// is "**", the same pattern, "<p>**" and the later one starts with p, or
// "<p>*" and the later one is "<p…>" or "<p…>*" with no '/' after p, or
// when the later one is an exact id that the earlier one matches.
func (s *Set) Unreachable(kinds ClientKinds) []UnreachablePolicy {
	if s == nil {
		return nil
	}
	var out []UnreachablePolicy
	for i := range s.policies {
		p := &s.policies[i]
		var why []string
	globs:
		for j := range p.Clients {
			g := &p.Clients[j]
			if !canMatchKind(g, kinds) {
				why = append(why, "clients glob "+strconv.Quote(g.pattern)+": no client of the kinds configured has such an id")
				continue
			}
			for k := range s.policies[:i] {
				for _, h := range s.policies[k].Clients {
					if covers(&h, g) {
						why = append(why, "clients glob "+strconv.Quote(g.pattern)+": every client it matches is matched first by "+
							strconv.Quote(h.pattern)+" of policy "+s.policies[k].Name)
						continue globs
					}
				}
			}
			break // this glob may select a client
		}
		if len(why) == len(p.Clients) {
			out = append(out, UnreachablePolicy{Name: p.Name, Why: strings.Join(why, "; ")})
		}
	}
	return out
}

// canMatchKind says whether g may match the id of a client of a kind
// configured. An id holds a fixed number of '/' (placeholder and key:<name>
// none, key:<namespace>/<name> one, sandbox:… two; names are escaped),
// and a match of g holds exactly g's literal '/' when g has no "**", at
// least as many when it has.
func canMatchKind(g *Glob, k ClientKinds) bool {
	double := strings.Contains(g.pattern, "**")
	slashesFit := func(n int) bool { return g.slashes == n || double && g.slashes < n }
	if k.Placeholder && g.match("placeholder") {
		return true
	}
	for _, ns := range k.KeyNamespaces {
		if ns == "" {
			if slashesFit(0) && prefixCompatible(g.prefix, "key:") {
				return true
			}
		} else if slashesFit(1) && prefixCompatible(g.prefix, "key:"+ns+"/") {
			return true
		}
	}
	return k.Sandbox && slashesFit(2) && prefixCompatible(g.prefix, "sandbox:")
}

// UnmatchedModels are the allowlist globs, in order, that match no model
// of a catalog (its ids, as AI Gateway's GET /v1/models lists them): a
// mistake `caddy validate` can report when it is given a catalog. A
// pattern that does not compile matches nothing and is listed too.
func UnmatchedModels(patterns, catalogIDs []string) []string {
	var out []string
	for _, p := range patterns {
		g, err := Compile(p)
		matched := false
		for _, id := range catalogIDs {
			if err == nil && CheckModelID(id) == "" && g.match(id) {
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, p)
		}
	}
	return out
}
