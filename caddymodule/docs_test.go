package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/prometheus/client_golang/prometheus"
)

// The reference under docs/ is held to the code: the parser's option
// tables (caddyfileBlocks), the metrics registry (allCollectors), the
// placeholders and log messages the module's source sets, and every
// Caddyfile snippet in the README and the docs, which must adapt.

const repoRoot = ".."

// docTable is one Markdown table after a `<!-- <marker> -->` line: its
// rows, each a list of cells, without the header and separator.
func docTables(t *testing.T, file, marker string) map[string][][]string {
	t.Helper()
	text := readDoc(t, file)
	tables := map[string][][]string{}
	re := regexp.MustCompile(`(?m)^<!-- ` + marker + `(?::\s*(\S+))? -->\n`)
	for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
		name := ""
		if m[2] >= 0 {
			name = text[m[2]:m[3]]
		}
		if _, dup := tables[name]; dup {
			t.Fatalf("%s: two tables marked %q %q", file, marker, name)
		}
		var rows [][]string
		for i, line := range strings.Split(text[m[1]:], "\n") {
			if !strings.HasPrefix(line, "|") {
				break
			}
			if i < 2 { // header and separator
				continue
			}
			rows = append(rows, tableCells(line))
		}
		if len(rows) == 0 {
			t.Fatalf("%s: the table marked %q %q has no rows", file, marker, name)
		}
		tables[name] = rows
	}
	return tables
}

// tableCells splits a Markdown table row; `\|` is a pipe inside a cell.
func tableCells(line string) []string {
	line = strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00")
	var cells []string
	for c := range strings.SplitSeq(line, "|") {
		cells = append(cells, strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|")))
	}
	return cells
}

// codeName is the first word inside a cell's first backticks.
func codeName(cell string) string {
	m := regexp.MustCompile("`([^` ]+)").FindStringSubmatch(cell)
	if m == nil {
		return ""
	}
	return m[1]
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocsCaddyfileReference: docs/caddyfile.md has one table per block
// of the parser, listing exactly the options the parser accepts, in the
// parser's order.
func TestDocsCaddyfileReference(t *testing.T) {
	tables := docTables(t, "docs/caddyfile.md", "options")
	for block, names := range caddyfileBlocks {
		rows, ok := tables[block]
		if !ok {
			t.Errorf("docs/caddyfile.md has no table for the %s block (a line `<!-- options: %s -->` before it)", block, block)
			continue
		}
		var documented []string
		for _, r := range rows {
			documented = append(documented, codeName(r[0]))
		}
		for _, n := range names {
			if !slices.Contains(documented, n) {
				t.Errorf("the parser accepts `%s` in %s, but docs/caddyfile.md does not document it", n, block)
			}
		}
		for _, n := range documented {
			if !slices.Contains(names, n) {
				t.Errorf("docs/caddyfile.md documents `%s` in %s, but the parser rejects it", n, block)
			}
		}
		if len(documented) == len(names) && !slices.Equal(documented, names) {
			t.Errorf("docs/caddyfile.md lists the %s options as %v; the parser's order is %v", block, documented, names)
		}
	}
	for block := range tables {
		if _, ok := caddyfileBlocks[block]; !ok {
			t.Errorf("docs/caddyfile.md has a table for %s, which the parser does not know", block)
		}
	}
}

// placeholderContext wraps one option line of a block in a Caddyfile
// that is otherwise valid, so that whether the line adapts depends on the
// line alone.
var placeholderContext = map[string]string{
	"ai_gateway_auth":   "%s",
	"client_keys_file":  "client_keys_file /doc/keys {\n%s\n}",
	"client_key_secret": "client_key_secret {env.DOC_SECRET} {\n%s\n}",
	"credential":        "credential %s",
	"vercel_oidc":       "credential vercel_oidc {\n%s\n}",
	"mint":              "credential vercel_oidc {\nmint {\nproject prj_doc\naccess_token {env.DOC_TOKEN}\n%s\n}\n}",
	"push":              "credential vercel_oidc {\npush /doc-push {\n%s\n}\n}",
	"vercel_sandbox":    "vercel_sandbox {\naudience https://doc.example\nteam team_doc\n%s\n}",
	"reporting":         "reporting {\n%s\n}",
	"limits":            "limits {\nrequests_per_minute 1\n%s\n}",
	"redis":             "limits {\nrequests_per_minute 1\nredis {env.DOC_REDIS} {\n%s\n}\n}",
	"policy":            "policy doc {\nclients placeholder\n%s\n}",
}

func adaptHandlerBody(body string) error {
	cf := "http://127.0.0.1:4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.DOC_KEY}\n\t\tclient_key sk-doc\n" +
		body + "\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n"
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "doc"})
	return err
}

