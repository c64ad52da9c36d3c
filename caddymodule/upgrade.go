package caddymodule

import (
	"net/http"
	"net/textproto"
	"strings"
)

// Protocol upgrades. With metering on, a request that asks to switch
// protocols (a WebSocket: AI Gateway's /v1/responses has one) is refused:
// its frames would carry messages and usage past the limits, the
// attribution and the meter. An h2c upgrade is not such a request.
// `curl --http2` on an http:// URL sends
//
//	Connection: Upgrade, HTTP2-Settings
//	Upgrade: h2c
//	HTTP2-Settings: <base64 SETTINGS>
//
// on an ordinary HTTP/1.1 request, which a server may answer as it is,
// ignoring the offer (RFC 9110 §7.8). Neither Go's HTTP server nor
// Caddy's acts on the offer, even with `protocols h1 h2c` (which serves
// HTTP/2 with prior knowledge only), so it reaches this handler as a
// plain request carrying those headers. dropH2CUpgrade removes them, so
// that the request is served as HTTP/1.1 and reverse_proxy does not pass
// the offer on to the upstream, which could accept it and switch the
// connection to a protocol the proxy would then only tunnel.

// dropH2CUpgrade removes an upgrade offer that names only h2c: the
// Upgrade and HTTP2-Settings headers and the Connection options naming
// them. Any other offer (a WebSocket, or h2c listed with another
// protocol) is left for upgradeRequest to find.
func dropH2CUpgrade(hdr http.Header) {
	offers, ok := hdr["Upgrade"]
	if !ok || !onlyH2C(offers) {
		return
	}
	delete(hdr, "Upgrade")
	delete(hdr, "Http2-Settings")
	opts, ok := hdr["Connection"]
	if !ok {
		return
	}
	var keep []string
	for _, v := range opts {
		for opt := range strings.SplitSeq(v, ",") {
			opt = textproto.TrimString(opt)
			if opt != "" && !strings.EqualFold(opt, "upgrade") && !strings.EqualFold(opt, "http2-settings") {
				keep = append(keep, opt)
			}
		}
	}
	if len(keep) == 0 {
		delete(hdr, "Connection")
		return
	}
	hdr["Connection"] = []string{strings.Join(keep, ", ")}
}

// onlyH2C reports whether the Upgrade header's lines offer h2c and
// nothing else.
func onlyH2C(offers []string) bool {
	found := false
	for _, v := range offers {
		for p := range strings.SplitSeq(v, ",") {
			switch p = textproto.TrimString(p); {
			case p == "":
			case strings.EqualFold(p, "h2c"):
				found = true
			default:
				return false
			}
		}
	}
	return found
}

// upgradeRequest reports whether r asks to switch protocols: an HTTP/1.1
// Upgrade, or an HTTP/2 or HTTP/3 extended CONNECT (RFC 8441, WebSockets).
func upgradeRequest(r *http.Request) bool {
	return len(r.Header["Upgrade"]) > 0 || r.Method == http.MethodConnect
}
