package examples

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// modelID finds AI Gateway model ids (creator/model). An OpenClaw model
// reference puts its provider in front (openai/anthropic/...); the id is
// what follows.
var modelID = regexp.MustCompile(`(?:openai/)?((?:anthropic|openai|google|xai|meta|mistral|deepseek|alibaba|moonshotai|zai)/[a-z0-9][a-z0-9.\-]*)`)

// TestModelIDs: every model id in the examples and in the main README is
// one of models.txt, the one place where model ids are chosen.
func TestModelIDs(t *testing.T) {
	var allowed []string
	for line := range strings.SplitSeq(string(readFile(t, "models.txt")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			allowed = append(allowed, line)
		}
	}
	if len(allowed) == 0 {
		t.Fatal("models.txt lists no model")
	}
	files := append(exampleFiles(t), "../README.md")
	used := map[string]bool{}
	for _, f := range files {
		if f == "models.txt" {
			continue
		}
		text := string(readFile(t, f))
		for _, m := range modelID.FindAllStringSubmatchIndex(text, -1) {
			if start := m[0]; start > 0 && strings.ContainsRune("/.-_:@", rune(text[start-1])) ||
				start > 0 && (text[start-1] >= 'a' && text[start-1] <= 'z') {
				continue // part of a URL or a longer name (github.com/openai/openai-go)
			}
			id := text[m[2]:m[3]]
			if strings.HasPrefix(id, "openai/openai-go") || strings.HasPrefix(id, "anthropic/anthropic-sdk") {
				continue
			}
			if !slices.Contains(allowed, id) {
				t.Errorf("%s names model %q, which is not in models.txt (%v)", f, id, allowed)
			}
			used[id] = true
		}
	}
	for _, f := range []string{"pi/models.json", "openclaw/openclaw.json", "claude-code/env.sh"} {
		if !modelID.Match(readFile(t, f)) {
			t.Errorf("%s names no model id", f)
		}
	}
	for _, id := range allowed {
		if !used[id] {
			t.Errorf("models.txt lists %s, which no example uses", id)
		}
	}
}
