package caddymodule

import (
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"
)

// Key sources and their namespaces. A key source is a handler's
// client_keys_file, or the set of its client_key_secrets (several secrets
// of one block are one source: rotation). Every key source of one Caddy
// counts in one ledger (and reports to one AI Gateway account), so two
// sources that gave the same ids would share counters and reports: a
// tenant's alice would use up another tenant's alice's limit. A source
// with a namespace gives ids key:<namespace>/<name> (identity.KeyID).
//
//   - The Caddyfile adapter gives every key source but the Caddyfile's
//     first one (in file order) that names none a namespace derived from
//     its site's address, written into the JSON (deriveKeyNamespaces).
//   - Provision warns when two live key sources of one config would give
//     the same ids (registerKeySources, over identity's registry): equal
//     namespaces, different sources.

// The kinds of key source.
const (
	keySourceFile   = "file"
	keySourceSigned = "signed"
)

// keyNamespacesState is the adapter's record of the namespaces of one
// Caddyfile, kept in the Helper's State (shared by every site block,
// which are parsed in file order).
type keyNamespacesState struct {
	plain bool            // a key source without a namespace was seen: the next ones get one
	taken map[string]bool // the namespaces named or derived so far
}

const keyNamespacesStateKey = "ai_gateway_auth.key_namespaces"

// deriveKeyNamespaces gives each of handler's key sources that names no
// namespace one derived from its site block's first address, unless it
// is the first such source of the Caddyfile, which keeps plain ids (so a
// Caddy with one key source gives key:<name>). A derived namespace is
// made unique among the Caddyfile's: the address, then the address and
// the kind (.file, .signed), then .2, .3 and so on.
func deriveKeyNamespaces(h httpcaddyfile.Helper, handler *Handler) {
	if h.State == nil {
		return
	}
	st, _ := h.State[keyNamespacesStateKey].(*keyNamespacesState)
	if st == nil {
		st = &keyNamespacesState{taken: map[string]bool{}}
		h.State[keyNamespacesStateKey] = st
	}
	for _, kind := range handler.keySourceOrder { // the named ones first: a derived one avoids them
		if ns := *handler.keyNamespace(kind); ns != "" {
			st.taken[ns] = true
		}
	}
	named := h.IsNamedRoute() // adapted apart, before the sites: never plain
	for _, kind := range handler.keySourceOrder {
		ns := handler.keyNamespace(kind)
		if *ns != "" {
			continue
		}
		if !st.plain && !named {
			st.plain = true
			continue
		}
		*ns = st.unique(siteNamespace(h), kind)
	}
}

// unique returns base, or base with the kind, or with a number, the
// first that no other key source of the Caddyfile has; and takes it.
func (st *keyNamespacesState) unique(base, kind string) string {
	ns := base
	for n := 1; st.taken[ns]; n++ {
		if n == 1 {
			ns = base + "." + kind
		} else {
			ns = base + "." + strconv.Itoa(n)
		}
	}
	st.taken[ns] = true
	return ns
}

// maxDerivedBase leaves room for a suffix (".signed", ".99") within
// identity.MaxNamespaceLen.
const maxDerivedBase = identity.MaxNamespaceLen - 16

// siteNamespace is the namespace a site block's address gives: scheme
// and path dropped, other characters outside the namespace's replaced
// by '_' (tenant2.example.com, :4001, _.example.com). A named route
// (&(name)) gives route.<name>.
func siteNamespace(h httpcaddyfile.Helper) string {
	addr := siteAddress(h) // a named route's is its name
	if h.IsNamedRoute() {
		addr = "route." + addr
	} else {
		if _, rest, ok := strings.Cut(addr, "://"); ok {
			addr = rest
		}
		addr, _, _ = strings.Cut(addr, "/")
	}
	b := []byte(addr)
	for i, c := range b {
		if !identity.NamespaceByte(c) {
			b[i] = '_'
		}
	}
	if len(b) > maxDerivedBase {
		b = b[:maxDerivedBase]
	}
	if len(b) == 0 {
		return "site"
	}
	return string(b)
}

// siteAddress is the first key of the site block the Helper is in.
// Caddy keeps it in an unexported field (Helper.parentBlock) and has no
// accessor, so it is read by reflection, read-only; if a Caddy version
// moves it, the derived namespaces are "site", "site.2", … (still
// unique; the golden key_namespaces.caddytest fails then).
func siteAddress(h httpcaddyfile.Helper) string {
	block := reflect.ValueOf(h).FieldByName("parentBlock")
	if !block.IsValid() || block.Kind() != reflect.Struct {
		return ""
	}
	keys := block.FieldByName("Keys")
	if !keys.IsValid() || keys.Kind() != reflect.Slice || keys.Len() == 0 {
		return ""
	}
	key := keys.Index(0)
	if key.Kind() != reflect.Struct {
		return ""
	}
	text := key.FieldByName("Text")
	if !text.IsValid() || text.Kind() != reflect.String {
		return ""
	}
	return text.String()
}

// keyNamespace is the namespace field of the key source of kind.
func (h *Handler) keyNamespace(kind string) *string {
	if kind == keySourceFile {
		return &h.ClientKeysFileNamespace
	}
	return &h.ClientKeySecretsNamespace
}

// keySourcesOf lists h's key sources (after provisionClientKeys).
func (h *Handler) keySourcesOf() []*identity.KeySource {
	var out []*identity.KeySource
	if h.ClientKeysFile != "" {
		path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(h.ClientKeysFile, ""))
		if err != nil {
			path = h.ClientKeysFile
		}
		out = append(out, &identity.KeySource{Namespace: h.ClientKeysFileNamespace, Identity: "file " + path,
			Describe: "client_keys_file " + path})
	}
	if h.keys.Signs() {
		describe := "client_key_secret"
		for _, s := range h.ClientKeySecrets {
			if isPlaceholder(s) { // never a literal secret
				describe += " " + s
			}
		}
		out = append(out, &identity.KeySource{Namespace: h.ClientKeySecretsNamespace, Identity: "signed " + h.keys.SecretsFingerprint(),
			Describe: describe})
	}
	return out
}

// isPlaceholder reports whether s is one placeholder, such as
// {env.CLIENT_KEY_SECRET}: the name of a secret, not a secret.
func isPlaceholder(s string) bool {
	return len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && strings.Count(s, "{") == 1 && strings.Count(s, "}") == 1
}

// registerKeySources adds h's key sources to the registry of its config
// load (identity.RegisterKeySources), and warns for each other live
// source of that load that would give the same ids: the same namespace,
// another source.
func registerKeySources(ctx caddy.Context, h *Handler) *identity.Registration {
	reg, collisions := identity.RegisterKeySources(ctx.Done(), h.keySourcesOf())
	for _, c := range collisions {
		ns := c.Source.Namespace
		if ns == "" {
			ns = "(none)"
		}
		h.logger.Warn("two key sources give their clients the same ids, so their clients share limits, metrics and reports; name a different namespace on one of them: client_keys_file <path> { namespace <name> } or client_key_secret <secret> { namespace <name> }",
			zap.String("namespace", ns), zap.String("source", c.Source.Describe), zap.String("other_source", c.Other.Describe))
	}
	return reg
}
