package caddymodule

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The layout (docs/architecture.md): the module package is the glue, the
// engines under internal/ know nothing of Caddy's HTTP packages and never
// reach back into the module. Every package under internal/ is checked,
// found with `go list`, so a new engine is covered as soon as it exists.

const modulePackage = "github.com/ai-gateway-auth/ai_gateway_auth/caddymodule"

// goList runs `go list args...` in the module's directory and returns its
// lines; the test is skipped without the go tool.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command(goBin, append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.Fields(string(out))
}

// enginePackages are the packages under caddymodule/internal.
func enginePackages(t *testing.T) []string {
	t.Helper()
	pkgs := goList(t, "./internal/...")
	if len(pkgs) < 5 {
		t.Fatalf("go list ./internal/... gave %q: too few to be right", pkgs)
	}
	return pkgs
}

// TestEnginesNeverImportCaddyHTTP: no engine depends on caddyhttp or on
// anything under Caddy's modules/, nor on the module package itself.
func TestEnginesNeverImportCaddyHTTP(t *testing.T) {
	for _, pkg := range enginePackages(t) {
		deps := goList(t, "-deps", pkg)
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s gave too little to be right: %q", pkg, deps)
		}
		for _, d := range deps {
			switch {
			case d == "github.com/caddyserver/caddy/v2/modules/caddyhttp",
				strings.HasPrefix(d, "github.com/caddyserver/caddy/v2/modules/"):
				t.Errorf("%s depends on %s: an engine never imports Caddy's HTTP packages", pkg, d)
			case d == modulePackage:
				t.Errorf("%s depends on the module package: the arrows point from the glue to the engines", pkg)
			}
		}
	}
}

// TestDocsArchitecturePackages: docs/architecture.md describes exactly the
// packages `go list ./caddymodule/...` lists: every engine documented,
// nothing documented that does not exist. A package is documented as a
// heading naming its path in backticks, under "## Packages".
func TestDocsArchitecturePackages(t *testing.T) {
	text := readDoc(t, "docs/architecture.md")
	_, section, ok := strings.Cut(text, "\n## Packages\n")
	if !ok {
		t.Fatal("docs/architecture.md has no \"## Packages\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^### `(caddymodule[a-z/]*)`").FindAllStringSubmatch(section, -1) {
		documented = append(documented, m[1])
	}
	var listed []string
	for _, pkg := range goList(t, "./...") {
		rel, ok := strings.CutPrefix(pkg, strings.TrimSuffix(modulePackage, "caddymodule"))
		if !ok {
			t.Fatalf("go list names %s, outside the module", pkg)
		}
		listed = append(listed, rel)
	}
	for _, p := range listed {
		if !slices.Contains(documented, p) {
			t.Errorf("docs/architecture.md does not describe %s (a \"### `%s`\" heading under Packages)", p, p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(listed, p) {
			t.Errorf("docs/architecture.md describes %s, which go list does not know", p)
		}
	}
	if len(listed) < 6 {
		t.Fatalf("go list ./... in caddymodule gave %v: too few to be right", listed)
	}
}
