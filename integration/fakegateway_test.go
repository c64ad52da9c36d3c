package integration

import (
	"bytes"
	"compress/gzip"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fakeGateway behaves like Vercel AI Gateway where the proxy can tell:
// it accepts `Authorization: Bearer <API key or OIDC token>`, verifies
// OIDC tokens (RS256 against the issuer's JWKS, fetched over HTTP from the
// fake Vercel, with the claims a Vercel token has), lets an `x-api-key`
// win over the bearer token even when the key is invalid, answers a bad
// credential with 401 {"error":{"message","type":"authentication_error"}},
// and serves the OpenAI- and Anthropic-compatible endpoints, streaming
// with SSE. It records every request it receives.
//
// For budgets (issue 22) it also serves, as AI Gateway does: a model
// catalog (GET /v1/models: SetCatalog, SetCatalogFailure,
// CatalogFetches; one model's entry and its endpoints, GET
// /v1/models/{creator}/{model}[/endpoints]; fakegateway_catalog_test.go);
// faithful answers, whose
// usage follows the body it got and whose cost follows the catalog,
// shown as the endpoint's cost mode says (Faithful, SetCostMode, …;
// fakegateway_answers_test.go); a generation per request that ran
// inference and GET /v1/generation (Generations, SetGenerationDelay,
// GenerationLookups; fakegateway_generation_test.go); what it billed
// whatever the answer showed (gatewayRequest.Ran and Billed; Billed,
// BilledTotal); answers held before their headers or cut (HoldAnswers,
// CutStreams, or per request the X-Test-Answer header); and endpoints
// without usage (/v1/audio/speech, /v1/images/generations). Until a test
// asks for them, answers are the fake's historical ones, byte for byte.
type fakeGateway struct {
	t      testing.TB
	srv    *httptest.Server
	vercel *fakeVercel // the issuer whose tokens it accepts; nil: API keys only
	// leeway tolerated on exp/nbf/iat, like any JWT verifier's clock skew
	// allowance; the proxy's own "never at or after exp" rule is checked by
	// the tests from what the proxy answers.
	leeway time.Duration

	mu      sync.Mutex
	apiKeys map[string]bool
	reqs    []gatewayRequest
	jwks    map[string]*rsa.PublicKey
	acks    map[string]chan struct{}
	stalls  []string
	// revoked credentials are refused with 401 although they verify;
	// see Revoke.
	revoked map[string]bool
	// varyUsage: see VaryUsage; usage: see SetUsage.
	varyUsage bool
	usage     *fakeUsage

	// done is closed when the test ends: whatever still waits (a held
	// answer, a hanging catalog fetch) gives up, so the server can close.
	done chan struct{}
	// catalog: see SetCatalog (nil: defaultCatalog); catalogFail and
	// catalogChanged: see SetCatalogFailure.
	catalog        []fakeModel
	catalogFail    catalogFailure
	catalogChanged chan struct{}
	// faithful and what it uses: see Faithful and fakegateway_answers_test.go.
	faithful      bool
	outputTokens  int
	costModes     map[string]costMode
	cacheRead     int
	cacheWrite    int
	surcharge     float64
	tokenizer     func([]byte) int
	unmeteredCost float64
	// holding, holdFor, release, held: see HoldAnswers; cutAfter: see
	// CutStreams.
	holding  bool
	holdFor  time.Duration
	release  chan struct{}
	held     int
	cutAfter int
	// gens: every generation billed, by id, in order; genDelay and
	// genLookups: see SetGenerationDelay.
	gens       map[string]*fakeGeneration
	genOrder   []string
	genDelay   time.Duration
	genLookups int
}

// gatewayRequest is what the gateway received and how it answered.
type gatewayRequest struct {
	At     time.Time
	Method string
	Path   string // decoded
	// EscapedPath is the path as the request line had it (a %2F stays
	// %2F).
	EscapedPath string
	RawQuery    string
	Header      http.Header
	Body        []byte
	// ContentLength is the request's Content-Length, -1 when it came
	// chunked.
	ContentLength int64
	// Trailer holds the request trailers that arrived after the body.
	Trailer http.Header
	// AuthMethod is what the credential turned out to be ("api-key" or
	// "oidc"), Credential its value; Reject why it was refused, if it was.
	AuthMethod string
	Credential string
	Reject     string
	Status     int
	// Usage is the token usage (and cost) the gateway reported in its
	// answer, zero when it reported none.
	Usage fakeUsage
	// BodyErr is why the body could not be read whole (the proxy aborted
	// it before its end): such a request was never complete, and no
	// inference could run on it.
	BodyErr string
	// Read is what the gateway read in a POST's body, as a strict parser.
	Read gatewayReading

	// Ran says that inference ran, so the account was billed: a POST to an
	// inference endpoint (chat completions, messages, responses,
	// embeddings, audio speech, image generations) whose body arrived
	// whole (no BodyErr), parsed strictly with a model, carried a valid
	// credential and, in faithful mode, named a model of the catalog.
	// Whatever happened to the answer after (held, cut, the client gone),
	// it ran: AI Gateway bills a generation once it has run it.
	Ran bool
	// GenerationID is the generation billed for it (see Generation), ""
	// when none ran.
	GenerationID string
	// Billed is what the account was billed for it, whatever the answer
	// showed: all its tokens, Cost (inference) and Surcharge; zero when
	// nothing ran. Usage is what the answer reported, which can be less
	// or nothing.
	Billed fakeUsage
	// Answer is how the answer of a request that ran ended: "complete"
	// (written whole), "cut after N events" or "cut in the middle of the
	// body" (CutStreams), "client gone after N of M events" (the caller,
	// the proxy, cancelled its request), "held: client gone before the
	// headers", "stalled" (ackHeader); "" while it is being answered, and
	// for a request that did not run.
	Answer string
}

// gatewayReading is what AI Gateway reads in a request body. It parses
// as request.json() does (JSON.parse after UTF-8 decoding, which drops
// a byte order mark): names are case-sensitive, and of two equal names
// the last wins.
type gatewayReading struct {
	Model        string
	Stream       bool // only the JSON true is a stream
	IncludeUsage bool
	User         any            // the top-level user, nil when absent
	Gateway      map[string]any // providerOptions.gateway, when an object
	// The output caps, 0 when absent or not a non-negative integer:
	// max_tokens (Messages; Chat Completions' older name),
	// max_completion_tokens (Chat Completions), max_output_tokens
	// (Responses).
	MaxTokens, MaxCompletionTokens, MaxOutputTokens int
	// N is Chat Completions' n, how many choices it generates (each up
	// to the cap, all billed), 0 when absent or not a positive integer.
	N int
}

func readStrictly(body []byte) (gatewayReading, error) {
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), &m); err != nil {
		return gatewayReading{}, err
	}
	so, _ := m["stream_options"].(map[string]any)
	po, _ := m["providerOptions"].(map[string]any)
	gw, _ := po["gateway"].(map[string]any)
	model, _ := m["model"].(string)
	count := func(name string) int {
		f, ok := m[name].(float64)
		if !ok || f < 0 || f != float64(int(f)) {
			return 0
		}
		return int(f)
	}
	return gatewayReading{Model: model, Stream: m["stream"] == true, IncludeUsage: so["include_usage"] == true, User: m["user"], Gateway: gw,
		MaxTokens: count("max_tokens"), MaxCompletionTokens: count("max_completion_tokens"), MaxOutputTokens: count("max_output_tokens"),
		N: count("n")}, nil
}

