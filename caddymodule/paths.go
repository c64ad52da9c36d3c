package caddymodule

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// defaultAllowPaths are AI Gateway's inference endpoints and its model
// listing, and nothing else: the same credential also reads the account's
// spend report (/v1/report, which costs per query), its credits
// (/v1/credits), any generation's details (/v1/generation), manages API
// key budgets (/v1/quotas) and mints tokens that work without the proxy
// (/v1/realtime/client-secrets). Sandboxes get those only if the
// operator lists them (allow_paths default /v1/credits). From AI
// Gateway's docs (sdks-and-apis: OpenAI-compatible, Responses, Anthropic
// Messages, embeddings, image generation, rerank), 2026-12.
var defaultAllowPaths = []string{
	"/v1/chat/completions",
	"/v1/completions",
	"/v1/responses",
	"/v1/responses/compact",
	"/v1/messages",
	"/v1/messages/count_tokens",
	"/v1/embeddings",
	"/v1/images/generations",
	"/v1/images/edits",
	"/v1/audio/speech",
	"/v1/audio/transcriptions",
	"/v1/rerank",
	"/v2/rerank",
	"/v1/models",
	modelPaths,
}

// unmeterablePaths are the default paths whose answers the proxy cannot
// meter or price: speech (audio bytes), transcription, images and rerank
// carry no usage it reads (AI Gateway's docs show none, 2026-12), and
// image models are priced per image, not per token. While a
// token or dollar limit is on, the default leaves them out
// (meteredDefaultPaths); naming one is allowed, with a warning
// (warnUnmeterable).
var unmeterablePaths = []string{
	"/v1/images/generations",
	"/v1/images/edits",
	"/v1/audio/speech",
	"/v1/audio/transcriptions",
	"/v1/rerank",
	"/v2/rerank",
}

// meteredDefaultPaths is defaultAllowPaths without unmeterablePaths: what
// the word default means while a token or dollar limit is on.
var meteredDefaultPaths = slices.DeleteFunc(slices.Clone(defaultAllowPaths), func(p string) bool {
	return slices.Contains(unmeterablePaths, p)
})

// modelPaths is the pattern for one model's details: /v1/models/ then a
// model id (one or two segments, provider/model, of [A-Za-z0-9._:-], none
// of them . or ..) and optionally /endpoints, and nothing else. A prefix
// (/v1/models/*) let any tail through to a gateway that may resolve it:
// ..;/credits, %252e%252e/credits, ..%00/credits.
const modelPaths = "/v1/models/<model id>[/endpoints]"

// allowPathsDefault is the allow_paths word for defaultAllowPaths, so a
// list can add to the default (allow_paths default /v1/credits).
const allowPathsDefault = "default"

// pathAllowList matches request paths against patterns: an exact path,
// a prefix ending in "*", or modelPaths. A path the upstream could
// resolve to another one (dot segments, ;, encoded separators and dots,
// double encoding, encoded control or non-ASCII bytes) is refused
// whatever the patterns say.
type pathAllowList struct {
	exact    map[string]bool
	prefixes []string
	models   bool // modelPaths is listed
	any      bool
}

func newPathAllowList(patterns []string) (*pathAllowList, error) {
	return newPathAllowListWith(patterns, defaultAllowPaths)
}

// newPathAllowListWith is newPathAllowList with defaults for the word
// default (and for no patterns at all).
func newPathAllowListWith(patterns, defaults []string) (*pathAllowList, error) {
	if len(patterns) == 0 {
		patterns = []string{allowPathsDefault}
	}
	l := &pathAllowList{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == allowPathsDefault:
			for _, d := range defaults {
				l.addPattern(d)
			}
		case p == "*" || p == "/*":
			l.any = true
		case p == modelPaths:
			l.addPattern(p)
		case strings.ContainsAny(p, "<>[] "):
			// e.g. the model rule unquoted in a Caddyfile: /v1/models/<model
			// and id>[/endpoints]; no such path can match (it is escaped)
			return nil, fmt.Errorf("allow_paths pattern %q: a path has no <, >, [, ] or space; the model rule is written %q, quoted in a Caddyfile", p, modelPaths)
		case !strings.HasPrefix(p, "/"):
			return nil, fmt.Errorf("allow_paths pattern %q must start with / (or be the word default, for AI Gateway's inference paths)", p)
		case strings.Count(p, "*") > 1 || (strings.Contains(p, "*") && !strings.HasSuffix(p, "*")):
			return nil, fmt.Errorf("allow_paths pattern %q: only a trailing * is supported", p)
		default:
			l.addPattern(p)
		}
	}
	return l, nil
}

// addPattern adds a checked pattern: modelPaths, a prefix ending in *,
// or an exact path.
func (l *pathAllowList) addPattern(p string) {
	if p == modelPaths {
		l.models = true
		return
	}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		l.prefixes = append(l.prefixes, prefix)
	} else {
		l.exact[p] = true
	}
}

// allows reports whether the request path (escaped form) may go upstream:
// a model path with an encoded slash in its id is checked as
// canonicalModelPath writes it, the form it is forwarded in.
func (l *pathAllowList) allows(escapedPath string) bool {
	escapedPath, _ = canonicalModelPath(escapedPath)
	if ambiguousPath(escapedPath) {
		return false
	}
	if l.any || l.exact[escapedPath] {
		return true
	}
	if l.models && isModelPath(escapedPath) {
		return true
	}
	for _, p := range l.prefixes {
		if strings.HasPrefix(escapedPath, p) {
			return true
		}
	}
	return false
}

