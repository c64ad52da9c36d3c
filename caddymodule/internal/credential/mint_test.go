package credential

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

const testAccessToken = "vercel-access-token-Sup3rSecret"

// fakeVercelAPI is a loopback Vercel API that records mint calls and
// answers with respond.
type fakeVercelAPI struct {
	*httptest.Server
	mu    sync.Mutex
	calls []*http.Request
	body  []string
}

func newFakeVercelAPI(t *testing.T, respond http.HandlerFunc) *fakeVercelAPI {
	t.Helper()
	f := &fakeVercelAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, r.Clone(context.Background()))
		f.body = append(f.body, string(b))
		f.mu.Unlock()
		respond(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeVercelAPI) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.calls...)
}

func newTestMinter(t *testing.T, api string, edit ...func(*MintSettings)) *Minter {
	t.Helper()
	cfg := MintSettings{Project: oidctest.Project, Team: oidctest.Team, AccessToken: testAccessToken, API: api}
	for _, e := range edit {
		e(&cfg)
	}
	m, err := NewMinter(cfg)
	if err != nil {
		t.Fatalf("NewMinter: %v", err)
	}
	return m
}

func respondJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// The mint call is the documented one: POST
// /v1/projects/<project>/token?source=…&teamId=<team>, the access token
// as a bearer, no body; the answer's token becomes the credential.
func TestMintSuccess(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	tok := oidctest.OIDCToken(t, exp)
	for _, status := range []int{http.StatusOK, http.StatusCreated} {
		api := newFakeVercelAPI(t, respondJSON(status, fmt.Sprintf(`{"token":%q}`, tok)))
		c, err := newTestMinter(t, api.URL+"/").Mint(context.Background())
		if err != nil {
			t.Fatalf("mint: %v", err)
		}
		if c.value != tok || c.method != MethodOIDC || !c.expires.Equal(jwtExp(exp)) {
			t.Errorf("credential %v", c)
		}
		reqs := api.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d calls", len(reqs))
		}
		r := reqs[0]
		if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/"+oidctest.Project+"/token" {
			t.Errorf("called %s %s", r.Method, r.URL.Path)
		}
		q := r.URL.Query()
		if q.Get("teamId") != oidctest.Team || q.Get("source") != "ai-gateway-auth" || len(q) != 2 {
			t.Errorf("query %q", r.URL.RawQuery)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+testAccessToken {
			t.Errorf("Authorization %q, want the access token as a bearer", got)
		}
		if api.body[0] != "" {
			t.Errorf("body %q, want none", api.body[0])
		}
	}
}

// No team: no teamId parameter (a personal account).
func TestMintWithoutTeam(t *testing.T) {
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	api := newFakeVercelAPI(t, respondJSON(200, fmt.Sprintf(`{"token":%q}`, tok)))
	m := newTestMinter(t, api.URL, func(c *MintSettings) { c.Team = "" })
	if _, err := m.Mint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if q := api.requests()[0].URL.Query(); q.Has("teamId") {
		t.Errorf("teamId sent without a team: %v", q)
	}
}

