package caddymodule

import (
	"fmt"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/policy"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The Caddyfile of policies: allow_models, catalog_file and policy
// blocks in the ai_gateway_auth block. What a line alone can show wrong
// (a glob, a name, a limit) is refused as it is parsed; what needs the
// whole block (a policy no client can match, a glob no model of the
// catalog matches) once the block and its key namespaces are known
// (checkPoliciesAdapted), with the file and line of the policy or glob.

// policyLines are where the policies' settings were written, for the
// errors of checkPoliciesAdapted.
type policyLines struct {
	file        string
	allowModels int   // the block's first allow_models line
	catalogFile int   // the catalog_file line
	policies    []int // each policy's line
	models      []int // each policy's first allow_models line (0: none)
}

// lines is h's policyLines, made on first use.
func (h *Handler) lines(d *caddyfile.Dispenser) *policyLines {
	if h.policySrc == nil {
		h.policySrc = &policyLines{file: d.File()}
	}
	return h.policySrc
}

func parseAllowModels(d *caddyfile.Dispenser, what string, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s needs at least one glob over AI Gateway model ids, e.g. `allow_models openai/gpt-5-mini anthropic/claude-haiku-*`", what)
	}
	if _, err := newModels(what, append(append([]string(nil), *dst...), args...)); err != nil {
		return d.Errf("%v", err)
	}
	*dst = append(*dst, args...)
	return nil
}

func parseBlockAllowModels(d *caddyfile.Dispenser, h *Handler) error {
	if l := h.lines(d); l.allowModels == 0 {
		l.allowModels = d.Line()
	}
	return parseAllowModels(d, "allow_models", &h.AllowModels)
}

func parseCatalogFile(d *caddyfile.Dispenser, h *Handler) error {
	if h.CatalogFile != "" {
		return d.Errf("catalog_file is already set to %s; give it once", h.CatalogFile)
	}
	h.lines(d).catalogFile = d.Line()
	return oneArg(d, &h.CatalogFile)
}

func parsePolicy(d *caddyfile.Dispenser, h *Handler) error {
	var p Policy
	if err := oneArg(d, &p.Name); err != nil {
		return d.Errf("policy needs a name and a block: `policy trusted { clients key:alice … }`")
	}
	for _, q := range h.Policies {
		if q.Name == p.Name {
			return d.Errf("policy %s is already defined; policy names must be unique (they name the policy in logs and metrics)", p.Name)
		}
	}
	lines := h.lines(d)
	line := d.Line()
	if err := policyOptions.parseBlock(d, &p); err != nil {
		return err
	}
	if len(p.Clients) == 0 {
		return d.Errf("policy %s has no clients: add `clients <glob...>` (client ids such as key:alice, key:ops/*, sandbox:team_x/prj_y/*)", p.Name)
	}
	if _, err := policy.NewSet([]policy.Policy{{Name: p.Name, Clients: mustGlobs(p.Clients)}}, nil); err != nil {
		return d.Errf("%v", err)
	}
	lines.policies = append(lines.policies, line)
	lines.models = append(lines.models, p.line)
	h.Policies = append(h.Policies, p)
	return nil
}

// mustGlobs compiles globs parsePolicy's clients option has checked.
func mustGlobs(patterns []string) []policy.Glob {
	out := make([]policy.Glob, len(patterns))
	for i, p := range patterns {
		out[i] = policy.MustCompile(p)
	}
	return out
}

