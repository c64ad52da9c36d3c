package main

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// repoRoot is the repository root, seen from this package's directory
// (where `go test` runs the test).
const repoRoot = "../.."

// manifest is xcaddy.json: how to build Caddy with this module using
// xcaddy. xcaddy itself reads no file, so these tests keep the manifest in
// step with go.mod, cmd/caddy and the README.
type manifest struct {
	XcaddyVersion string `json:"xcaddy_version"`
	CaddyModule   string `json:"caddy_module"`
	CaddyVersion  string `json:"caddy_version"`
	Plugin        struct {
		Module   string `json:"module"`
		Package  string `json:"package"`
		Version  string `json:"version"`
		LocalDir string `json:"local_dir"`
	} `json:"plugin"`
	Env struct {
		GONOPROXY string `json:"GONOPROXY"`
		GOVCS     string `json:"GOVCS"`
	} `json:"env"`
	Command string `json:"command"`
}

func readManifest(t *testing.T) manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("xcaddy.json: %v", err)
	}
	return m
}

// goMod is what `go mod edit -json` says about go.mod.
type goMod struct {
	Module struct {
		Path string
	}
	Require []struct {
		Path    string
		Version string
	}
}

func readGoMod(t *testing.T) goMod {
	t.Helper()
	cmd := exec.Command("go", "mod", "edit", "-json", "go.mod")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var gm goMod
	if err := json.Unmarshal(out, &gm); err != nil {
		t.Fatal(err)
	}
	return gm
}

func TestManifestMatchesGoMod(t *testing.T) {
	m, gm := readManifest(t), readGoMod(t)

	if m.Plugin.Module != gm.Module.Path {
		t.Errorf("xcaddy.json plugin.module is %q; go.mod's module is %q", m.Plugin.Module, gm.Module.Path)
	}
	var caddyVersion string
	for _, r := range gm.Require {
		if r.Path == m.CaddyModule {
			caddyVersion = r.Version
		}
	}
	if caddyVersion == "" {
		t.Fatalf("go.mod does not require %s (xcaddy.json caddy_module)", m.CaddyModule)
	}
	if m.CaddyVersion != caddyVersion {
		t.Errorf("xcaddy.json caddy_version is %s; go.mod requires %s %s", m.CaddyVersion, m.CaddyModule, caddyVersion)
	}
	if m.Plugin.LocalDir != "." {
		t.Errorf("xcaddy.json plugin.local_dir is %q; the command runs from the repository root, so it must be \".\"", m.Plugin.LocalDir)
	}
}

func TestManifestPluginPackage(t *testing.T) {
	m := readManifest(t)

	rel, ok := strings.CutPrefix(m.Plugin.Package, m.Plugin.Module+"/")
	if !ok {
		t.Fatalf("plugin.package %q is not inside plugin.module %q", m.Plugin.Package, m.Plugin.Module)
	}
	if gofiles, _ := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(rel), "*.go")); len(gofiles) == 0 {
		t.Errorf("plugin.package %s: no Go files in %s/", m.Plugin.Package, rel)
	}

	// cmd/caddy, which `go build ./cmd/caddy` builds, plugs in the same package.
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imported bool
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == m.Plugin.Package {
			imported = true
		}
	}
	if !imported {
		t.Errorf("cmd/caddy/main.go does not import %s (xcaddy.json plugin.package)", m.Plugin.Package)
	}

	// And that package registers the module.
	for _, id := range []string{
		"http.handlers.ai_gateway_auth",
		"http.handlers.ai_gateway_auth.credentials.static",
		"http.handlers.ai_gateway_auth.credentials.vercel_oidc",
	} {
		if _, err := caddy.GetModule(id); err != nil {
			t.Errorf("module %s is not registered: %v", id, err)
		}
	}
}

// expectedCommand is the xcaddy command line the manifest's fields describe.
func expectedCommand(m manifest) string {
	return "GONOPROXY=" + m.Env.GONOPROXY + " GOVCS=" + m.Env.GOVCS +
		" xcaddy build " + m.CaddyVersion +
		" --with " + m.Plugin.Package + "@" + m.Plugin.Version +
		" --replace " + m.Plugin.Module + "@" + m.Plugin.Version + "=" + m.Plugin.LocalDir
}

func TestManifestCommand(t *testing.T) {
	m := readManifest(t)
	if want := expectedCommand(m); m.Command != want {
		t.Errorf("xcaddy.json command does not match its fields:\n got: %s\nwant: %s", m.Command, want)
	}
	if m.Env.GONOPROXY != m.Plugin.Module || m.Env.GOVCS != m.Plugin.Module+":off" {
		t.Errorf("env must keep Go from looking up %s anywhere: GONOPROXY=%s GOVCS=%s", m.Plugin.Module, m.Env.GONOPROXY, m.Env.GOVCS)
	}
}

func TestReadmeHasManifestCommand(t *testing.T) {
	m := readManifest(t)
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if !strings.Contains(readme, m.Command) {
		t.Errorf("README.md does not contain the xcaddy command from xcaddy.json:\n%s", m.Command)
	}
	install := "go install github.com/caddyserver/xcaddy/cmd/xcaddy@" + m.XcaddyVersion
	if !strings.Contains(readme, install) {
		t.Errorf("README.md does not contain %q", install)
	}
}

// TestXcaddyBuild runs the manifest's command for real. It takes minutes
// and needs xcaddy and the Go module proxy, so it runs only when asked:
//
//	XCADDY_BUILD_TEST=1 go test ./cmd/caddy -run TestXcaddyBuild -timeout 30m -v
func TestXcaddyBuild(t *testing.T) {
	if os.Getenv("XCADDY_BUILD_TEST") != "1" {
		t.Skip("set XCADDY_BUILD_TEST=1 to build with xcaddy")
	}
	if _, err := exec.LookPath("xcaddy"); err != nil {
		t.Skip("xcaddy is not on PATH: go install github.com/caddyserver/xcaddy/cmd/xcaddy@" + readManifest(t).XcaddyVersion)
	}
	m := readManifest(t)
	bin := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.Command("bash", "-c", m.Command+" --output "+strconv.Quote(bin))
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", m.Command, err, out)
	}
	out, err := exec.Command(bin, "list-modules", "--versions", "--skip-standard").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	t.Logf("caddy list-modules --versions --skip-standard:\n%s", out)
	if want := "http.handlers.ai_gateway_auth " + m.Plugin.Version + "\n"; !strings.Contains(string(out), want) {
		t.Errorf("the xcaddy-built Caddy's `list-modules --versions` lacks %q:\n%s", want, out)
	}
	out, err = exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), m.CaddyVersion+" ") {
		t.Errorf("caddy version: %v: %s; want %s", err, out, m.CaddyVersion)
	}
}

// TestCIRunsReadmeTestCommand checks that .ci/run runs the test command
// the README gives a newcomer, word for word.
func TestCIRunsReadmeTestCommand(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const marker = "**2. Run the whole test suite**"
	_, rest, ok := strings.Cut(string(readme), marker)
	if !ok {
		t.Fatalf("README.md has no %q step", marker)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md has no ```sh block after %q", marker)
	}
	block, _, _ := strings.Cut(rest, "```")
	command := strings.TrimSpace(block)
	if command == "" || strings.Contains(command, "\n") {
		t.Fatalf("the README's test step should be one command, got %q", block)
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(ci), "\n"), command) {
		t.Errorf(".ci/run does not run the README's test command %q on a line of its own", command)
	}
}
