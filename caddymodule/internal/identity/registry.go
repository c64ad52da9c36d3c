package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
)

// Key sources and their namespaces. A key source is a handler's
// client_keys_file, or the set of its client_key_secrets (several secrets
// of one block are one source: rotation). Every key source of one Caddy
// counts in one ledger (and reports to one AI Gateway account), so two
// sources that gave the same ids would share counters and reports: a
// tenant's alice would use up another tenant's alice's limit. A source
// with a namespace gives ids key:<namespace>/<name> (KeyID). The
// registry finds, per config load, the live sources that would give the
// same ids: equal namespaces, different sources.

// KeySource is one live key source, as the registry compares it.
type KeySource struct {
	// Namespace is the source's namespace, "" for none.
	Namespace string
	// Identity tells sources apart: the kind and the file's path, or a
	// fingerprint of the secrets (Keys.SecretsFingerprint).
	Identity string
	// Describe names the source for the log: the option and where, never
	// a secret.
	Describe string
}

// Collision is a key source that gives the same ids as another live one
// of its config load.
type Collision struct {
	Source, Other *KeySource
}

// Registration is a handler's entries in the registry.
type Registration struct {
	config  <-chan struct{}
	sources []*KeySource
}

// registry is every provisioned handler's key sources, by config load:
// the Done channel of the load's context, which every module of one load
// shares (a reload's new and old configs, which live side by side for a
// moment, never meet).
var registry = struct {
	sync.Mutex
	byConfig map[<-chan struct{}][]*KeySource
}{byConfig: map[<-chan struct{}][]*KeySource{}}

// RegisterKeySources adds sources to the registry of the config load
// config, and returns, for each of them, the other live sources of that
// load that would give the same ids (each other source once). It returns
// a nil Registration for no sources.
func RegisterKeySources(config <-chan struct{}, sources []*KeySource) (*Registration, []Collision) {
	if len(sources) == 0 {
		return nil, nil
	}
	registry.Lock()
	defer registry.Unlock()
	live := registry.byConfig[config]
	var collisions []Collision
	for _, s := range sources {
		warned := map[string]bool{}
		for _, o := range live {
			if o.Namespace != s.Namespace || o.Identity == s.Identity || warned[o.Identity] {
				continue
			}
			warned[o.Identity] = true
			collisions = append(collisions, Collision{Source: s, Other: o})
		}
		live = append(live, s)
	}
	registry.byConfig[config] = live
	return &Registration{config: config, sources: sources}, collisions
}

// Unregister removes the handler's key sources from the registry; safe
// on a nil Registration.
func (l *Registration) Unregister() {
	if l == nil {
		return
	}
	registry.Lock()
	defer registry.Unlock()
	live := slices.DeleteFunc(registry.byConfig[l.config], func(s *KeySource) bool {
		return slices.Contains(l.sources, s)
	})
	if len(live) == 0 {
		delete(registry.byConfig, l.config)
	} else {
		registry.byConfig[l.config] = live
	}
}

// secretsFingerprint identifies a set of secrets without revealing any:
// the HMAC of a fixed string under each secret, sorted, hashed.
func secretsFingerprint(secrets [][]byte) string {
	macs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		m := hmac.New(sha256.New, s)
		m.Write([]byte("ai_gateway_auth key source"))
		macs = append(macs, string(m.Sum(nil)))
	}
	slices.Sort(macs)
	macs = slices.Compact(macs)
	sum := sha256.Sum256([]byte(strings.Join(macs, "")))
	return hex.EncodeToString(sum[:16])
}
