// Package caddymodule is the ai_gateway_auth Caddy module: an HTTP
// handler that lets untrusted sandboxes use Vercel AI Gateway through
// Caddy's reverse_proxy without ever holding a real credential.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/jsonbody"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

const defaultCredentialWait = 10 * time.Second

// Handler checks who the client is, removes every credential the client
// sent, and sets Authorization: Bearer <credential> with a credential it
// resolved itself, then hands the request to the next handler (normally
// reverse_proxy to AI Gateway).
//
// Placeholders set per request:
//
//	{ai_gateway_auth.client}             the client's readable name: "placeholder" for a literal client_key, the key's name (client_keys_file, signed key), or the sandbox name/id
//	{ai_gateway_auth.client_id}          the client's unique id: "placeholder", "key:<name>", "key:<namespace>/<name>" or "sandbox:<team>/<project>/<sandbox id>" (identity.go)
//	{ai_gateway_auth.credential_source}  the source whose credential was sent: "static" or "vercel_oidc"
//	{ai_gateway_auth.usage.input_tokens}  input tokens the response reported (metering on; set when the response ends)
//	{ai_gateway_auth.usage.output_tokens} output tokens the response reported (likewise)
type Handler struct {
	// Upstream credential sources, in priority order: per request, the
	// first one with a usable credential wins. A source with nothing
	// (an empty env variable) is skipped.
	CredentialsRaw []json.RawMessage `json:"credentials,omitempty" caddy:"namespace=http.handlers.ai_gateway_auth.credentials inline_key=source"`

	// Literal client keys that are accepted (e.g. sk-placeholder); the
	// client is named "placeholder". Placeholders are resolved at
	// provision.
	ClientKeys []string `json:"client_keys,omitempty"`

	// A file of named client keys, one "<name> <key>" per line (# starts a
	// comment). It is re-read whenever it changes.
	ClientKeysFile string `json:"client_keys_file,omitempty"`

	// The namespace of the ids of client_keys_file's clients:
	// key:<namespace>/<name> instead of key:<name>, so that two key
	// sources of one Caddy (or of fleets sharing one Redis) never give
	// the same id. 1-64 of A-Z, a-z, 0-9, '.', '_', ':', '-'. The
	// Caddyfile adapter derives one from the site's address for every
	// key source but the Caddyfile's first. Default: none.
	ClientKeysFileNamespace string `json:"client_keys_file_namespace,omitempty"`

	// Secrets under which signed client keys sk-aigw-<name>.<sig> are
	// accepted (sig: unpadded base64url HMAC-SHA256 of name). Several may
	// be given, to rotate a secret. Placeholders are resolved at
	// provision.
	ClientKeySecrets []string `json:"client_key_secrets,omitempty"`

	// The namespace of the ids of signed keys' clients, as
	// client_keys_file_namespace (the secrets together are one key
	// source). Default: none.
	ClientKeySecretsNamespace string `json:"client_key_secrets_namespace,omitempty"`

	// A file of revoked client names (signed keys and client_keys_file
	// names), one per line. It is re-read whenever it changes.
	ClientKeysRevokedFile string `json:"client_keys_revoked_file,omitempty"`

	// Accept requests forwarded by a Vercel Sandbox firewall forwardURL
	// rule, authenticated by their sandbox OIDC token.
	VercelSandbox *VercelSandbox `json:"vercel_sandbox,omitempty"`

	// Paths that may be sent upstream; others get 403 path_not_allowed.
	// Each is an exact path (/v1/models), a prefix ending in * (/v1/*;
	// * or /* alone allows every path), the model rule
	// "/v1/models/<model id>[/endpoints]" (a model id of one or two
	// segments of letters, digits and - _ . :, then optionally
	// /endpoints), or the word "default" for the default list, so
	// ["default", "/v1/credits"] adds one path to it. Whatever the list, a
	// path with a dot segment, a ; or an ambiguous percent-encoding (an
	// encoded / \ . ; or %, a control byte, a byte of 0x80 or above) is
	// refused.
	//
	// Default: AI Gateway's inference endpoints and model listing only:
	// /v1/chat/completions, /v1/completions, /v1/responses,
	// /v1/responses/compact, /v1/messages, /v1/messages/count_tokens,
	// /v1/embeddings, /v1/images/generations, /v1/images/edits,
	// /v1/audio/speech, /v1/audio/transcriptions, /v1/rerank, /v2/rerank,
	// /v1/models and "/v1/models/<model id>[/endpoints]"; never the
	// account's endpoints (/v1/report, /v1/credits, /v1/generation,
	// /v1/quotas, /v1/realtime/client-secrets).
	AllowPaths []string `json:"allow_paths,omitempty"`

	// Request bodies up to this many bytes are kept while they stream
	// upstream, so that the request can be replayed once with a fresh
	// token after an upstream 401. Larger bodies are not replayed.
	// Default: 1 MiB.
	RetryBodyLimit int64 `json:"retry_body_limit,omitempty"`

	// The most memory the replay copies of this handler's requests in
	// flight may use together, in bytes; a body that finds it used is
	// sent without a copy. Default (0): 4 KiB per request in flight, and
	// at least retry_body_limit.
	RetryMemoryLimit int64 `json:"retry_memory_limit,omitempty"`

	// How long a request may wait for a credential when no source has one
	// cached (e.g. the first mint after start). Default: 10s.
	CredentialWait caddy.Duration `json:"credential_wait,omitempty"`

	// Stamp AI Gateway's spend reports with the client (ai-reporting-user
	// and ai-reporting-tags). Default: off.
	Reporting *Reporting `json:"reporting,omitempty"`

	// Per-client limits. Default: none.
	Limits *Limits `json:"limits,omitempty"`

	// Meter usage per client without reporting or limits (either of them
	// turns metering on too). Default: false.
	UsageMetrics bool `json:"usage_metrics,omitempty"`

	sources     []credential.Source
	sourceKinds []any // each source's Kind, boxed once for the replacer
	// each source as a refusable, for sources whose token can be replaced
	// after an upstream 401 (nil for the others), looked up once
	refusables   []refusable
	keys         *identity.Keys
	sandbox      *identity.SandboxVerifier
	paths        *pathAllowList
	pushes       map[string]*pushTarget
	jwks         *oidc.Cache
	watchers     []*filewatch.Watcher
	logger       *zap.Logger
	statusHandle *statusEntry
	spend        *spend // nil unless reporting, limits or usage_metrics
	replayBudget *replay.Budget
	keySources   *identity.Registration // this handler's entries in the registry of key sources (keynamespace.go)

	// the key sources in the order the Caddyfile block names them
	// (keySourceFile, keySourceSigned), for the adapter's namespaces, and
	// the line that named the secrets' namespace (for errors)
	keySourceOrder       []string
	secretsNamespaceLine int
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

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
	paths := h.AllowPaths
	if len(paths) == 0 {
		paths = defaultAllowPaths
	}
	if h.paths, err = newPathAllowList(paths); err != nil {
		return err
	}
	if err := h.provisionSpend(); err != nil {
		return err
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
	return nil
}

// ServeHTTP authenticates the client, swaps its credential for an
// upstream one and calls the next handler. The response is not buffered:
// SSE streams flow through as reverse_proxy writes them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// an HTTP/1.1 request that offers h2c is served as HTTP/1.1 (upgrade.go)
	dropH2CUpgrade(r.Header)
	if h.pushes != nil {
		if t := h.pushes[r.URL.Path]; t != nil {
			return h.servePush(w, r, t)
		}
	}

	var client *identity.Principal
	if h.sandbox != nil && identity.FirstValue(r.Header, identity.HeaderSandboxToken) != "" {
		var err error
		if client, err = h.sandbox.Identify(r); err != nil {
			return h.forbid(w, r, "sandbox_rejected", safetext.Public(err, "the sandbox token could not be verified"), err.Error())
		}
		identity.UseForwardedPath(r)
	} else {
		var reason string
		if client, reason = h.keys.Identify(identity.KeyFromRequest(r.Header)); reason != "" {
			return h.rejectClient(w, r, client, reason)
		}
	}
	if !h.paths.allows(r.URL.EscapedPath()) {
		return h.forbid(w, r, "path_not_allowed", "this path is not allowed through this proxy (allow_paths)",
			"path "+safetext.Clipped(r.URL.EscapedPath())+" is not allowed through this proxy (allow_paths)")
	}

	if h.spend != nil && upgradeRequest(r) {
		// a WebSocket (AI Gateway's /v1/responses has one) carries its
		// messages and usage in frames the proxy cannot meter or edit:
		// with limits, reporting or metering, it would bypass them
		return h.forbid(w, r, "upgrade_not_allowed",
			"WebSocket and other upgraded connections cannot be metered on this proxy; use HTTP streaming (SSE)",
			"an upgrade to "+safetext.Clipped(r.Header.Get("Upgrade"))+" with metering on")
	}
	if credentialInTrailers(r) {
		return h.badRequest(w, r, client.Name(), "credential_in_trailer",
			"credentials must be sent as request headers, not as trailers")
	}
	// after the client check: its key may be in a header it named
	dropConnectionOptions(r.Header)

	src, cred, err := h.credential(r.Context())
	if err != nil {
		return h.noCredential(w, r, client.Name(), err)
	}
	setUpstreamAuth(r.Header, cred)

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.client", client.Name())
		repl.Set("ai_gateway_auth.client_id", client.ID())
		repl.Set("ai_gateway_auth.credential_source", h.sourceKinds[src])
	}
	if h.spend == nil {
		return h.forward(w, r, next, src, cred)
	}
	// limits, reporting headers, metering (spend.go), by client id
	mw, req, err := h.spend.begin(w, r, client.ID())
	if mw == nil {
		return err
	}
	defer mw.end()
	return mw.answerRefused(h.forward(mw, req, next, src, cred))
}

