package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// testClient is an HTTP client that keeps a transcript of every response
// it received (status line, headers, body), so that tests can check that
// no secret ever reaches a client.
type testClient struct {
	HTTP *http.Client

	mu         sync.Mutex
	transcript bytes.Buffer
}

func newTestClient(t testing.TB) *testClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &testClient{}
	tc.HTTP = &http.Client{Transport: &recordingTransport{base: tr, tc: tc}}
	t.Cleanup(tr.CloseIdleConnections)
	return tc
}

// Transcript is every response received so far, headers and bodies.
func (tc *testClient) Transcript() string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.transcript.String()
}

func (tc *testClient) write(p []byte) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.transcript.Write(p)
}

type recordingTransport struct {
	base http.RoundTripper
	tc   *testClient
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "\n%s %s -> %s\n", req.Method, req.URL, resp.Status)
	resp.Header.Write(&head)
	rt.tc.write(head.Bytes())
	resp.Body = &recordingBody{ReadCloser: resp.Body, tc: rt.tc}
	return resp, nil
}

type recordingBody struct {
	io.ReadCloser
	tc *testClient
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.tc.write(p[:n])
	return n, err
}

// response is a finished response, body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request with the given headers and body and reads the whole
// response.
func (tc *testClient) do(t testing.TB, method, url string, header map[string]string, body string) response {
	t.Helper()
	res, err := tc.try(method, url, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// try is do for goroutines other than the test's: it returns the error.
func (tc *testClient) try(method, url string, header map[string]string, body string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := tc.HTTP.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading body: %v", method, url, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// chatBody is a minimal non-streaming chat completion.
const chatBody = `{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`

// chat sends a minimal non-streaming chat completion with the client key
// as a bearer token.
func (tc *testClient) chat(t testing.TB, base, clientKey string) response {
	t.Helper()
	return tc.do(t, http.MethodPost, base+"/v1/chat/completions",
		map[string]string{"Authorization": "Bearer " + clientKey}, chatBody)
}

// tryChat is chat for goroutines other than the test's.
func (tc *testClient) tryChat(base, clientKey string) (response, error) {
	return tc.try(http.MethodPost, base+"/v1/chat/completions",
		map[string]string{"Authorization": "Bearer " + clientKey}, chatBody)
}

// sseReader reads a text/event-stream one event at a time.
type sseReader struct {
	r *bufio.Reader
}

// next returns the next event (its lines, without the blank line that
// ends it), or io.EOF.
func (s *sseReader) next() (string, error) {
	var ev strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && ev.Len() > 0 {
				return ev.String(), io.ErrUnexpectedEOF
			}
			return ev.String(), err
		}
		if line == "\n" {
			if ev.Len() == 0 {
				continue
			}
			return ev.String(), nil
		}
		ev.WriteString(line)
	}
}

// openAIError is the body of an OpenAI-shaped error.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// anthropicError is the body of an Anthropic-shaped error.
type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeJSON[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("response is not the expected JSON (%v): %s", err, b)
	}
	return v
}

// lastRequest is the gateway's most recent request; it fails the test
// when there is none.
func lastRequest(t testing.TB, g *fakeGateway) gatewayRequest {
	t.Helper()
	reqs := g.Requests()
	if len(reqs) == 0 {
		t.Fatal("the gateway received no request")
	}
	return reqs[len(reqs)-1]
}

// assertForwarded checks what the gateway received: the proxy's
// credential as the only one, and the matching ai-gateway-auth-method.
func assertForwarded(t testing.TB, r gatewayRequest, wantCred, wantMethod string) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Errorf("gateway answered %d to %s %s: %s", r.Status, r.Method, r.Path, r.Reject)
	}
	if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+wantCred {
		t.Errorf("gateway got Authorization %q, want exactly one, the proxy's %s credential", redactAll(got), wantMethod)
	}
	if got := r.Header.Values("Ai-Gateway-Auth-Method"); len(got) != 1 || got[0] != wantMethod {
		t.Errorf("gateway got ai-gateway-auth-method %q, want %q", got, wantMethod)
	}
	for _, h := range []string{"X-Api-Key", "Api-Key", "Proxy-Authorization"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("gateway got a client credential header %s: %q", h, redactAll(v))
		}
	}
	if strings.Contains(fmt.Sprint(r.Header), "sk-placeholder") {
		t.Errorf("the client key reached the gateway: %v", r.Header)
	}
}

// redactAll shortens values for messages: a failing test should not print
// a whole token either.
func redactAll(vals []string) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		if len(v) > 16 {
			v = v[:16] + "…"
		}
		out[i] = v
	}
	return out
}