// TestDocsPlaceholderColumn: an option documented as taking placeholders
// adapts with one, and one documented as not taking them refuses it
// when the Caddyfile is parsed (a placeholder that would be used as it
// is, never resolved, must not pass silently).
func TestDocsPlaceholderColumn(t *testing.T) {
	checked := 0
	for block, rows := range docTables(t, "docs/caddyfile.md", "options") {
		wrap, ok := placeholderContext[block]
		if !ok {
			t.Errorf("no context to check the %s block's placeholders in: add it to placeholderContext", block)
			continue
		}
		for _, r := range rows {
			if len(r) < 4 {
				t.Errorf("%s: row %v has no Placeholders column", block, r)
				continue
			}
			name, column := codeName(r[0]), r[2]
			line := name + " {env.DOC_VALUE}"
			err := adaptHandlerBody(fmt.Sprintf(wrap, line))
			switch column {
			case "at load", "per request":
				if err != nil {
					t.Errorf("%s %s: documented as taking placeholders (%s), but `%s` does not adapt: %v", block, name, column, line, err)
				}
			case "no":
				if err == nil {
					t.Errorf("%s %s: documented as taking no placeholders, but `%s` adapts (a placeholder there would never be resolved)", block, name, line)
				}
			case "—":
				continue // a block or a flag
			default:
				t.Errorf("%s %s: Placeholders is %q; want at load, per request, no or —", block, name, column)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d options; the tables were not read", checked)
	}
}

// TestDocsModulePlaceholders: the placeholders the module's code sets are
// the ones docs/caddyfile.md lists.
func TestDocsModulePlaceholders(t *testing.T) {
	set := map[string]bool{}
	re := regexp.MustCompile(`repl\.Set\("(ai_gateway_auth\.[a-z_.]+)"`)
	for _, src := range sourceFiles(t) {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			set["{"+m[1]+"}"] = true
		}
	}
	if len(set) < 3 {
		t.Fatalf("found %d placeholders in the source; the pattern is stale", len(set))
	}
	var documented []string
	for _, r := range docTables(t, "docs/caddyfile.md", "placeholders")[""] {
		documented = append(documented, codeName(r[0]))
	}
	for p := range set {
		if !slices.Contains(documented, p) {
			t.Errorf("the module sets %s, but docs/caddyfile.md does not list it", p)
		}
	}
	for _, p := range documented {
		if !set[p] {
			t.Errorf("docs/caddyfile.md lists %s, which the module never sets", p)
		}
	}
}

// sourceFiles is the text of the module's non-test Go files: the glue's
// and those of every engine under internal/ that the module imports,
// directly or through another engine (an engine logs through the logger
// the module gives it, so its messages are the module's; one not wired
// in yet logs nothing of the module's).
func sourceFiles(t *testing.T) []string {
	t.Helper()
	const modulePath = "github.com/ai-gateway-auth/ai_gateway_auth/caddymodule"
	var out []string
	seen := map[string]bool{}
	var read func(dir string)
	read = func(dir string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
			parsed, err := parser.ParseFile(token.NewFileSet(), f, b, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if rel, ok := strings.CutPrefix(path, modulePath+"/"); ok {
					read(filepath.FromSlash(rel))
				}
			}
		}
	}
	read(".")
	if len(seen) < 5 {
		t.Fatalf("read %d packages; the module's imports of its engines were not followed", len(seen))
	}
	return out
}