// forward hands the request to the next handler, with a replay after a
// 401 when the credential's source can replace it.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, src int, cred *credential.Credential) error {
	if h.refusables[src] == nil { // a static key: no replay
		err := next.ServeHTTP(w, r)
		countForwarded(w)
		return err
	}
	return h.serveWithReplay(w, r, next, src, cred, h.refusables[src])
}

// credential returns the first usable credential in priority order,
// waiting (up to credential_wait) only when no source has one cached.
func (h *Handler) credential(ctx context.Context) (int, *credential.Credential, error) {
	now := time.Now()
	for i, s := range h.sources {
		if c := s.Current(now); c != nil {
			return i, c, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.CredentialWait))
	defer cancel()
	var reasons, public []string
	for i, s := range h.sources {
		c, err := s.Fetch(ctx)
		if err == nil {
			return i, c, nil
		}
		reasons = append(reasons, s.Kind()+": "+err.Error())
		public = append(public, s.Kind()+" ("+safetext.Public(err, "unavailable")+")")
	}
	return -1, nil, safetext.Refuse(strings.Join(public, "; "), strings.Join(reasons, "; "))
}

// setUpstreamAuth removes every credential the client sent (and the
// Vercel Sandbox forwarding headers) and sets the upstream credential.
// One pass over the header map is cheaper than a delete per name; the
// header slices are the credential's own, built once.
func setUpstreamAuth(hdr http.Header, cred *credential.Credential) {
	for k := range hdr {
		if controlledHeader(k) || controlledHeaderAlias(k) { // X_Api_Key and the like
			delete(hdr, k) // Authorization and the method are set below
		}
	}
	setCredential(hdr, cred)
}

