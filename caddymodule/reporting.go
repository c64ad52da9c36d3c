package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// AI Gateway's custom reporting: ai-reporting-user (one value) and
// ai-reporting-tags (a comma list) attribute a request's spend, grouped
// by GET /v1/report?group_by=user|tag. The gateway refuses (400) a user
// over 256 characters and more than 10 tags, or a tag outside 1-64
// characters; the proxy never sends such a value.

const (
	headerReportingUser  = "Ai-Reporting-User"
	headerReportingTags  = "Ai-Reporting-Tags"
	maxReportingUser     = 256
	maxReportingTag      = 64
	maxReportingTags     = 10
	defaultReportingUser = "{ai_gateway_auth.client_id}"
	// legacyReportingUser was the documented default before client ids:
	// written alone, it still means the default, the client's id, so that
	// a config copied from then cannot make two clients one user.
	legacyReportingUser = "{ai_gateway_auth.client}"
)

// Reporting stamps every request with the client it came from, for AI
// Gateway's spend reports (opt-in: each distinct user or tag written
// costs the team a small fee). Whatever reporting headers a client sends
// are removed first.
type Reporting struct {
	// The value of ai-reporting-user. Placeholders are resolved per
	// request ({env.*} at provision); a value AI Gateway would refuse
	// (over 256 characters, or with bytes a header cannot carry) is
	// replaced by a stable short form: a cleaned prefix plus a hash.
	// Default: {ai_gateway_auth.client_id}, the client's unique id;
	// {ai_gateway_auth.client} alone means the same (it was the default
	// before client ids). A readable name needs more around it
	// ("name:{ai_gateway_auth.client}").
	User string `json:"user,omitempty"`

	// Tags for ai-reporting-tags, at most 10. Placeholders are resolved
	// per request; a tag that resolves to nothing is left out, one that
	// AI Gateway would refuse is replaced by a stable short form. Tags
	// sent in the request body are merged with these by the gateway, so
	// leave room for them. Default: none.
	Tags []string `json:"tags,omitempty"`
}

// reporter is a provisioned Reporting.
type reporter struct {
	user       string // template; "" with userClient set
	userClient bool   // the user is the client id itself
	userStatic []string
	tags       []string // per-request templates, nil when static
	tagsStatic []string // the header value, when every tag is static
}

func newReporter(cfg Reporting) (*reporter, error) {
	repl := caddy.NewReplacer()
	rp := &reporter{}
	user := cfg.User
	if user == "" {
		user = defaultReportingUser
	}
	switch user = strings.TrimSpace(repl.ReplaceKnown(user, "")); {
	case user == defaultReportingUser || user == legacyReportingUser:
		rp.userClient = true
	case strings.Contains(user, "{"):
		rp.user = user
	case user == "":
		return nil, fmt.Errorf("reporting: user is empty (after resolving placeholders); leave it out to use the client name")
	default:
		if err := checkReportingValue(user, maxReportingUser); err != nil {
			return nil, fmt.Errorf("reporting: user: %v", err)
		}
		rp.userStatic = []string{user}
	}
	if len(cfg.Tags) > maxReportingTags {
		return nil, fmt.Errorf("reporting: %d tags; AI Gateway accepts at most %d per request (body tags included)", len(cfg.Tags), maxReportingTags)
	}
	var static []string
	dynamic := false
	for _, t := range cfg.Tags {
		t = strings.TrimSpace(repl.ReplaceKnown(t, ""))
		if strings.Contains(t, "{") {
			dynamic = true
		} else if t == "" {
			continue // an unset {env.X}: no tag
		} else if err := checkReportingValue(t, maxReportingTag); err != nil {
			return nil, fmt.Errorf("reporting: tag %q: %v", t, err)
		}
		rp.tags = append(rp.tags, t)
		static = append(static, t)
	}
	if !dynamic {
		rp.tags = nil
		if len(static) > 0 {
			rp.tagsStatic = []string{strings.Join(static, ",")}
		}
	}
	return rp, nil
}

// checkReportingValue says why AI Gateway would refuse v, if it would.
func checkReportingValue(v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("longer than %d characters", max)
	}
	if max == maxReportingTag && strings.Contains(v, ",") {
		return fmt.Errorf("a tag cannot contain a comma (the header is a comma list)")
	}
	if !printableASCII(v) {
		return fmt.Errorf("only printable ASCII can be sent in a header")
	}
	return nil
}

func printableASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// reportingValue returns v if AI Gateway accepts it, else a stable short
// form: the allowed characters of v, cut so that with "-" and 16 hex
// digits of v's SHA-256 it fits in max.
func reportingValue(v string, max int) string {
	v = strings.TrimSpace(v)
	if v == "" || checkReportingValue(v, max) == nil {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	var b strings.Builder
	for i := 0; i < len(v) && b.Len() < max-17; i++ {
		if c := v[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' {
			b.WriteByte(c)
		}
	}
	if b.Len() > 0 {
		b.WriteByte('-')
	}
	b.WriteString(hex.EncodeToString(sum[:8]))
	return b.String()
}

// stamp sets the configured reporting headers and returns the user it
// set (nil if none), for the request body's attribution. Whatever the client sent
// under those names (any case, repeated, with underscores, named by a
// Connection option or sent as a trailer) is already gone: setUpstreamAuth
// removes them from every request, reporting on or off.
func (rp *reporter) stamp(r *http.Request, clientID string) *string {
	hdr := r.Header
	var repl *caddy.Replacer
	if rp.user != "" || rp.tags != nil {
		repl, _ = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			repl = caddy.NewReplacer()
		}
	}
	var user *string
	switch {
	case rp.userClient:
		if v := reportingValue(clientID, maxReportingUser); v != "" {
			vs := []string{v} // user points into it: one allocation, not two
			hdr[headerReportingUser], user = vs, &vs[0]
		}
	case rp.userStatic != nil:
		hdr[headerReportingUser], user = rp.userStatic, &rp.userStatic[0]
	default:
		if v := reportingValue(repl.ReplaceAll(rp.user, ""), maxReportingUser); v != "" {
			vs := []string{v}
			hdr[headerReportingUser], user = vs, &vs[0]
		}
	}
	if rp.tagsStatic != nil {
		hdr[headerReportingTags] = rp.tagsStatic
	} else if rp.tags != nil {
		var b strings.Builder
		for _, t := range rp.tags {
			if v := reportingValue(repl.ReplaceAll(t, ""), maxReportingTag); v != "" {
				if b.Len() > 0 {
					b.WriteByte(',')
				}
				b.WriteString(v)
			}
		}
		if b.Len() > 0 {
			hdr[headerReportingTags] = []string{b.String()}
		}
	}
	return user
}
