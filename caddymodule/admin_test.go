package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/caddyserver/caddy/v2"
)

// GET /ai_gateway_auth/status on the admin endpoint.

type statusBody struct {
	Healthy  bool      `json:"healthy"`
	Time     time.Time `json:"time"`
	Handlers []struct {
		Handler uint64                    `json:"handler"`
		Usable  bool                      `json:"usable"`
		Sources []credential.SourceStatus `json:"sources"`
	} `json:"handlers"`
}

func getStatus(t *testing.T) (int, statusBody, string) {
	t.Helper()
	w := httptest.NewRecorder()
	if err := serveStatus(w, httptest.NewRequest(http.MethodGet, "/ai_gateway_auth/status", nil)); err != nil {
		t.Fatalf("serveStatus: %v", err)
	}
	var body statusBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("status body is not JSON: %v: %s", err, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	return w.Code, body, w.Body.String()
}

// handlerStatusOf finds h's entry in the status.
func handlerStatusOf(t *testing.T, body statusBody, h *Handler) (bool, []credential.SourceStatus) {
	t.Helper()
	for _, hs := range body.Handlers {
		if hs.Handler == h.statusHandle.seq {
			return hs.Usable, hs.Sources
		}
	}
	t.Fatalf("handler %d not in the status", h.statusHandle.seq)
	return false, nil
}

func TestStatusRoute(t *testing.T) {
	routes := StatusAPI{}.Routes()
	if len(routes) != 1 || routes[0].Pattern != "/ai_gateway_auth/status" {
		t.Errorf("routes %+v", routes)
	}
	w := httptest.NewRecorder()
	err := serveStatus(w, httptest.NewRequest(http.MethodPost, "/ai_gateway_auth/status", nil))
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v, want a 405 API error", err)
	}
	w = httptest.NewRecorder()
	if err := serveStatus(w, httptest.NewRequest(http.MethodHead, "/ai_gateway_auth/status", nil)); err != nil {
		t.Errorf("HEAD: %v", err)
	}
}

// With every handler's credential usable: 200, each source described,
// never a credential.
func TestStatusHealthy(t *testing.T) {
	token := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	t.Setenv("AIGW_TEST_STATUS_OIDC", token)
	t.Setenv("AIGW_TEST_STATUS_EMPTY", "")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{
			staticSourceJSON("{env.AIGW_TEST_STATUS_EMPTY}"),
			oidcSourceJSON(VercelOIDCSource{Env: "AIGW_TEST_STATUS_OIDC"}),
		},
		ClientKeys: []string{"sk-placeholder"},
	})
	static := staticHandler(t)

	code, body, raw := getStatus(t)
	if code != http.StatusOK || !body.Healthy {
		t.Fatalf("status %d, healthy %v: %s", code, body.Healthy, raw)
	}
	assertNotContains(t, "status", raw, token, strings.Split(token, ".")[1], testStaticKey, "sk-placeholder")

	usable, sources := handlerStatusOf(t, body, h)
	if !usable || len(sources) != 2 {
		t.Fatalf("handler usable %v, %d sources", usable, len(sources))
	}
	if s := sources[0]; s.Kind != "static" || s.Usable || !strings.Contains(s.LastError, "resolved to nothing") {
		t.Errorf("empty static: %+v", s)
	}
	s := sources[1]
	if s.Kind != "vercel_oidc" || !s.Usable || s.Method != "oidc" || !aboutAnHourAway(s.Expires) {
		t.Errorf("vercel_oidc: %+v", s)
	}
	if s.NextRefresh == nil || !s.NextRefresh.Before(*s.Expires) {
		t.Errorf("vercel_oidc next refresh %v, want before exp %v", s.NextRefresh, s.Expires)
	}
	usable, sources = handlerStatusOf(t, body, static)
	if !usable || len(sources) != 1 || sources[0].Kind != "static" || !sources[0].Usable || sources[0].Method != "api-key" {
		t.Errorf("static handler: %v %+v", usable, sources)
	}
}

