package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The namespaces reach the ids the handler sets, for keys file entries
// and signed keys alike; and a JSON config with an invalid namespace
// does not load.
func TestHandlerKeyNamespaces(t *testing.T) {
	keys := writeFile(t, t.TempDir(), "keys", "alice sk-file-alice\nteam/bob sk-file-bob\n")
	h := provisionHandler(t, &Handler{
		CredentialsRaw:            []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeysFile:            keys,
		ClientKeysFileNamespace:   "files",
		ClientKeySecrets:          []string{testClientSecret},
		ClientKeySecretsNamespace: "tenant2.example.com",
	})
	for key, want := range map[string]string{
		"sk-file-alice":                        "key:files/alice",
		"sk-file-bob":                          "key:files/team%2Fbob",
		mustSign(t, "alice", testClientSecret): "key:tenant2.example.com/alice",
	} {
		r, repl := withReplacer(httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}")))
		r.Header.Set("Authorization", "Bearer "+key)
		var next recordingNext
		if w := serve(t, h, r, next.handler()); w.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", want, w.Code, w.Body)
		}
		if id, _ := repl.Get("ai_gateway_auth.client_id"); id != want {
			t.Errorf("{ai_gateway_auth.client_id} = %v, want %s", id, want)
		}
	}

	for _, bad := range []*Handler{
		{ClientKeySecrets: []string{testClientSecret}, ClientKeySecretsNamespace: "a/b"},
		{ClientKeysFile: keys, ClientKeysFileNamespace: "{env.NS}"},
	} {
		bad.CredentialsRaw = []json.RawMessage{staticSourceJSON(testStaticKey)}
		err := tryProvisionHandler(t, bad)
		if err == nil || !strings.Contains(err.Error(), "namespace") {
			t.Errorf("an invalid namespace: Provision() = %v", err)
		}
	}
}

// keySourceHandler is a handler with key sources as Provision sets them
// up, its warnings observed, registered in ctx's config.
func keySourceHandler(t *testing.T, ctx caddy.Context, h *Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.WarnLevel)
	h.logger = zap.New(core)
	if err := h.provisionClientKeys(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	h.keySources = registerKeySources(ctx, h)
	return h, logs
}

const keySourceWarning = "two key sources give their clients the same ids"

