// Package caddymodule is the ai_gateway_auth Caddy module: an HTTP
// handler that lets untrusted sandboxes use Vercel AI Gateway through
// Caddy's reverse_proxy without ever holding a real credential.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

const defaultCredentialWait = 10 * time.Second

// Handler checks the client's key, removes every credential the client
// sent, and sets Authorization: Bearer <credential> with a credential it
// resolved itself, then hands the request to the next handler (normally
// reverse_proxy to AI Gateway).
//
// Placeholders set per request:
//
//	{ai_gateway_auth.client}             the client's name: "placeholder" for a literal client_key, the name from client_keys_file
//	{ai_gateway_auth.credential_source}  the source whose credential was sent: "static" or "vercel_oidc"
type Handler struct {
	// Upstream credential sources, in priority order: per request, the
	// first one with a usable credential wins. A source with nothing
	// (an empty env variable) is skipped.
	CredentialsRaw []json.RawMessage `json:"credentials,omitempty" caddy:"namespace=http.handlers.ai_gateway_auth.credentials inline_key=source"`

	// Literal client keys that are accepted (e.g. sk-placeholder).
	// Placeholders are resolved at provision.
	ClientKeys []string `json:"client_keys,omitempty"`

	// A file of named client keys, one "<name> <key>" per line (# starts a
	// comment). It is re-read whenever it changes.
	ClientKeysFile string `json:"client_keys_file,omitempty"`

	// How long a request may wait for a credential when no source has one
	// cached (e.g. the first mint after start). Default: 10s.
	CredentialWait caddy.Duration `json:"credential_wait,omitempty"`

	sources     []Source
	sourceKinds []any // each source's Kind, boxed once for the replacer
	keys        *clientKeys
	keysWatcher *fileWatcher
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the credential sources and the client keys. It reads
// local files and env variables only: no network call, so `caddy
// validate` works offline.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.CredentialWait == 0 {
		h.CredentialWait = caddy.Duration(defaultCredentialWait)
	}

	mods, err := ctx.LoadModule(h, "CredentialsRaw")
	if err != nil {
		return fmt.Errorf("loading credential sources: %v", err)
	}
	for _, m := range mods.([]any) {
		src, ok := m.(Source)
		if !ok {
			return fmt.Errorf("credential module %T is not a credential source", m)
		}
		h.sources = append(h.sources, src)
		h.sourceKinds = append(h.sourceKinds, src.Kind())
	}

	repl := caddy.NewReplacer()
	h.keys = &clientKeys{literal: clientKeySet{}}
	for _, k := range h.ClientKeys {
		key := strings.TrimSpace(repl.ReplaceAll(k, ""))
		if key == "" {
			h.logger.Warn("a client_key is empty and accepts nothing", zap.String("config", k))
			continue
		}
		h.keys.literal[keyDigest(sha256Sum(key))] = placeholderClient
	}
	if h.ClientKeysFile != "" {
		path, err := filepath.Abs(repl.ReplaceAll(h.ClientKeysFile, ""))
		if err != nil {
			return fmt.Errorf("client_keys_file: %v", err)
		}
		var firstErr error
		first := true
		h.keysWatcher = watchFile(path, func(content []byte, err error) {
			if err == nil {
				var set clientKeySet
				if set, err = parseClientKeysFile(content); err == nil {
					h.keys.file.Store(&set)
					h.logger.Info("client keys file read", zap.String("file", path), zap.Int("keys", len(set)))
				}
			}
			if err != nil {
				if first {
					firstErr = err
				}
				h.logger.Error("client keys file unusable; keeping the keys read before", zap.String("file", path), zap.Error(err))
			}
			first = false
		})
		if firstErr != nil {
			return fmt.Errorf("client_keys_file %s: %v", path, firstErr)
		}
	}
	if len(h.keys.literal) == 0 && h.keysWatcher == nil && len(h.ClientKeys) > 0 {
		return errors.New("every client_key is empty: set the variable its placeholder names, or use client_keys_file")
	}
	return nil
}

