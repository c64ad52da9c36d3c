// Package integration tests ai_gateway_auth end to end: a real Caddy
// binary, built once from ./cmd/caddy, runs a Caddyfile in front of a fake
// AI Gateway, with a fake Vercel API that mints and publishes keys for
// OIDC tokens. Every connection is on 127.0.0.1.
package integration

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// caddyBin is the Caddy binary under test, built by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	flag.Parse()
	// The SDKs read credentials and base URLs from the environment; the
	// tests pass everything explicitly and must not pick up a developer's.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OPENAI_") || strings.HasPrefix(name, "ANTHROPIC_") {
			os.Unsetenv(name)
		}
	}
	// Most tests spend their time waiting for short-lived tokens to expire,
	// not on the CPU: run more of them at once than -parallel's default
	// (GOMAXPROCS) unless the caller chose a value.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", strconv.Itoa(max(6, 2*runtime.GOMAXPROCS(0))))
	}

	dir, err := os.MkdirTemp("", "ai-gateway-auth-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	args := []string{"build", "-o", caddyBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/caddy")
	build := exec.Command("go", args...)
	build.Dir = ".." // the module root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "built %s (race=%v) in %s\n", caddyBin, raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback TCP port that was free a moment ago, and
// that it never returned before. Parallel tests start Caddy processes
// whose listeners set SO_REUSEPORT: two of them given the same port would
// both bind it, and the kernel would share its connections between two
// unrelated configs (seen once: a test's requests answered 404 by
// another test's upstream).
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// eventually calls cond until it returns "" or the deadline passes; then
// it fails with cond's last explanation. It never assumes how fast the
// machine is: the deadline is generous and only bounds a hang.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if last = cond(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeFileAtomic replaces path's content with a rename, as `vercel env
// pull` and most secret managers do.
func writeFileAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitTimeout is the deadline for anything that should happen "soon":
// long enough for a loaded 2-core machine running -race, and the maximum
// backoff of a failing mint (30s plus jitter).
const waitTimeout = 60 * time.Second
