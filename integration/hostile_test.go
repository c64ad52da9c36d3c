package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Attacker-shaped requests from clients that hold a valid client key:
// nothing they send may change what the proxy sets upstream, cost the
// other clients their credential, or reveal the configuration.

// rawRequest sends a request exactly as written: head is the request line
// and the header lines (no blank line after them), rest what follows the
// blank line (a body, chunks, trailers). It reads the response.
func rawRequest(t testing.TB, base, head, rest string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(conn, head+"\r\n\r\n"+rest); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

const hostileChatBody = `{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}`

// chatHead is the head of a POST /v1/chat/completions with the client key,
// plus extra header lines.
func chatHead(base string, extra ...string) string {
	lines := []string{
		"POST /v1/chat/completions HTTP/1.1",
		"Host: " + strings.TrimPrefix(base, "http://"),
		"Authorization: Bearer sk-placeholder",
		"Content-Type: application/json",
	}
	return strings.Join(append(lines, extra...), "\r\n")
}

// TestHostileConnectionOptions: a client with a valid key names the
// headers the proxy sets (Authorization, ai-gateway-auth-method) as
// hop-by-hop Connection options, in every casing, list and repetition.
// Before the fix reverse_proxy deleted the credential the proxy had set,
// the gateway answered 401, and the proxy took that as a verdict on the
// token: a mint per hostile request with a minting source, and 503 for
// everyone with an env or file source. Now the hostile requests are
// forwarded with the credential, no mint happens, and well-behaved
// clients sending at the same time see only 200s.
func TestHostileConnectionOptions(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	tokenFile := filepath.Join(t.TempDir(), "oidc-token")
	if err := os.WriteFile(tokenFile, []byte(v.Token(time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := mintEnv(v)
	env["VERCEL_OIDC_TOKEN"] = v.Token(time.Hour)
	oidcSite := func(input string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, input, gw.URL())
	}
	p := startCaddy(t, caddyOptions{Env: env},
		mintSite(v, gw.URL(), ""),
		oidcSite("env VERCEL_OIDC_TOKEN"),
		oidcSite("file "+tokenFile))

	variants := [][]string{
		{"Connection: Authorization"},
		{"Connection: authorization"},
		{"Connection: keep-alive, AUTHORIZATION"},
		{"Connection: keep-alive", "Connection: Authorization"},
		{"Connection: Ai-Gateway-Auth-Method"},
		{"Connection: x-foo ,Authorization,\tai-gateway-auth-method"},
		{"connection: Authorization"},
		{"CONNECTION: upgrade, authorization", "Upgrade: websocket"},
	}
	tc := newTestClient(t)
	for i, name := range []string{"mint", "env", "file"} {
		base := p.URLs[i]
		t.Run(name, func(t *testing.T) {
			if res := tc.chat(t, base, "sk-placeholder"); res.Status != http.StatusOK {
				t.Fatalf("a well-behaved request before the attack: %d %s", res.Status, res.Body)
			}
			mints, seen := successfulMints(v), len(gw.Requests())

			// well-behaved clients, all the while
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures []string
			good := 0
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						res, err := tc.tryChat(base, "sk-placeholder")
						mu.Lock()
						if err != nil || res.Status != http.StatusOK {
							failures = append(failures, fmt.Sprintf("%d %v %s", res.Status, err, res.Body))
						}
						good++
						mu.Unlock()
					}
				})
			}
			for range 4 {
				for _, extra := range variants {
					head := chatHead(base, append(extra, "Content-Length: "+fmt.Sprint(len(hostileChatBody)))...)
					res := rawRequest(t, base, head, hostileChatBody)
					if res.Status != http.StatusOK {
						t.Errorf("hostile request with %q: %d %s; want it forwarded with the proxy's credential", extra, res.Status, res.Body)
					}
				}
			}
			close(stop)
			wg.Wait()

			if len(failures) > 0 {
				t.Errorf("%d of %d well-behaved requests failed during the attack, e.g. %s", len(failures), good, failures[0])
			}
			if n := successfulMints(v) - mints; n != 0 {
				t.Errorf("%d mints during the attack, want 0", n)
			}
			for _, r := range gw.Requests()[seen:] {
				if r.Status != http.StatusOK {
					t.Errorf("the gateway refused a forwarded request: %s", r.Reject)
				} else if got := r.Header.Get("Ai-Gateway-Auth-Method"); got != "oidc" {
					t.Errorf("the gateway got ai-gateway-auth-method %q, want oidc", got)
				}
			}
		})
	}
}

