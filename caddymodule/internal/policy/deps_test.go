package policy

import (
	"os/exec"
	"strings"
	"testing"
)

// The engine never depends on Caddy: the module wires it in.
func TestNoCaddyDependency(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps gave too little to be right: %q", deps)
	}
	for _, p := range deps {
		if strings.HasPrefix(p, "github.com/caddyserver/") {
			t.Errorf("depends on %s", p)
		}
	}
}
