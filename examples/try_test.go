package examples

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tryEnv is the environment ./try.sh runs with in these tests: free ports,
// and the race detector when the tests have it.
func tryEnv(t *testing.T, ports [3]int) []string {
	env := append(os.Environ(),
		"TRY_PORT="+strconv.Itoa(ports[0]),
		"TRY_ADMIN_PORT="+strconv.Itoa(ports[1]),
		"TRY_UPSTREAM_PORT="+strconv.Itoa(ports[2]),
	)
	if raceEnabled {
		env = append(env, "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -race"))
	}
	return env
}

func freePorts(t *testing.T) (ports [3]int) {
	t.Helper()
	seen := map[int]bool{}
	for i := range ports {
		for ports[i] == 0 || seen[ports[i]] {
			_, p, _ := net.SplitHostPort(freeAddr(t))
			ports[i], _ = strconv.Atoi(p)
		}
		seen[ports[i]] = true
	}
	return ports
}

// TestTryScript runs ./try.sh, the README's offline first run, as a
// newcomer would but in the mode that stops after the first answer
// (TRY_ONCE=1): it builds the proxy and the fake AI Gateway, starts them,
// and makes one call as the OpenAI SDK does. A change that breaks that
// first answer fails here.
func TestTryScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy; skipped with -short")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../try.sh")
	cmd.Env = append(tryEnv(t, freePorts(t)), "TRY_ONCE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TRY_ONCE=1 ./try.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		`"object":"chat.completion"`,
		`"content":"Here is a short answer`,
		"TRY_ONCE=1: stopping",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("./try.sh's output lacks %q:\n%s", want, out)
		}
	}
}

// TestTryScriptNamesTakenPort: a port in use stops ./try.sh before it
// builds anything, with the port and what it is for.
func TestTryScriptNamesTakenPort(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ports := freePorts(t)
	ports[2] = l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "../try.sh")
	cmd.Env = append(tryEnv(t, ports), "TRY_ONCE=1")
	out, err := cmd.CombinedOutput()
	want := "port " + strconv.Itoa(ports[2]) + " on 127.0.0.1 is taken; it is for the fake AI Gateway"
	if err == nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "building") {
		t.Errorf("./try.sh with TRY_UPSTREAM_PORT taken: %v\n%s\nwant a failure before building, saying %q", err, out, want)
	}
}
