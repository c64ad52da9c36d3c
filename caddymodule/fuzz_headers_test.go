package caddymodule

import (
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
)

// removeConnectionHeadersLikeCaddy is what reverse_proxy does to a request
// after this handler: it deletes every header its Connection header
// names, then the Connection header itself.
func removeConnectionHeadersLikeCaddy(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	delete(h, "Connection")
}

// FuzzUpstreamHeaders: whatever header names, Connection options and
// declared trailers a client sends, what reaches the upstream (after the
// handler's header work and reverse_proxy's hop-by-hop removal) has
// exactly the module's Authorization and ai-gateway-auth-method, and no
// other credential header, however it is cased, listed or repeated;
// credential trailers are refused and other trailers dropped.
func FuzzUpstreamHeaders(f *testing.F) {
	f.Add("Authorization", "keep-alive", "X-Api-Key,x_api_key", "X-Checksum")
	f.Add("keep-alive, AUTHORIZATION", "ai-gateway-auth-method", "Api-Key", "")
	f.Add(" x-foo ,Authorization,\tai-gateway-auth-method", "", "Proxy-Authorization,Vercel-Sandbox-Oidc-Token", "Authorization")
	f.Add("upgrade, authorization", "close", "X_API_KEY,api_key,Authorization", "x-api-key, X-Other")
	f.Add(",,,", "te", "authorization", "x_api_key")
	f.Fuzz(func(t *testing.T, conn1, conn2, names, trailers string) {
		r, _ := http.NewRequest(http.MethodPost, "http://proxy/v1/chat/completions", nil)
		for _, c := range []string{conn1, conn2} {
			if c != "" {
				r.Header.Add("Connection", c)
			}
		}
		for name := range strings.SplitSeq(names, ",") {
			if name = strings.TrimSpace(name); name != "" {
				// as net/http's servers store them: canonical names,
				// repeated values
				r.Header.Add(name, "client-value")
				r.Header.Add(name, "client-value-2")
			}
		}
		for name := range strings.SplitSeq(trailers, ",") {
			if name = strings.TrimSpace(name); name != "" {
				if r.Trailer == nil {
					r.Trailer = http.Header{}
				}
				r.Trailer[textproto.CanonicalMIMEHeaderKey(name)] = nil
			}
		}

		hadCredentialTrailer := slices.ContainsFunc(slices.Collect(maps.Keys(r.Trailer)), isModuleHeader)
		if credentialInTrailers(r) != hadCredentialTrailer {
			t.Fatalf("credentialInTrailers disagrees about trailers %q", trailers)
		}
		if hadCredentialTrailer {
			return // refused with 400
		}
		if r.Trailer != nil {
			t.Fatal("declared trailers were not dropped")
		}

		cred := credential.New("upstream-token", credential.MethodOIDC, time.Now().Add(time.Hour), time.Now())
		dropConnectionOptions(r.Header)
		setUpstreamAuth(r.Header, cred)
		removeConnectionHeadersLikeCaddy(r.Header)

		if got := r.Header["Authorization"]; !slices.Equal(got, cred.AuthHeader()) {
			t.Fatalf("upstream Authorization %q, want the module's", got)
		}
		if got := r.Header["Ai-Gateway-Auth-Method"]; !slices.Equal(got, cred.MethodHeader()) {
			t.Fatalf("upstream ai-gateway-auth-method %q, want the module's", got)
		}
		for k := range r.Header {
			if k == "Authorization" || k == "Ai-Gateway-Auth-Method" {
				continue
			}
			if isModuleHeader(k) {
				t.Fatalf("client header %q reaches the upstream", k)
			}
		}
	})
}

// moduleHeaders are the headers only the module may set upstream, written
// out here rather than taken from the code under test, so that a name
// dropped from controlledHeader fails this fuzz test.
var moduleHeaders = []string{
	"authorization", "x-api-key", "api-key", "proxy-authorization", "ai-gateway-auth-method",
	"ai-reporting-user", "ai-reporting-tags", "vercel-sandbox-oidc-token",
	"vercel-forwarded-host", "vercel-forwarded-scheme", "vercel-forwarded-port", "vercel-forwarded-path",
}

// isModuleHeader reports whether a header name, in any case and with
// underscores for hyphens, is one of moduleHeaders.
func isModuleHeader(name string) bool {
	return slices.Contains(moduleHeaders, strings.ToLower(strings.ReplaceAll(name, "_", "-")))
}