// A mint API answering 500: 503 with the error; once it recovers, 200
// with the token's expiry and the refresh times. No request is needed:
// the status starts the source's refresher.
func TestStatusMintFailureAndRecovery(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	token := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	mint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error":{"code":"internal_server_error","message":"mint exploded"}}`)
			return
		}
		fmt.Fprintf(w, `{"token":%q}`, token)
	}))
	defer mint.Close()
	t.Setenv("AIGW_TEST_STATUS_ACCESS", "vercel-access-token-status-secret")
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{Mint: &MintConfig{
			Project: oidctest.Project, Team: oidctest.Team, AccessToken: "{env.AIGW_TEST_STATUS_ACCESS}", API: mint.URL,
		}})},
		ClientKeys: []string{"sk-placeholder"},
	})
	healthy := staticHandler(t) // one healthy handler does not make the whole healthy

	var src credential.SourceStatus
	eventually(t, "the mint failure in the status", func() bool {
		code, body, _ := getStatus(t)
		usable, sources := handlerStatusOf(t, body, h)
		src = sources[0]
		return code == http.StatusServiceUnavailable && !body.Healthy && !usable && src.LastError != ""
	})
	if src.Kind != "vercel_oidc" || src.Usable || !strings.Contains(src.LastError, "500") || !strings.Contains(src.LastError, "mint exploded") {
		t.Errorf("failing source: %+v", src)
	}
	if src.NextRefresh == nil || !src.NextRefresh.After(time.Now().Add(-time.Second)) {
		t.Errorf("next refresh %v: want the next attempt", src.NextRefresh)
	}
	_, body, raw := getStatus(t)
	if usable, _ := handlerStatusOf(t, body, healthy); !usable {
		t.Error("the static handler is reported unusable")
	}
	assertNotContains(t, "status", raw, "vercel-access-token-status-secret")

	failing.Store(false)
	eventually(t, "recovery in the status", func() bool {
		code, _, _ := getStatus(t)
		return code == http.StatusOK
	})
	code, body, raw := getStatus(t)
	usable, sources := handlerStatusOf(t, body, h)
	src = sources[0]
	if code != http.StatusOK || !body.Healthy || !usable || !src.Usable || src.LastError != "" {
		t.Errorf("after recovery: %d %+v", code, src)
	}
	if !aboutAnHourAway(src.Expires) {
		t.Errorf("expires %v", src.Expires)
	}
	if src.LastRefresh == nil || time.Since(*src.LastRefresh) > time.Minute || src.NextRefresh == nil || !src.NextRefresh.Before(*src.Expires) {
		t.Errorf("last refresh %v, next refresh %v", src.LastRefresh, src.NextRefresh)
	}
	assertNotContains(t, "status", raw, token, strings.Split(token, ".")[1], "vercel-access-token-status-secret")
}

// A handler leaves the status when its config is unloaded.
func TestStatusUnregisteredOnCleanup(t *testing.T) {
	h := staticHandler(t)
	seq := h.statusHandle.seq
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	_, body, _ := getStatus(t)
	for _, hs := range body.Handlers {
		if hs.Handler == seq {
			t.Error("a cleaned-up handler is still in the status")
		}
	}
}

// aboutAnHourAway: the expiry of a token minted an hour before its exp,
// a moment ago.
func aboutAnHourAway(t *time.Time) bool {
	if t == nil {
		return false
	}
	d := time.Until(*t)
	return d > 58*time.Minute && d <= time.Hour
}

// A pushed token ends the failure state at once: the status shows 200
// and no stale error next to a usable token.
func TestStatusPushClearsFailure(t *testing.T) {
	mint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer mint.Close()
	jwks := oidctest.NewJWKS(t)
	h := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{oidcSourceJSON(VercelOIDCSource{
			Mint: &MintConfig{Project: oidctest.Project, Team: oidctest.Team, AccessToken: "vercel-access", API: mint.URL},
			Push: &PushConfig{Path: testPushPath, Issuer: testIssuer, JWKSURL: jwks.JWKSURL()},
		})},
		ClientKeys: []string{"sk-placeholder"},
	})
	eventually(t, "the mint failure in the status", func() bool {
		code, body, _ := getStatus(t)
		_, sources := handlerStatusOf(t, body, h)
		return code == http.StatusServiceUnavailable && strings.Contains(sources[0].LastError, "502")
	})
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	if w := pushJSON(t, h, tok); w.Code != http.StatusNoContent {
		t.Fatalf("push: status %d: %s", w.Code, w.Body)
	}
	code, body, raw := getStatus(t)
	_, sources := handlerStatusOf(t, body, h)
	if code != http.StatusOK || !sources[0].Usable || sources[0].LastError != "" || !aboutAnHourAway(sources[0].Expires) {
		t.Errorf("after the push: status %d, source %+v", code, sources[0])
	}
	assertNotContains(t, "status", raw, tok, strings.Split(tok, ".")[1])
}