// setCredential sets the upstream credential and its method. The header
// slices are the credential's own, built once.
func setCredential(hdr http.Header, cred *credential.Credential) {
	hdr["Authorization"] = cred.AuthHeader()
	hdr["Ai-Gateway-Auth-Method"] = cred.MethodHeader()
}

// serveWithReplay forwards the request; if the upstream answers 401
// before anything reached the client, it drops the credential, gets a
// fresh one and replays the request once (if its body could be kept).
func (h *Handler) serveWithReplay(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler,
	src int, cred *credential.Credential, source refusable) error {
	origBody := r.Body
	h.replayBudget.Enter()
	defer h.replayBudget.Leave()
	a := replay.Begin(w, r, h.RetryBodyLimit, h.replayBudget)
	defer a.End()
	err := next.ServeHTTP(a.Writer(), r)
	if !a.Held() {
		r.Body = origBody
		countForwarded(w)
		return err
	}

	// The source decides whether the 401 costs the credential: only a
	// different token replaces it (see refresher.Refused).
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.CredentialWait))
	fresh := source.Refused(ctx, cred)
	cancel()
	if fresh == nil {
		forwardedCounter.Inc()
		return a.SendHeld()
	}
	body, err := a.Body()
	if errors.Is(err, jsonbody.ErrRefused) {
		// the body editor refused the rest: answered 400 (answerRefused)
		a.Discard(w.Header())
		return err
	}
	if err != nil {
		// The credential is replaced, so sending the request again works:
		// the SDKs (OpenAI's, Anthropic's) retry an answer so marked at
		// once, whatever its status; the 401 itself stays the gateway's.
		w.Header().Set("X-Should-Retry", "true")
		h.logNoReplay(src, err)
		forwardedCounter.Inc()
		return a.SendHeld()
	}
	a.Discard(w.Header()) // the held 401 is not needed while the replay streams
	if origBody == nil || origBody == http.NoBody {
		r.Body = origBody
	} else {
		r.Body = body
	}
	// only the credential changes: the client's headers are already gone,
	// and the module's own (reporting) must stay
	setCredential(r.Header, fresh)
	replayedCounter.Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "replaying request with a fresh credential"); c != nil {
		c.Write(zap.String("source", h.sources[src].Kind()), zap.Time("expires", fresh.Expires()))
	}
	err = next.ServeHTTP(w, r)
	r.Body = origBody
	return err
}

