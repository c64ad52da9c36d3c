package integration

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestH2CUpgradeServed: `curl --http2` on an http:// URL offers an h2c
// upgrade (Connection: Upgrade, HTTP2-Settings; Upgrade: h2c;
// HTTP2-Settings) on a plain HTTP/1.1 request. The proxy serves it as
// HTTP/1.1, with metering on or off and with Caddy's default protocols or
// `protocols h1 h2c`, and the gateway sees no upgrade offer, so
// reverse_proxy never switches protocols upstream. An offer of h2c and a
// WebSocket together is still refused while metering. (Before, metering
// answered 403 upgrade_not_allowed, and without metering the offer went
// on to the gateway.)
func TestH2CUpgradeServed(t *testing.T) {
	t.Parallel()
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	env := caddyOptions{Env: map[string]string{"AI_GATEWAY_API_KEY": apiKey}}
	site := func(extra string) string {
		return fmt.Sprintf(`	ai_gateway_auth {
		credential static {env.AI_GATEWAY_API_KEY}
		client_key sk-placeholder
		%s
	}
	reverse_proxy %s`, extra, gw.URL())
	}
	metered := "limits {\n\t\t\trequests_per_minute 1000\n\t\t}\n\t\tusage_metrics"
	def := startCaddy(t, env, site(metered), site(""))
	env.Global = "\tservers {\n\t\tprotocols h1 h2c\n\t}\n"
	h2c := startCaddy(t, env, site(metered))
	sites := []struct{ name, url string }{
		{"metered", def.URLs[0]}, {"not metered", def.URLs[1]}, {"metered, protocols h1 h2c", h2c.URL},
	}

	offer := []string{"Authorization: Bearer sk-placeholder", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
		"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"}
	noOffer := func(t *testing.T, what string) {
		t.Helper()
		r := lastRequest(t, gw)
		if v := r.Header.Values("Upgrade"); len(v) != 0 {
			t.Errorf("%s: the gateway saw Upgrade %q", what, v)
		}
		if v := r.Header.Values("Http2-Settings"); len(v) != 0 {
			t.Errorf("%s: the gateway saw HTTP2-Settings %q", what, v)
		}
		for _, c := range r.Header.Values("Connection") {
			if strings.Contains(strings.ToLower(c), "upgrade") {
				t.Errorf("%s: the gateway saw Connection %q", what, c)
			}
		}
	}
	for _, s := range sites {
		t.Run(s.name, func(t *testing.T) {
			before := len(gw.Requests())
			resp, body := sendRawLines(t, s.url, "POST /v1/chat/completions HTTP/1.1",
				append(offer, "Content-Type: application/json"), []byte(chatBody))
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 || !strings.Contains(string(body), "chat.completion") {
				t.Fatalf("POST with an h2c offer: %s %d: %s; want an HTTP/1.1 200 from the gateway", resp.Proto, resp.StatusCode, body)
			}
			noOffer(t, "POST")
			resp, body = sendRawLines(t, s.url, "GET /v1/models HTTP/1.1", offer, nil)
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
				t.Fatalf("GET with an h2c offer: %s %d: %s; want an HTTP/1.1 200", resp.Proto, resp.StatusCode, body)
			}
			noOffer(t, "GET")
			if n := len(gw.Requests()); n != before+2 {
				t.Errorf("the gateway got %d requests, want 2", n-before)
			}
			if s.name == "not metered" {
				return
			}
			before = len(gw.Requests())
			resp, body = sendRawLines(t, s.url, "GET /v1/models HTTP/1.1",
				[]string{"Authorization: Bearer sk-placeholder", "Connection: Upgrade", "Upgrade: h2c, websocket"}, nil)
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Ai-Gateway-Auth-Error") != "upgrade_not_allowed" {
				t.Errorf("h2c with websocket: %d %q: %s; want 403 upgrade_not_allowed", resp.StatusCode, resp.Header.Get("X-Ai-Gateway-Auth-Error"), body)
			}
			gatewayUntouched(t, gw, before, "h2c with websocket")
		})
	}

	// curl itself, when installed: --http2 offers h2c and gets HTTP/1.1;
	// where h2c is on, HTTP/2 with prior knowledge is served too.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Log("curl not installed: the curl checks are skipped")
		return
	}
	for _, c := range []struct {
		name, url, flag, want string
	}{
		{"curl --http2", def.URLs[0], "--http2", "200 1.1"},
		{"curl --http2, protocols h1 h2c", h2c.URL, "--http2", "200 1.1"},
		{"curl --http2-prior-knowledge, protocols h1 h2c", h2c.URL, "--http2-prior-knowledge", "200 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := exec.Command(curl, "-sS", c.flag, "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
				"-H", "Authorization: Bearer sk-placeholder", "-H", "Content-Type: application/json",
				"--data", chatBody, c.url+"/v1/chat/completions").CombinedOutput()
			if err != nil || string(out) != c.want {
				t.Fatalf("%s: %q (%v), want %q", c.name, out, err, c.want)
			}
			noOffer(t, c.name)
		})
	}
}
