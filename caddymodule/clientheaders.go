package caddymodule

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
)

// What a client sends must not change what the module sets upstream.
// Two HTTP/1.1 features let a client reach past setUpstreamAuth:
//
//   - Connection options: reverse_proxy deletes every header that the
//     request's Connection header names (they are hop-by-hop), after this
//     handler ran, so `Connection: Authorization` would delete the
//     credential the module set, and the gateway's 401 would then look
//     like a verdict on the token.
//   - Trailers: fields sent after a chunked body are forwarded as
//     trailers, past any header check, so `Trailer: X-Api-Key` would
//     smuggle a credential (AI Gateway lets an x-api-key win) upstream.

// standardConnectionOption reports whether a Connection option is one of
// the options HTTP itself defines; any other option names a header.
func standardConnectionOption(opt string) bool {
	return strings.EqualFold(opt, "close") || strings.EqualFold(opt, "keep-alive") ||
		strings.EqualFold(opt, "upgrade") || strings.EqualFold(opt, "te")
}

// dropConnectionOptions honours the client's Connection options now,
// while the headers they name are still the client's own: it deletes
// those headers and keeps only the standard options, so that nothing the
// module sets afterwards can be named (and deleted) by the client. It
// costs nothing when the client sent no Connection header or only
// standard options (`keep-alive`, `close`).
func dropConnectionOptions(hdr http.Header) {
	vals, ok := hdr["Connection"]
	if !ok || onlyStandardOptions(vals) {
		return
	}
	var keep []string
	for _, v := range vals {
		for opt := range strings.SplitSeq(v, ",") {
			opt = textproto.TrimString(opt)
			switch {
			case opt == "":
			case standardConnectionOption(opt):
				keep = append(keep, opt)
			default:
				hdr.Del(opt) // the client meant it for this hop only
			}
		}
	}
	if len(keep) == 0 {
		delete(hdr, "Connection")
		return
	}
	hdr["Connection"] = []string{strings.Join(keep, ", ")}
}

func onlyStandardOptions(vals []string) bool {
	for _, v := range vals {
		for opt := range strings.SplitSeq(v, ",") {
			if opt = textproto.TrimString(opt); opt != "" && !standardConnectionOption(opt) {
				return false
			}
		}
	}
	return true
}

// controlledHeader reports whether a header (by canonical name) is one the
// module removes from or sets on every forwarded request: a client
// credential, the upstream credential and its method, AI Gateway's
// spend-reporting headers (a client must not attribute spend, and each
// new value costs the team a fee) or the Vercel Sandbox forwarding
// headers.
func controlledHeader(name string) bool {
	switch name {
	case "Authorization", "X-Api-Key", "Api-Key", "Proxy-Authorization", "Ai-Gateway-Auth-Method",
		headerReportingUser, headerReportingTags,
		identity.HeaderSandboxToken, identity.HeaderForwardedHost, identity.HeaderForwardedScheme, identity.HeaderForwardedPort, identity.HeaderForwardedPath:
		return true
	}
	return false
}

// controlledHeaderAlias reports whether a header name with underscores
// reads as a controlled header once they are hyphens (X_Api_Key): some
// servers treat the two alike, so such a header is removed too.
func controlledHeaderAlias(name string) bool {
	if strings.IndexByte(name, '_') < 0 {
		return false
	}
	return controlledHeader(textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(name, "_", "-")))
}

// credentialInTrailers reports whether the request declares a trailer
// the module controls (a credential sent after the body). Every other
// declared trailer is dropped: no LLM API reads request trailers, and
// reverse_proxy would forward them unchecked.
func credentialInTrailers(r *http.Request) bool {
	if r.Trailer == nil {
		return false
	}
	for name := range r.Trailer {
		if controlledHeader(name) || controlledHeaderAlias(name) {
			return true
		}
	}
	// reverse_proxy copies the trailers from this request's map when the
	// body ends: without a map there is nothing for it to copy.
	r.Trailer = nil
	delete(r.Header, "Trailer")
	return false
}
