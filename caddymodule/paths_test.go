package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestPathAllowList(t *testing.T) {
	def, err := newPathAllowList(defaultAllowPaths)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := newPathAllowList([]string{"/v1/chat/completions", "/v1/models*", "/health"})
	if err != nil {
		t.Fatal(err)
	}
	anyPath, err := newPathAllowList([]string{"/*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path                string
		def, custom, anyway bool
	}{
		{"/v1/chat/completions", true, true, true},
		{"/v1/messages", true, false, true},
		{"/v1/models", true, true, true},
		{"/v1/models/openai/gpt-5", true, true, true},
		{"/v1/", false, false, true},
		{"/v1/responses", true, false, true},
		{"/v1/messages/count_tokens", true, false, true},
		{"/v1/embeddings", true, false, true},
		{"/v2/rerank", true, false, true},
		// account and management endpoints: not by default
		{"/v1/report", false, false, true},
		{"/v1/credits", false, false, true},
		{"/v1/generation", false, false, true},
		{"/v1/quotas", false, false, true},
		{"/v1/realtime/client-secrets", false, false, true},
		{"/v1/ai/language-model", false, false, true},
		{"/v1/chat/completions/x", false, false, true},
		{"/v1", false, false, true},
		{"/v1x/chat", false, false, true},
		{"/v2/chat/completions", false, false, true},
		{"/", false, false, true},
		{"/health", false, true, true},
		{"/health/x", false, false, true},
		{"/v1/chat/completions/", false, false, true},
		{"/v1/models/.well-known", true, true, true}, // a dot file, not a dot segment
		{"/v1/models/a...b", true, true, true},
		// the default list's model paths: a model id, one or two
		// segments of [A-Za-z0-9._:-], then optionally /endpoints
		{"/v1/models/openai/gpt-5/endpoints", true, true, true},
		{"/v1/models/anthropic/claude-sonnet-4.5", true, true, true},
		{"/v1/models/bedrock:anthropic.claude_v2", true, true, true},
		{"/v1/models/endpoints", true, true, true},
		{"/v1/models/openai/endpoints", true, true, true},
		{"/v1/models/openai/gpt-5/extra", false, true, true},
		{"/v1/models/openai/gpt-5/endpoints/x", false, true, true},
		{"/v1/models/openai/gpt-5/endpoints/endpoints", false, true, true},
		{"/v1/models/a/b/c/endpoints", false, true, true},
		{"/v1/models/openai/gpt-5/", false, true, true},
		{"/v1/models/openai/gpt-5/endpoints/", false, true, true},
		{"/v1/models/", false, true, true},
		{"/v1/models//gpt-5", false, false, false}, // an empty segment: a server may drop it
		{"/v1//chat/completions", false, false, false},
		{"//v1/chat/completions", false, false, false},
		{"/v1/chat/completions//", false, false, false},
		{"/v1/models/open%41i/gpt-5", false, true, true}, // no % in a model id; a harmless one passes a prefix
		{"/v1/models/gpt%205", false, true, true},
		{"/v1/models/gpt+5", false, true, true},
		{"/v1/models/gpt~5", false, true, true},
		{"/v1/modelsx", false, true, true},
		// the official SDKs escape a model id's slash: that one escape,
		// between the id's two segments, is read as the slash (the path is
		// checked, and forwarded, as /v1/models/openai/gpt-5)
		{"/v1/models/openai%2Fgpt-5", true, true, true},
		{"/v1/models/openai%2fgpt-5", true, true, true},
		{"/v1/models/openai%2Fgpt-5/endpoints", true, true, true},
		{"/v1/models/anthropic%2Fclaude-sonnet-4.5", true, true, true},
		{"/v1/models/bedrock:x%2Fa.b_c-d", true, true, true},
		{"/v1/models/openai%2Fendpoints", true, true, true},
		// and no other: a second escape, one elsewhere, an encoded %, a
		// third segment, a dot segment, an empty segment
		{"/v1/models/openai%2Fgpt-5%2Fendpoints", false, false, false},
		{"/v1/models/openai%2Fgpt-5%2fendpoints", false, false, false},
		{"/v1/models/a%2Fb%2Fc", false, false, false},
		{"/v1/models/a%2Fb/c", false, false, false},
		{"/v1/models/a/b%2Fc", false, false, false},
		{"/v1/models/a/b%2Fendpoints", false, false, false},
		{"/v1/models/openai%2Fgpt-5/extra", false, false, false},
		{"/v1/models/openai%2Fgpt-5/endpoints/x", false, false, false},
		{"/v1/models/openai%2Fgpt-5/", false, false, false},
		{"/v1/models/openai%252Fgpt-5", false, false, false},
		{"/v1/models/openai%25%32%46gpt-5", false, false, false},
		{"/v1/models/..%2Fcredits", false, false, false},
		{"/v1/models/.%2Fgpt-5", false, false, false},
		{"/v1/models/openai%2F..", false, false, false},
		{"/v1/models/openai%2F.", false, false, false},
		{"/v1/models/openai%2F%2e%2e", false, false, false},
		{"/v1/models/%2e%2e%2Fcredits", false, false, false},
		{"/v1/models/%2Fgpt-5", false, false, false},
		{"/v1/models/openai%2F", false, false, false},
		{"/v1/models/openai%2F/gpt-5", false, false, false},
		{"/v1/models/openai%2F%2Fgpt-5", false, false, false},
		{"/v1/models/open%61i%2Fgpt-5", false, false, false},
		{"/v1/models/openai%2Fgpt-5;x", false, false, false},
		{"/v1/models/openai%2Fgpt-5%00", false, false, false},
		{"/v1/models/openai%5Cgpt-5", false, false, false},
		{"/v1/models/openai%2", false, false, false},
		{"/v1/models%2Fopenai%2Fgpt-5", false, false, false},
		{"/v1%2Fmodels/openai%2Fgpt-5", false, false, false},
		{"/v2/models/openai%2Fgpt-5", false, false, false},
		{"/v1/chat%2Fcompletions", false, false, false},
		{"/x/v1/models/openai%2Fgpt-5", false, false, false},
		// dot segments and encoded separators are refused by every list
		{"/v1/../admin", false, false, false},
		{"/v1/./chat/completions", false, false, false},
		{"/v1/..", false, false, false},
		{"/v1/.", false, false, false},
		{"/v1/chat/completions/../../admin", false, false, false},
		{"/v1/%2e%2e/admin", false, false, false},
		{"/v1/%2E%2E/admin", false, false, false},
		{"/v1/.%2e/admin", false, false, false},
		{"/v1%2fchat%2fcompletions", false, false, false},
		{"/v1/chat%2Fcompletions", false, false, false},
		{"/v1/..%5cadmin", false, false, false},
		{"/v1/models%2F..%2F..%2Fadmin", false, false, false},
		// what a server may read as a dot segment or a separator once it
		// decodes, drops or stops at a byte: refused by every list
		{"/v1/models/..;/credits", false, false, false},
		{"/v1/models/openai;v=1/gpt-5", false, false, false},
		{"/v1/chat/completions;x", false, false, false},
		{"/v1/models/..%3b/credits", false, false, false},
		{"/v1/models/..%3B/credits", false, false, false},
		{"/v1/models/%252e%252e/credits", false, false, false},
		{"/v1/models/%25/x", false, false, false},
		{"/v1/models/..%00/credits", false, false, false},
		{"/v1/models/..%09/credits", false, false, false},
		{"/v1/models/..%0a/credits", false, false, false},
		{"/v1/models/..%1F/credits", false, false, false},
		{"/v1/models/..%7f/credits", false, false, false},
		{"/v1/models/%C0%AE%C0%AE/credits", false, false, false},
		{"/v1/models/%c0%ae%c0%ae/credits", false, false, false},
		{"/v1/models/%e2%80%a4/x", false, false, false},
		{"/v1/models/x%80", false, false, false},
		{"/v1/models/x%FF", false, false, false},
		{"/v1/models/x%", false, false, false},
		{"/v1/models/x%2", false, false, false},
		{"/v1/models/x%zz", false, false, false},
		{"/v1/models/x%%41", false, false, false},
	} {
		for name, got := range map[string]bool{"default": def.allows(tc.path), "custom": custom.allows(tc.path), "/*": anyPath.allows(tc.path)} {
			want := map[string]bool{"default": tc.def, "custom": tc.custom, "/*": tc.anyway}[name]
			if got != want {
				t.Errorf("%s.allows(%q) = %v, want %v", name, tc.path, got, want)
			}
		}
	}
}

func TestPathAllowListPatternErrors(t *testing.T) {
	for _, p := range []string{"v1/*", "*/v1", "/v1/*/chat", "/v*/*", "/v1/**", "", "/v1/models/<model", "id>[/endpoints]", "/v1/models/<id>", "/v1/a b"} {
		if _, err := newPathAllowList([]string{p}); err == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

// Through the handler: an accepted client on a path outside allow_paths
// gets 403 in its SDK's shape, and the upstream is not contacted; the
// escaped form is what is checked.
func TestHandlerAllowPaths(t *testing.T) {
	def := staticHandler(t)
	narrow := provisionHandler(t, &Handler{
		CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
		ClientKeys:     []string{"sk-placeholder"},
		AllowPaths:     []string{"/v1/chat/completions", "/v1/models"},
	})
	for _, tc := range []struct {
		h      *Handler
		target string
		ok     bool
	}{
		{def, "/v1/chat/completions", true},
		{def, "/v1/messages?beta=true", true},
		{def, "/v1/models", true},
		{def, "/admin", false},
		{def, "/v2/chat/completions", false},
		{def, "/v1/../admin", false},
		{def, "/v1/%2e%2e/admin", false},
		{def, "/v1%2Fchat%2Fcompletions", false},
		{def, "/v1/chat/completions?x=/../admin", true}, // the query is not the path
		{def, "/v1/models/openai/gpt-5/endpoints", true},
		{def, "/v1/models/..;/credits", false},
		{def, "/v1/models/%C0%AE%C0%AE/credits", false},
		{narrow, "/v1/chat/completions", true},
		{narrow, "/v1/models", true},
		{narrow, "/v1/messages", false},
		{narrow, "/v1/models/x", false},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.target, strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r, _ = withReplacer(r)
		var next recordingNext
		w := serve(t, tc.h, r, next.handler())
		reached := len(next.calls()) == 1
		if tc.ok {
			if w.Code != http.StatusOK || !reached {
				t.Errorf("%s: status %d, reached %v; want 200", tc.target, w.Code, reached)
			}
			continue
		}
		if w.Code != http.StatusForbidden || reached {
			t.Errorf("%s: status %d, reached %v; want 403, not reached", tc.target, w.Code, reached)
			continue
		}
		anthropic := strings.HasPrefix(r.URL.Path, "/v1/messages")
		msg := assertErrorShape(t, w.Body.Bytes(), anthropic, "permission_error", "path_not_allowed")
		if !strings.Contains(msg, "allow_paths") {
			t.Errorf("%s: message %q does not name allow_paths", tc.target, msg)
		}
	}
}

// The client is checked before the path: an unknown client learns
// nothing about which paths exist.
func TestHandlerClientCheckedBeforePath(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/admin", nil)
	r, _ = withReplacer(r)
	if w := serve(t, staticHandler(t), r, neverNext(t)); w.Code != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", w.Code)
	}
}

// `default` in allow_paths is the default list, so an operator can add a
// path to it without copying it.
func TestAllowPathsDefaultWord(t *testing.T) {
	l, err := newPathAllowList([]string{"default", "/v1/credits"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/v1/chat/completions": true, "/v1/models/openai/gpt-5": true, "/v1/credits": true,
		"/v1/report": false, "/v1/generation": false,
	} {
		if got := l.allows(path); got != want {
			t.Errorf("allow_paths default /v1/credits: allows(%q) = %v, want %v", path, got, want)
		}
	}
}

// The model rule of the default list can be listed on its own (quoted in
// a Caddyfile: it has a space), and is the same rule there.
func TestAllowPathsModelRule(t *testing.T) {
	d := caddyfile.NewTestDispenser(`ai_gateway_auth {
		credential static k
		client_key sk-placeholder
		allow_paths /v1/chat/completions "/v1/models/<model id>[/endpoints]"
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	l, err := newPathAllowList(h.AllowPaths)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/v1/chat/completions": true, "/v1/models/openai/gpt-5": true, "/v1/models/openai/gpt-5/endpoints": true,
		"/v1/models": false, "/v1/models/openai/gpt-5/x": false, "/v1/models/..;/credits": false,
		"/v1/models/%3Cmodel%20id%3E%5B/endpoints%5D": false,
	} {
		if got := l.allows(path); got != want {
			t.Errorf("allow_paths %q: allows(%q) = %v, want %v", h.AllowPaths, path, got, want)
		}
	}
}

// The AllowPaths doc comment (Caddy's JSON docs are built from it) names
// the default list as the code has it, in order.
func TestAllowPathsDocComment(t *testing.T) {
	src, err := os.ReadFile("handler.go")
	if err != nil {
		t.Fatal(err)
	}
	before, _, ok := strings.Cut(string(src), "\n\tAllowPaths []string")
	if !ok {
		t.Fatal("no AllowPaths field in handler.go")
	}
	var comment []string
	lines := strings.Split(before, "\n")
	for i := len(lines) - 1; i >= 0 && strings.HasPrefix(lines[i], "\t//"); i-- {
		comment = append([]string{strings.TrimPrefix(lines[i], "\t//")}, comment...)
	}
	_, def, ok := strings.Cut(strings.Join(comment, " "), "Default:")
	if !ok {
		t.Fatalf("the AllowPaths comment says no Default: %q", comment)
	}
	def, _, _ = strings.Cut(def, "; never")
	var documented []string
	for _, m := range regexp.MustCompile(`"(/[^"]*)"|(/[A-Za-z0-9/_]+)`).FindAllStringSubmatch(def, -1) {
		documented = append(documented, m[1]+m[2])
	}
	if !slices.Equal(documented, defaultAllowPaths) {
		t.Errorf("the AllowPaths comment gives the default as %q; the code's is %q", documented, defaultAllowPaths)
	}
}

// canonicalModelPath reads the encoded slash of a model id and nothing
// else; an allowed request goes upstream in that form, and the model
// check reads the same id from both spellings.
func TestCanonicalModelPath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/models/openai%2Fgpt-5":           "/v1/models/openai/gpt-5",
		"/v1/models/openai%2fgpt-5/endpoints": "/v1/models/openai/gpt-5/endpoints",
		"/v1/models/openai/gpt-5":             "",
		"/v1/models/openai%2Fgpt-5%2Fx":       "",
		"/v1/models/a%2Fb/c":                  "",
		"/v1/models/..%2Fx":                   "",
		"/v1/models/x%2F..":                   "",
		"/v1/models/x%252Fy":                  "",
		"/v1/models/%2Fy":                     "",
		"/v1/models/x%2":                      "",
		"/v1/models/x%":                       "",
		"/v1/models%2Fx":                      "",
	} {
		got, ok := canonicalModelPath(in)
		if ok != (want != "") || ok && got != want || !ok && got != in {
			t.Errorf("canonicalModelPath(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// Through the handler: the SDK's spelling of a model lookup goes upstream
// as AI Gateway documents it, with the slash; other paths as sent.
func TestHandlerForwardsCanonicalModelPath(t *testing.T) {
	h := staticHandler(t)
	for target, want := range map[string]string{
		"/v1/models/openai%2Fgpt-5":           "/v1/models/openai/gpt-5",
		"/v1/models/openai%2fgpt-5/endpoints": "/v1/models/openai/gpt-5/endpoints",
		"/v1/models/openai/gpt-5":             "/v1/models/openai/gpt-5",
		"/v1/models?x=%2F":                    "/v1/models",
	} {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Header.Set("Authorization", "Bearer sk-placeholder")
		r, _ = withReplacer(r)
		var forwarded string
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			forwarded = r.URL.EscapedPath()
			return nil
		})
		if w := serve(t, h, r, next); w.Code != http.StatusOK || forwarded != want {
			t.Errorf("%s: status %d, forwarded as %q; want 200, %q", target, w.Code, forwarded, want)
		}
	}
}

// modelPathOracle is the model rule written as a regular expression, to
// check the hand-written matcher against.
var modelPathOracle = regexp.MustCompile(`^/v1/models/[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)?(/endpoints)?$`)

// FuzzAllowPaths: whatever request target a client sends (parsed as Go's
// server does), a path any list allows decodes to itself as the list
// read it: no dot segment, ;, backslash, %, control or non-ASCII byte
// once decoded; an encoded slash only as the one slash of a model id,
// and then the path goes upstream decoded (as the model check reads it);
// and the default list allows only its exact paths and what the model
// rule's regular expression matches.
func FuzzAllowPaths(f *testing.F) {
	for _, s := range []string{
		"/v1/models/openai/gpt-5", "/v1/models/openai/gpt-5/endpoints", "/v1/models/..;/credits",
		"/v1/models/%252e%252e/credits", "/v1/models/..%00/credits", "/v1/models/%C0%AE%C0%AE/credits",
		"/v1/chat/completions?x=1", "/v1/models/open%41i/gpt-5", "/v1/%2e%2e/x", "/v1/models/a/b/c",
		"/v1/models/./x", "/v1/models/x/..", "/v1/models/%3b", "/v1/models/a%2",
		"/v1/models/openai%2Fgpt-5", "/v1/models/openai%2fgpt-5/endpoints", "/v1/models/a%2Fb%2Fc",
		"/v1/models/..%2Fcredits", "/v1/models/openai%252Fgpt-5", "/v1/models/x%2F..",
	} {
		f.Add(s)
	}
	lists := map[string]*pathAllowList{}
	for _, patterns := range [][]string{{"default"}, {"/*"}, {"/v1/*"}} {
		l, err := newPathAllowList(patterns)
		if err != nil {
			f.Fatal(err)
		}
		lists[patterns[0]] = l
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		escaped := u.EscapedPath()
		for name, l := range lists {
			if !l.allows(escaped) {
				continue
			}
			decoded := u.Path
			forwarded, canonical := canonicalModelPath(escaped)
			if strings.Contains(strings.ToLower(escaped), "%2f") &&
				(!canonical || forwarded != decoded || strings.Count(escaped, "%") != 1 || !modelPathOracle.MatchString(forwarded)) {
				t.Fatalf("%s allows %q, forwarded as %q, which decodes to %q", name, escaped, forwarded, decoded)
			}
			if strings.ContainsAny(decoded, ";\\%") {
				t.Fatalf("%s allows %q, which decodes to %q", name, escaped, decoded)
			}
			for i := 0; i < len(decoded); i++ {
				if decoded[i] < 0x20 || decoded[i] >= 0x7f {
					t.Fatalf("%s allows %q, which decodes to %q", name, escaped, decoded)
				}
			}
			for seg := range strings.SplitSeq(decoded, "/") {
				if seg == "." || seg == ".." {
					t.Fatalf("%s allows %q, a dot segment once decoded (%q)", name, escaped, decoded)
				}
			}
			if name == "default" && !slices.Contains(defaultAllowPaths, forwarded) &&
				(!modelPathOracle.MatchString(forwarded) || strings.Contains(forwarded, "/./") || strings.Contains(forwarded, "/../") ||
					strings.HasSuffix(forwarded, "/.") || strings.HasSuffix(forwarded, "/..")) {
				t.Fatalf("the default list allows %q (forwarded as %q)", escaped, forwarded)
			}
		}
	})
}
