package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// caddyProc is a Caddy process under test.
type caddyProc struct {
	t     testing.TB
	URL   string   // the first site, http://127.0.0.1:<port>
	URLs  []string // every site, in the order given
	Admin string   // the admin endpoint, http://127.0.0.1:<port>
	// Caddyfile is the config file it runs.
	Caddyfile string
	cmd       *exec.Cmd
	logs      *syncBuffer // stdout and stderr
	exited    chan struct{}
	exitErr   error
}

type caddyOptions struct {
	// Env is the process's environment beyond HOME and the XDG dirs:
	// nothing is inherited from the test process.
	Env map[string]string
	// Debug sets the global `debug` option (logs at debug level).
	Debug bool
	// Global is extra global options.
	Global string
}

// startCaddy runs `caddy run` on a Caddyfile with one site per body, each
// on its own loopback port (`http://127.0.0.1:<port> { bind 127.0.0.1;
// <body> }`), and waits until the admin endpoint and every site accept
// connections. It is stopped when the test ends.
func startCaddy(t testing.TB, opts caddyOptions, siteBodies ...string) *caddyProc {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := tryStartCaddy(t, opts, siteBodies)
		if err == nil {
			return p
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break // only a lost race for a free port is worth another try
		}
	}
	t.Fatalf("starting caddy: %v", lastErr)
	return nil
}

func tryStartCaddy(t testing.TB, opts caddyOptions, siteBodies []string) (*caddyProc, error) {
	dir := t.TempDir()
	adminPort := freePort(t)
	var cf strings.Builder
	fmt.Fprintf(&cf, "{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tgrace_period 1s\n", adminPort)
	if opts.Debug {
		cf.WriteString("\tdebug\n")
	}
	cf.WriteString(opts.Global)
	cf.WriteString("\n}\n")
	p := &caddyProc{
		t:      t,
		Admin:  fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		logs:   &syncBuffer{},
		exited: make(chan struct{}),
	}
	for _, body := range siteBodies {
		url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		p.URLs = append(p.URLs, url)
		fmt.Fprintf(&cf, "\n%s {\n\tbind 127.0.0.1\n%s\n}\n", url, body)
	}
	if len(p.URLs) > 0 {
		p.URL = p.URLs[0]
	}
	p.Caddyfile = filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(p.Caddyfile, []byte(pinGateway(cf.String())), 0o600); err != nil {
		return nil, err
	}

	p.cmd = exec.Command(caddyBin, "run", "--config", p.Caddyfile, "--adapter", "caddyfile")
	p.cmd.Dir = dir
	p.cmd.Env = caddyEnv(dir, opts.Env)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)

	deadline := time.Now().Add(waitTimeout)
	for !p.ready() {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("caddy exited (%v) before it was ready:\n%s", p.exitErr, p.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("caddy not ready after %s:\n%s", waitTimeout, p.logs.String())
		}
	}
	return p, nil
}

// caddyEnv is a minimal environment: a private HOME and XDG dirs (Caddy
// keeps its data there), and the variables a test sets.
func caddyEnv(dir string, vars map[string]string) []string {
	env := []string{
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// ready reports whether the admin endpoint answers and every site port
// accepts connections.
func (p *caddyProc) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Admin+"/config/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	for _, u := range p.URLs {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "http://"), time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// Logs is everything Caddy wrote so far.
func (p *caddyProc) Logs() string { return p.logs.String() }

func (p *caddyProc) stop() {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	logs := p.logs.String()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		p.t.Errorf("the race detector found a data race in caddy:\n%s", logs)
	} else if i := strings.Index(logs, "panic:"); i >= 0 {
		p.t.Errorf("caddy panicked:\n%s", logs[i:])
	} else if p.t.Failed() {
		p.t.Logf("caddy logs (%s):\n%s", p.Caddyfile, tail(logs, 200))
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// runCaddyCommand runs a one-shot caddy subcommand (adapt, validate) and
// returns its combined output and whether it succeeded.
func runCaddyCommand(t testing.TB, env map[string]string, args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = dir
	cmd.Env = caddyEnv(dir, env)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running caddy %v: %v", args, err)
	}
	return string(out), err
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pinGateway gives every metered ai_gateway_auth block (usage_metrics,
// reporting or limits) that names no `gateway` a closed loopback port as
// its gateway: a metered proxy reads the model catalog from its gateway,
// and no test may call AI Gateway itself. Such a proxy has no catalog, as
// before the catalog was wired; a test that wants one names `gateway`
// (the fake gateway's URL). The line goes right after the block's opening
// line; an unmetered block is left as written.
func pinGateway(caddyfile string) string {
	const open = "ai_gateway_auth {"
	var b strings.Builder
	rest := caddyfile
	for {
		i := strings.Index(rest, open)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:i+len(open)])
		rest = rest[i+len(open):]
		block := rest
		if end := blockEnd(rest); end >= 0 {
			block = rest[:end]
		}
		if meteredBlock.MatchString(block) && !gatewayLine.MatchString(block) {
			b.WriteString("\n\t\tgateway http://127.0.0.1:1")
		}
	}
}

var (
	gatewayLine  = regexp.MustCompile(`(?m)^\s*gateway\s`)
	meteredBlock = regexp.MustCompile(`(?m)^\s*(usage_metrics|reporting|limits)\b`)
)

// blockEnd is the index of the } that closes the block whose { was just
// before s, or -1.
func blockEnd(s string) int {
	depth := 1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				return i
			}
		}
	}
	return -1
}