// Every failure says what went wrong (endpoint, status, Vercel's own
// message) and never contains the access token or a token.
func TestMintErrors(t *testing.T) {
	expired := oidctest.OIDCToken(t, time.Now().Add(-time.Minute))
	otherProject := oidctest.OIDCToken(t, time.Now().Add(time.Hour), func(c jwt.MapClaims) { c["project_id"] = "prj_other" })
	otherTeam := oidctest.OIDCToken(t, time.Now().Add(time.Hour), func(c jwt.MapClaims) { c["owner_id"] = "team_other" })
	for _, tc := range []struct {
		name    string
		respond http.HandlerFunc
		want    []string
		secrets []string
	}{
		{
			"401", respondJSON(401, `{"error":{"code":"forbidden","message":"Not authorized","invalidToken":true}}`),
			[]string{"POST http://", "/v1/projects/" + oidctest.Project + "/token:", "401 Unauthorized: forbidden Not authorized"}, nil,
		},
		{
			"403", respondJSON(403, `{"error":{"code":"forbidden","message":"You don't have permission to access this project"}}`),
			[]string{"403 Forbidden: forbidden You don't have permission"}, nil,
		},
		{"500 no JSON", respondJSON(500, `<html>oops</html>`), []string{"500 Internal Server Error"}, nil},
		{"garbage JSON", respondJSON(200, `{"token":`), []string{`response is not the expected JSON {"token": ...}`}, nil},
		{"missing token", respondJSON(200, `{"something":"else"}`), []string{"response has no token"}, nil},
		{"not a JWT", respondJSON(200, `{"token":"sk-not-a-jwt-value"}`), []string{"minted token: not a JWT"}, []string{"sk-not-a-jwt-value"}},
		{"expired", respondJSON(200, fmt.Sprintf(`{"token":%q}`, expired)), []string{"minted token: token expired at"}, []string{expired}},
		{
			"another project", respondJSON(200, fmt.Sprintf(`{"token":%q}`, otherProject)),
			[]string{`minted token: token is for project "prj_other", not "` + oidctest.Project + `"`}, []string{otherProject},
		},
		{
			"another team", respondJSON(200, fmt.Sprintf(`{"token":%q}`, otherTeam)),
			[]string{`minted token: token is for owner "team_other", not "` + oidctest.Team + `"`}, []string{otherTeam},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeVercelAPI(t, tc.respond)
			c, err := newTestMinter(t, api.URL).Mint(context.Background())
			if err == nil {
				t.Fatalf("mint succeeded: %v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			assertNotContains(t, "error", err.Error(), append(tc.secrets, testAccessToken, "teamId=")...)
		})
	}
}

// The access token must never follow a redirect to another place.
func TestMintDoesNotFollowRedirects(t *testing.T) {
	var stolen atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Store(true)
	}))
	defer elsewhere.Close()
	api := newFakeVercelAPI(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	})
	_, err := newTestMinter(t, api.URL).Mint(context.Background())
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("error %v, want one naming the 307", err)
	}
	if stolen.Load() {
		t.Error("the mint request followed a redirect")
	}
}

// The timeout is honoured: a hanging API gives an error saying so.
func TestMintTimeout(t *testing.T) {
	release := make(chan struct{})
	api := newFakeVercelAPI(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	m := newTestMinter(t, api.URL, func(c *MintSettings) { c.Timeout = 50 * time.Millisecond })
	done := make(chan error, 1)
	go func() {
		_, err := m.Mint(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") {
			t.Errorf("error %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second): // the API never answers: only the timeout can end the call
		t.Fatal("mint did not honour its timeout")
	}

	// the caller's context also ends a mint
	ctx, cancel := context.WithCancel(context.Background())
	m = newTestMinter(t, api.URL)
	go func() {
		_, err := m.Mint(ctx)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("cancelled mint succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mint ignored its context")
	}
}

// The access token never crosses a network in clear: http only on
// loopback.
func TestParseAPIURL(t *testing.T) {
	for _, ok := range []string{
		"https://api.vercel.com", "https://api.vercel.com/", "https://vercel.example:8443/base",
		"http://127.0.0.1:1234", "http://localhost:8080", "http://[::1]:9000", "http://127.0.0.2",
	} {
		if _, err := parseAPIURL(ok); err != nil {
			t.Errorf("parseAPIURL(%q): %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"http://api.vercel.com":          "http is only allowed on loopback; use https",
		"http://10.0.0.1:8080":           "http is only allowed on loopback",
		"http://localhost.evil.com":      "http is only allowed on loopback",
		"http://127.0.0.1.nip.io":        "http is only allowed on loopback",
		"ftp://api.vercel.com":           "scheme must be https",
		"api.vercel.com":                 "not an absolute URL",
		"":                               "not an absolute URL",
		"https://api.vercel.com/?x=1":    "give the base URL only",
		"https://user:pw@api.vercel.com": "give the base URL only",
	} {
		_, err := parseAPIURL(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseAPIURL(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	if _, err := NewMinter(MintSettings{Project: "p", AccessToken: "a", API: "http://api.vercel.com"}); err == nil {
		t.Error("NewMinter accepted http on a non-loopback host")
	}
	m, err := NewMinter(MintSettings{Project: "p", AccessToken: "a", API: DefaultMintAPI})
	if err != nil || !strings.HasPrefix(m.endpoint, "https://api.vercel.com/v1/projects/p/token?") || m.timeout != 10*time.Second {
		t.Errorf("defaults: %v, endpoint %q, timeout %v", err, m.endpoint, m.timeout)
	}
}