// Two live key sources of one config that would give the same ids are
// warned about, naming both and the namespace, never a secret; one
// source named twice (the same secrets, the same file), sources of
// different configs (a reload's old and new) and sources with different
// namespaces are not.
func TestKeySourceCollisionWarning(t *testing.T) {
	secret1, secret2 := "tenant-one-secret-0123456789", "tenant-two-secret-0123456789"
	t.Setenv("AIGW_TEST_TENANT1", secret1)
	t.Setenv("AIGW_TEST_TENANT2", secret2)
	warnings := func(logs *observer.ObservedLogs) []observer.LoggedEntry {
		return logs.FilterMessageSnippet(keySourceWarning).AllUntimed()
	}
	keys := writeFile(t, t.TempDir(), "keys", "alice sk-file-alice\n")

	t.Run("same namespace, different secrets", func(t *testing.T) {
		ctx := newTestContext(t)
		keySourceHandler(t, ctx, &Handler{ClientKeySecrets: []string{"{env.AIGW_TEST_TENANT1}"}, ClientKeySecretsNamespace: "acme"})
		_, logs := keySourceHandler(t, ctx, &Handler{ClientKeySecrets: []string{secret2}, ClientKeySecretsNamespace: "acme"})
		w := warnings(logs)
		if len(w) != 1 {
			t.Fatalf("%d warnings, want 1: %v", len(w), logs.AllUntimed())
		}
		fields := w[0].ContextMap()
		if fields["namespace"] != "acme" || fields["source"] != "client_key_secret" || fields["other_source"] != "client_key_secret {env.AIGW_TEST_TENANT1}" {
			t.Errorf("warning fields %v", fields)
		}
		assertLogsClean(t, logs, secret1, secret2)
	})
	t.Run("keys file and secrets of one site, no namespaces (JSON)", func(t *testing.T) {
		ctx := newTestContext(t)
		_, logs := keySourceHandler(t, ctx, &Handler{ClientKeysFile: keys, ClientKeySecrets: []string{"{env.AIGW_TEST_TENANT1}"}})
		w := warnings(logs)
		if len(w) != 1 || w[0].ContextMap()["namespace"] != "(none)" || !strings.HasPrefix(w[0].ContextMap()["other_source"].(string), "client_keys_file ") {
			t.Fatalf("warnings %v, want one for the namespace (none) naming the keys file", logs.AllUntimed())
		}
	})
	t.Run("two keys files, one namespace", func(t *testing.T) {
		ctx := newTestContext(t)
		other := writeFile(t, t.TempDir(), "keys", "alice sk-file-alice-2\n")
		keySourceHandler(t, ctx, &Handler{ClientKeysFile: keys, ClientKeysFileNamespace: "acme"})
		_, logs := keySourceHandler(t, ctx, &Handler{ClientKeysFile: other, ClientKeysFileNamespace: "acme"})
		if len(warnings(logs)) != 1 {
			t.Errorf("warnings %v, want one", logs.AllUntimed())
		}
	})

	for _, tc := range []struct {
		name         string
		first, other *Handler
		otherConfig  bool
	}{
		{"one secret set named twice (a site on two ports)",
			&Handler{ClientKeySecrets: []string{"{env.AIGW_TEST_TENANT1}", secret2}, ClientKeySecretsNamespace: "acme"},
			&Handler{ClientKeySecrets: []string{secret2, secret1}, ClientKeySecretsNamespace: "acme"}, false},
		{"one keys file named twice",
			&Handler{ClientKeysFile: keys}, &Handler{ClientKeysFile: keys}, false},
		{"different namespaces",
			&Handler{ClientKeySecrets: []string{secret1}},
			&Handler{ClientKeySecrets: []string{secret2}, ClientKeySecretsNamespace: "tenant2"}, false},
		{"another config (a reload's old and new live side by side)",
			&Handler{ClientKeySecrets: []string{secret1}}, &Handler{ClientKeySecrets: []string{secret2}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := newTestContext(t)
			_, logs1 := keySourceHandler(t, ctx, tc.first)
			if tc.otherConfig {
				ctx = newTestContext(t)
			}
			_, logs2 := keySourceHandler(t, ctx, tc.other)
			if w := append(warnings(logs1), warnings(logs2)...); len(w) != 0 {
				t.Errorf("warned: %v", w)
			}
		})
	}

	t.Run("a source cleaned up is gone", func(t *testing.T) {
		ctx := newTestContext(t)
		first, _ := keySourceHandler(t, ctx, &Handler{ClientKeySecrets: []string{secret1}})
		if err := first.Cleanup(); err != nil {
			t.Fatal(err)
		}
		_, logs := keySourceHandler(t, ctx, &Handler{ClientKeySecrets: []string{secret2}})
		if w := warnings(logs); len(w) != 0 {
			t.Errorf("warned against a source cleaned up: %v", w)
		}
		// a probe in the same namespace collides with every live source
		// of the config: only the second handler's is left
		probe, collisions := identity.RegisterKeySources(ctx.Done(), []*identity.KeySource{{Identity: "probe"}})
		probe.Unregister()
		if len(collisions) != 1 {
			t.Errorf("the registry holds %d sources of the config, want 1", len(collisions))
		}
	})
	t.Run("the HTTP app's per-server contexts are one config", func(t *testing.T) {
		// caddyhttp wraps the config's context with a value per server
		type serverKey struct{}
		ctx := newTestContext(t)
		server1, server2 := ctx, ctx
		server1.Context = context.WithValue(ctx.Context, serverKey{}, 1)
		server2.Context = context.WithValue(ctx.Context, serverKey{}, 2)
		keySourceHandler(t, server1, &Handler{ClientKeySecrets: []string{secret1}})
		_, logs := keySourceHandler(t, server2, &Handler{ClientKeySecrets: []string{secret2}})
		if len(warnings(logs)) != 1 {
			t.Errorf("warnings %v, want one", logs.AllUntimed())
		}
	})
}

// adaptedNamespaces adapts a Caddyfile and maps each ai_gateway_auth
// handler's first client_key_secret to its secrets' namespace ("" for
// none).
func adaptedNamespaces(t *testing.T, caddyfile string) map[string]string {
	t.Helper()
	out, _, err := adapt(t, "Caddyfile", caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "ai_gateway_auth" {
				secrets, _ := v["client_key_secrets"].([]any)
				ns, _ := v["client_key_secrets_namespace"].(string)
				if len(secrets) > 0 {
					got[secrets[0].(string)] = ns
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(cfg)
	return got
}

// The adapter's rule, as a user meets it: a Caddyfile with one key
// source keeps plain ids; a site added after the others changes no
// existing id; a site moved above the first takes the plain ids (which
// is why namespaces that must not depend on order are named).
func TestKeyNamespacesDerived(t *testing.T) {
	site := func(addr, secret string) string {
		return addr + " {\n\tai_gateway_auth {\n\t\tcredential static {env.K}\n\t\tclient_key_secret {env." + secret +
			"}\n\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	one, two, three := site("http://tenant1.example.com", "S1"), site("http://tenant2.example.com", "S2"), site(":4003", "S3")
	for _, tc := range []struct {
		name  string
		sites []string
		want  map[string]string
	}{
		{"one key source", []string{one}, map[string]string{"{env.S1}": ""}},
		{"two", []string{one, two}, map[string]string{"{env.S1}": "", "{env.S2}": "tenant2.example.com"}},
		{"a third added after", []string{one, two, three}, map[string]string{"{env.S1}": "", "{env.S2}": "tenant2.example.com", "{env.S3}": ":4003"}},
		{"the second moved first", []string{two, one}, map[string]string{"{env.S2}": "", "{env.S1}": "tenant1.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := adaptedNamespaces(t, strings.Join(tc.sites, "\n"))
			if len(got) != len(tc.want) {
				t.Fatalf("namespaces %v, want %v", got, tc.want)
			}
			for secret, ns := range tc.want {
				if got[secret] != ns {
					t.Errorf("the key source %s has namespace %q, want %q (all: %v)", secret, got[secret], ns, got)
				}
			}
		})
	}
}