// outputCap is the output cap the body gives for the endpoint at path, 0
// when none.
func (r gatewayReading) outputCap(path string) int {
	switch path {
	case "/v1/messages":
		return r.MaxTokens
	case "/v1/chat/completions":
		if r.MaxCompletionTokens > 0 {
			return r.MaxCompletionTokens
		}
		return r.MaxTokens
	case "/v1/responses":
		return r.MaxOutputTokens
	}
	return 0
}

// ackHeader names the stream whose events wait for the test's
// acknowledgement; see fakeGateway.Ack.
const ackHeader = "X-Test-Stream-Ack"

func newFakeGateway(t testing.TB, vercel *fakeVercel, apiKeys ...string) *fakeGateway {
	g := &fakeGateway{
		t:       t,
		vercel:  vercel,
		leeway:  time.Second,
		apiKeys: map[string]bool{},
		jwks:    map[string]*rsa.PublicKey{},
		acks:    map[string]chan struct{}{},

		done:           make(chan struct{}),
		catalogChanged: make(chan struct{}),
		outputTokens:   defaultOutputTokens,
		costModes:      map[string]costMode{},
		unmeteredCost:  defaultUnmeteredCost,
		release:        make(chan struct{}),
		gens:           map[string]*fakeGeneration{},
	}
	for _, k := range apiKeys {
		g.apiKeys[k] = true
	}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	t.Cleanup(func() { close(g.done) }) // runs first: frees what waits, then the server closes
	return g
}

