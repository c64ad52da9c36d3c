package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sendRawRequest sends target exactly as written on the request line
// (no client-side cleaning or escaping), with body if not empty, and
// reads the response.
func sendRawRequest(t testing.TB, base, method, target string, header map[string]string, body string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := rawExchange(conn, method, target, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// rawExchange writes one request on conn, exactly as given, and reads
// the response; the connection is closed after it (Connection: close).
func rawExchange(conn net.Conn, method, target string, header map[string]string, body string) (response, error) {
	conn.SetDeadline(time.Now().Add(waitTimeout))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, conn.RemoteAddr())
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return response{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading body: %v", method, target, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: rb}, nil
}

// TestAllowPaths: by default only AI Gateway's inference endpoints and
// model listing go upstream: a sandbox cannot read the account's spend
// report, credits or generations with the proxy's credential. Under
// /v1/models/ only a model id (then optionally /endpoints) passes. Any
// other path, and any path a server could resolve to another one (a dot
// segment, a ;, an encoded dot, slash, backslash, semicolon or %, an
// encoded control or non-ASCII byte; sent as is on the request line, so
// no client cleans it first), gets 403 path_not_allowed and never
// reaches the gateway. A custom allow_paths replaces the default; `/*`
// allows any path, but still not those.
func TestAllowPaths(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	site := func(allow string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
		%s
	}
	reverse_proxy %s`, allow, gw.URL())
	}
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}},
		site(""),
		site("allow_paths /v1/models /v1/chat/*"),
		site("allow_paths /*"),
		site("allow_paths default /v1/credits"))
	defaultURL, customURL, anyURL, plusURL := p.URLs[0], p.URLs[1], p.URLs[2], p.URLs[3]
	auth := map[string]string{"Authorization": "Bearer sk-placeholder"}

	// dotted are refused whatever the patterns say.
	dotted := []string{
		"/v1/../x",
		"/v1/../admin",
		"/v1/./models",
		"/v1/models/..",
		"/v1/models/.",
		"/v1/%2e%2e/x",
		"/v1/%2E%2E/admin",
		"/v1/.%2e/x",
		"/v1/%2e/models",
		"/v1/..%2fadmin",
		"/v1/models%2F..%2Fx",
		"/v1/..%5cadmin",
		"/v1/%5C..%5Cadmin",
		// what a server may resolve to /v1/credits once it reads a path
		// parameter, decodes twice, drops or stops at a control byte, or
		// reads overlong UTF-8 (all reached the gateway under
		// /v1/models/* before)
		"/v1/models/..;/credits",
		"/v1/models/%252e%252e/credits",
		"/v1/models/..%00/credits",
		"/v1/models/..%09/credits",
		"/v1/models/%C0%AE%C0%AE/credits",
		"/v1/models/..%3B/credits",
		// an encoded slash anywhere but between a model id's segments
		"/v1/models/..%2Fcredits",
		"/v1/models/openai%2F..%2Fcredits",
		"/v1/models/x%2F..",
		"/v1/models/%2e%2e%2Fcredits",
	}
	cases := []struct {
		base, target string
		want         int // 200, or 403; 404 is the gateway's own answer
	}{
		{defaultURL, "/v1/models", 200},
		{defaultURL, "/v1/models?limit=1", 200},
		{defaultURL, "/v1/chat/completions", 200},
		{defaultURL, "/v1/report?start_date=2026-12-01&end_date=2026-12-04&group_by=user", 403},
		{defaultURL, "/v1/credits", 403},
		{defaultURL, "/v1/generation?id=gen_01JX", 403},
		{defaultURL, "/v1/quotas", 403},
		{defaultURL, "/v1/realtime/client-secrets", 403},
		{plusURL, "/v1/credits", 404}, // listed: the gateway answers
		{plusURL, "/v1/models", 200},
		{plusURL, "/v1/report?group_by=user", 403},
		{defaultURL, "/admin", 403},
		{defaultURL, "/", 403},
		{defaultURL, "/v1", 403},
		{defaultURL, "/v2/models", 403},
		{defaultURL, "/v1x/models", 403},
		{defaultURL, "//v1/models", 403},
		{customURL, "/v1/models", 200},
		{customURL, "/v1/chat/completions", 200},
		{customURL, "/v1/embeddings", 403},
		{customURL, "/v1/models/openai", 403}, // exact: not a prefix
		{customURL, "/v1/messages", 403},
		{anyURL, "/v1/models", 200},
		{anyURL, "/admin", 404}, // allowed: the gateway answers
		// one model's details and endpoints: a model id, then
		// optionally /endpoints, and nothing else (the gateway answers)
		{defaultURL, "/v1/models/openai/gpt-5", 200},
		{defaultURL, "/v1/models/openai/gpt-5/endpoints", 200},
		{defaultURL, "/v1/models/anthropic/claude-sonnet-4", 200},
		// the id's slash escaped, as the SDKs send it: that one escape
		// passes, and the gateway gets the slash (see TestModelLookupSDK)
		{defaultURL, "/v1/models/openai%2Fgpt-5", 200},
		{defaultURL, "/v1/models/openai%2fgpt-5/endpoints", 200},
		{anyURL, "/v1/models/openai%2Fgpt-5", 200},
		{customURL, "/v1/models/openai%2Fgpt-5", 403},
		{defaultURL, "/v1/models/openai%2Fgpt-5%2Fendpoints", 403},
		{defaultURL, "/v1/models/openai%252Fgpt-5", 403},
		{defaultURL, "/v1/models/a%2Fb/c", 403},
		{defaultURL, "/v1/models/openai/gpt-5/endpoints/x", 403},
		{defaultURL, "/v1/models/openai/gpt-5/", 403},
		{defaultURL, "/v1/models/a/b/c", 403},
		{defaultURL, "/v1/models/open%61i/gpt-5", 403},
	}
	for _, d := range dotted {
		cases = append(cases, struct {
			base, target string
			want         int
		}{defaultURL, d, 403}, struct {
			base, target string
			want         int
		}{anyURL, d, 403})
	}
	siteName := map[string]string{defaultURL: "default", customURL: "custom", anyURL: "any", plusURL: "default+credits"}
	forbidden := 0
	for _, c := range cases {
		t.Run(siteName[c.base]+c.target, func(t *testing.T) {
			method, body := http.MethodGet, ""
			h := map[string]string{"Authorization": "Bearer sk-placeholder"}
			if strings.HasPrefix(c.target, "/v1/chat/") {
				method, body = http.MethodPost, chatBody
			}
			before := len(gw.Requests())
			res := sendRawRequest(t, c.base, method, c.target, h, body)
			if res.Status != c.want {
				t.Fatalf("status %d, want %d: %s", res.Status, c.want, res.Body)
			}
			switch c.want {
			case http.StatusForbidden:
				forbidden++
				gatewayUntouched(t, gw, before, c.target)
				if strings.HasPrefix(c.target, "/v1/messages") { // Anthropic's shape
					e := decodeJSON[anthropicError](t, res.Body)
					if e.Type != "error" || e.Error.Type != "permission_error" || !strings.Contains(e.Error.Message, "allow_paths") {
						t.Errorf("body %s, want an Anthropic permission_error naming allow_paths", res.Body)
					}
				} else {
					e := decodeJSON[openAIError](t, res.Body)
					if e.Error.Type != "permission_error" || e.Error.Code == nil || *e.Error.Code != "path_not_allowed" ||
						!strings.Contains(e.Error.Message, "allow_paths") {
						t.Errorf("body %s, want a permission_error path_not_allowed naming allow_paths", res.Body)
					}
				}
				if res.Header.Get("X-Ai-Gateway-Auth-Error") != "path_not_allowed" {
					t.Errorf("X-Ai-Gateway-Auth-Error %q", res.Header.Get("X-Ai-Gateway-Auth-Error"))
				}
			default:
				if n := len(gw.Requests()); n != before+1 {
					t.Fatalf("the gateway got %d requests, want 1", n-before)
				}
				r := lastRequest(t, gw)
				assertForwarded(t, r, apiKey, "api-key")
				want, _, _ := strings.Cut(c.target, "?")
				if want = strings.NewReplacer("%2F", "/", "%2f", "/").Replace(want); r.EscapedPath != want {
					t.Errorf("the gateway got path %q, want %q", r.EscapedPath, want)
				}
			}
		})
	}

	// The client check comes first: an unauthenticated request learns
	// nothing about which paths exist.
	before := len(gw.Requests())
	if res := sendRawRequest(t, defaultURL, http.MethodGet, "/admin", nil, ""); res.Status != http.StatusUnauthorized {
		t.Errorf("/admin without a key: status %d, want 401", res.Status)
	}
	if res := sendRawRequest(t, defaultURL, http.MethodGet, "/v1/../x", map[string]string{"Authorization": "Bearer sk-wrong"}, ""); res.Status != http.StatusUnauthorized {
		t.Errorf("/v1/../x with a wrong key: status %d, want 401", res.Status)
	}
	if res := sendRawRequest(t, defaultURL, http.MethodGet, "/v1/models", auth, ""); res.Status != http.StatusOK {
		t.Errorf("/v1/models: status %d", res.Status)
	}
	if n := len(gw.Requests()); n != before+1 {
		t.Errorf("the gateway got %d requests, want 1", n-before)
	}

	// One log line per refusal, naming the path as sent.
	p.stop()
	lines := caddyLogEntries(p.Logs(), "request forbidden")
	if len(lines) != forbidden {
		t.Errorf("%d \"request forbidden\" log lines, want one per 403 (%d)", len(lines), forbidden)
	}
	for _, e := range lines {
		if r, _ := e["reason"].(string); !strings.HasPrefix(r, "path /") || !strings.Contains(r, "allow_paths") {
			t.Errorf("\"request forbidden\" line %v: want the path and allow_paths in its reason", e)
		}
	}
	if n := len(caddyLogEntries(p.Logs(), "client rejected")); n != 2 {
		t.Errorf("%d \"client rejected\" log lines, want 2", n)
	}
}