// registeredMetrics is every metric the module registers: name -> type
// and variable labels, from the collectors themselves.
func registeredMetrics(t *testing.T) map[string]docMetric {
	t.Helper()
	out := map[string]docMetric{}
	nameRe := regexp.MustCompile(`fqName: "([^"]+)"`)
	labelsRe := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	for _, c := range allCollectors() {
		var kind string
		switch c.(type) {
		// a Gauge has every method of a Counter: it is asked first
		case *prometheus.GaugeVec, prometheus.Gauge, credential.ExpiryCollector:
			kind = "gauge"
		case *prometheus.CounterVec, prometheus.Counter:
			kind = "counter"
		case *prometheus.HistogramVec:
			kind = "histogram"
		default:
			// the engines' gauges, read at scrape time
			if typ := fmt.Sprintf("%T", c); typ != "limits.liveCollector" && typ != "gateway.liveCollector" {
				t.Fatalf("collector %T: teach registeredMetrics its type", c)
			}
			kind = "gauge"
		}
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			s := d.String()
			name, labels := nameRe.FindStringSubmatch(s), labelsRe.FindStringSubmatch(s)
			if name == nil || labels == nil {
				t.Fatalf("cannot read %s", s)
			}
			var ls []string
			if labels[1] != "" {
				ls = strings.Split(labels[1], ",")
			}
			out[name[1]] = docMetric{kind: kind, labels: ls}
		}
	}
	return out
}

type docMetric struct {
	kind   string
	labels []string
}

// TestDocsMetrics: docs/metrics.md lists every metric the module
// registers, with its type and labels, and nothing else; and no metric
// uses a label that a Prometheus scrape owns (it would be renamed
// exported_instance or exported_job).
func TestDocsMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	documented := map[string]docMetric{}
	for _, r := range docTables(t, "docs/metrics.md", "metrics")[""] {
		if len(r) < 4 {
			t.Fatalf("docs/metrics.md: row %v: want Metric | Type | Labels | Meaning", r)
		}
		var labels []string
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(r[2], -1) {
			labels = append(labels, m[1])
		}
		documented[codeName(r[0])] = docMetric{kind: r[1], labels: labels}
	}
	for name, m := range registered {
		for _, l := range m.labels {
			if l == "instance" || l == "job" {
				t.Errorf("%s has the label %q, which a Prometheus scrape renames to exported_%s", name, l, l)
			}
		}
		d, ok := documented[name]
		if !ok {
			t.Errorf("%s is registered but docs/metrics.md does not list it", name)
			continue
		}
		if d.kind != m.kind {
			t.Errorf("%s: docs/metrics.md says %s, it is a %s", name, d.kind, m.kind)
		}
		if !slices.Equal(d.labels, m.labels) {
			t.Errorf("%s: docs/metrics.md gives the labels %v, the metric has %v", name, d.labels, m.labels)
		}
	}
	for name := range documented {
		if _, ok := registered[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the module does not register", name)
		}
	}
}

// TestDocsLogMessages: every message the module logs at info level or
// above (its engines' too) is in docs/logs.md.
func TestDocsLogMessages(t *testing.T) {
	// a refusal's log line is its event (refuse.go); every refusal logs
	// at info level or above
	re := regexp.MustCompile(`(?:\.(?:Info|Warn|Error)\(|Check\(zapcore\.(?:Info|Warn|Error)Level, |\bevent:\s+)"([^"]+)"`)
	logs := readDoc(t, "docs/logs.md")
	n := 0
	for _, src := range sourceFiles(t) {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			n++
			if !strings.Contains(logs, "`"+m[1]+"`") {
				t.Errorf("the module logs %q, but docs/logs.md does not list it", m[1])
			}
		}
	}
	if n < 20 {
		t.Fatalf("found %d log messages in the source; the pattern is stale", n)
	}
}

