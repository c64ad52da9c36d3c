// Package caddymodule is the ai_gateway_auth Caddy module: an HTTP
// handler that lets untrusted sandboxes use Vercel AI Gateway through
// Caddy's reverse_proxy without ever holding a real credential.
package caddymodule

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
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
//	{ai_gateway_auth.client_id}          the client's unique id: "placeholder", "key:<name>", "key:<namespace>/<name>" or "sandbox:<team>/<project>/<sandbox id>" (identity.Principal)
//	{ai_gateway_auth.credential_source}  the source whose credential was sent: "static" or "vercel_oidc"
//	{ai_gateway_auth.policy}             the name of the client's policy; empty for the block's own settings
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
	// path with a dot segment, an empty segment (//), a ; or an ambiguous percent-encoding (an
	// encoded / \ . ; or %, a control byte, a byte of 0x80 or above) is
	// refused, but for one: the slash of a two-segment model id escaped as
	// %2F (or %2f), as the official SDKs send a model lookup
	// (/v1/models/openai%2Fgpt-5), is read as the slash; the path is
	// checked, and forwarded, as /v1/models/openai/gpt-5, the form AI
	// Gateway documents.
	//
	// Default: AI Gateway's inference endpoints and model listing only:
	// /v1/chat/completions, /v1/completions, /v1/responses,
	// /v1/responses/compact, /v1/messages, /v1/messages/count_tokens,
	// /v1/embeddings, /v1/images/generations, /v1/images/edits,
	// /v1/audio/speech, /v1/audio/transcriptions, /v1/rerank, /v2/rerank,
	// /v1/models and "/v1/models/<model id>[/endpoints]"; never the
	// account's endpoints (/v1/report, /v1/credits, /v1/generation,
	// /v1/quotas, /v1/realtime/client-secrets). While a token or dollar
	// limit is on, the default (and the word default) leaves out the
	// endpoints whose answers the proxy cannot meter: images, audio and
	// rerank; naming one is allowed, with a warning at load.
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

	// Globs over AI Gateway model ids ("openai/*", "anthropic/claude-haiku-*";
	// '*' within one '/'-separated segment, "**" across '/') that every
	// client may use, unless its policy names its own. A request for
	// another model, or with a fallback model outside them, gets 403
	// model_not_allowed; GET /v1/models lists only these. Turns the body
	// reading (metering) on. Default: none, any model (policies.go).
	AllowModels []string `json:"allow_models,omitempty"`

	// Groups of clients with their own allow_models, limits and
	// reporting, in order: a client's policy is the first one whose
	// clients globs match its id. What a policy leaves out is the
	// block's. Default: none.
	Policies []Policy `json:"policies,omitempty"`

	// A saved copy of AI Gateway's GET /v1/models answer (a local file,
	// read when the config loads): with it, an allow_models glob that
	// matches none of its models is an error, so `caddy validate` catches
	// a typo. Never fetched. Default: none, globs are not checked against
	// a catalog.
	CatalogFile string `json:"catalog_file,omitempty"`
	// The gateway's base URL (without /v1) where the proxy itself reads
	// the model catalog (prices, output caps) and looks generations up,
	// with its own credential (the one it sets upstream), when metering
	// is on. Default: https://ai-gateway.vercel.sh.
	Gateway string `json:"gateway,omitempty"`

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
	spend        *spend       // nil unless reporting, limits or usage_metrics
	policies     *policySet   // allow_models and policies (policies.go)
	policySrc    *policyLines // where the Caddyfile wrote them, for errors
	gateway      *gatewayLink // the catalog and ledger (catalog.go); nil unless metering
	replayBudget *replay.Budget
	keySources   *identity.Registration // this handler's entries in the registry of key sources (keynamespace.go)

	// the key sources in the order the Caddyfile block names them
	// (keySourceFile, keySourceSigned), for the adapter's namespaces, and
	// the line that named the secrets' namespace (for errors)
	keySourceOrder       []string
	secretsNamespaceLine int
	limitsLine           int // the line of the block's limits (for errors)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// ServeHTTP authenticates the client, swaps its credential for an
