package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule"
)

// TestVersion holds the module's version in one place: the Version
// constant is the version xcaddy.json builds (and `caddy list-modules
// --versions` prints), and CHANGELOG.md's newest release heading,
// `## [x.y.z] - YYYY-MM-DD`, is the same release.
func TestVersion(t *testing.T) {
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(caddymodule.Version) {
		t.Fatalf("caddymodule.Version is %q, not a release version vX.Y.Z", caddymodule.Version)
	}
	if m := readManifest(t); m.Plugin.Version != caddymodule.Version {
		t.Errorf("xcaddy.json plugin.version is %q; caddymodule.Version is %q", m.Plugin.Version, caddymodule.Version)
	}

	changelog, err := os.ReadFile(filepath.Join(repoRoot, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	release := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$`).FindSubmatch(changelog)
	if release == nil {
		t.Fatalf("CHANGELOG.md has no release heading `## [x.y.z] - YYYY-MM-DD`, only [Unreleased]: "+
			"caddymodule.Version says %s is out, so move [Unreleased]'s entries into `## [%s] - <release date>`",
			caddymodule.Version, caddymodule.Version[1:])
	}
	if got := "v" + string(release[1]); got != caddymodule.Version {
		t.Errorf("CHANGELOG.md's newest release is %s (%s); caddymodule.Version is %s: "+
			"a release changes both, and xcaddy.json", release[1], release[2], caddymodule.Version)
	}
}