// canonicalModelPath reads the one percent-encoding a model path may
// have: the official SDKs escape a model id as one path segment, so
// openai-go's Models.Get(ctx, "openai/gpt-5"), and models.retrieve of
// the npm packages openai and @anthropic-ai/sdk, send
// /v1/models/openai%2Fgpt-5. When p (escaped) is a model path (modelPaths)
// once the %2F (or %2f) right after the id's first segment is a /, it
// returns that path and true: /v1/models/openai/gpt-5, the form AI
// Gateway documents (/v1/models/{creator}/{model}[/endpoints]), which the
// allow list checks and the proxy forwards (useCanonicalModelPath), so
// that the gateway gets the path the allow list and the model check
// read. Any other path is returned as is, with false: an encoded slash
// anywhere else, a second one, %252F, or an id segment that is . or ..
// leaves the path to ambiguousPath, which refuses it.
func canonicalModelPath(p string) (string, bool) {
	tail, ok := strings.CutPrefix(p, "/v1/models/")
	if !ok {
		return p, false
	}
	i := strings.IndexByte(tail, '%')
	if i <= 0 || strings.IndexByte(tail[:i], '/') >= 0 || !strings.EqualFold(tail[i:min(i+3, len(tail))], "%2F") {
		return p, false
	}
	canon := "/v1/models/" + tail[:i] + "/" + tail[i+3:]
	if !isModelPath(canon) {
		return p, false
	}
	return canon, true
}

// useCanonicalModelPath makes an allowed request's path the form the
// allow list read (canonicalModelPath): /v1/models/openai%2Fgpt-5 goes
// upstream as /v1/models/openai/gpt-5. Its decoded path (r.URL.Path, what
// the model check reads) is that already.
func useCanonicalModelPath(r *http.Request) {
	if p, ok := canonicalModelPath(r.URL.EscapedPath()); ok {
		r.URL.Path, r.URL.RawPath = p, ""
	}
}

// isModelPath reports whether p is one model's details or its endpoints
// (modelPaths): /v1/models/<provider>/<model>[/endpoints], or a model id
// of one segment.
func isModelPath(p string) bool {
	tail, ok := strings.CutPrefix(p, "/v1/models/")
	if !ok {
		return false
	}
	segs := strings.Split(tail, "/")
	if len(segs) == 3 && segs[2] == "endpoints" {
		segs = segs[:2]
	}
	if len(segs) > 2 {
		return false
	}
	for _, s := range segs {
		if !isModelIDSegment(s) {
			return false
		}
	}
	return true
}

// isModelIDSegment reports whether s is one segment of a model id:
// letters, digits, - _ . : and not a dot segment.
func isModelIDSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// ambiguousPath reports whether a server could read the escaped path p as
// another path than the allow list did, so that it is refused whatever
// the patterns say:
//   - a dot segment (/./, /../, or a trailing /. or /..);
//   - an empty segment (//), which a server may merge;
//   - a ; anywhere (servers that take path parameters read /..;/ as /../);
//   - a percent-encoded /, \, . or ; (a server that decodes before it
//     resolves sees a separator or a dot segment);
//   - %25, an encoded %: decoded once it is another encoding
//     (%252e%252e is %2e%2e);
//   - an encoded control byte (%00-%1F, %7F), which a server may drop or
//     stop at (..%00 is ..);
//   - an encoded byte of %80 or above: no AI Gateway path needs one, and
//     a lax UTF-8 decoder reads overlong forms as ASCII (%C0%AE is .);
//   - a % not followed by two hex digits.
func ambiguousPath(p string) bool {
	if strings.Contains(p, "/./") || strings.Contains(p, "/../") || strings.Contains(p, "//") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || strings.IndexByte(p, ';') >= 0 {
		return true
	}
	for i := strings.IndexByte(p, '%'); i >= 0; i = strings.IndexByte(p, '%') {
		if i+2 >= len(p) || !ishex(p[i+1]) || !ishex(p[i+2]) {
			return true
		}
		switch b := unhex(p[i+1])<<4 | unhex(p[i+2]); {
		case b < 0x20, b >= 0x7f, b == '%', b == '/', b == '\\', b == '.', b == ';':
			return true
		}
		p = p[i+3:]
	}
	return false
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// provisionPaths builds the handler's allow list: while a token or dollar
// limit is on, the word default (and no allow_paths at all) leaves out
// the endpoints the proxy cannot meter, and a pattern that names one
// anyway is logged as a warning (at load, so `caddy validate` shows it).
func (h *Handler) provisionPaths() error {
	defaults := defaultAllowPaths
	limited := h.Limits != nil && h.Limits.limitsSpend()
	if limited {
		defaults = meteredDefaultPaths
	}
	l, err := newPathAllowListWith(h.AllowPaths, defaults)
	if err != nil {
		return err
	}
	h.paths = l
	if limited {
		h.warnUnmeterable()
	}
	return nil
}

// warnUnmeterable logs the unmeterable endpoints that allow_paths lets
// through by name (an exact path or a prefix; not the word default).
func (h *Handler) warnUnmeterable() {
	var named []string
	for _, p := range h.AllowPaths {
		if p == allowPathsDefault {
			continue
		}
		one, err := newPathAllowList([]string{p})
		if err != nil {
			continue
		}
		for _, u := range unmeterablePaths {
			if one.allows(u) && !slices.Contains(named, u) {
				named = append(named, u)
			}
		}
	}
	if len(named) > 0 {
		h.logger.Warn("allow_paths lets through endpoints whose answers the proxy cannot meter or price: spend there is bounded only by requests_per_minute and concurrent_requests, not by token or dollar limits",
			zap.Strings("paths", named))
	}
}

// limitsSpend reports whether l limits tokens or dollars.
func (l *Limits) limitsSpend() bool {
	return l.TokensPerDay > 0 || l.USDPerDay > 0 || l.TokensPerMonth > 0 || l.USDPerMonth > 0
}
