package caddymodule

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Provision loads the credential sources and the client checks. It reads
// local files and env variables only: no network call, so `caddy
// validate` works offline.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.CredentialWait == 0 {
		h.CredentialWait = caddy.Duration(defaultCredentialWait)
	}
	if h.RetryBodyLimit == 0 {
		h.RetryBodyLimit = replay.DefaultBodyLimit
	}
	h.replayBudget = replay.NewBudget(h.RetryMemoryLimit, h.RetryBodyLimit)
	if err := registerMetrics(ctx); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	h.jwks = oidc.NewCache()

	mods, err := ctx.LoadModule(h, "CredentialsRaw")
	if err != nil {
		return fmt.Errorf("loading credential sources: %v", err)
	}
	for _, m := range mods.([]any) {
		src, ok := m.(credential.Source)
		if !ok {
			return fmt.Errorf("credential module %T is not a credential source", m)
		}
		h.sources = append(h.sources, src)
		h.sourceKinds = append(h.sourceKinds, src.Kind())
		rs, _ := src.(refusable)
		h.refusables = append(h.refusables, rs)
		if err := h.addPush(src); err != nil {
			return err
		}
	}

	if err := h.provisionClientKeys(); err != nil {
		return err
	}
	h.keySources = registerKeySources(ctx, h)
	if h.VercelSandbox != nil {
		cfg, err := h.VercelSandbox.resolve()
		if err != nil {
			return err
		}
		h.sandbox = identity.NewSandboxVerifier(cfg, h.jwks)
	}
	if err := h.provisionPaths(); err != nil { // paths.go
		return err
	}
	if err := h.provisionSpend(); err != nil {
		return err
	}
	if err := h.provisionPolicies(); err != nil { // after spend: the block's limits and reporting are the default
		return err
	}
	if h.spend != nil {
		if err := h.provisionGateway(); err != nil { // catalog.go: no call made here
			return err
		}
	}
	h.statusHandle = registerStatus(h)
	return nil
}