// A Caddyfile snippet in the docs is a ```caddyfile block. Its info
// string says what it is, and the test wraps it into a whole Caddyfile:
//
//	```caddyfile                  a whole Caddyfile
//	```caddyfile site             the body of a site block
//	```caddyfile ai_gateway_auth  lines of the ai_gateway_auth block
//	```caddyfile vercel_oidc      lines of a credential vercel_oidc block
//	```caddyfile global           lines of the global options block
var snippetWrappers = map[string]string{
	"":                "%s",
	"site":            "http://127.0.0.1:4000 {\n%s\n}\n",
	"ai_gateway_auth": "http://127.0.0.1:4000 {\n\tai_gateway_auth {\n%s\n\t\tcredential static {env.DOC_KEY}\n\t\tclient_key sk-doc\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
	"vercel_oidc":     "http://127.0.0.1:4000 {\n\tai_gateway_auth {\n\t\tcredential vercel_oidc {\n%s\n\t\t}\n\t\tclient_key sk-doc\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n",
	"global":          "{\n%s\n}\nhttp://127.0.0.1:4000 {\n\trespond ok\n}\n",
}

// TestDocsSnippetsAdapt: every Caddyfile snippet in README.md and docs/
// adapts (wrapped as its info string says).
func TestDocsSnippetsAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repoRoot, "README.md"))
	n := 0
	for _, file := range files {
		rel, _ := filepath.Rel(repoRoot, file)
		for _, s := range caddyfileSnippets(t, file) {
			n++
			wrap, ok := snippetWrappers[s.kind]
			if !ok {
				t.Errorf("%s:%d: unknown snippet kind %q (want one of: whole, site, ai_gateway_auth, vercel_oidc, global)", rel, s.line, s.kind)
				continue
			}
			cf := fmt.Sprintf(wrap, s.text)
			_, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": rel})
			if err != nil {
				t.Errorf("%s:%d: the snippet does not adapt: %v\n%s", rel, s.line, err, cf)
			}
			for _, w := range warnings {
				if !strings.Contains(w.Message, "Caddyfile input is not formatted") {
					t.Errorf("%s:%d: adapt warning: %s", rel, s.line, w.String())
				}
			}
		}
	}
	if n < 5 {
		t.Fatalf("found %d Caddyfile snippets; the docs lost them or the pattern is stale", n)
	}
}

type snippet struct {
	kind, text string
	line       int
}

func caddyfileSnippets(t *testing.T, file string) []snippet {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []snippet
	var cur *snippet
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```caddyfile"):
			cur = &snippet{kind: strings.TrimSpace(strings.TrimPrefix(trimmed, "```caddyfile")), line: n}
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocsStatusFields: docs/status.md explains every field the status
// route can write (the JSON names of its structs, walked by reflection),
// and no field it never writes.
func TestDocsStatusFields(t *testing.T) {
	fields := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[time.Time]() {
			return
		}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = true
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[statusReport]())
	documented := map[string]bool{}
	for _, r := range docTables(t, "docs/status.md", "status")[""] {
		documented[codeName(r[0])] = true
	}
	for f := range fields {
		if !documented[f] {
			t.Errorf("the status route writes %q, but docs/status.md does not explain it", f)
		}
	}
	for f := range documented {
		if !fields[f] {
			t.Errorf("docs/status.md explains %q, which the status route never writes", f)
		}
	}
}

