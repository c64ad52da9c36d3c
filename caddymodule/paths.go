package caddymodule

import (
	"fmt"
	"strings"
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
	"/v1/models/*",
}

// allowPathsDefault is the allow_paths word for defaultAllowPaths, so a
// list can add to the default (allow_paths default /v1/credits).
const allowPathsDefault = "default"

// pathAllowList matches request paths against patterns: an exact path,
// or a prefix ending in "*". Paths with dot segments or encoded slashes
// or dots are refused outright: the upstream could resolve them to a
// path the list does not allow.
type pathAllowList struct {
	exact    map[string]bool
	prefixes []string
	any      bool
}

func newPathAllowList(patterns []string) (*pathAllowList, error) {
	l := &pathAllowList{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == allowPathsDefault:
			for _, d := range defaultAllowPaths {
				l.addPattern(d)
			}
		case p == "*" || p == "/*":
			l.any = true
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

// addPattern adds a checked pattern: a prefix ending in *, or an exact path.
func (l *pathAllowList) addPattern(p string) {
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		l.prefixes = append(l.prefixes, prefix)
	} else {
		l.exact[p] = true
	}
}

// allows reports whether the request path (escaped form) may go upstream.
func (l *pathAllowList) allows(escapedPath string) bool {
	if hasDotSegmentOrEncoding(escapedPath) {
		return false
	}
	if l.any || l.exact[escapedPath] {
		return true
	}
	for _, p := range l.prefixes {
		if strings.HasPrefix(escapedPath, p) {
			return true
		}
	}
	return false
}

func hasDotSegmentOrEncoding(p string) bool {
	if strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
		return true
	}
	if strings.IndexByte(p, '%') < 0 {
		return false
	}
	lower := strings.ToLower(p)
	return strings.Contains(lower, "%2f") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%5c")
}
