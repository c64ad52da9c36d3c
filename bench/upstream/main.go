// Command upstream is the fake AI Gateway the benchmarks proxy to: a tiny
// HTTP server on loopback that answers POST /v1/chat/completions with a
// ~600-byte OpenAI chat.completion, or, when the body's first 4 KiB have
// "stream":true (or the query has stream=1), with SSE chunks and
// `data: [DONE]`; the query parameters chunks=N and delay=<duration>
// override the flags for one request. For ./try.sh, it also answers
// GET /v1/models (a short OpenAI model list) and POST /v1/messages (a
// non-streamed Anthropic message), so that the README's SDK snippets get
// an answer offline.
//
// With -key and/or -jwt it checks the Authorization header of every
// request and counts the ones that carry neither the expected key nor a
// usable JWT; GET /stats reports the counts, per credential, as JSON.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// completion is ~600 bytes, the size of a short real answer.
const completion = `{"id":"chatcmpl-bench0123456789abcdef","object":"chat.completion","created":1767225600,` +
	`"model":"openai/gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":` +
	`"Here is a short answer from the benchmark upstream. It is about as long as a typical one-paragraph ` +
	`reply from a model (a sentence or two, rarely more), so that the response size is realistic for a chat completion without streaming. ` +
	`Nothing in it depends on the request."},"logprobs":null,"finish_reason":"stop"}],"usage":` +
	`{"prompt_tokens":42,"completion_tokens":64,"total_tokens":106},"system_fingerprint":"fp_bench"}` + "\n"

const chunkTemplate = `data: {"id":"chatcmpl-bench0123456789abcdef","object":"chat.completion.chunk",` +
	`"created":1767225600,"model":"openai/gpt-4o-mini","choices":[{"index":0,"delta":{"content":"token %d "},` +
	`"finish_reason":null}]}` + "\n\n"

const usageChunk = `data: {"id":"chatcmpl-bench0123456789abcdef","object":"chat.completion.chunk",` +
	`"created":1767225600,"model":"openai/gpt-4o-mini","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":64,` +
	`"total_tokens":106,"cost":0.0000384}}` + "\n\n"

// models is the answer to GET /v1/models: AI Gateway's shape, two models
// with their prices (USD per token), largest output and context window,
// which a proxy with limits reads as its catalog.
const models = `{"object":"list","data":[` +
	`{"id":"openai/gpt-5","object":"model","created":1767225600,"owned_by":"openai","type":"language",` +
	`"context_window":400000,"max_tokens":128000,"pricing":{"input":"0.00000125","output":"0.00001","input_cache_read":"0.000000125"}},` +
	`{"id":"anthropic/claude-sonnet-5.5","object":"model","created":1767225600,"owned_by":"anthropic","type":"language",` +
	`"context_window":200000,"max_tokens":64000,"pricing":{"input":"0.000003","output":"0.000015","input_cache_read":"0.0000003","input_cache_write":"0.00000375"}}]}` + "\n"

// message is the answer to POST /v1/messages: an Anthropic message.
const message = `{"id":"msg_bench0123456789abcdef","type":"message","role":"assistant","model":"anthropic/claude-sonnet-5.5",` +
	`"content":[{"type":"text","text":"Here is a short answer from the fake upstream. Nothing in it depends on the request."}],` +
	`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":42,"output_tokens":18}}` + "\n"

type server struct {
	chunks int
	delay  time.Duration
	key    string // accepted: "Bearer <key>"
	jwt    bool   // accepted: "Bearer <JWT with an exp in the future>"

	requests, streams, mismatches atomic.Int64
	byCred                        sync.Map // label -> *atomic.Int64
	jwtLabels                     sync.Map // token -> label ("" when unusable); parsed once per token
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address (loopback)")
	chunks := flag.Int("sse-chunks", 5, "content chunks per streamed answer (then `data: [DONE]`)")
	delay := flag.Duration("sse-delay", 0, "pause before each chunk of a streamed answer")
	key := flag.String("key", "", "accept `Authorization: Bearer <key>`")
	acceptJWT := flag.Bool("jwt", false, "accept `Authorization: Bearer <JWT>` whose exp is in the future; counted per jti")
	flag.Parse()

	s := &server{chunks: *chunks, delay: *delay, key: *key, jwt: *acceptJWT}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.complete)
	mux.HandleFunc("GET /v1/models", s.fixed(models))
	mux.HandleFunc("POST /v1/messages", s.fixed(message))
	mux.HandleFunc("GET /stats", s.stats)
	log.Printf("upstream listening on %s", *addr)
	log.Fatal((&http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe())
}

func (s *server) complete(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.check(r.Header.Get("Authorization"))
	// Read the whole body, as AI Gateway does, but keep only its head:
	// the benchmarks send agent-sized bodies (up to MiBs) with "stream"
	// near the start, and this process is not what they measure.
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	_, _ = io.Copy(io.Discard, r.Body)
	if r.URL.Query().Get("stream") == "1" || bytes.Contains(body, []byte(`"stream":true`)) ||
		bytes.Contains(body, []byte(`"stream": true`)) {
		s.stream(w, r)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(completion))}
	_, _ = io.WriteString(w, completion)
}

// fixed answers every request with body, as JSON, after the same
// credential check as a completion.
func (s *server) fixed(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.check(r.Header.Get("Authorization"))
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		_, _ = io.WriteString(w, body)
	}
}

func (s *server) stream(w http.ResponseWriter, r *http.Request) {
	s.streams.Add(1)
	chunks, delay := s.chunks, s.delay
	if n, err := strconv.Atoi(r.URL.Query().Get("chunks")); err == nil {
		chunks = n
	}
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
		delay = d
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	for i := range chunks {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, chunkTemplate, i)
		flusher.Flush()
	}
	// the usage chunk AI Gateway sends last with stream_options.include_usage
	_, _ = io.WriteString(w, usageChunk)
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// check counts the request's credential; with no -key and no -jwt
// every request is accepted as "unchecked".
func (s *server) check(auth string) {
	if s.key == "" && !s.jwt {
		s.count("unchecked")
		return
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	switch {
	case ok && s.key != "" && tok == s.key:
		s.count("key")
	case ok && s.jwt && s.jwtLabel(tok) != "":
		s.count(s.jwtLabel(tok))
	default:
		s.mismatches.Add(1)
		s.count("mismatch")
	}
}

// jwtLabel is "jwt:<jti>" for a JWT with a future exp, "" otherwise. The
// signature is not checked (the benchmark's tokens are self-made).
func (s *server) jwtLabel(tok string) string {
	if v, ok := s.jwtLabels.Load(tok); ok {
		return v.(string)
	}
	label := ""
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err == nil &&
		claims.ExpiresAt != nil && time.Now().Before(claims.ExpiresAt.Time) {
		label = "jwt:" + claims.ID
	}
	if len(tok) > 20 { // remember real tokens only, not junk
		s.jwtLabels.Store(tok, label)
	}
	return label
}

func (s *server) count(label string) {
	c, ok := s.byCred.Load(label)
	if !ok {
		c, _ = s.byCred.LoadOrStore(label, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)
}

func (s *server) stats(w http.ResponseWriter, _ *http.Request) {
	by := map[string]int64{}
	s.byCred.Range(func(k, v any) bool { by[k.(string)] = v.(*atomic.Int64).Load(); return true })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"requests": s.requests.Load(), "streams": s.streams.Load(),
		"mismatches": s.mismatches.Load(), "by_credential": by,
	})
}
