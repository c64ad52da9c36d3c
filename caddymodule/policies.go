package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/policy"
	"github.com/caddyserver/caddy/v2"
)

// Policies (issue 23): allow_models for every client, and groups of
// clients (policy <name> { clients …; allow_models …; limits …;
// reporting … }) whose settings replace the block's. A request's policy
// is chosen once, by policyFor, right after the client is known; every
// later step (the limits, the reporting stamp, the model check, the
// model list, the metrics) reads that one choice. The engine
// (internal/policy) compiles the globs and selects; this file is the glue.

// Policy is a group of clients and what applies to them. Each of
// allow_models, limits and reporting replaces the block's for the
// policy's clients; one it leaves out is the block's.
type Policy struct {
	// The policy's name, for logs ({ai_gateway_auth.policy}), the status
	// route and the policy metric label: 1 to 64 of A-Z a-z 0-9 _ -,
	// unique in the block. Required.
	Name string `json:"name"`

	// Globs over client ids (placeholder, key:<name>,
	// key:<namespace>/<name>, sandbox:<team>/<project>/<sandbox>): '*'
	// within one '/'-separated segment, "**" across '/'. A client is the
	// first policy's whose globs match its id. Required.
	Clients []string `json:"clients"`

	// The policy's model allowlist, as the block's allow_models. Default:
	// the block's.
	AllowModels []string `json:"allow_models,omitempty"`

	// The policy's limits, in place of the block's (all of them: a limit
	// the policy leaves out does not apply to its clients). redis and
	// max_clients are the block's only. Default: the block's.
	Limits *Limits `json:"limits,omitempty"`

	// The policy's reporting, in place of the block's. Default: the
	// block's.
	Reporting *Reporting `json:"reporting,omitempty"`

	line int // the Caddyfile line of its first allow_models, for errors
}

// activePolicy is what applies to one request's client: chosen once per
// request (policyFor) and read by every step after. It is shared by all
// the requests of its clients: never modified after Provision.
type activePolicy struct {
	name     string         // "" for the block's own settings
	nameAny  any            // name, boxed once: the placeholder allocates nothing
	models   *policy.Models // nil: any model, and no check at all
	limits   *Limits        // nil: no limits
	cfg      limits.Config  // limits' config (zero: none), what the request is admitted under
	reporter *reporter      // nil: no reporting stamp
	// the model check as the body editor's AtEnd hook, built once
	// (modelcheck.go): for endpoints that need a model, and for others
	check, checkIfNamed func(jsonbody.Fields) error
}

// policySet is a handler's provisioned policies.
type policySet struct {
	set    *policy.Set // nil without policies
	byName map[string]*activePolicy
	def    *activePolicy // the block's own settings
	// anyModels: some client has an allowlist (the body must be read)
	anyModels bool
}

// policyFor is the policy of a request's client: the first policy whose
// clients globs match its id, else the block's own settings. Never nil;
// it allocates nothing.
func (h *Handler) policyFor(client *identity.Principal) *activePolicy {
	id, _ := client.ID().(string)
	return h.policyForID(id)
}

// policyForID is policyFor of the client with this id.
func (h *Handler) policyForID(id string) *activePolicy {
	ps := h.policies
	if ps == nil { // not provisioned
		return &noActivePolicy
	}
	if ps.set == nil {
		return ps.def
	}
	if p, ok := ps.set.Select(id); ok {
		return ps.byName[p.Name]
	}
	return ps.def
}

var noActivePolicy = activePolicy{nameAny: ""}

// setPolicyPlaceholder sets {ai_gateway_auth.policy} for the access log.
func setPolicyPlaceholder(r *http.Request, pol *activePolicy) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.policy", pol.nameAny)
	}
}

// policiesNeedMetering says whether the policies need the spend machinery even
// when the block has no reporting, limits or usage_metrics: an
// allowlist needs the one reading of the body, a policy's limits or
// reporting need their steps.
func (h *Handler) policiesNeedMetering() bool {
	if len(h.AllowModels) > 0 {
		return true
	}
	for _, p := range h.Policies {
		if len(p.AllowModels) > 0 || p.Limits != nil || p.Reporting != nil {
			return true
		}
	}
	return false
}