// URL is the gateway's base URL, for reverse_proxy.
func (g *fakeGateway) URL() string { return g.srv.URL }

// Requests returns every request received so far.
func (g *fakeGateway) Requests() []gatewayRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gatewayRequest(nil), g.reqs...)
}

// Stalls lists the streams that waited in vain for an acknowledgement.
func (g *fakeGateway) Stalls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.stalls...)
}

// Ack acknowledges that the client received one more event of the
// stream named id.
func (g *fakeGateway) Ack(id string) { g.ackChan(id) <- struct{}{} }

func (g *fakeGateway) ackChan(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.acks[id]
	if !ok {
		ch = make(chan struct{}, 1024)
		g.acks[id] = ch
	}
	return ch
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rec := gatewayRequest{
		At:          time.Now(),
		Method:      r.Method,
		Path:        r.URL.Path,
		EscapedPath: r.URL.EscapedPath(),
		RawQuery:    r.URL.RawQuery,
		Header:      r.Header.Clone(),
		Body:        body,
		Trailer:     r.Trailer.Clone(),
		// -1: chunked
		ContentLength: r.ContentLength,
	}
	if err != nil {
		// the body never ended (the proxy aborted it): recorded as such,
		// and no answer could be read
		rec.BodyErr, rec.Status = err.Error(), http.StatusBadRequest
		g.record(rec)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec.AuthMethod, rec.Credential, err = g.authenticate(r)
	if err != nil {
		rec.Reject = err.Error()
		rec.Status = http.StatusUnauthorized
		g.record(rec)
		writeJSON(w, http.StatusUnauthorized, map[string]any{
			"error": map[string]string{"message": err.Error(), "type": "authentication_error"},
		})
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/v1/generation" {
		g.serveGeneration(w, r, rec)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/v1/models" && g.catalogFailed(w, r, rec) {
		return
	}
	if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/models/") {
		status, answer := g.modelPage(r)
		rec.Status = status
		g.record(rec)
		writeJSON(w, status, answer)
		return
	}
	var req gatewayReading
	if r.Method == http.MethodPost {
		if req, err = readStrictly(body); err != nil || req.Model == "" {
			rec.Status = http.StatusBadRequest
			g.record(rec)
			writeJSON(w, http.StatusBadRequest, map[string]any{
				"error": map[string]string{"message": "invalid JSON body or no model", "type": "invalid_request_error"},
			})
			return
		}
	}
	rec.Read = req
	plan, err := g.planFor(r)
	if err != nil {
		g.t.Errorf("fake gateway: %v", err)
		rec.Status = http.StatusBadRequest
		g.record(rec)
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error": map[string]string{"message": err.Error(), "type": "invalid_request_error"},
		})
		return
	}
	inference := r.Method == http.MethodPost && fakeInferencePaths[r.URL.Path]
	var model fakeModel
	if inference && plan.faithful && fakePricedPaths[r.URL.Path] {
		var ok bool
		if model, ok = g.Model(req.Model); !ok {
			// AI Gateway's answer to a model it does not have; nothing ran
			rec.Status = http.StatusNotFound
			g.record(rec)
			writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{
				"message": fmt.Sprintf("Model '%s' not found", req.Model), "type": "model_not_found",
				"param": map[string]string{"modelId": req.Model},
			}})
			return
		}
	}
	rec.Status = http.StatusOK
	var u fakeUsage // legacy: the usage the answer is built from
	if plan.faithful {
		if inference { // nothing else shows or bills usage
			rec.Billed = g.faithfulUsage(r.URL.Path, body, req, model, plan)
			rec.Usage = reportedUsage(r.URL.Path, req, rec.Billed, plan.cost)
		}
	} else {
		u = g.usageFor(body)
		if r.Method == http.MethodPost && (r.URL.Path != "/v1/chat/completions" || !req.Stream || req.IncludeUsage) {
			rec.Usage = u // what the answer below reports
			if r.URL.Path != "/v1/chat/completions" {
				rec.Usage.Cost = 0 // only chat completions carry a cost here
			}
		}
		rec.Billed = u
		if r.URL.Path == "/v1/embeddings" {
			rec.Billed = fakeUsage{Input: u.Input, Cost: u.Cost}
		}
	}
	if fakeUnmeteredPaths[r.URL.Path] {
		rec.Billed = fakeUsage{Cost: g.unmetered()}
		rec.Usage = fakeUsage{}
	}
	var gen *fakeGeneration
	if inference {
		gen = g.newGeneration(r.URL.Path, req, rec.Billed, model)
		rec.Ran, rec.GenerationID = true, gen.ID
	} else {
		rec.Billed = fakeUsage{}
	}
	idx := g.record(rec)
	outcome := "complete"
	defer func() { g.finish(idx, gen, outcome) }() // also when a cut aborts the handler

	if inference && plan.hold && !g.hold(r, plan.holdFor) {
		outcome = "held: client gone before the headers"
		return
	}

	// Like Vercel's edge, a whole (not streamed) answer is gzipped for a
	// client that accepts it: usage metering must see through that.
	if !req.Stream && plan.cut == 0 && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") &&
		(r.URL.Path == "/v1/models" || r.URL.Path == "/v1/chat/completions" || r.URL.Path == "/v1/messages" || r.URL.Path == "/v1/responses") {
		gz := gzip.NewWriter(w)
		defer gz.Close()
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		w = gzipResponseWriter{ResponseWriter: w, gz: gz}
	}

	if inference && plan.faithful && !fakeUnmeteredPaths[r.URL.Path] {
		g.answerFaithfully(w, r, req, model, gen, rec.Usage, plan, &outcome)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		g.writeCatalog(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		if req.Stream {
			events := chatCompletionEvents(req.Model)
			if req.IncludeUsage { // a last chunk with usage, before [DONE]
				events = append(events[:len(events)-1:len(events)-1], chatUsageChunk(req.Model, u), events[len(events)-1])
			}
			g.stream(w, r, events, plan.cut, &outcome)
		} else {
			c := chatCompletion(req.Model)
			c["usage"] = u.openAI()
			g.writeAnswer(w, c, plan.cut, &outcome)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages":
		if req.Stream {
			g.stream(w, r, anthropicEventsWithUsage(req.Model, u), plan.cut, &outcome)
		} else {
			m := anthropicMessage(req.Model)
			m["usage"] = u.anthropic()
			g.writeAnswer(w, m, plan.cut, &outcome)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		g.writeAnswer(w, map[string]any{
			"object": "list", "model": req.Model,
			"data":  []map[string]any{{"object": "embedding", "index": 0, "embedding": []float64{0.25, -0.5, 0.125}}},
			"usage": map[string]int{"prompt_tokens": u.Input, "total_tokens": u.Input},
		}, plan.cut, &outcome)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/responses":
		if req.Stream {
			g.stream(w, r, responseEvents(req.Model, u), plan.cut, &outcome)
		} else {
			g.writeAnswer(w, responsesAnswer(req.Model, u), plan.cut, &outcome)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/audio/speech":
		g.writeSpeech(w, plan.cut, &outcome)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/images/generations":
		g.writeAnswer(w, fakeImagesAnswer(), plan.cut, &outcome)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{
			"error": map[string]string{"message": "not found: " + r.URL.Path, "type": "not_found_error"},
		})
	}
}

// fakeInferencePaths are the endpoints whose POSTs run inference and are
// billed; fakePricedPaths those priced per token from the catalog (in
// faithful mode, their model must be in it); fakeUnmeteredPaths those whose
// answers carry no usage (billed SetUnmeteredCost each).
var (
	fakeInferencePaths = map[string]bool{
		"/v1/chat/completions": true, "/v1/messages": true, "/v1/responses": true, "/v1/embeddings": true,
		"/v1/audio/speech": true, "/v1/images/generations": true,
	}
	fakePricedPaths = map[string]bool{
		"/v1/chat/completions": true, "/v1/messages": true, "/v1/responses": true, "/v1/embeddings": true,
	}
	fakeUnmeteredPaths = map[string]bool{"/v1/audio/speech": true, "/v1/images/generations": true}
)

// record appends rec and returns its index in Requests.
func (g *fakeGateway) record(rec gatewayRequest) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reqs = append(g.reqs, rec)
	return len(g.reqs) - 1
}

// finish notes how the answer of request idx ended, and ends its
// generation gen (from then on /v1/generation may find it); nil: the
// request ran nothing.
func (g *fakeGateway) finish(idx int, gen *fakeGeneration, outcome string) {
	if gen == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reqs[idx].Answer = outcome
	gen.EndedAt = time.Now()
}

// authenticate applies AI Gateway's rules: x-api-key, when present, is the
// API key and wins even when invalid; otherwise the bearer token is an
// OIDC token if it is a JWT, an API key if not.
func (g *fakeGateway) authenticate(r *http.Request) (method, cred string, err error) {
	if vals, ok := r.Header["X-Api-Key"]; ok {
		key := strings.Join(vals, ",")
		if !g.knownAPIKey(key) {
			return "api-key", key, errors.New("Invalid API key (from the x-api-key header)")
		}
		return "api-key", key, nil
	}
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") {
		return "", "", errors.New("Missing authentication: send an API key or an OIDC token in Authorization: Bearer")
	}
	cred = strings.TrimPrefix(auth, "Bearer ")
	if strings.Count(cred, ".") == 2 {
		method = "oidc"
		err = g.verifyOIDC(cred)
	} else {
		method = "api-key"
		if !g.knownAPIKey(cred) {
			err = errors.New("Invalid API key")
		}
	}
	if err == nil {
		if m := r.Header.Get("Ai-Gateway-Auth-Method"); m != "" && m != method {
			err = fmt.Errorf("ai-gateway-auth-method is %q but the credential is an %s credential", m, method)
		}
	}
	if err == nil && g.isRevoked(cred) {
		err = errors.New("The credential has been revoked")
	}
	return method, cred, err
}

