// Package jsonbody owns the proxy's one reading of JSON: the request
// body, read strictly and edited as it streams upstream ([Editor]), and
// the response, whose token usage is read as it streams to the client
// ([UsageScanner]). Bytes in, bytes out, plus what was read.
//
// It never decides what to do with what it read (attribution values,
// limits and metrics are the caller's), never buffers a body whole, never
// logs, and knows nothing of HTTP handlers: a response is a status, its
// header and the bytes written.
//
// # The request body
//
// A JSON request body (Chat Completions, Responses, Anthropic Messages,
// embeddings...) is read strictly and edited as it streams upstream, in
// O(1) memory whatever its size and whatever the size of any one string
// in it (agents send the whole conversation every time, 0.25–5 MiB,
// sometimes a base64 image of several MiB in one string).
//
//	ed := jsonbody.NewEditor(r.Body, jsonbody.Options{Attribution: true, User: &user, IncludeUsage: true})
//	r.Body = ed            // the upstream reads the edited body; Close closes the source
//	r.ContentLength = -1   // an edit changes the length: send it chunked
//	...
//	res := ed.Result()     // once the upstream has read the body (res.Done), or res.Refused
//
// With Options.AtEnd, the editor also reads what admission decides by
// (the model, the output caps, the choices, the fallback models: [Fields]) and holds
// back the body's end until AtEnd approves them:
//
//	opts.AtEnd = jsonbody.AtEndFunc(admit) // called on the reading goroutine
//	...
//	if err := ed.Stopped(); err != nil { /* AtEnd's error: answer it (429, 403) */ }
//
// (The module reads a small body whole through the editor before the
// upstream is called, and sends what came out with its exact length.)
// Make the editor the source of the replay tee (package replay), not the
// other way round, so that the copy kept for a replay is the edited body.
// The response side hides the usage-only chunk ([UsageOnlyChunk]) when
// IncludeUsage was asked and res.Streamed && !res.ClientUsage. An
// upstream answers after it has read the body, so the result is normally
// Done before the response starts; until Done it describes what was read
// so far.
//
// Editor is an io.ReadCloser and nothing else (no WriterTo, so io.Copy
// cannot go around it to the source). Read never returns more than asked,
// works with any buffer size down to one byte, and returns the source's
// errors as the source returned them. Its own errors are [ErrClosed]
// after Close, and a *[Refusal] (errors.Is [ErrRefused]) for a body it
// refuses; it never returns io.EOF for a refused body, so a transport
// never ends the upstream body (no chunked terminator, a short
// Content-Length): the upstream request is aborted and no inference
// runs. Close closes the source; it may be called from another goroutine
// while a Read runs (net/http's transport does), and Result and Refusal
// may be called from any goroutine at any time.
//
// # One reading: what is refused
//
// The editor passes on only a body that every JSON parser reads the way
// the proxy does (the gateway's JSON.parse, Python's json, Go's
// encoding/json), and refuses the rest at the first byte where it sees the
// problem, which it never passes on (what came before it may have gone
// out: the upstream request is then aborted). Refused:
//
//   - anything but exactly one JSON object, validated by RFC 8259's
//     grammar in full: strings (valid escapes, no raw control
//     characters), numbers, literals, nesting, whitespace; nothing but
//     whitespace after it. An empty body, two values, trailing garbage,
//     a body that ends early. A UTF-8 byte order mark before the object is
//     allowed and passed on (RFC 8259 lets a parser ignore it).
//   - invalid UTF-8 anywhere (a character may straddle two reads).
//     Escaped lone surrogates (`\ud800`) are grammatical JSON and pass.
//   - nesting deeper than bodyEditMaxDepth (Python's json stops near
//     there). The nesting is a bit stack, one bit per level: no
//     recursion, no allocation.
//   - in an object the editor inspects, a member whose name equals a
//     controlled name only after unescaping (`"str\u0065am"`) or with
//     Unicode simple case folding (`"Stream"`, `"ſtream"`), or that repeats
//     one: parsers disagree on which of two members wins, and some match
//     names without regard to case. A controlled member must be written as
//     the exact bytes of its name, once. The inspected objects and their
//     controlled names are in beControlledNames: the top level,
//     providerOptions and providerOptions.gateway when they are objects,
//     and stream_options when it is one. They are inspected whatever the
//     options ask.
//   - a top-level `stream` that is not `true`, `false` or `null`: only
//     `true` is a stream, and `"true"` or `1` would be guessed at.
//   - with AtEnd, a model, an output cap, a choice count or a fallback
//     list that is not what capture.go reads ([Fields] says what): a
//     model id is 1 to 256 printable ASCII bytes, a cap a plain integer
//     up to 2^53-1 or null, n and best_of a plain integer from 1 to 128
//     or null, a fallback list an array (or null) of at most 32 model ids or
//     objects with one. Anything else would leave the proxy unsure of
//     the model that runs or of the most it may cost.
//
// An exact single member is read exactly as JSON says.
//
// # The body's end (AtEnd)
//
// AtEnd decides on the whole body, but the model may come after
// megabytes of messages, which have gone upstream by then. So with AtEnd
// the top-level closing '}' and the whitespace after it (up to the hold's
// size; more is dropped, and the body counts as Edited) are held back
// until the source ends and AtEnd returns nil; only then do they go out
// and Read return io.EOF. If AtEnd returns an error, Read returns that
// error (never io.EOF, so a transport aborts the chunked body: no
// terminator, and no complete JSON text ever left) and Stopped returns
// it; Result is then neither Done nor Refused. AtEnd is not called for a
// refused body, nor when the source fails.
//
// # The edits
//
//   - Attribution (Options.Attribution): the top-level `user` and
//     `providerOptions.gateway.user` get the value User, as a JSON string,
//     whatever their original type; with a nil User they are removed.
//     `providerOptions.gateway.tags` is removed (the proxy's tags go in a
//     header, and AI Gateway merges body tags with them), and so is
//     `providerOptions.gateway.quotaEntityId` (it names the budget a
//     request is charged to). Nothing else in providerOptions is touched,
//     and a `gateway` anywhere else (inside a message, or providerOptions
//     not an object) is not providerOptions.gateway of the top level.
//   - Usage (Options.IncludeUsage): a streamed request (its
//     `stream` is `true`) must carry stream_options.include_usage: true.
//     Since `stream_options` can come before `stream`, a stream_options
//     OBJECT is always made to carry it (its include_usage becomes `true`,
//     or one is added at its end): the member only means something with
//     stream:true, and a non-streamed request keeps the stream_options it
//     sent, so no upstream sees an object it would not have seen. A
//     stream_options that is NOT an object (null, a number...) is replaced
//     by {"include_usage":true} only when `stream` was already true before
//     it: a client sending "stream_options":null with stream:false must not
//     get an object (OpenAI refuses stream_options without stream).
//     Finally, if the request is streamed and its stream_options does not
//     carry include_usage (there was none, or it was not an object and came
//     before stream:true), `,"stream_options":{"include_usage":true}` is
//     appended before the top-level closing brace; in that last case the
//     name appears twice in the output, and parsers that keep the last
//     (JSON.parse, encoding/json) read ours.
//
// Result reports whether the body was streamed, whether the CLIENT asked
// for usage itself (its stream_options was an object whose include_usage
// was `true`; the response side hides the usage-only chunk from a client
// that did not), whether any byte was changed, and whether the body was
// refused.
//
// A body that needs no edit comes out byte for byte, and so does every
// member that is not edited (whitespace, order, escapes, number spelling):
// a replaced value whose bytes already equal the replacement (a `user`
// already the proxy's, include_usage already `true`) counts as no edit.
// One exception: in an object where a member can be removed (the top
// level with a nil User, providerOptions.gateway with Attribution), the
// comma before a member is held back until the member's name is known,
// with at most bodyEditMaxHeldSpace bytes of whitespace after it; more
// whitespace than that goes out before the held comma instead of after it
// (same JSON, Edited is set). A member name in an inspected object is
// held back until it ends (at most bodyEditMaxName bytes; a longer one
// cannot be a controlled name and streams), so a refused name never goes
// out.
//
// # Tokenizer: why a byte-level scanner and not jsontext
//
// encoding/json/jsontext (go-json-experiment/json) was measured first
// (edit_jsontext_test.go, GOEXPERIMENT=jsonv2): its Decoder returns
// each token whole, so its buffer holds the whole of the largest string,
// and SkipValue buffers the whole value it skips. On a 2 MiB agent body
// with a 1 MiB base64 string, a token-by-token Decoder→Encoder copy
// allocated 5.4 MB per body (its Decoder buffer at 1 MiB) and a Decoder
// alone, skipping the top-level values, 4.2 MB; the scanner allocated
// 3.1 KB and ran 4–7 times faster. With jsontext, memory per concurrent
// request follows the body and the sandbox's largest string (a 4 MiB
// image: 4+ MiB). It would also re-encode what it passes on unless the
// raw bytes were kept beside it. So the scanner (edit_scan.go, one
// function per piece of RFC 8259's grammar) validates as it streams and
// captures only member names of the inspected objects (bounded). Strings,
// most of any body, are checked 8 bytes at a time for a quote, a
// backslash, a control byte or a non-ASCII byte together; only non-ASCII
// text takes the slower path, one byte at a time through a UTF-8
// automaton that carries over from one read to the next.
//
// Memory: one allocation per request of about 3 KiB (the struct with its
// 2 KiB input buffer, its hold buffer and its nesting bits) and two small
// ones to encode User; nothing grows with the body or with any value in
// it. A refusal allocates its message; with AtEnd, each model id read is
// a string, and the fallback ids a slice. Nothing is pooled: a body the
// transport may still read after Close belongs to its request only.
//
// # The response's usage
//
// [UsageScanner] reads token usage from a response as it streams to the
// client. Nothing is buffered whole: an SSE stream is scanned line by line
// (a line split across writes is carried over, at most its last 64 KiB),
// and of a JSON body only the last 64 KiB are kept, because
// OpenAI and Anthropic put `usage` at the end of the object (after
// `choices`, `content` or `output`). A usage object that does not fit in
// that tail is not counted.
//
// What is read, by API:
//   - OpenAI chat completions: `usage` {prompt_tokens, completion_tokens,
//     and on AI Gateway cost}, in the body or in the final chunk of a
//     stream (stream_options.include_usage).
//   - Responses: `response.usage` {input_tokens, output_tokens} of the
//     body or of the response.completed event.
//   - Anthropic messages: `usage` {input_tokens, output_tokens,
//     cache_creation_input_tokens, cache_read_input_tokens} of the
//     message, or of message_start and then message_delta, whose counts
//     are cumulative: every usage object seen overwrites the fields it
//     has, it is never added.
//   - cached input: {prompt,input}_tokens_details.cached_tokens (OpenAI's
//     shapes) or Anthropic's cache counts, as Usage.CacheReadTokens and
//     CacheWriteTokens.
//   - what it cost and which generation it was (usage_gateway.go):
//     usage.cost and usage.gateway_cost, or AI Gateway's
//     provider_metadata.gateway {cost, gatewayCost, generationId}, read
//     exactly into nano-dollars; the answer's id when it is a gen_ id.
//
// A compressed response (any Content-Encoding but identity) is not
// scanned, nor is anything but a 2xx JSON or SSE answer.
package jsonbody