// provisionPolicies compiles allow_models and the policies (after
// provisionSpend: the block's limits and reporter are the default).
func (h *Handler) provisionPolicies() error {
	def, err := newModels("allow_models", h.AllowModels)
	if err != nil {
		return err
	}
	ps := &policySet{def: &activePolicy{models: def, nameAny: ""}}
	if s := h.spend; s != nil {
		ps.def.reporter = s.reporter
		if s.limited && h.Limits != nil {
			lim := *h.Limits
			ps.def.limits, ps.def.cfg = &lim, lim.config()
		}
	}
	ps.def.buildChecks()
	ps.anyModels = def != nil
	if err := h.provisionPolicyList(ps, def); err != nil {
		return err
	}
	if err := h.checkCatalogFile(); err != nil {
		return err
	}
	h.policies = ps
	return nil
}

// provisionPolicyList builds each policy's activePolicy and the engine's
// Set.
func (h *Handler) provisionPolicyList(ps *policySet, def *policy.Models) error {
	if len(h.Policies) == 0 {
		return nil
	}
	list := make([]policy.Policy, 0, len(h.Policies))
	ps.byName = make(map[string]*activePolicy, len(h.Policies))
	for _, p := range h.Policies {
		ap, pp, err := h.newActivePolicy(p, ps.def)
		if err != nil {
			return err
		}
		ps.anyModels = ps.anyModels || ap.models != nil
		ps.byName[p.Name] = ap
		list = append(list, pp)
	}
	set, err := policy.NewSet(list, def)
	if err != nil {
		return err
	}
	if dead := set.Unreachable(h.clientKinds()); len(dead) > 0 {
		return fmt.Errorf("policy %s can match no client: %s; %s", dead[0].Name, dead[0].Why, unreachableAdvice)
	}
	ps.set = set
	return nil
}

// unreachableAdvice says what to do about a policy no client can select.
const unreachableAdvice = "fix its clients globs, move it before the policy that takes its clients, or remove it"

// newActivePolicy provisions one policy: its own settings, or the
// block's (def) where it has none.
func (h *Handler) newActivePolicy(p Policy, def *activePolicy) (*activePolicy, policy.Policy, error) {
	ap := &activePolicy{name: p.Name, nameAny: p.Name, models: def.models, limits: def.limits, cfg: def.cfg, reporter: def.reporter}
	pp := policy.Policy{Name: p.Name}
	if len(p.Clients) == 0 {
		return nil, pp, fmt.Errorf("policy %s: no clients (name at least one clients glob)", p.Name)
	}
	for _, c := range p.Clients {
		g, err := policy.Compile(c)
		if err != nil {
			return nil, pp, fmt.Errorf("policy %s: clients: %v", p.Name, err)
		}
		pp.Clients = append(pp.Clients, g)
	}
	if len(p.AllowModels) > 0 {
		m, err := newModels("policy "+p.Name+": allow_models", p.AllowModels)
		if err != nil {
			return nil, pp, err
		}
		ap.models, pp.Models = m, m
		if m == nil { // "**": any model, whatever the block's
			pp.Models = anyModel
		}
	}
	if p.Limits != nil {
		if err := checkPolicyLimits(*p.Limits); err != nil {
			return nil, pp, fmt.Errorf("policy %s: %v", p.Name, err)
		}
		lim := *p.Limits
		ap.limits, ap.cfg = &lim, lim.config()
	}
	if p.Reporting != nil {
		rp, err := newReporter(*p.Reporting)
		if err != nil {
			return nil, pp, fmt.Errorf("policy %s: %v", p.Name, err)
		}
		ap.reporter = rp
	}
	ap.buildChecks()
	return ap, pp, nil
}

// anyModel stands for a policy's "allow_models **" in the engine's Set
// (where nil would mean the block's allowlist); the glue reads the
// policy's own nil models.
var anyModel, _ = policy.NewModels([]string{"**"})

// newModels compiles an allowlist. One that names "**" admits every
// model: it is no allowlist (nil), so it costs nothing per request.
func newModels(what string, patterns []string) (*policy.Models, error) {
	m, err := policy.NewModels(patterns)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, strings.TrimPrefix(err.Error(), "allow_models: "))
	}
	if slices.Contains(patterns, "**") {
		return nil, nil
	}
	return m, nil
}