// Validate checks that the handler can work at all.
func (h *Handler) Validate() error {
	if len(h.sources) == 0 {
		return errors.New("no credential source: add `credential static {env.AI_GATEWAY_API_KEY}` or `credential vercel_oidc` to ai_gateway_auth")
	}
	if len(h.ClientKeys) == 0 && h.ClientKeysFile == "" {
		return errors.New(noClientAuthMessage)
	}
	return nil
}

const noClientAuthMessage = "no client authentication: anyone who reaches the proxy could spend your AI Gateway credit; " +
	"add `client_key sk-placeholder` (for a loopback or private network) or `client_keys_file <path>` to ai_gateway_auth"

// Cleanup stops the keys file watcher. Sources clean up themselves.
func (h *Handler) Cleanup() error {
	h.keysWatcher.stop()
	return nil
}

// ServeHTTP authenticates the client, swaps its credential for an
// upstream one and calls the next handler. The response is not wrapped or
// buffered: SSE streams flow through as reverse_proxy writes them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	client, ok := h.keys.identify(clientKeyFromRequest(r.Header))
	if !ok {
		return h.rejectClient(w, r)
	}

	now := time.Now()
	var cred *Credential
	var kind any
	for i, s := range h.sources {
		if cred = s.Current(now); cred != nil {
			kind = h.sourceKinds[i]
			break
		}
	}
	if cred == nil {
		var err error
		if cred, kind, err = h.fetch(r.Context()); err != nil {
			return h.noCredential(w, r, client, err)
		}
	}

	hdr := r.Header
	delete(hdr, "Authorization")
	delete(hdr, "X-Api-Key")
	delete(hdr, "Api-Key")
	delete(hdr, "Proxy-Authorization")
	hdr["Authorization"] = cred.authHeader
	hdr["Ai-Gateway-Auth-Method"] = cred.methodHeader

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.client", client)
		repl.Set("ai_gateway_auth.credential_source", kind)
	}
	return next.ServeHTTP(w, r)
}

// fetch waits (up to credential_wait) for a source to get a credential,
// in priority order. The error lists every source and why it had none.
func (h *Handler) fetch(ctx context.Context) (*Credential, any, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.CredentialWait))
	defer cancel()
	var reasons []string
	for i, s := range h.sources {
		c, err := s.Fetch(ctx)
		if err == nil {
			return c, h.sourceKinds[i], nil
		}
		reasons = append(reasons, s.Kind()+": "+err.Error())
	}
	return nil, nil, errors.New(strings.Join(reasons, "; "))
}

func (h *Handler) rejectClient(w http.ResponseWriter, r *http.Request) error {
	reason := "invalid client key"
	if clientKeyFromRequest(r.Header) == "" {
		reason = "missing client key"
	}
	if c := h.logger.Check(zapcore.InfoLevel, "client rejected"); c != nil {
		c.Write(zap.String("reason", reason), zap.String("remote_ip", remoteIP(r)),
			zap.String("method", r.Method), zap.String("uri", r.RequestURI))
	}
	msg := reason + ": this proxy accepts only the client keys it is configured with " +
		"(client_key / client_keys_file); set your SDK's API key (Authorization: Bearer, x-api-key or api-key) to one of them"
	return writeError(w, r, http.StatusUnauthorized, errAuthentication, "invalid_api_key", msg)
}

func (h *Handler) noCredential(w http.ResponseWriter, r *http.Request, client any, err error) error {
	var retry time.Duration // the soonest any source may have one again
	for _, s := range h.sources {
		if ra, ok := s.(interface{ RetryAfter() time.Duration }); ok {
			if d := ra.RetryAfter(); retry == 0 || d < retry {
				retry = d
			}
		}
	}
	h.logger.Error("no upstream credential", zap.Any("client", client), zap.Error(err))
	w.Header().Set("Retry-After", retryAfterSeconds(retry))
	return writeError(w, r, http.StatusServiceUnavailable, errUnavailable, "no_upstream_credential",
		"ai_gateway_auth has no usable upstream credential; tried "+err.Error())
}

func remoteIP(r *http.Request) string {
	if addr, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)["client_ip"].(string); ok {
		return addr
	}
	return r.RemoteAddr
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
