package credential

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/filewatch"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMain(m *testing.M) {
	// Watched files are polled; poll fast so that file tests do not wait
	// a second per change. Set once, before any watcher starts.
	filewatch.Interval = 10 * time.Millisecond
	os.Exit(m.Run())
}

// jwtExp is exp as a JWT carries it: whole seconds.
func jwtExp(exp time.Time) time.Time { return time.Unix(exp.Unix(), 0) }

// eventually polls cond until it holds, failing the test after a
// generous deadline (it never assumes a fast machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertNotContains fails if s holds any of the secrets.
func assertNotContains(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains a secret (%.12s…): %s", what, sec, s)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