// upstream one and calls the next handler, in the steps docs/requests.md
// describes, each one call. A step that refuses the request returns a
// *refusal, which refuse answers (refuse.go: the one place that writes,
// counts and logs refusals). The response is not buffered: SSE streams
// flow through as reverse_proxy writes them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	dropH2CUpgrade(r.Header) // an h2c offer is served as HTTP/1.1 (upgrade.go)
	if t := h.pushes[r.URL.Path]; t != nil {
		return h.servePush(w, r, t) // a push path is never proxied (push.go)
	}
	client, ref := h.identify(r) // 1. who: a client key or a sandbox token (identity)
	if ref == nil {
		ref = h.screen(r, client) // 2. what: the path, an upgrade, credential trailers
	}
	if ref != nil {
		return h.refuse(w, r, ref)
	}
	pol := h.policyFor(client) // the client's policy, chosen once (policies.go)
	if ref := checkRequestModel(r, client.Name(), pol); ref != nil {
		return h.refuse(w, r, ref) // a model the path names, an upload under an allowlist (modelcheck.go)
	}
	setPolicyPlaceholder(r, pol)
	src, cred, ref := h.authorize(r, client) // 3-4. the upstream credential, in place of the client's
	if ref != nil {
		return h.refuse(w, r, ref)
	}
	if h.spend == nil {
		return h.forward(w, r, next, src, cred) // 6. proxy (forward.go)
	}
	// 5. spend (spend.go): the body's encoding, the client's limits, the
	// reporting headers, the body read strictly and edited
	m, req, ref, err := h.spend.begin(w, r, client, pol)
	if ref != nil {
		return h.refuse(w, r, ref)
	}
	if err != nil {
		return err // the client's error reading its body: Caddy answers
	}
	defer m.end()                                    // 7. meter: what the answer used (metering.go)
	err = h.forwardFor(pol, m, req, next, src, cred) // 6. proxy (a model list filtered: modellist.go)
	if ref := m.refusedAsItStreamed(); ref != nil {
		return h.refuse(m, m.r, ref) // the body editor refused the rest of the body
	}
	return err
}

// identify returns the request's client, or its refusal: a Vercel
// Sandbox request (when vercel_sandbox is on) by its verified token, and
// then the path it meant; any other by its client key.
func (h *Handler) identify(r *http.Request) (*identity.Principal, *refusal) {
	if h.sandbox != nil && identity.FirstValue(r.Header, identity.HeaderSandboxToken) != "" {
		client, err := h.sandbox.Identify(r)
		if err != nil {
			return nil, forbidden(r, "sandbox_rejected", safetext.Public(err, "the sandbox token could not be verified"), err.Error())
		}
		identity.UseForwardedPath(r)
		return client, nil
	}
	client, reason := h.keys.Identify(identity.KeyFromRequest(r.Header))
	if reason != "" {
		return nil, rejected(r, client, reason)
	}
	return client, nil
}

// screen refuses what may not go upstream from client: a path allow_paths
// does not allow, a protocol upgrade while metering, a credential sent as
// a trailer.
func (h *Handler) screen(r *http.Request, client *identity.Principal) *refusal {
	if !h.paths.allows(r.URL.EscapedPath()) {
		return forbidden(r, "path_not_allowed", "this path is not allowed through this proxy (allow_paths)",
			"path "+safetext.Clipped(r.URL.EscapedPath())+" is not allowed through this proxy (allow_paths)")
	}
	useCanonicalModelPath(r) // /v1/models/openai%2Fgpt-5 goes upstream as /v1/models/openai/gpt-5
	if h.spend != nil && upgradeRequest(r) {
		// a WebSocket (AI Gateway's /v1/responses has one) carries its
		// messages and usage in frames the proxy cannot meter or edit:
		// with limits, reporting or metering, it would bypass them
		return forbidden(r, "upgrade_not_allowed",
			"WebSocket and other upgraded connections cannot be metered on this proxy; use HTTP streaming (SSE)",
			"an upgrade to "+safetext.Clipped(r.Header.Get("Upgrade"))+" with metering on")
	}
	if credentialInTrailers(r) {
		return badRequest(r, client.Name(), "credential_in_trailer",
			"credentials must be sent as request headers, not as trailers")
	}
	return nil
}

// authorize takes the first usable upstream credential (forward.go) and
// puts it in place of every credential the client sent, and sets the
// request's placeholders; or refuses the request when no source has one.
func (h *Handler) authorize(r *http.Request, client *identity.Principal) (int, *credential.Credential, *refusal) {
	// after the client check: its key may be in a header it named
	dropConnectionOptions(r.Header)
	src, cred, err := h.credential(r.Context())
	if err != nil {
		return -1, nil, noCredential(client.Name(), err, h.retryAfter())
	}
	setUpstreamAuth(r.Header, cred)
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("ai_gateway_auth.client", client.Name())
		repl.Set("ai_gateway_auth.client_id", client.ID())
		repl.Set("ai_gateway_auth.credential_source", h.sourceKinds[src])
	}
	return src, cred, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