// TestHostileTrailers: a chunked request that sends a credential as a
// trailer, after the body, gets 400 credential_in_trailer (in the shape
// of the client's SDK) and never reaches the gateway; any other trailer,
// declared or not, is dropped. Before the fix, trailers were forwarded
// unchanged, and AI Gateway lets an x-api-key win over the proxy's
// credential.
func TestHostileTrailers(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p := startCaddy(t, caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}, staticSite(gw.URL()))
	chunked := func(trailers ...string) string {
		return fmt.Sprintf("%x\r\n%s\r\n0\r\n%s\r\n", len(hostileChatBody), hostileChatBody, strings.Join(append(trailers, ""), "\r\n"))
	}
	for _, c := range []struct {
		name     string
		path     string
		declare  string // the Trailer header's value; "" for none
		trailers []string
		refused  bool
	}{
		{"declared x-api-key", "/v1/chat/completions", "X-Api-Key", []string{"X-Api-Key: sk-attacker"}, true},
		{"declared authorization", "/v1/chat/completions", "Authorization", []string{"Authorization: Bearer sk-attacker"}, true},
		{"declared in a list", "/v1/chat/completions", "X-Checksum, x-api-key", []string{"X-Checksum: 1", "X-Api-Key: sk-attacker"}, true},
		{"declared with underscores", "/v1/chat/completions", "X_Api_Key", []string{"X_Api_Key: sk-attacker"}, true},
		{"declared, anthropic", "/v1/messages", "X-Api-Key", []string{"X-Api-Key: sk-attacker"}, true},
		{"harmless, dropped", "/v1/chat/completions", "X-Checksum", []string{"X-Checksum: 1"}, false},
		{"undeclared, dropped", "/v1/chat/completions", "", []string{"X-Api-Key: sk-attacker"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := len(gw.Requests())
			lines := []string{
				"POST " + c.path + " HTTP/1.1",
				"Host: " + strings.TrimPrefix(p.URL, "http://"),
				"Authorization: Bearer sk-placeholder",
				"Content-Type: application/json",
				"Transfer-Encoding: chunked",
			}
			if c.path == "/v1/messages" {
				lines = append(lines, "Anthropic-Version: 2023-06-01")
			}
			if c.declare != "" {
				lines = append(lines, "Trailer: "+c.declare)
			}
			res := rawRequest(t, p.URL, strings.Join(lines, "\r\n"), chunked(c.trailers...))
			reqs := gw.Requests()[seen:]
			if c.refused {
				if res.Status != http.StatusBadRequest {
					t.Fatalf("status %d, want 400: %s", res.Status, res.Body)
				}
				if len(reqs) != 0 {
					t.Errorf("the gateway got %d requests, want none", len(reqs))
				}
				if c.path == "/v1/messages" {
					if e := decodeJSON[anthropicError](t, res.Body); e.Type != "error" || e.Error.Type != "invalid_request_error" {
						t.Errorf("body %s, want an Anthropic-shaped invalid_request_error", res.Body)
					}
				} else if e := decodeJSON[openAIError](t, res.Body); e.Error.Code == nil || *e.Error.Code != "credential_in_trailer" {
					t.Errorf("body %s, want an OpenAI-shaped error with code credential_in_trailer", res.Body)
				}
				return
			}
			if res.Status != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", res.Status, res.Body)
			}
			if len(reqs) != 1 {
				t.Fatalf("the gateway got %d requests, want 1", len(reqs))
			}
			if len(reqs[0].Trailer) != 0 {
				t.Errorf("the gateway got trailers %v, want none", redactAllHeader(reqs[0].Trailer))
			}
			assertForwarded(t, reqs[0], apiKey, "api-key")
		})
	}
}

func redactAllHeader(h http.Header) []string {
	var names []string
	for k := range h {
		names = append(names, k)
	}
	return names
}