func (h *Handler) provisionClientKeys() error {
	for _, o := range [...]struct{ option, ns string }{
		{"client_keys_file_namespace", h.ClientKeysFileNamespace},
		{"client_key_secrets_namespace", h.ClientKeySecretsNamespace},
	} {
		if o.ns != "" {
			if err := identity.CheckNamespace(o.ns); err != nil {
				return fmt.Errorf("%s: %v", o.option, err)
			}
		}
	}
	repl := caddy.NewReplacer()
	var literal []string
	var secrets [][]byte
	for _, k := range h.ClientKeys {
		key := strings.TrimSpace(repl.ReplaceAll(k, ""))
		if key == "" {
			h.logger.Warn("a client_key is empty and accepts nothing", zap.String("config", k))
			continue
		}
		literal = append(literal, key)
	}
	for _, s := range h.ClientKeySecrets {
		secret := repl.ReplaceAll(s, "")
		if secret == "" {
			h.logger.Warn("a client_key_secret is empty and accepts nothing", zap.String("config", s))
			continue
		}
		if len(secret) < identity.MinSecretLen {
			// the message names no value: the secret may be written literally
			h.logger.Warn(fmt.Sprintf("a client_key_secret is shorter than %d bytes, so signed keys are easier to forge; use a random secret, e.g. `openssl rand -base64 32`", identity.MinSecretLen))
		}
		secrets = append(secrets, []byte(secret))
	}
	h.keys = identity.NewKeys(literal, secrets, h.ClientKeySecretsNamespace)
	if h.ClientKeysFile != "" {
		err := h.watch("client_keys_file", h.ClientKeysFile, func(content []byte) error {
			set, err := identity.ParseKeysFile(content, h.ClientKeysFileNamespace)
			if err == nil {
				h.keys.SetFile(set)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	if h.ClientKeysRevokedFile != "" {
		err := h.watch("client_keys_revoked_file", h.ClientKeysRevokedFile, func(content []byte) error {
			h.keys.SetRevoked(identity.ParseNameList(content))
			// cached signed keys stay cached; revocation is checked per request
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(literal) == 0 && len(secrets) == 0 && h.ClientKeysFile == "" && h.VercelSandbox == nil && h.hasClientAuth() {
		return errors.New("every client_key and client_key_secret is empty: set the variables their placeholders name")
	}
	return nil
}

// watch reads a config file now (an error if it cannot be read or parsed)
// and again whenever it changes (keeping the last good content on error).
func (h *Handler) watch(option, file string, apply func([]byte) error) error {
	path, err := filepath.Abs(caddy.NewReplacer().ReplaceAll(file, ""))
	if err != nil {
		return fmt.Errorf("%s: %v", option, err)
	}
	var firstErr error
	first := true
	w := filewatch.Watch(path, func(content []byte, err error) {
		if err == nil {
			err = apply(content)
		}
		switch {
		case first && err != nil:
			firstErr = err // the config fails to load: nothing was read before
		case err != nil:
			h.logger.Error("file unusable; keeping what was read before", zap.String("option", option),
				zap.String("file", path), zap.Error(err))
		case first:
			h.logger.Info("file read", zap.String("option", option), zap.String("file", path))
		default:
			h.logger.Info("file re-read", zap.String("option", option), zap.String("file", path))
		}
		first = false
	})
	h.watchers = append(h.watchers, w)
	if firstErr != nil {
		if errors.Is(firstErr, fs.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist; create it before Caddy starts (%s)", option, path, watchedFileHint[option])
		}
		return fmt.Errorf("%s %s: %v", option, path, firstErr)
	}
	return nil
}

// watchedFileHint says what a missing watched file should hold.
var watchedFileHint = map[string]string{
	"client_keys_file":         `one "<name> <key>" line per client`,
	"client_keys_revoked_file": "one revoked client name per line; an empty file revokes no one",
}

func (h *Handler) addPush(src credential.Source) error {
	s, ok := src.(*VercelOIDCSource)
	if !ok || s.Push == nil {
		return nil
	}
	p := s.Push
	if !strings.HasPrefix(p.Path, "/") {
		return fmt.Errorf("push path %q must start with /", p.Path)
	}
	if h.pushes == nil {
		h.pushes = map[string]*pushTarget{}
	}
	if _, dup := h.pushes[p.Path]; dup {
		return fmt.Errorf("push path %s is used twice", p.Path)
	}
	h.pushes[p.Path] = newPushTarget(s)
	return nil
}

func (h *Handler) hasClientAuth() bool {
	return len(h.ClientKeys) > 0 || h.ClientKeysFile != "" || len(h.ClientKeySecrets) > 0 || h.VercelSandbox != nil
}

// Validate checks that the handler can work at all.
func (h *Handler) Validate() error {
	if len(h.sources) == 0 {
		return errors.New("no credential source: add `credential static {env.AI_GATEWAY_API_KEY}` or `credential vercel_oidc` to ai_gateway_auth")
	}
	if !h.hasClientAuth() {
		return errors.New(noClientAuthMessage)
	}
	if h.RetryBodyLimit < 0 || h.RetryMemoryLimit < 0 {
		return errors.New("retry_body_limit and retry_memory_limit must be positive sizes in bytes (retry_memory_limit 0 means auto)")
	}
	return nil
}

const noClientAuthMessage = "no client authentication: anyone who reaches the proxy could spend your AI Gateway credit; " +
	"add `client_key sk-placeholder` (for a loopback or private network), `client_keys_file <path>`, " +
	"`client_key_secret {env.CLIENT_KEY_SECRET}` or a `vercel_sandbox` block to ai_gateway_auth"

// Cleanup stops the file watchers. Sources clean up themselves.
func (h *Handler) Cleanup() error {
	for _, w := range h.watchers {
		w.Stop()
	}
	unregisterStatus(h.statusHandle)
	h.keySources.Unregister()
	h.cleanupSpend()
	h.releaseGateway()
	return nil
}