// policyOptions are the options of a policy block.
var policyOptions = newOptions("policy",
	option[Policy]{"clients", func(d *caddyfile.Dispenser, p *Policy) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("clients needs at least one glob over client ids, e.g. `clients key:alice sandbox:team_acme/prj_web/*`")
		}
		for _, a := range args {
			if _, err := policy.Compile(a); err != nil {
				return d.Errf("policy %s: clients: %v", p.Name, err)
			}
		}
		p.Clients = append(p.Clients, args...)
		return nil
	}},
	option[Policy]{"allow_models", func(d *caddyfile.Dispenser, p *Policy) error {
		if p.line == 0 {
			p.line = d.Line()
		}
		return parseAllowModels(d, "policy "+p.Name+": allow_models", &p.AllowModels)
	}},
	option[Policy]{"limits", func(d *caddyfile.Dispenser, p *Policy) error {
		if p.Limits != nil {
			return d.Errf("policy %s: limits is already configured; give it once", p.Name)
		}
		p.Limits = new(Limits)
		if err := p.Limits.unmarshalCaddyfile(d); err != nil { // as the block's (spend_caddyfile.go)
			return err
		}
		if err := checkPolicyLimits(*p.Limits); err != nil {
			return d.Errf("policy %s: %v", p.Name, err)
		}
		return nil
	}},
	option[Policy]{"reporting", func(d *caddyfile.Dispenser, p *Policy) error {
		if p.Reporting != nil {
			return d.Errf("policy %s: reporting is already configured; give it once", p.Name)
		}
		p.Reporting = new(Reporting)
		return p.Reporting.unmarshalCaddyfile(d) // as the block's (spend_caddyfile.go)
	}},
)

// checkPoliciesAdapted makes the checks that need the whole block: a
// policy no client of the block can match (its key namespaces are known
// once the adapter derived them), and, with a literal catalog_file, an
// allow_models glob that matches no model of it.
func checkPoliciesAdapted(h *Handler) error {
	src := h.policySrc
	if src == nil {
		return nil
	}
	if len(h.Policies) > 0 {
		list := make([]policy.Policy, len(h.Policies))
		for i, p := range h.Policies {
			list[i] = policy.Policy{Name: p.Name, Clients: mustGlobs(p.Clients)}
		}
		set, err := policy.NewSet(list, nil)
		if err != nil {
			return err
		}
		for _, u := range set.Unreachable(h.clientKinds()) {
			i := policyIndex(h.Policies, u.Name)
			return fmt.Errorf("policy %s can match no client: %s (this block's clients are %s); %s, at %s:%d",
				u.Name, u.Why, describeKinds(h.clientKinds()), unreachableAdvice, src.file, src.policies[i])
		}
	}
	if h.CatalogFile == "" || strings.Contains(h.CatalogFile, "{") {
		return nil // checked in Provision, once the placeholder is resolved
	}
	ids, err := readCatalogIDs(h.CatalogFile)
	if err != nil {
		return fmt.Errorf("catalog_file: %v, at %s:%d", err, src.file, src.catalogFile)
	}
	if bad := policy.UnmatchedModels(h.AllowModels, ids); len(bad) > 0 {
		return fmt.Errorf("allow_models: %s, at %s:%d", unmatchedMessage(bad, h.CatalogFile), src.file, src.allowModels)
	}
	for i, p := range h.Policies {
		if bad := policy.UnmatchedModels(p.AllowModels, ids); len(bad) > 0 {
			return fmt.Errorf("policy %s: allow_models: %s, at %s:%d", p.Name, unmatchedMessage(bad, h.CatalogFile), src.file, src.models[i])
		}
	}
	return nil
}

func policyIndex(ps []Policy, name string) int {
	for i, p := range ps {
		if p.Name == name {
			return i
		}
	}
	return 0
}

// describeKinds says which client ids a block's sources give.
func describeKinds(k policy.ClientKinds) string {
	var ids []string
	if k.Placeholder {
		ids = append(ids, "placeholder")
	}
	for _, ns := range k.KeyNamespaces {
		if ns == "" {
			ids = append(ids, "key:<name>")
		} else {
			ids = append(ids, "key:"+ns+"/<name>")
		}
	}
	if k.Sandbox {
		ids = append(ids, "sandbox:<team_id>/<project_id>/<sandbox_id>")
	}
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}
