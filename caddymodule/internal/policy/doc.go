// Package policy owns what applies to which client: globs over client and
// model ids, the selection of a client's policy, model allowlists and the
// decision on a request's models, the checks `caddy validate` makes of
// policies, and the filtering of AI Gateway's model list for a client. It
// never handles HTTP, never reads a request body (the body editor reads
// model and the fallback lists, strictly, and hands them over), never
// prices, never counts, and never imports Caddy; the module (the glue)
// wires it in. A policy's limits and reporting are the glue's: the engine
// carries them and only selects.
//
// # Globs
//
// One rule for client ids and model ids: '*' matches any run of bytes
// without '/' (within one segment), "**" any run at all, '/' included;
// every other byte matches itself, case-sensitively (AI Gateway's model
// ids are lower case; client ids are exact). There is no '?', no class and
// no escape: a glob holding ? [ ] { } or \ is refused (no id holds them:
// model ids are of A-Z a-z 0-9 . _ : / @ + -, and a client id's names are
// path-escaped), and so is one with whitespace, a control or non-ASCII
// byte, or three stars in a row. So:
//
//	openai/*                      every OpenAI model (openai/gpt-5, not openai/x/y)
//	anthropic/claude-haiku-*      the Haiku models
//	sandbox:team_acme/prj_web/*   every sandbox of one project
//	sandbox:team_acme/**          every sandbox of one team
//	key:ops/*                     every key of the key source with namespace ops
//	**                            everything
//
// Matching places each literal at its earliest fit and starts over only
// past a '/': linear in the id for a given pattern, whatever the id (tests
// hold the worst cases to a count of bytes looked at), and allocation-free.
//
// # Model allowlists
//
// No allow_models is no allowlist: every model passes and the gateway
// decides. Under an allowlist, a model passes when one of its globs
// matches the id exactly as the request names it. A bare id (gpt-5, no
// provider) is an id like any other: openai/* does not admit it, and an
// allowlist admits it only by naming it (or by a glob such as "*" that
// matches it as it is). AI Gateway's ids are provider/model; what it does
// with a bare one (refuse it, or route it) is its own choice, so the proxy
// cannot know which model would run and does not guess. An id that is
// empty, longer than 256 bytes or holds a byte outside
// A-Z a-z 0-9 . _ : / @ + - is no model id, and no allowlist admits it.
//
// A virtual model (vmc/<slug>) and AI Gateway's team routing rules are
// the account's own configuration: admitting a vmc/ id admits whatever it
// is set to run.
//
// # Fallbacks
//
// AI Gateway tries providerOptions.gateway.models in order when the model
// fails (an entry may also be an object whose model member names the
// model: the decision fallbacks); other gateways read a top-level models
// array the same way. Each is a model that may run, so [Models.CheckRequest]
// checks the model and then every fallback, and refuses the request
// (403 model_not_allowed, naming the first model not allowed) rather than
// filtering the list: a rewritten list would change silently which model
// runs. providerOptions.gateway.order and .only name providers, not
// models: they change no model.
//
// # Policies
//
// [Set.Select] gives a client the first policy (in configuration order)
// one of whose clients globs matches its id, or the block's defaults when
// none does. A policy without allow_models has the block's. Selection
// caches nothing and allocates nothing.
//
// # Model lists
//
// [ModelListFilter] passes AI Gateway's GET /v1/models answer through with
// the models a client may not use taken out, holding one model element at
// a time (at most [MaxListElement]). It reads each element's id as JSON
// does and drops what two readers could read differently (see its
// comment).
package policy