// logNoReplay says why a request refused with a replaceable credential
// was not replayed.
func (h *Handler) logNoReplay(src int, why error) {
	kind := zap.String("source", h.sources[src].Kind())
	switch why {
	case replay.ErrBodyTooLarge:
		h.logger.Warn("upstream refused the credential; request body too large to replay",
			kind, zap.Int64("retry_body_limit", h.RetryBodyLimit))
	case replay.ErrMemory:
		h.logger.Warn("upstream refused the credential; replay memory in use, request body not kept",
			kind, zap.Int64("retry_memory_limit", h.replayBudget.Limit()))
	default:
		h.logger.Warn("upstream refused the credential; request body could not be read again",
			kind, zap.Error(why))
	}
}

// rejectClient answers 401. client is a revoked client (its key is
// valid), nil otherwise: an unverified key names no one.
func (h *Handler) rejectClient(w http.ResponseWriter, r *http.Request, client *identity.Principal, reason string) error {
	clientRejectedCounter.Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "client rejected"); c != nil {
		fields := []zap.Field{zap.String("reason", reason), zap.String("remote_ip", remoteIP(r)),
			zap.String("method", r.Method), zap.String("path", safetext.Clipped(r.URL.Path))}
		if client != nil {
			fields = append(fields, zap.Any("client", client.Name()))
		}
		c.Write(fields...)
	}
	msg := reason + ": this proxy accepts only the client keys it is configured with; " +
		"set your SDK's API key (sent as Authorization: Bearer, x-api-key or api-key) to the key you were given"
	if reason == identity.RejectRevoked {
		msg = reason + ": this client's access has been revoked"
	}
	return writeError(w, r, http.StatusUnauthorized, errAuthentication, "invalid_api_key", msg)
}

// forbid answers 403 with message, which says what is wrong in general
// terms; reason, which may name configured values, goes to the log only.
func (h *Handler) forbid(w http.ResponseWriter, r *http.Request, code, message, reason string) error {
	forbiddenCounter.Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "request forbidden"); c != nil {
		c.Write(zap.String("reason", reason), zap.String("remote_ip", remoteIP(r)),
			zap.String("method", r.Method))
	}
	return writeError(w, r, http.StatusForbidden, errPermission, code, message)
}

func (h *Handler) noCredential(w http.ResponseWriter, r *http.Request, client any, err error) error {
	noCredentialCounter.Inc()
	var retry time.Duration // the soonest any source may have one again
	for _, s := range h.sources {
		if ra, ok := s.(interface{ RetryAfter() time.Duration }); ok {
			if d := ra.RetryAfter(); retry == 0 || d < retry {
				retry = d
			}
		}
	}
	// the whole reasons name env variables, files and API addresses: they
	// go to the log (and the admin status route), never to a client
	h.logger.Error("no upstream credential", zap.Any("client", client), zap.Error(err))
	w.Header().Set("Retry-After", retryAfterSeconds(retry))
	// The client learns which sources were tried and why in categories
	// ("vercel_oidc (mint: failed)"); names, paths and addresses are for
	// the log and the admin status route.
	return writeError(w, r, http.StatusServiceUnavailable, errUnavailable, "no_upstream_credential",
		"the proxy has no usable upstream credential right now; tried "+safetext.Public(err, "every source")+
			"; retry after the time in the Retry-After header")
}

// badRequest answers 400 for a request the module refuses to forward.
func (h *Handler) badRequest(w http.ResponseWriter, r *http.Request, client any, code, message string) error {
	badRequestCounter.Inc()
	if c := h.logger.Check(zapcore.InfoLevel, "request refused"); c != nil {
		c.Write(zap.String("code", code), zap.Any("client", client), zap.String("remote_ip", remoteIP(r)),
			zap.String("method", r.Method))
	}
	return writeError(w, r, http.StatusBadRequest, errInvalidRequest, code, message)
}

func remoteIP(r *http.Request) string {
	if addr, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && addr != "" {
		return addr
	}
	return r.RemoteAddr
}

// refusable is a source whose credential can be replaced after the
// upstream refused it: Refused returns the credential to replay with, or
// nil when the request's 401 must go to the client as it is.
type refusable interface {
	Refused(ctx context.Context, c *credential.Credential) *credential.Credential
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
