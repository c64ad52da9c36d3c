// Package gateway owns the proxy's own calls to AI Gateway: the model
// catalog (prices and output caps, read in the background) and generation
// lookups (the gateway's ledger, read to reconcile estimated charges). It
// never handles a client's request, never sees a client's key, and never
// imports Caddy's packages; the module wires it in.
//
// Every call carries the proxy's own credential, from a function the
// caller sets (and may replace on a config reload: the latest set wins).
// No error, status or log line carries that credential.
//
// # Prices
//
// The catalog's prices are USD per token. A model's cache-read or
// cache-write price, when the catalog gives none, is its input price. A
// model has token prices when it has an input price and an output price;
// an embedding model needs only the input price (its output costs
// nothing). A catalog entry that cannot be read (no id, a negative, NaN,
// infinite or non-numeric price or cap) is skipped and counted, never
// guessed at: a model the catalog leaves out is priced at the highest
// prices, not at nothing.
//
// [Usage] counts input the way OpenAI does: Input is every input token,
// cache reads and writes included. OpenAI's prompt_tokens already
// includes cached_tokens; Anthropic's input_tokens does not include
// cache_read_input_tokens or cache_creation_input_tokens, so a caller
// adds them. Output includes reasoning tokens (both APIs count them in
// their output figure).
//
// # Worst case
//
// [Catalog.WorstCase] is what a request may cost before it is sent: its
// input estimate plus an output cap, the request's own cap when it gives
// one (never lowered to the catalog's max_tokens: a beta header can raise
// a model's limit past the catalog's figure), else the model's
// max_tokens, else the caller's default cap. Input is priced at the
// dearest of the model's input and cache prices (a cache write may cost
// more than input). A model the catalog does not know, or knows without
// token prices, is priced at the highest input, output and cache prices
// of any model in the catalog (a catalog without one priced model is not
// accepted). With no catalog
// read yet, the tokens are still given but the price is an error
// ([ErrNoCatalog]): a dollar limit cannot be held, so the caller refuses.
//
// # Refresh and reconciliation
//
// [CatalogSource] reads the catalog when started, then every hour (less up
// to a tenth, so a fleet spreads out), keeping the last good copy on
// failure and retrying after 30 s, doubling up to 10 min. One fetch runs
// at a time, bounded by a 30 s timeout and a 32 MiB body; a requested
// refresh runs at most once per 30 s.
//
// [Reconciler] looks generations up after a first delay of 3 s, then
// after 6, 12, 24 s and so on (capped at 1 min) until 5 min after it was
// given the id, with a last attempt at that deadline. A 404 or an answer
// without data means "not recorded yet"; a 401, 403 or other 4xx (but 408
// and 429) is final; a 5xx or a transport error is retried.
package gateway
