package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// With metering on, a WebSocket (HTTP/1.1 Upgrade, or an extended
// CONNECT) is refused before anything goes upstream: its frames would
// carry messages and usage past the limits and the attribution. Without
// metering, upgrades pass as through plain Caddy.
func TestUpgradeRefusedWhenMetered(t *testing.T) {
	metered := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	plain := spendHandler(t, func(*Handler) {})
	for _, tc := range []struct {
		name   string
		method string
		header map[string]string
	}{
		{"websocket", http.MethodGet, map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}},
		{"upgrade without connection", http.MethodGet, map[string]string{"Upgrade": "websocket"}},
		{"odd case", http.MethodGet, map[string]string{"UPGRADE": "WebSocket"}},
		{"extended connect", http.MethodConnect, nil},
	} {
		for _, h := range []*Handler{metered, plain} {
			r := clientRequest(t, "ws-client", "/v1/responses")
			r.Method = tc.method
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			next := &recordingNext{}
			w := serve(t, h, r, next.handler())
			if h == metered {
				if w.Code != http.StatusForbidden || w.Header().Get("X-Ai-Gateway-Auth-Error") != "upgrade_not_allowed" ||
					!strings.Contains(w.Body.String(), "SSE") || len(next.calls()) != 0 {
					t.Errorf("%s, metered: %d %s %q, %d upstream calls; want 403 upgrade_not_allowed and none",
						tc.name, w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), w.Body.String(), len(next.calls()))
				}
			} else if w.Code != http.StatusOK || len(next.calls()) != 1 {
				t.Errorf("%s, not metered: %d, %d upstream calls; want it passed on", tc.name, w.Code, len(next.calls()))
			}
		}
	}
}

// An h2c upgrade offer (what `curl --http2` sends on an http:// URL) is
// served as the HTTP/1.1 request it also is, metering on or not: the
// upstream sees no Upgrade, no HTTP2-Settings and no Connection option
// naming them, so reverse_proxy cannot switch its connection to the
// gateway. An offer of anything besides h2c is still an upgrade.
func TestH2CUpgradeServedAsHTTP1(t *testing.T) {
	metered := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
	plain := spendHandler(t, func(*Handler) {})
	const settings = "AAMAAABkAAQCAAAAAAIAAAAA"
	for _, tc := range []struct {
		name       string
		method     string
		header     http.Header
		served     bool   // with metering on
		connection string // the Connection header the upstream sees, when served
	}{
		{"curl --http2", http.MethodPost, http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {settings}}, true, ""},
		{"odd case", http.MethodPost, http.Header{"Connection": {"upgrade,http2-settings"}, "Upgrade": {"H2C"}, "Http2-Settings": {settings}}, true, ""},
		{"no Connection", http.MethodPost, http.Header{"Upgrade": {"h2c"}}, true, ""},
		{"two lines of h2c", http.MethodPost, http.Header{"Connection": {"Upgrade", "HTTP2-Settings"}, "Upgrade": {"h2c", " h2c, "}}, true, ""},
		{"keep-alive kept", http.MethodPost, http.Header{"Connection": {"keep-alive, Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {settings}}, true, "keep-alive"},
		{"h2c and websocket", http.MethodPost, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c, websocket"}}, false, ""},
		{"websocket then h2c", http.MethodPost, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket", "h2c"}}, false, ""},
		{"h2c then websocket", http.MethodPost, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c", "websocket"}}, false, ""},
		{"h2c version", http.MethodPost, http.Header{"Upgrade": {"h2c/1"}}, false, ""},
		{"empty Upgrade", http.MethodPost, http.Header{"Upgrade": {""}}, false, ""},
		{"connect with h2c", http.MethodConnect, http.Header{"Upgrade": {"h2c"}}, false, ""},
	} {
		for _, h := range []*Handler{metered, plain} {
			r := clientRequest(t, "h2c-client", "/v1/chat/completions")
			r.Method = tc.method
			for k, v := range tc.header {
				r.Header[k] = append([]string(nil), v...)
			}
			next := &recordingNext{}
			w := serve(t, h, r, next.handler())
			if h == metered && !tc.served {
				if w.Code != http.StatusForbidden || w.Header().Get("X-Ai-Gateway-Auth-Error") != "upgrade_not_allowed" || len(next.calls()) != 0 {
					t.Errorf("%s, metered: %d %q, %d upstream calls; want 403 upgrade_not_allowed and none",
						tc.name, w.Code, w.Header().Get("X-Ai-Gateway-Auth-Error"), len(next.calls()))
				}
				continue
			}
			calls := next.calls()
			if w.Code != http.StatusOK || len(calls) != 1 {
				t.Errorf("%s, metered %v: %d, %d upstream calls; want it served", tc.name, h == metered, w.Code, len(calls))
				continue
			}
			up := calls[0].header
			if !tc.served { // not metered: an upgrade passes as through plain Caddy
				if tc.method != http.MethodConnect && len(up["Upgrade"]) == 0 {
					t.Errorf("%s, not metered: the Upgrade header was removed", tc.name)
				}
				continue
			}
			if len(up["Upgrade"]) != 0 || len(up["Http2-Settings"]) != 0 || strings.Join(up["Connection"], ",") != tc.connection {
				t.Errorf("%s, metered %v: the upstream saw Upgrade %q, HTTP2-Settings %q, Connection %q; want none, none, %q",
					tc.name, h == metered, up["Upgrade"], up["Http2-Settings"], up["Connection"], tc.connection)
			}
		}
	}
}