// TestDocsLinks: every relative link in the README, the docs, the
// changelog, the benchmarks' and the examples' READMEs points at a file
// that exists, and at a heading that exists in it.
func TestDocsLinks(t *testing.T) {
	var files []string
	for _, pattern := range []string{"*.md", "docs/*.md", "bench/*.md", "examples/*.md", "examples/*/*.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	n := 0
	for _, file := range files {
		text := stripCodeBlocks(readDoc(t, mustRel(t, file)))
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			n++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %s: %v", mustRel(t, file), target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") && !slices.Contains(headingAnchors(t, dest), anchor) {
				t.Errorf("%s: link %s: %s has no heading #%s", mustRel(t, file), target, mustRel(t, dest), anchor)
			}
		}
	}
	if n < 50 {
		t.Fatalf("checked %d links; the pattern is stale", n)
	}
}

func mustRel(t *testing.T, file string) string {
	t.Helper()
	rel, err := filepath.Rel(repoRoot, file)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// stripCodeBlocks blanks fenced code blocks, whose brackets are not links.
func stripCodeBlocks(text string) string {
	var b strings.Builder
	in := false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// headingAnchors are the anchors GitHub gives a Markdown file's headings.
func headingAnchors(t *testing.T, file string) []string {
	t.Helper()
	var out []string
	seen := map[string]int{}
	for line := range strings.SplitSeq(stripCodeBlocks(readDoc(t, mustRel(t, file))), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var slug strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				slug.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
				slug.WriteRune(r)
			}
		}
		s := slug.String()
		if k := seen[s]; k > 0 {
			out = append(out, fmt.Sprintf("%s-%d", s, k))
		} else {
			out = append(out, s)
		}
		seen[s]++
	}
	return out
}

// TestReadmeCaddyfileIsTheRootOne: the README's minimal Caddyfile is the
// root Caddyfile that `go run ./cmd/caddy run --config Caddyfile` runs,
// comments aside, so what a newcomer reads is what runs.
func TestReadmeCaddyfileIsTheRootOne(t *testing.T) {
	snippets := caddyfileSnippets(t, filepath.Join(repoRoot, "README.md"))
	if len(snippets) == 0 || snippets[0].kind != "" {
		t.Fatal("the README's first Caddyfile snippet should be the minimal (whole) Caddyfile")
	}
	code := func(s string) string {
		var lines []string
		for line := range strings.SplitSeq(s, "\n") {
			if line, _, _ = strings.Cut(line, "#"); strings.TrimSpace(line) != "" {
				lines = append(lines, strings.TrimRight(line, " \t"))
			}
		}
		return strings.Join(lines, "\n")
	}
	if got, want := code(snippets[0].text), code(readDoc(t, "Caddyfile")); got != want {
		t.Errorf("the README's minimal Caddyfile is not the root Caddyfile:\n%s\n--- root:\n%s", got, want)
	}
}

// TestDocsDefaultAllowPaths: docs/security.md lists exactly the default
// allow_paths.
func TestDocsDefaultAllowPaths(t *testing.T) {
	var documented []string
	for _, r := range docTables(t, "docs/security.md", "default allow_paths")[""] {
		for _, m := range regexp.MustCompile("`(/[^`]*)`").FindAllStringSubmatch(r[0], -1) {
			documented = append(documented, m[1])
		}
	}
	if !slices.Equal(documented, defaultAllowPaths) {
		t.Errorf("docs/security.md lists the default allow_paths as %v; the code's are %v", documented, defaultAllowPaths)
	}
}

// TestDocsStatusExample: the status route's example in docs/status.md is
// JSON the route could write: it decodes into the route's own types with
// no unknown field.
func TestDocsStatusExample(t *testing.T) {
	text := readDoc(t, "docs/status.md")
	_, rest, ok := strings.Cut(text, "```json\n")
	if !ok {
		t.Fatal("docs/status.md has no ```json example")
	}
	example, _, _ := strings.Cut(rest, "```")
	dec := json.NewDecoder(strings.NewReader(example))
	dec.DisallowUnknownFields()
	var report statusReport
	if err := dec.Decode(&report); err != nil {
		t.Errorf("the example in docs/status.md is not what the route writes: %v", err)
	}
	if len(report.Handlers) == 0 || len(report.Handlers[0].Sources) == 0 {
		t.Error("the example shows no handler or source")
	}
}
