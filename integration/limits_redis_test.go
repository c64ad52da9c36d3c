package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProc is a real redis-server on a loopback port, without
// persistence, requiring a password.
type redisProc struct {
	t        *testing.T
	bin      string
	port     int
	password string
	dir      string
	mu       sync.Mutex
	cmd      *exec.Cmd
}

// startRedis runs redis-server, or skips the test when it is not on
// PATH.
func startRedis(t *testing.T, password string) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH (apt-get install redis-server): the fleet test with a shared Redis is skipped")
	}
	rp := &redisProc{t: t, bin: bin, port: freePort(t), password: password, dir: t.TempDir()}
	rp.start()
	t.Cleanup(rp.kill)
	return rp
}

func (rp *redisProc) URL() string {
	return fmt.Sprintf("redis://:%s@127.0.0.1:%d/0", rp.password, rp.port)
}

// start runs the server on its port and waits until it answers.
func (rp *redisProc) start() {
	rp.t.Helper()
	cmd := exec.Command(rp.bin, "--port", strconv.Itoa(rp.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--requirepass", rp.password, "--dir", rp.dir)
	if err := cmd.Start(); err != nil {
		rp.t.Fatal(err)
	}
	rp.mu.Lock()
	rp.cmd = cmd
	rp.mu.Unlock()
	opts, _ := redis.ParseURL(rp.URL())
	c := redis.NewClient(opts)
	defer c.Close()
	eventually(rp.t, waitTimeout, "redis-server answers", func() string {
		if err := c.Ping(context.Background()).Err(); err != nil {
			return err.Error()
		}
		return ""
	})
}

// signal sends sig to the server (SIGSTOP freezes it: connections are
// accepted by the kernel, nothing is answered).
func (rp *redisProc) signal(sig syscall.Signal) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.cmd != nil {
		_ = rp.cmd.Process.Signal(sig)
	}
}

// kill ends the server at once (SIGKILL): its counts are gone.
func (rp *redisProc) kill() {
	rp.mu.Lock()
	cmd := rp.cmd
	rp.cmd = nil
	rp.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// fleetLimitsStatus is what an instance's status route says about its
// limits and the day's top clients.
type fleetLimitsStatus struct {
	Handlers []struct {
		Limits *struct {
			Store     string `json:"store"`
			Address   string `json:"address"`
			Healthy   bool   `json:"healthy"`
			State     string `json:"state"`
			LastError string `json:"last_error"`
		} `json:"limits"`
	} `json:"handlers"`
	TopClientsToday []struct {
		Client       string `json:"client"`
		InputTokens  int    `json:"input_tokens"`
		OutputTokens int    `json:"output_tokens"`
	} `json:"top_clients_today"`
	TopClientsFrom string `json:"top_clients_from"`
	raw            string
}

func limitsStatus(t *testing.T, p *caddyProc) fleetLimitsStatus {
	t.Helper()
	var res response
	var err error
	for range 5 { // a loaded machine may drop an admin connection now and then
		if res, err = newTestClient(t).try(http.MethodGet, p.Admin+"/ai_gateway_auth/status", nil, ""); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var st fleetLimitsStatus
	if err := json.Unmarshal(res.Body, &st); err != nil || len(st.Handlers) != 1 || st.Handlers[0].Limits == nil {
		t.Fatalf("status: %v: %s", err, res.Body)
	}
	st.raw = string(res.Body)
	return st
}

// waitLimitsHealthy waits until every instance counts in Redis.
func waitLimitsHealthy(t *testing.T, fleet []*caddyProc, healthy bool) {
	t.Helper()
	for i, p := range fleet {
		eventually(t, waitTimeout, fmt.Sprintf("instance %d's limits store healthy=%v", i+1, healthy), func() string {
			if l := limitsStatus(t, p).Handlers[0].Limits; l.Healthy != healthy {
				return fmt.Sprintf("%+v", *l)
			}
			return ""
		})
	}
}

// fleetClientHeader names, in what the gateway received, the test
// client a request came from.
const fleetClientHeader = "X-Test-Client"

// TestFleetLimitsRedis: three `caddy run` processes count limits in one
// real Redis (requests_per_minute 6, tokens_per_day 100).
//
//   - A client's requests spread over the three instances: exactly 6
//     reach the gateway, then every instance answers 429
//     requests_per_minute_exceeded with Retry-After.
//   - tokens_per_day is reached by answers served by three different
//     instances (each reads the fleet's tokens before admitting).
//   - Redis frozen (SIGSTOP: connections accepted, nothing answered), then
//     killed: a client under its limits is still served at every
//     instance (each request's latency is logged; only the harness's
//     deadlines bound it), and each instance counts alone meanwhile (6
//     per instance: up to 3x the limit for the fleet, as documented); the
//     status route shows the fault without the password.
//   - Redis restarted, empty, on the same port: every instance goes back
//     to it within a few probes, and counts are fleet-wide again.
//
// The Redis password never appears in a log, the status, the metrics or
// the config. The instances wait up to 500ms for Redis (redis timeout),
// not the default 50ms: three -race binaries on a loaded 2-core machine
// can miss 50ms now and then, and a request that falls back to local
// counting would make the exact fleet-wide counts above inexact. (The
// default's behaviour is in caddymodule's tests and the benchmark.)
func TestFleetLimitsRedis(t *testing.T) {
	t.Parallel()
	const password = "fleet-redis-pw-6c1f9e0a"
	rp := startRedis(t, password)
	// a real fleet: the three share one minted token through one storage
	// folder (share) and count limits in one Redis
	v := newFakeVercel(t)
	gw := newFakeGateway(t, v)
	secret := newClientKeySecret()
	env := mintEnv(v)
	env["CLIENT_KEY_SECRET"], env["LIMITS_REDIS_URL"] = secret, rp.URL()
	storage := t.TempDir()
	site := fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
			share
		}
		client_key_secret {env.CLIENT_KEY_SECRET}
		limits {
			requests_per_minute 6
			tokens_per_day      100
			default_max_tokens  10
			redis {env.LIMITS_REDIS_URL} {
				timeout 500ms
			}
		}
	}
	reverse_proxy %s`, mintBlock(v.URL()), gw.URL())
	fleet := startFleet(t, 3, storage, caddyOptions{Env: env}, site)
	waitLimitsHealthy(t, fleet, true)
	tc := newTestClient(t)
	send := func(p *caddyProc, client string) (response, time.Duration) {
		t.Helper()
		start := time.Now()
		res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey(client, secret), fleetClientHeader: client}, chatBody)
		return res, time.Since(start)
	}
	reached := func(client string) int {
		n := 0
		for _, r := range gw.Requests() {
			if r.Header.Get(fleetClientHeader) == client {
				n++
			}
		}
		return n
	}
	refusedWith := func(res response, code string) string {
		var e struct {
			Error struct {
				Type, Code string
			} `json:"error"`
		}
		_ = json.Unmarshal(res.Body, &e)
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		if res.Status != http.StatusTooManyRequests || e.Error.Type != "rate_limit_error" || e.Error.Code != code || err != nil || ra < 1 {
			return fmt.Sprintf("got %d %s (Retry-After %q), want 429 %s with Retry-After", res.Status, res.Body, res.Header.Get("Retry-After"), code)
		}
		return ""
	}
	// spread sends n requests round-robin over the fleet and returns
	// the statuses.
	spread := func(client string, n int) []int {
		var codes []int
		for i := range n {
			res, _ := send(fleet[i%3], client)
			codes = append(codes, res.Status)
		}
		return codes
	}

	t.Run("requests_per_minute across the fleet", func(t *testing.T) {
		gw.SetUsage(fakeUsage{Input: 1, Output: 1})
		var lat []time.Duration
		for i := range 6 {
			res, took := send(fleet[i%3], "rpm")
			lat = append(lat, took)
			if res.Status != 200 {
				t.Fatalf("request %d of the first 6 over 3 instances: %d %s", i+1, res.Status, res.Body)
			}
		}
		slices.Sort(lat)
		t.Logf("with Redis up, 6 requests over 3 instances: latency min %v, median %v, max %v (for comparison with the outages below)",
			lat[0].Round(time.Microsecond), lat[3].Round(time.Microsecond), lat[5].Round(time.Microsecond))
		for i, p := range fleet {
			for range 2 {
				res, _ := send(p, "rpm")
				if msg := refusedWith(res, "requests_per_minute_exceeded"); msg != "" {
					t.Errorf("instance %d, over the fleet's 6: %s", i+1, msg)
				}
				if ra, _ := strconv.Atoi(res.Header.Get("Retry-After")); ra > 61 {
					t.Errorf("Retry-After %d, want at most 61", ra)
				}
			}
		}
		if n := reached("rpm"); n != 6 {
			t.Errorf("the gateway received %d of the client's requests, want exactly 6", n)
		}
	})

	t.Run("tokens_per_day across the fleet", func(t *testing.T) {
		if nearUTCMidnight(time.Now()) {
			t.Skip("UTC midnight is within 2 minutes: the day's tokens could start again between requests")
		}
		// each request reserves 28 tokens (chatBody's 70 bytes / 4, plus
		// the default cap of 10) and is charged 30
		gw.SetUsage(fakeUsage{Input: 20, Output: 10})
		for i, p := range fleet { // 0, 30, 60 tokens before each: 28 more fit in 100
			if res, _ := send(p, "tpd"); res.Status != 200 {
				t.Fatalf("instance %d: %d %s", i+1, res.Status, res.Body)
			}
			want := 30 * (i + 1)
			// the answer's tokens are added by a background writer: wait
			// until another instance's status shows them
			eventually(t, waitTimeout, fmt.Sprintf("the fleet's count has %d tokens", want), func() string {
				st := limitsStatus(t, fleet[(i+1)%3])
				for _, c := range st.TopClientsToday {
					if c.Client == "key:tpd" && c.InputTokens+c.OutputTokens == want && st.TopClientsFrom == "redis" {
						return ""
					}
				}
				return st.raw
			})
		}
		for i, p := range fleet {
			res, _ := send(p, "tpd")
			if msg := refusedWith(res, "tokens_per_day_exceeded"); msg != "" {
				t.Errorf("instance %d, 90 of 100 tokens used on three instances, 28 asked: %s", i+1, msg)
			}
		}
		if n := reached("tpd"); n != 3 {
			t.Errorf("the gateway received %d of the client's requests, want 3", n)
		}
	})

	// outage serves a client under its limits at every instance while
	// Redis does not answer, and shows that each instance counts alone.
	outage := func(t *testing.T, client string) {
		gw.SetUsage(fakeUsage{Input: 1, Output: 1})
		var lat []time.Duration
		for i, p := range fleet {
			for j := range 6 {
				res, took := send(p, client)
				lat = append(lat, took)
				if res.Status != 200 {
					t.Fatalf("instance %d request %d with Redis down: %d %s", i+1, j+1, res.Status, res.Body)
				}
			}
			res, _ := send(p, client)
			if msg := refusedWith(res, "requests_per_minute_exceeded"); msg != "" {
				t.Errorf("instance %d's 7th request, counted alone: %s", i+1, msg)
			}
		}
		slices.Sort(lat)
		t.Logf("with Redis down, %d requests answered 200 at 3 instances (6 each: each counts alone): latency min %v, median %v, max %v",
			len(lat), lat[0].Round(time.Microsecond), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
		for i, p := range fleet {
			st := limitsStatus(t, p)
			if l := st.Handlers[0].Limits; l.Healthy || l.State != "failing" || l.LastError == "" || l.Store != "redis" {
				t.Errorf("instance %d's status while Redis is down: %+v", i+1, *l)
			}
			if st.TopClientsFrom != "local" {
				t.Errorf("instance %d: top_clients_from %q while Redis is down, want local", i+1, st.TopClientsFrom)
			}
		}
	}

	t.Run("Redis frozen", func(t *testing.T) {
		rp.signal(syscall.SIGSTOP)
		outage(t, "frozen")
		rp.signal(syscall.SIGCONT)
		waitLimitsHealthy(t, fleet, true)
	})

	t.Run("Redis killed and restarted", func(t *testing.T) {
		rp.kill()
		outage(t, "killed")
		for i, p := range fleet {
			if m := scrapeMetrics(t, p); m[`caddy_ai_gateway_auth_limit_store_errors_total{op="admit"}`] < 1 {
				t.Errorf("instance %d: no limit_store_errors_total{op=admit}", i+1)
			}
		}
		rp.start() // empty: its counts died with it
		waitLimitsHealthy(t, fleet, true)
		codes := spread("after", 6)
		if slices.ContainsFunc(codes, func(c int) bool { return c != 200 }) {
			t.Fatalf("after the restart, 6 requests over 3 instances: %v, want all 200", codes)
		}
		for i, p := range fleet {
			res, _ := send(p, "after")
			if msg := refusedWith(res, "requests_per_minute_exceeded"); msg != "" {
				t.Errorf("instance %d after the restart, over the fleet's 6: %s", i+1, msg)
			}
		}
	})

	for i, p := range fleet {
		logs := p.Logs()
		warns, infos := strings.Count(logs, "limits store not answering"), strings.Count(logs, "limits store answers again")
		if warns != 2 || infos != 2 {
			t.Errorf("instance %d logged %d warnings and %d recoveries of the limits store, want 2 and 2 (one each per outage)", i+1, warns, infos)
		}
		texts := map[string]string{"logs": logs, "status": limitsStatus(t, p).raw}
		for _, path := range []string{"/metrics", "/config/"} {
			resp, err := http.Get(p.Admin + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			texts[path] = string(b)
		}
		for what, text := range texts {
			if strings.Contains(text, password) {
				t.Errorf("instance %d: the Redis password appears in its %s", i+1, what)
			}
		}
		if !strings.Contains(texts["/config/"], "{env.LIMITS_REDIS_URL}") {
			t.Errorf("instance %d: the config does not keep the placeholder", i+1)
		}
	}
}