// policiesLimited reports whether a policy sets limits.
func (h *Handler) policiesLimited() bool {
	return slices.ContainsFunc(h.Policies, func(p Policy) bool { return p.Limits != nil })
}

// checkPolicyLimits says what is wrong with a policy's limits: as the
// block's, but the store's settings are the block's alone (one ledger,
// one Redis for every client of the block).
func checkPolicyLimits(l Limits) error {
	if l.Redis != "" || l.RedisTimeout != 0 || l.MaxClients != 0 || l.DefaultMaxTokens != 0 {
		return errors.New("limits: redis, max_clients and default_max_tokens are the block's only (one store counts every client of the block); set them in the block's limits")
	}
	return l.check()
}

// clientKinds are the kinds of client this handler has sources for.
func (h *Handler) clientKinds() policy.ClientKinds {
	k := policy.ClientKinds{Placeholder: len(h.ClientKeys) > 0, Sandbox: h.VercelSandbox != nil}
	if h.ClientKeysFile != "" {
		k.KeyNamespaces = append(k.KeyNamespaces, h.ClientKeysFileNamespace)
	}
	if len(h.ClientKeySecrets) > 0 {
		k.KeyNamespaces = append(k.KeyNamespaces, h.ClientKeySecretsNamespace)
	}
	return k
}

// checkCatalogFile refuses an allow_models glob (the block's or a
// policy's) that matches no model of catalog_file.
func (h *Handler) checkCatalogFile() error {
	if h.CatalogFile == "" {
		return nil
	}
	path := caddy.NewReplacer().ReplaceAll(h.CatalogFile, "")
	ids, err := readCatalogIDs(path)
	if err != nil {
		return fmt.Errorf("catalog_file: %v", err)
	}
	if bad := policy.UnmatchedModels(h.AllowModels, ids); len(bad) > 0 {
		return fmt.Errorf("allow_models: %s", unmatchedMessage(bad, path))
	}
	for _, p := range h.Policies {
		if bad := policy.UnmatchedModels(p.AllowModels, ids); len(bad) > 0 {
			return fmt.Errorf("policy %s: allow_models: %s", p.Name, unmatchedMessage(bad, path))
		}
	}
	return nil
}

// unmatchedMessage says which globs matched nothing, and what to do.
func unmatchedMessage(bad []string, path string) string {
	return fmt.Sprintf("%q matches no model of the catalog %s; AI Gateway ids are provider/model as GET /v1/models lists them "+
		"('*' stays within one segment: openai/* matches openai/gpt-5): fix the glob, or refresh the catalog file "+
		"(curl https://ai-gateway.vercel.sh/v1/models > %s)", strings.Join(bad, `", "`), path, path)
}

// readCatalogIDs reads the model ids of a saved GET /v1/models answer,
// exactly as the model list filter reads them.
func readCatalogIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	filter := policy.NewModelListFilter(discard{}, func(id string) bool {
		ids = append(ids, id)
		return true
	})
	if _, err := f.WriteTo(filter); err != nil {
		return nil, fmt.Errorf("%s is not AI Gateway's model list ({\"data\":[{\"id\":…},…]}): %v", path, err)
	}
	if err := filter.Close(); err != nil {
		return nil, fmt.Errorf("%s is not AI Gateway's model list ({\"data\":[{\"id\":…},…]}): %v", path, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s lists no model", path)
	}
	return ids, nil
}

// discard is io.Discard without its ReaderFrom (the filter writes).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// policyStatus is the status route's view of the policies: their names
// in order, and the name of client's policy ("" for the block's own
// settings) when a client id is asked for.
func (h *Handler) policyStatus(client string) (names []string, clientPolicy *string) {
	ps := h.policies
	if ps == nil {
		return nil, nil
	}
	for _, p := range ps.set.Policies() {
		names = append(names, p.Name)
	}
	if client == "" {
		return names, nil
	}
	name := ""
	if p, ok := ps.set.Select(client); ok {
		name = p.Name
	}
	return names, &name
}
