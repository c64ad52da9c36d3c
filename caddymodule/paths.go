package caddymodule

import (
	"fmt"
	"strings"
)

// defaultAllowPaths are AI Gateway's API paths: the OpenAI-compatible
// /v1/... and Anthropic's /v1/messages.
var defaultAllowPaths = []string{"/v1/*"}

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
		case p == "*" || p == "/*":
			l.any = true
		case !strings.HasPrefix(p, "/"):
			return nil, fmt.Errorf("allow_paths pattern %q must start with /", p)
		case strings.Count(p, "*") > 1 || (strings.Contains(p, "*") && !strings.HasSuffix(p, "*")):
			return nil, fmt.Errorf("allow_paths pattern %q: only a trailing * is supported", p)
		case strings.HasSuffix(p, "*"):
			l.prefixes = append(l.prefixes, strings.TrimSuffix(p, "*"))
		default:
			l.exact[p] = true
		}
	}
	return l, nil
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
