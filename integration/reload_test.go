package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// adminLoad replaces the running config with a Caddyfile through the admin
// API (POST /load), as `caddy reload` does.
func adminLoad(t testing.TB, p *caddyProc, caddyfile string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Admin+"/load", strings.NewReader(pinGateway(caddyfile)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("POST /load: status %d: %s", res.StatusCode, b)
	}
}

// adminGoroutines counts the goroutines in Caddy whose stack holds each
// of funcs (function names as pprof prints them, e.g.
// "credential.(*refresher).loop"), from the admin endpoint's
// /debug/pprof/goroutine?debug=1.
func adminGoroutines(t testing.TB, p *caddyProc, funcs ...string) map[string]int {
	t.Helper()
	res, err := newTestClient(t).try(http.MethodGet, p.Admin+"/debug/pprof/goroutine?debug=1", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusOK || !strings.HasPrefix(string(res.Body), "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine?debug=1: status %d: %.200s", res.Status, res.Body)
	}
	counts := map[string]int{}
	for _, f := range funcs {
		counts[f] = 0
	}
	// Each record starts with "<count> @ <pcs>" and lists its frames as
	// "#\t<pc>\t<func>+<off>\t<file>:<line>".
	n := 0
	seen := map[string]bool{} // funcs already counted in this record
	for _, line := range strings.Split(string(res.Body), "\n") {
		if c, _, ok := strings.Cut(line, " @ "); ok {
			if v, err := strconv.Atoi(c); err == nil {
				n, seen = v, map[string]bool{}
				continue
			}
		}
		if !strings.HasPrefix(line, "#\t") {
			continue
		}
		for _, f := range funcs {
			if !seen[f] && strings.Contains(line, f+"+") {
				seen[f] = true
				counts[f] += n
			}
		}
	}
	return counts
}

// The goroutines of a vercel_oidc source, by function, as the goroutine
// dump names them.
const (
	refresherLoop = "caddymodule/internal/credential.(*refresher).loop"
	fileWatchLoop = "caddymodule/internal/filewatch.(*Watcher).run"
)