// TestErrorBodiesNameNoConfig: every error the proxy itself answers (503
// with every source failing, 403 for a path, 401 for a key, 400 for a
// trailer) says what the client can do, with a stable code, and names
// nothing of the configuration: no env variable, file path, project or
// team id, API address or upstream address. The reasons are in the log.
func TestErrorBodiesNameNoConfig(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	v.SetFailing(http.StatusInternalServerError)
	gw := newFakeGateway(t, v)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "aigw-secret-token-file-location")
	if err := os.WriteFile(tokenFile, []byte("# no token yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		staticVar  = "AIGW_UNSET_STATIC_KEY_VARIABLE"
		oidcVar    = "AIGW_UNSET_OIDC_TOKEN_VARIABLE"
		projectID  = "prj_ConfigProjectIdThatMustNotLeak"
		teamID     = "team_ConfigTeamIdThatMustNotLeak"
		accessName = "AIGW_MINT_ACCESS_TOKEN_VARIABLE"
	)
	mintAPI, _ := url.Parse(v.URL())
	p := startCaddy(t, caddyOptions{Env: map[string]string{accessName: v.AccessToken}}, fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.%s}
		credential vercel_oidc {
			env  %s
			file %s
			%s
		}
		client_key sk-placeholder
		credential_wait 2s
	}
	reverse_proxy %s`, staticVar, oidcVar, tokenFile, mintBlockFor(projectID, teamID, "{env."+accessName+"}", v.URL()), gw.URL()))
	configStrings := []string{staticVar, oidcVar, tokenFile, filepath.Base(tokenFile), dir, projectID, teamID, accessName,
		v.URL(), mintAPI.Host, gw.URL(), strings.TrimPrefix(gw.URL(), "http://")}

	tc := newTestClient(t)
	anthropic := map[string]string{"Authorization": "Bearer sk-placeholder", "Anthropic-Version": "2023-06-01"}
	cases := []struct {
		name string
		res  response
		want int
	}{
		{"503 openai", tc.chat(t, p.URL, "sk-placeholder"), http.StatusServiceUnavailable},
		{"503 anthropic", tc.do(t, http.MethodPost, p.URL+"/v1/messages", anthropic, `{"model":"anthropic/claude-sonnet-4","max_tokens":8,"messages":[]}`), http.StatusServiceUnavailable},
		{"403 path", tc.do(t, http.MethodGet, p.URL+"/internal/"+strings.Repeat("a", 2000), map[string]string{"Authorization": "Bearer sk-placeholder"}, ""), http.StatusForbidden},
		{"401 key", tc.do(t, http.MethodGet, p.URL+"/v1/models", map[string]string{"Authorization": "Bearer sk-wrong"}, ""), http.StatusUnauthorized},
		{"400 trailer", rawRequest(t, p.URL, chatHead(p.URL, "Transfer-Encoding: chunked", "Trailer: X-Api-Key"),
			fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Api-Key: x\r\n\r\n", len(hostileChatBody), hostileChatBody)), http.StatusBadRequest},
	}
	for _, c := range cases {
		if c.res.Status != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, c.res.Status, c.want, c.res.Body)
		}
		if c.res.Header.Get("X-Ai-Gateway-Auth-Error") == "" {
			t.Errorf("%s: no X-Ai-Gateway-Auth-Error code header", c.name)
		}
		if len(c.res.Body) > 512 {
			t.Errorf("%s: a %d-byte error body; a client's input is not echoed at length", c.name, len(c.res.Body))
		}
		for _, s := range configStrings {
			if strings.Contains(string(c.res.Body), s) {
				t.Errorf("%s: the body names %q from the configuration: %s", c.name, s, c.res.Body)
			}
		}
	}
	// the client learns which sources were tried and why, in categories
	for _, want := range []string{"static (no key)", "vercel_oidc (env: not set, file: no token, mint: failed)"} {
		if !strings.Contains(string(cases[0].res.Body), want) {
			t.Errorf("503 body %s does not say %q", cases[0].res.Body, want)
		}
	}
	// the operator learns the whole reason, from the log
	checkUnavailable(t, p, cases[0].res, tokenFile)
	checkUnavailable(t, p, cases[0].res, oidcVar)
	if n := len(gw.Requests()); n != 0 {
		t.Errorf("the gateway got %d requests, want none", n)
	}
}
