package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sendRawLines sends one request exactly as given: the request line, then
// each header line in order (so a header can repeat, or be empty), Host,
// Content-Length when there is a body, and the body; it reads the
// response on the same connection.
func sendRawLines(t testing.TB, base, requestLine string, lines []string, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\r\nHost: %s\r\n", requestLine, conn.RemoteAddr())
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the body: %v", requestLine, err)
	}
	return resp, rb
}

// TestContentEncodingRefused: with reporting and limits on, a gzipped
// body carrying someone else's user and tags and a stream without
// include_usage gets 415 request_encoding_not_allowed however its
// Content-Encoding is written, and the gateway sees none of them: two
// header lines (identity then gzip, or an empty one then gzip), a comma
// list, a capitalised or other coding. (Before, the proxy read only the
// first line: the first two shapes reached the gateway, whose reading,
// decompressed, was the client's user and an unmetered stream.) A body
// said to be identity passes.
func TestContentEncodingRefused(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
		reporting {
			tags sandboxes
		}
		limits {
			requests_per_minute 1000
			tokens_per_day 100000000
		}
	}
	reverse_proxy %s`, gw.URL()))

	hostile := `{"model":"openai/gpt-5","user":"bob","stream":true,"messages":[{"role":"user","content":"hi"}],` +
		`"providerOptions":{"gateway":{"user":"bob","tags":["team-b"]}}}`
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	io.WriteString(zw, hostile)
	zw.Close()
	head := []string{"Authorization: Bearer sk-placeholder", "Content-Type: application/json"}

	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"identity then gzip", []string{"Content-Encoding: identity", "Content-Encoding: gzip"}},
		{"empty then gzip", []string{"Content-Encoding: ", "Content-Encoding: gzip"}},
		{"list identity, gzip", []string{"Content-Encoding: identity, gzip"}},
		{"GZIP", []string{"Content-Encoding: GZIP"}},
		{"br", []string{"Content-Encoding: br"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(gw.Requests())
			resp, body := sendRawLines(t, p.URL, "POST /v1/chat/completions HTTP/1.1", append(head, tc.lines...), zipped.Bytes())
			if resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("X-Ai-Gateway-Auth-Error") != "request_encoding_not_allowed" {
				t.Fatalf("status %d %q: %s; want 415 request_encoding_not_allowed", resp.StatusCode, resp.Header.Get("X-Ai-Gateway-Auth-Error"), body)
			}
			if e := decodeJSON[openAIError](t, body); e.Error.Code == nil || *e.Error.Code != "request_encoding_not_allowed" {
				t.Errorf("body %s, want an OpenAI error request_encoding_not_allowed", body)
			}
			gatewayUntouched(t, gw, before, tc.name)
		})
	}

	// the same body, uncompressed and said to be identity, goes upstream
	// as the proxy's
	before := len(gw.Requests())
	resp, body := sendRawLines(t, p.URL, "POST /v1/chat/completions HTTP/1.1",
		append(head, "Content-Encoding: identity", "Content-Encoding: IDENTITY"), []byte(hostile))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("identity: status %d: %s", resp.StatusCode, body)
	}
	if n := len(gw.Requests()); n != before+1 {
		t.Fatalf("identity: the gateway got %d requests, want 1", n-before)
	}
	if r := lastRequest(t, gw); strings.Contains(string(r.Body), `"bob"`) || r.Header.Get("Ai-Reporting-User") != "placeholder" {
		t.Errorf("identity: the gateway got ai-reporting-user %q and body %s; want the proxy's user", r.Header.Get("Ai-Reporting-User"), r.Body)
	}
}