// TestReloadKeepsCredentialCache: eight clients send requests without a
// pause while the config is reloaded. Reloads that keep the vercel_oidc
// source's settings (only a response header changes) fail no request and
// cause no mint: the new config uses the cached token and the running
// refresher, and no goroutine is added. A reload that changes the source
// (refresh_before) fails no request either; the new config mints its own
// token once, and the old source's refresher and file watcher stop.
func TestReloadKeepsCredentialCache(t *testing.T) {
	t.Parallel()
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	// The file has no token: it is there for the source's file watcher,
	// whose goroutine must not outlive its config either.
	tokenFile := filepath.Join(t.TempDir(), "oidc-token")
	if err := os.WriteFile(tokenFile, []byte("# no token here: the proxy mints\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := func(generation int, refreshBefore string) string {
		return fmt.Sprintf(`	header X-Config-Generation %d
	ai_gateway_auth {
		credential vercel_oidc {
			file %s
			%s
			refresh_before %s
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, generation, tokenFile, mintBlock(v.URL()), refreshBefore, gw.URL())
	}
	first := site(0, "5m")
	p := startCaddy(t, caddyOptions{Env: mintEnv(v)}, first)
	orig, err := os.ReadFile(p.Caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(orig), first) {
		t.Fatal("the site body is not in the Caddyfile as written")
	}
	reload := func(generation int, refreshBefore string) {
		t.Helper()
		adminLoad(t, p, strings.Replace(string(orig), first, site(generation, refreshBefore), 1))
	}

	// Eight clients, each sending its next request as soon as it has the
	// answer to the last. Every answer must be a 200; its generation
	// header says which config served it.
	const clients = 8
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		mu       sync.Mutex
		failures []string
		served   = map[string]int{} // generation -> 200s
		total    atomic.Int64
		// connection errors before any answer, tried again
		connRetries atomic.Int64
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc := newTestClient(t)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// While Caddy swaps its listeners, a connection may be
				// closed before any answer: the old server closes its idle
				// kept-alive connections, and with SO_REUSEPORT a
				// connection still queued on the old listening socket is
				// reset when that socket closes. Like the SDKs, the client
				// tries again on such a connection error (a few times at
				// most); any HTTP answer other than 200 is a failure.
				var (
					res response
					err error
				)
				for attempt := 0; ; attempt++ {
					res, err = tc.tryChat(p.URL, "sk-placeholder")
					if err == nil || attempt == 3 {
						break
					}
					connRetries.Add(1)
				}
				total.Add(1)
				if err == nil && res.Status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", res.Status, res.Body)
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					served[res.Header.Get("X-Config-Generation")]++
				}
				mu.Unlock()
			}
		}()
	}
	stopped := false
	stopClients := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopClients()
	servedBy := func(generation int) int {
		mu.Lock()
		defer mu.Unlock()
		return served[strconv.Itoa(generation)]
	}
	// waitServed waits until the config of generation has answered at
	// least n requests.
	waitServed := func(generation, n int) {
		t.Helper()
		eventually(t, waitTimeout, fmt.Sprintf("config %d serves requests", generation), func() string {
			if got := servedBy(generation); got < n {
				return fmt.Sprintf("%d requests answered by it", got)
			}
			return ""
		})
	}
	goroutines := func(wantLoops, wantWatchers int) string {
		c := adminGoroutines(t, p, refresherLoop, fileWatchLoop)
		if c[refresherLoop] != wantLoops || c[fileWatchLoop] != wantWatchers {
			return fmt.Sprintf("%d refresher loops and %d file watchers, want %d and %d", c[refresherLoop], c[fileWatchLoop], wantLoops, wantWatchers)
		}
		return ""
	}
	handlers := func(want int) string {
		st, _ := adminStatus(t, p)
		if len(st.Handlers) != want {
			return fmt.Sprintf("the status lists %d handlers, want %d", len(st.Handlers), want)
		}
		return ""
	}

	waitServed(0, 4*clients)
	if n := len(v.Mints()); n != 1 {
		t.Fatalf("%d mint calls before any reload, want 1", n)
	}
	eventually(t, waitTimeout, "one refresher and one file watcher run", func() string { return goroutines(1, 1) })

	// Reloads that keep the source: the same cache, the same goroutines.
	for gen := 1; gen <= 3; gen++ {
		reload(gen, "5m")
		waitServed(gen, 4*clients)
		if n := len(v.Mints()); n != 1 {
			t.Fatalf("after reload %d with the same source: %d mint calls, want still 1", gen, n)
		}
		eventually(t, waitTimeout, "the old config is unloaded", func() string { return handlers(1) })
		if s := goroutines(1, 1); s != "" {
			t.Fatalf("after reload %d with the same source: %s", gen, s)
		}
	}
	before := lastRequest(t, gw).Credential

	// A reload that changes the source: a fresh cache, minted once; the
	// old source's goroutines stop.
	reload(4, "6m")
	waitServed(4, 4*clients)
	eventually(t, waitTimeout, "the old config is unloaded", func() string { return handlers(1) })
	eventually(t, waitTimeout, "the old source's refresher and file watcher stop", func() string { return goroutines(1, 1) })
	waitServed(4, 8*clients) // and it stays that way
	if s := goroutines(1, 1); s != "" {
		t.Error(s)
	}
	stopClients()

	if n := len(v.Mints()); n != 2 {
		t.Errorf("%d mint calls in all, want 2: one before the reloads, one for the changed source", n)
	}
	if after := lastRequest(t, gw).Credential; after == before {
		t.Error("after the source changed, the gateway still gets the old cache's token")
	}
	for _, f := range failures {
		t.Errorf("a client request failed during the reloads: %s", f)
	}
	for _, r := range gw.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("the gateway refused a forwarded request: %s", r.Reject)
		}
	}
	mu.Lock()
	t.Logf("%d requests answered, by config generation: %v; %d connection errors during listener swaps, tried again", total.Load(), served, connRetries.Load())
	mu.Unlock()
}