// Revoke makes the gateway refuse cred (an API key or an OIDC token that
// would otherwise verify) with 401 authentication_error from now on, as
// AI Gateway does with a key or token revoked before its exp.
func (g *fakeGateway) Revoke(cred string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.revoked == nil {
		g.revoked = map[string]bool{}
	}
	g.revoked[cred] = true
}

func (g *fakeGateway) isRevoked(cred string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.revoked[cred]
}

func (g *fakeGateway) knownAPIKey(k string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.apiKeys[k]
}

// vercelClaims are the claims of a Vercel OIDC token.
type vercelClaims struct {
	OwnerID     string `json:"owner_id"`
	ProjectID   string `json:"project_id"`
	Environment string `json:"environment"`
	jwt.RegisteredClaims
}

func (g *fakeGateway) verifyOIDC(token string) error {
	if g.vercel == nil {
		return errors.New("OIDC token not accepted here")
	}
	var c vercelClaims
	_, err := jwt.ParseWithClaims(token, &c, g.keyFor,
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithLeeway(g.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	if err != nil {
		return fmt.Errorf("Invalid OIDC token: %v", err)
	}
	slug, ok := strings.CutPrefix(c.Issuer, "https://oidc.vercel.com/")
	switch {
	case !ok || slug == "":
		return fmt.Errorf("Invalid OIDC token: issuer %q", c.Issuer)
	case len(c.Audience) != 1 || c.Audience[0] != "https://vercel.com/"+slug:
		return fmt.Errorf("Invalid OIDC token: audience %v", c.Audience)
	case c.NotBefore == nil || c.IssuedAt == nil:
		return errors.New("Invalid OIDC token: no nbf or iat")
	case !strings.HasPrefix(c.OwnerID, "team_") || !strings.HasPrefix(c.ProjectID, "prj_") || c.Environment == "":
		return errors.New("Invalid OIDC token: owner_id, project_id or environment missing")
	case !strings.HasPrefix(c.Subject, "owner:"+slug+":project:") || !strings.HasSuffix(c.Subject, ":environment:"+c.Environment):
		return fmt.Errorf("Invalid OIDC token: subject %q", c.Subject)
	case c.OwnerID != g.vercel.TeamID || c.ProjectID != g.vercel.ProjectID:
		return errors.New("OIDC token is for another team or project")
	}
	return nil
}

// keyFor finds the token's signing key in its issuer's JWKS, fetched
// from <iss>/.well-known/jwks (served by the fake Vercel) and fetched
// again when a kid is unknown.
func (g *fakeGateway) keyFor(tok *jwt.Token) (any, error) {
	kid, _ := tok.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("no kid")
	}
	iss, err := tok.Claims.GetIssuer()
	if err != nil {
		return nil, err
	}
	path, ok := strings.CutPrefix(iss, "https://oidc.vercel.com")
	if !ok {
		return nil, fmt.Errorf("issuer %q is not Vercel", iss)
	}
	g.mu.Lock()
	k := g.jwks[kid]
	g.mu.Unlock()
	if k != nil {
		return k, nil
	}
	resp, err := http.Get(g.vercel.URL() + path + "/.well-known/jwks")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kty, Kid, Alg, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, jk := range set.Keys {
		n, err1 := base64.RawURLEncoding.DecodeString(jk.N)
		e, err2 := base64.RawURLEncoding.DecodeString(jk.E)
		if jk.Kty != "RSA" || err1 != nil || err2 != nil {
			continue
		}
		g.jwks[jk.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if k := g.jwks[kid]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("kid %q not in the issuer's JWKS", kid)
}

// stream writes SSE events one at a time, flushing each. When the request
// names a stream in ackHeader, it waits after each event until the client
// acknowledges having received it: a proxy that buffers the response
// would stall the stream, which is recorded. With cut > 0 it closes the
// connection after cut events, the stream unfinished (no terminating
// chunk: the client sees an unexpected EOF). outcome says how it ended.
func (g *fakeGateway) stream(w http.ResponseWriter, r *http.Request, events []string, cut int, outcome *string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush()
	id := r.Header.Get(ackHeader)
	for i, ev := range events {
		if cut > 0 && i == cut {
			*outcome = fmt.Sprintf("cut after %d events", cut)
			panic(http.ErrAbortHandler) // net/http closes the connection, quietly
		}
		io.WriteString(w, ev)
		flusher.Flush()
		if r.Context().Err() != nil {
			*outcome = fmt.Sprintf("client gone after %d of %d events", i+1, len(events))
			return
		}
		if id == "" {
			continue
		}
		select {
		case <-g.ackChan(id):
		case <-r.Context().Done():
			*outcome = fmt.Sprintf("client gone after %d of %d events", i+1, len(events))
			return
		case <-time.After(15 * time.Second):
			g.mu.Lock()
			g.stalls = append(g.stalls, fmt.Sprintf("stream %s: event %d of %d was not received by the client within 15s", id, i+1, len(events)))
			g.mu.Unlock()
			*outcome = "stalled"
			return // the client gets a truncated stream and fails too
		}
	}
}

// writeAnswer writes a whole JSON answer; with cut > 0, only its first
// half, then it closes the connection.
func (g *fakeGateway) writeAnswer(w http.ResponseWriter, v any, cut int, outcome *string) {
	if cut == 0 {
		writeJSON(w, http.StatusOK, v)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b[:len(b)/2])
	w.(http.Flusher).Flush()
	*outcome = "cut in the middle of the body"
	panic(http.ErrAbortHandler)
}

// gzipResponseWriter writes the body through gz.
type gzipResponseWriter struct {
	http.ResponseWriter
	gz *gzip.Writer
}

func (w gzipResponseWriter) Write(p []byte) (int, error) { return w.gz.Write(p) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// streamWords is the text every streamed answer carries, one SSE event per
// word.
var streamWords = []string{"Hello", " from", " the", " fake", " gateway."}

const answerText = "Hello from the fake gateway."

func sse(event string, data any) string {
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	if event == "" {
		return "data: " + string(b) + "\n\n"
	}
	return "event: " + event + "\ndata: " + string(b) + "\n\n"
}

func chatCompletion(model string) map[string]any {
	return map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": fakeCreated, "model": model,
		"choices": []map[string]any{{
			"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": answerText},
		}},
		"usage": map[string]int{"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
	}
}

func chatCompletionEvents(model string) []string {
	chunk := func(delta map[string]any, finish any) string {
		return sse("", map[string]any{
			"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": fakeCreated, "model": model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}},
		})
	}
	events := []string{chunk(map[string]any{"role": "assistant", "content": ""}, nil)}
	for _, w := range streamWords {
		events = append(events, chunk(map[string]any{"content": w}, nil))
	}
	events = append(events, chunk(map[string]any{}, "stop"), "data: [DONE]\n\n")
	return events
}

func anthropicMessage(model string) map[string]any {
	return map[string]any{
		"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
		"content":     []map[string]any{{"type": "text", "text": answerText}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]int{"input_tokens": 10, "output_tokens": 6},
	}
}

func anthropicEvents(model string) []string { return anthropicEventsWithUsage(model, defaultUsage) }

func anthropicEventsWithUsage(model string, u fakeUsage) []string {
	start := anthropicMessage(model)
	start["usage"] = map[string]int{"input_tokens": u.Input, "output_tokens": 1}
	start["content"] = []any{}
	start["stop_reason"] = nil
	events := []string{
		sse("message_start", map[string]any{"type": "message_start", "message": start}),
		sse("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "text", "text": ""}}),
	}
	for _, w := range streamWords {
		events = append(events, sse("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]any{"type": "text_delta", "text": w}}))
	}
	events = append(events,
		sse("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}),
		sse("message_delta", map[string]any{"type": "message_delta",
			"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
			"usage": map[string]int{"output_tokens": u.Output}}),
		sse("message_stop", map[string]any{"type": "message_stop"}),
	)
	return events
}

// fakeCreated is the "created" time of every completion: fixed, so that
// tests can compare events byte for byte.
const fakeCreated = 1767225600

// fakeUsage is the token usage an answer reports, and AI Gateway's cost
// (0: none reported).
type fakeUsage struct {
	Input, Output int
	Cost          float64
	// CacheRead and CacheWrite are the part of Input read from and written
	// to the prompt cache (faithful answers only; see SetCacheTokens).
	// Input counts every input token, cached or not, as OpenAI's
	// prompt_tokens and /v1/generation's native_tokens_prompt do; a
	// Messages answer's input_tokens is Input - CacheRead - CacheWrite.
	CacheRead, CacheWrite int
	// Surcharge is what the account pays on top of Cost (AI Gateway's
	// surchargeCost; see SetSurcharge): Total is the account's charge, AI
	// Gateway's gatewayCost.
	Surcharge float64
}

// Total is what the account pays: Cost + Surcharge, added as decimals.
func (u fakeUsage) Total() float64 {
	if u.Surcharge == 0 {
		return u.Cost
	}
	return fakeAddUSD(u.Cost, u.Surcharge)
}

// defaultUsage is what every answer reports unless VaryUsage is on.
var defaultUsage = fakeUsage{Input: 10, Output: 6}

// VaryUsage makes each answer report a usage that depends on the request
// body, and a cost, as AI Gateway does: a meter that counted requests
// instead of reading the answers would get the sums wrong. In faithful
// mode it still sets the tokens and cost (see Faithful).
func (g *fakeGateway) VaryUsage() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.varyUsage = true
}

// SetUsage makes every answer report u (a cost only on chat
// completions). In faithful mode it sets the tokens (a zero Cost is then
// priced from the catalog), shown as the cost mode says.
func (g *fakeGateway) SetUsage(u fakeUsage) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.usage = &u
}

func (g *fakeGateway) usageFor(body []byte) fakeUsage {
	g.mu.Lock()
	vary, fixed := g.varyUsage, g.usage
	g.mu.Unlock()
	if fixed != nil {
		return *fixed
	}
	if !vary {
		return defaultUsage
	}
	return variedFakeUsage(body)
}

// variedFakeUsage is VaryUsage's usage for a body.
func variedFakeUsage(body []byte) fakeUsage {
	in, out := 5+len(body)%97, 2+len(body)%13
	// a multiple of 1/1024: sums are exact in float64 whatever the order
	return fakeUsage{Input: in, Output: out, Cost: float64(in+out) / 1024}
}

func (u fakeUsage) openAI() map[string]any {
	m := map[string]any{"prompt_tokens": u.Input, "completion_tokens": u.Output, "total_tokens": u.Input + u.Output}
	if u.Cost != 0 {
		m["cost"] = u.Cost
	}
	return m
}

func (u fakeUsage) anthropic() map[string]any {
	return map[string]any{"input_tokens": u.Input, "output_tokens": u.Output}
}

// chatUsageChunk is the last chunk of a stream asked for with
// stream_options.include_usage: no choices, the usage.
func chatUsageChunk(model string, u fakeUsage) string {
	return sse("", map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": fakeCreated, "model": model,
		"choices": []any{}, "usage": u.openAI(),
	})
}

// responsesAnswer is a Responses API answer; usage comes after output, as in
// OpenAI's.
func responsesAnswer(model string, u fakeUsage) map[string]any {
	return map[string]any{
		"id": "resp_fake", "object": "response", "created_at": fakeCreated, "status": "completed", "model": model,
		"output": []map[string]any{{
			"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
			"content": []map[string]any{{"type": "output_text", "text": answerText, "annotations": []any{}}},
		}},
		"usage": map[string]any{
			"input_tokens": u.Input, "output_tokens": u.Output, "total_tokens": u.Input + u.Output,
			"input_tokens_details": map[string]int{"cached_tokens": 0}, "output_tokens_details": map[string]int{"reasoning_tokens": 0},
		},
	}
}

func responseEvents(model string, u fakeUsage) []string {
	started := responsesAnswer(model, u)
	started["status"], started["output"], started["usage"] = "in_progress", []any{}, nil
	events := []string{sse("response.created", map[string]any{"type": "response.created", "sequence_number": 0, "response": started})}
	for i, w := range streamWords {
		events = append(events, sse("response.output_text.delta", map[string]any{
			"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_fake",
			"output_index": 0, "content_index": 0, "delta": w,
		}))
	}
	return append(events, sse("response.completed", map[string]any{
		"type": "response.completed", "sequence_number": len(streamWords) + 1, "response": responsesAnswer(model, u),
	}))
}
