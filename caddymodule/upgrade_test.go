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
