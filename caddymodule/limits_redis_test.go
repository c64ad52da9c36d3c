package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const testRedisPassword = "redis-test-pw-Zq81xK0c"

// setRedisWaits makes requests wait up to wait for Redis and probes
// every probe, until the test ends. Tests about what Redis counts give a
// generous wait, so that a loaded machine (-race, 2 cores) never turns a
// slow answer into a fallback; tests about faults keep it short.
func setRedisWaits(t testing.TB, wait, probe time.Duration) {
	oldWait, oldProbe := redisWait, redisProbeInterval
	redisWait, redisProbeInterval = wait, probe
	t.Cleanup(func() { redisWait, redisProbeInterval = oldWait, oldProbe })
}

// newTestRedis is a miniredis that requires testRedisPassword, and its
// URL.
func newTestRedis(t *testing.T) (*miniredis.Miniredis, string) {
	mr := miniredis.RunT(t)
	mr.RequireAuth(testRedisPassword)
	return mr, "redis://:" + testRedisPassword + "@" + mr.Addr() + "/0"
}

// redisStore is the shared store for url, released when the test ends,
// with its log lines observed.
func redisStore(t testing.TB, url string) (*redisLimits, *observer.ObservedLogs) {
	t.Helper()
	r, key, err := acquireRedisLimits(url)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	r.logger = zap.New(core)
	t.Cleanup(func() { _, _ = redisPool.Delete(key) })
	return r, logs
}

// waitState waits until the store is in state (or fails the test after a
// deadline that only bounds a hang).
func waitState(t testing.TB, r *redisLimits, state int32) {
	t.Helper()
	r.start()
	deadline := time.Now().Add(20 * time.Second)
	for r.state.Load() != state {
		if time.Now().After(deadline) {
			t.Fatalf("store state %d, want %d: %+v", r.state.Load(), state, r.status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeNow adds one finished request to Redis as the writer would.
func writeNow(t testing.TB, r *redisLimits, name string, u usage, now time.Time) {
	t.Helper()
	err := r.write(map[deltaKey]*redisDelta{{name, utcDay(now)}: {name: name, day: utcDay(now), input: u.input, output: u.output, cost: u.cost, requests: 1}})
	if err != nil {
		t.Fatal(err)
	}
}

// checkSameAsLedger runs one random history of requests, answers and
// clock steps through the ledger and through Redis (2 clients, crossing
// a UTC midnight): every admission gets the same answer and the same
// Retry-After to the millisecond.
func checkSameAsLedger(t *testing.T, r *redisLimits, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := newLedger()
	lim := Limits{RequestsPerMinute: 5, TokensPerDay: 400, USDPerDay: 0.25}
	now := time.Date(2031, 3, 4, 23, 50, 0, 0, time.UTC) // days not yet seen by any clock here
	clients := []string{fmt.Sprintf("same-%d-a", seed), fmt.Sprintf("same-%d-b:{x}", seed)}
	var admitted, refused [4]int
	midnight := false
	for i := range 3000 {
		name := clients[rng.IntN(len(clients))]
		switch x := rng.IntN(100); {
		case x < 60:
			wantLimit, wantRetry := l.admit(name, lim, now)
			gotLimit, gotRetry, ok := r.admit(name, lim, now)
			if !ok {
				t.Fatalf("step %d: Redis did not answer: %+v", i, r.status())
			}
			if gotLimit != wantLimit || gotRetry != wantRetry {
				t.Fatalf("step %d at %s, %s: Redis says %q retry %v; the ledger %q retry %v",
					i, now.Format(time.StampMilli), name, gotLimit, gotRetry, wantLimit, wantRetry)
			}
			switch wantLimit {
			case "":
				admitted[0]++
			case limitRequestsPerMinute:
				refused[1]++
			case limitTokensPerDay:
				refused[2]++
			case limitUSDPerDay:
				refused[3]++
			}
		case x < 85:
			u := usage{input: rng.Int64N(30), output: rng.Int64N(10)}
			if rng.IntN(2) == 0 {
				u.cost, u.hasCost = float64(rng.IntN(4))/64, true // exact in binary: sums compare alike
			}
			l.record(name, u, now)
			writeNow(t, r, name, u, now)
		default:
			step := time.Duration(rng.Int64N(2500)) * time.Millisecond
			if rng.IntN(10) == 0 {
				step = time.Duration(20+rng.IntN(50)) * time.Second
			}
			next := now.Add(step)
			midnight = midnight || utcDay(next) != utcDay(now)
			now = next
		}
	}
	if !midnight || admitted[0] == 0 || refused[1] == 0 || refused[2] == 0 || refused[3] == 0 {
		t.Errorf("the history did not exercise every case: midnight %v, admitted %d, refused rpm/tokens/usd %v", midnight, admitted[0], refused[1:])
	}
	t.Logf("seed %d: %d admitted, refused: %d requests_per_minute, %d tokens_per_day, %d usd_per_day", seed, admitted[0], refused[1], refused[2], refused[3])
}

// The Lua admission answers exactly as the ledger: the rolling window
// counted by the second (no burst at a minute boundary), its Retry-After,
// the day's tokens and cost, and their rollover at midnight UTC.
func TestRedisAdmitMatchesLedger(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	_, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	for seed := range uint64(3) {
		checkSameAsLedger(t, r, seed)
	}
}

// The window on a known timeline: 3 requests at 00:00:50, a fourth at
// 00:01:05 waits 46 s (the same figures as the ledger's TestLimitsWindows).
func TestRedisWindowFigures(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	_, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	lim := Limits{RequestsPerMinute: 3}
	t0 := time.Date(2031, 1, 1, 0, 0, 50, 0, time.UTC)
	for i := range 3 {
		if refused, _, ok := r.admit("clock", lim, t0); !ok || refused != "" {
			t.Fatalf("request %d: %q, %v", i+1, refused, ok)
		}
	}
	refused, retry, _ := r.admit("clock", lim, t0.Add(15*time.Second))
	if refused != limitRequestsPerMinute || retry != 46*time.Second {
		t.Fatalf("after the minute boundary: %q retry %v, want requests_per_minute 46s", refused, retry)
	}
	if refused, _, _ := r.admit("clock", lim, t0.Add(61*time.Second)); refused != "" {
		t.Fatalf("61 s later: refused (%s)", refused)
	}
}

// Every key expires with its window: the minute's 61 s after its last
// request, the day's an hour after that UTC day ends; then nothing is
// left, whatever the number of clients.
func TestRedisKeysExpire(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	mr, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	now := time.Now()
	lim := Limits{RequestsPerMinute: 10, TokensPerDay: 1000, USDPerDay: 1}
	for i := range 50 {
		name := "expiring-" + strconv.Itoa(i)
		if refused, _, ok := r.admit(name, lim, now); !ok || refused != "" {
			t.Fatalf("%s: %q %v", name, refused, ok)
		}
		writeNow(t, r, name, usage{input: 3, output: 2, cost: 0.01}, now)
	}
	dayLeft := redisDayExpiry(utcDay(now)).Sub(time.Now())
	for _, k := range mr.Keys() {
		if !strings.HasPrefix(k, redisKeyPrefix) {
			t.Errorf("key %q lacks the prefix", k)
		}
		ttl := mr.TTL(k)
		switch {
		case strings.HasSuffix(k, ":rpm"):
			if ttl <= 0 || ttl > 61*time.Second {
				t.Errorf("%s: TTL %v, want at most 61 s", k, ttl)
			}
		default:
			if ttl <= 0 || ttl > dayLeft+time.Minute || ttl < dayLeft-time.Minute {
				t.Errorf("%s: TTL %v, want about %v (the end of the UTC day plus %v)", k, ttl, dayLeft, redisDayMargin)
			}
		}
	}
	if n := len(mr.Keys()); n != 50*2+1 {
		t.Errorf("%d keys, want 101 (a window and a day per client, one top)", n)
	}
	mr.FastForward(62 * time.Second)
	for _, k := range mr.Keys() {
		if strings.HasSuffix(k, ":rpm") {
			t.Errorf("%s outlived its minute", k)
		}
	}
	mr.FastForward(dayLeft)
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("after the day and its margin, %d keys are left: %q", len(keys), keys[:min(3, len(keys))])
	}
}

// Client ids are opaque: any length, any bytes. Ids that differ only in
// the characters keys are built from count apart, every key has the
// prefix and a bounded size, and the status route gets each id back
// whole.
func TestRedisHostileClientIDs(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	mr, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	now := time.Now()
	ids := []string{
		"a", "a:", ":a", "a:b", "a{b}", "{a}", "{a}:rpm", "a\nb", "a\r\nFLUSHALL\r\n", "a b", "a\x00b", "",
		redisKeyPrefix + "top:" + dayDate(utcDay(now)), "}" + clientTag("a") + "{",
		strings.Repeat("x", 1<<20), strings.Repeat("x", 1<<20) + "y", "sandbox:team_1/prj_2/sbx_3", "ümlaut-é",
	}
	lim := Limits{RequestsPerMinute: 2}
	for _, id := range ids {
		for i := range 3 {
			refused, _, ok := r.admit(id, lim, now)
			if !ok || (refused != "") != (i == 2) {
				t.Fatalf("id %.40q request %d: refused %q, answered %v; each id has its own 2 requests", id, i+1, refused, ok)
			}
		}
	}
	for i, id := range ids {
		writeNow(t, r, id, usage{input: int64(1000 + i)}, now)
	}
	for _, k := range mr.Keys() {
		if !strings.HasPrefix(k, redisKeyPrefix) || len(k) > 100 || strings.ContainsAny(k, "\r\n\x00 ") {
			t.Errorf("unsafe key %.120q", k)
		}
	}
	// one window and one day per id, one top: nothing shared
	if n := len(mr.Keys()); n != 2*len(ids)+1 {
		t.Errorf("%d keys for %d ids, want %d", n, len(ids), 2*len(ids)+1)
	}
	top, err := r.top(now, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, c := range top {
		got[c.Client] = c.InputTokens
	}
	for i, id := range ids {
		if got[id] != int64(1000+i) {
			t.Errorf("top has %d input tokens for id %.40q, want %d", got[id], id, 1000+i)
		}
	}
}

// Many goroutines admitting the same client at once, through one store
// (as the requests of one instance do): exactly the limit is admitted.
func TestRedisConcurrentAdmit(t *testing.T) {
	setRedisWaits(t, 20*time.Second, time.Second)
	_, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	checkConcurrentAdmit(t, r, 100)
}

func checkConcurrentAdmit(t *testing.T, r *redisLimits, limit int) {
	lim := Limits{RequestsPerMinute: limit}
	name := fmt.Sprintf("crowd-%d", time.Now().UnixNano())
	var admitted, refusedN, fellBack atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 8 {
				refused, _, ok := r.admit(name, lim, time.Now())
				switch {
				case !ok:
					fellBack.Add(1)
				case refused == "":
					admitted.Add(1)
				default:
					refusedN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if fellBack.Load() != 0 || admitted.Load() != int64(limit) || refusedN.Load() != 32*8-int64(limit) {
		t.Errorf("admitted %d, refused %d, not answered %d; want exactly %d admitted", admitted.Load(), refusedN.Load(), fellBack.Load(), limit)
	}
}

// The writer adds finished requests in batches; the status route's top
// reads them.
func TestRedisRecordsReachTop(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	mr, url := newTestRedis(t)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	now := time.Now()
	for i := range 500 {
		r.record("busy", usage{input: 2, output: 1, cost: 0.5, hasCost: true}, now)
		if i%5 == 0 {
			r.record("quiet", usage{input: 1}, now)
		}
	}
	key := redisDayKey(clientTag("busy"), utcDay(now))
	deadline := time.Now().Add(20 * time.Second)
	for mr.HGet(key, "req") != "500" {
		if time.Now().After(deadline) {
			t.Fatalf("busy's requests in Redis: %q, want 500", mr.HGet(key, "req"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		top, err := r.top(now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(top) == 2 && top[1].Requests == 100 {
			if b := top[0]; b.Client != "busy" || b.InputTokens != 1000 || b.OutputTokens != 500 || b.Cost != 250 || b.Requests != 500 {
				t.Errorf("top[0] = %+v", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("top = %+v", top)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Faults never stop traffic: with Redis gone, admission falls back to
// the instance's ledger (which knows what this instance admitted), with
// one warning, the error counted and shown without the password; no
// request dials Redis while it is down (the probe does, about once per
// interval); what answers used meanwhile is kept and added when Redis is
// back, with one info line, and counts are fleet-wide again. A script
// error falls back the same way.
func TestRedisFaultsFallBackAndRecover(t *testing.T) {
	setRedisWaits(t, 2*time.Second, 50*time.Millisecond)
	mr, url := newTestRedis(t)
	r, logs := redisStore(t, url)
	waitState(t, r, storeHealthy)
	s := &spend{ledger: newLedger(), limits: Limits{RequestsPerMinute: 3}, limited: true, shared: r, logger: zap.NewNop()}
	name := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	now := time.Now()
	for i := range 2 {
		if refused, _ := s.admit(name, s.limits, now); refused != "" {
			t.Fatalf("request %d refused", i+1)
		}
	}
	if got := mr.HGet(redisMinuteKey(clientTag(name)), strconv.FormatInt(now.Unix(), 10)); got != "2" {
		t.Fatalf("Redis counted %q, want 2", got)
	}

	admitErrs, probeErrs := counterValue(storeErrAdmit), counterValue(storeErrProbe)
	mr.Close()
	// the ledger noted the 2 Redis admitted: one more, then refused
	if refused, _ := s.admit(name, s.limits, now); refused != "" {
		t.Fatalf("first request with Redis down refused (%s)", refused)
	}
	if refused, _ := s.admit(name, s.limits, now); refused != limitRequestsPerMinute {
		t.Fatalf("fourth request with Redis down: %q, want the local requests_per_minute", refused)
	}
	for range 100 {
		s.admit("other-"+name, s.limits, now)
	}
	if got := counterValue(storeErrAdmit) - admitErrs; got != 1 {
		t.Errorf("admit errors grew by %v, want 1: requests do not try a failing Redis", got)
	}
	st := r.status()
	if st.Healthy || st.State != "failing" || st.LastError == "" || strings.Contains(st.LastError, testRedisPassword) {
		t.Errorf("status while down: %+v", st)
	}
	s.record(name, usage{input: 7, output: 3, cost: 0.25}, now)
	deadline := time.Now().Add(20 * time.Second)
	for r.status().PendingClients == 0 || counterValue(storeErrProbe)-probeErrs < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no pending record or no probe: %+v, probes failed %v", r.status(), counterValue(storeErrProbe)-probeErrs)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, storeHealthy)
	dayKey := redisDayKey(clientTag(name), utcDay(now))
	deadline = time.Now().Add(20 * time.Second)
	for mr.HGet(dayKey, "in") != "7" || mr.HGet(dayKey, "cost") != "0.25" {
		if time.Now().After(deadline) {
			t.Fatalf("the outage's usage was not added: in %q cost %q", mr.HGet(dayKey, "in"), mr.HGet(dayKey, "cost"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// fleet-wide again: Redis's window has its 2, so 1 more
	later := now.Add(time.Second)
	if refused, _ := s.admit(name, s.limits, later); refused != "" {
		t.Fatalf("after recovery: refused (%s)", refused)
	}
	if refused, _ := s.admit(name, s.limits, later); refused != limitRequestsPerMinute {
		t.Fatalf("after recovery, 4th in Redis's window: %q", refused)
	}

	// a script error: the same fallback
	mr.SetError("ERR injected failure")
	if refused, _ := s.admit("script-"+name, s.limits, later); refused != "" {
		t.Fatalf("with a script error: refused (%s)", refused)
	}
	if st := r.status(); st.Healthy || !strings.Contains(st.LastError, "injected failure") {
		t.Errorf("status with a script error: %+v", st)
	}
	mr.SetError("")
	waitState(t, r, storeHealthy)

	warns := logs.FilterMessageSnippet("limits store not answering").All()
	infos := logs.FilterMessageSnippet("limits store answers again").All()
	if len(warns) != 2 || len(infos) != 2 || warns[0].Level != zapcore.WarnLevel || infos[0].Level != zapcore.InfoLevel {
		t.Errorf("log: %d warnings and %d info lines about the store, want 2 and 2 (one each per outage)", len(warns), len(infos))
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, testRedisPassword) {
			t.Errorf("a log line shows the password: %s", line)
		}
		if e.ContextMap()["address"] != nil && e.ContextMap()["address"] != "redis://"+mr.Addr()+"/0" {
			t.Errorf("address logged as %v", e.ContextMap()["address"])
		}
	}
}

// A Redis that accepts connections but never answers: each request waits
// at most redisWait, then the instance counts alone.
func TestRedisSlowFallsBack(t *testing.T) {
	setRedisWaits(t, 50*time.Millisecond, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns, acceptor sync.WaitGroup
	stop := make(chan struct{})
	defer func() { ln.Close(); acceptor.Wait(); close(stop); conns.Wait() }()
	acceptor.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { <-stop; c.Close() }) // reads nothing, answers nothing
		}
	})
	r, logs := redisStore(t, "redis://:"+testRedisPassword+"@"+ln.Addr().String()+"/3")
	s := &spend{ledger: newLedger(), limits: Limits{RequestsPerMinute: 1}, limited: true, shared: r, logger: zap.NewNop()}
	start := time.Now()
	refused, _ := s.admit("slow", s.limits, time.Now())
	took := time.Since(start)
	if refused != "" {
		t.Fatalf("refused (%s)", refused)
	}
	t.Logf("the first request waited %v for a Redis that never answers (redisWait %v)", took, redisWait)
	if took > 10*time.Second { // bounds a hang only
		t.Errorf("a request waited %v", took)
	}
	if refused, _ := s.admit("slow", s.limits, time.Now()); refused != limitRequestsPerMinute {
		t.Errorf("the ledger did not count: %q", refused)
	}
	waitState(t, r, storeFailing)
	st := r.status()
	if st.LastError == "" || strings.Contains(st.LastError, testRedisPassword) || st.Address != "redis://"+ln.Addr().String()+"/3" {
		t.Errorf("status: %+v", st)
	}
	if len(logs.FilterMessageSnippet("limits store not answering").All()) != 1 {
		t.Errorf("want one warning: %v", logs.All())
	}
}

// The password never shows: not in a parse error, a dial error, a
// refused AUTH, the status, a log line or the JSON config.
func TestRedisPasswordNeverShown(t *testing.T) {
	setRedisWaits(t, 2*time.Second, time.Hour)
	const pw = "Very$ecret-pass word/7"
	enc := "Very%24ecret-pass%20word%2F7"
	for _, bad := range []string{
		"redis://:" + enc + "@127.0.0.1:99999/0",
		"redis://:" + enc + "@127.0.0.1:6379/x",
		"redis://:" + enc + "@127.0.0.1:6379/0/0",
		"redis://:" + enc + "%@127.0.0.1:6379/0",
		"redis://:" + pw + "@127.0.0.1:6379/0",
		"http://:" + enc + "@127.0.0.1:6379/0",
		"redis ://:" + enc + "@127.0.0.1:6379/0",
	} {
		_, err := parseRedisURL(bad)
		if err == nil {
			continue
		}
		if strings.Contains(err.Error(), "ecret") {
			t.Errorf("%q: the error shows the password: %v", bad, err)
		}
	}

	// a closed port (dial refused), and a Redis that refuses the password
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	mr := miniredis.RunT(t)
	mr.RequireAuth("another-password")
	for _, addr := range []string{closedAddr, mr.Addr()} {
		r, logs := redisStore(t, "redis://:"+enc+"@"+addr+"/0")
		if _, _, ok := r.admit("x", Limits{RequestsPerMinute: 1}, time.Now()); ok {
			t.Fatalf("%s: admitted through a Redis that should fail", addr)
		}
		waitState(t, r, storeFailing)
		st, _ := json.Marshal(r.status())
		var lines strings.Builder
		for _, e := range logs.All() {
			fmt.Fprintln(&lines, e.Message, e.ContextMap())
		}
		for _, shown := range []string{string(st), lines.String()} {
			if strings.Contains(shown, "ecret") {
				t.Errorf("%s: the password shows: %s", addr, shown)
			}
		}
		if !strings.Contains(string(st), `"last_error":"`) {
			t.Errorf("%s: no last_error in %s", addr, st)
		}
		t.Logf("%s: status %s", addr, st)
	}
}

// Provision makes no connection (it also runs for `caddy validate`);
// handlers and configs naming the same Redis share one client, closed
// when the last of them is cleaned up; the JSON config keeps the
// placeholder.
func TestRedisSharedAndLazy(t *testing.T) {
	setRedisWaits(t, 10*time.Second, time.Second)
	mr, url := newTestRedis(t)
	t.Setenv("AIGW_TEST_LIMITS_REDIS", url)
	newHandler := func() *Handler {
		return &Handler{
			CredentialsRaw:   []json.RawMessage{staticSourceJSON(testStaticKey)},
			ClientKeySecrets: []string{spendTestSecret},
			Limits:           &Limits{RequestsPerMinute: 2, Redis: "{env.AIGW_TEST_LIMITS_REDIS}"},
		}
	}
	h1 := newHandler()
	if err := h1.Provision(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	h2 := newHandler()
	if err := h2.Provision(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := json.Marshal(h1); strings.Contains(string(cfg), testRedisPassword) || !strings.Contains(string(cfg), "{env.AIGW_TEST_LIMITS_REDIS}") {
		t.Errorf("JSON config: %s", cfg)
	}
	if n := mr.TotalConnectionCount(); n != 0 {
		t.Errorf("Provision connected to Redis (%d connections)", n)
	}
	if h1.spend.shared == nil || h1.spend.shared != h2.spend.shared {
		t.Fatal("two handlers naming one Redis do not share its store")
	}
	r := h1.spend.shared
	// one client's requests through both handlers: one count
	for i, h := range []*Handler{h1, h2, h1} {
		w := serve(t, h, clientRequest(t, "shared", "/v1/chat/completions"), answering("application/json", `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`, nil))
		if want := map[bool]int{true: 200, false: 429}[i < 2]; w.Code != want {
			t.Fatalf("request %d: %d, want %d", i+1, w.Code, want)
		}
	}
	if st := h2.spend.limitsStatus(); st.Store != "redis" || !st.Healthy || st.Address != "redis://"+mr.Addr()+"/0" {
		t.Errorf("status: %+v", st)
	}
	_ = h1.Cleanup()
	if err := r.client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the store was closed while a handler still uses it: %v", err)
	}
	_ = h2.Cleanup()
	if err := r.client.Ping(context.Background()).Err(); err != redis.ErrClosed {
		t.Errorf("after the last handler: %v, want the client closed", err)
	}
}

// A URL that resolves to nothing, or to something that is not a Redis
// URL, fails Provision without showing a password; a literal URL with a
// password is accepted with a warning.
func TestRedisProvisionErrors(t *testing.T) {
	t.Setenv("AIGW_TEST_REDIS_BAD", "http://:"+testRedisPassword+"@127.0.0.1:6379/0")
	t.Setenv("AIGW_TEST_REDIS_EMPTY", "")
	for _, url := range []string{"{env.AIGW_TEST_REDIS_EMPTY}", "{env.AIGW_TEST_REDIS_BAD}"} {
		err := tryProvisionHandler(t, &Handler{
			CredentialsRaw: []json.RawMessage{staticSourceJSON(testStaticKey)},
			ClientKeys:     []string{"sk-placeholder"},
			Limits:         &Limits{RequestsPerMinute: 1, Redis: url},
		})
		if err == nil || !strings.Contains(err.Error(), "limits redis") || strings.Contains(err.Error(), testRedisPassword) {
			t.Errorf("%s: %v", url, err)
		}
	}
	core, logs := observer.New(zapcore.WarnLevel)
	s := &spend{ledger: newLedger(), logger: zap.New(core)}
	if err := s.provisionRedis(&Limits{Redis: "redis://:" + testRedisPassword + "@127.0.0.1:1/0"}); err != nil {
		t.Fatal(err)
	}
	defer s.releaseRedis()
	if w := logs.FilterMessageSnippet("literal URL with a password").All(); len(w) != 1 || strings.Contains(fmt.Sprint(w[0].ContextMap()), testRedisPassword) {
		t.Errorf("warnings: %v", logs.All())
	}
}

// redisACL is the least a Redis ACL user needs for limits (documented
// in NOTES-redis.md): the commands of the scripts, the writer, the
// status route and the probe, on the module's keys only.
const redisACL = "on ~ai_gateway_auth:limits:* resetchannels -@all +ping +evalsha +eval +hmget +hgetall +hdel +hincrby +hincrbyfloat +hset +pexpire +expireat +zincrby +zrevrange"

// redisServer starts a real redis-server on a free loopback port (no
// persistence), with a password, or skips the test when there is none.
func redisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH (apt-get install redis-server): the tests against a real Redis are skipped")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--requirepass", testRedisPassword, "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := "redis://:" + testRedisPassword + "@127.0.0.1:" + strconv.Itoa(port) + "/0"
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url
}

// The same checks against a real redis-server (its Lua is not
// miniredis's): the ledger's semantics, the concurrency, the TTLs.
func TestRedisRealServer(t *testing.T) {
	url := redisServer(t)
	setRedisWaits(t, 20*time.Second, time.Second)
	r, _ := redisStore(t, url)
	waitState(t, r, storeHealthy)
	checkSameAsLedger(t, r, 7)
	checkConcurrentAdmit(t, r, 100)
	now := time.Now()
	r.admit("ttl", Limits{RequestsPerMinute: 5}, now)
	writeNow(t, r, "ttl", usage{input: 1, cost: 0.1}, now)
	ctx := context.Background()
	if ttl := r.client.PTTL(ctx, redisMinuteKey(clientTag("ttl"))).Val(); ttl <= 0 || ttl > 61*time.Second {
		t.Errorf("window TTL %v", ttl)
	}
	want := redisDayExpiry(utcDay(now)).Sub(time.Now())
	for _, k := range []string{redisDayKey(clientTag("ttl"), utcDay(now)), redisTopKey(utcDay(now))} {
		if ttl := r.client.PTTL(ctx, k).Val(); ttl < want-time.Minute || ttl > want+time.Minute {
			t.Errorf("%s: TTL %v, want about %v", k, ttl, want)
		}
	}

	// an ACL user with only the documented permissions does everything
	args := []any{"ACL", "SETUSER", "aigw-limits"}
	for _, f := range strings.Fields(redisACL) {
		args = append(args, f)
	}
	args = append(args, ">acl-user-pw-93d1")
	if err := r.client.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	aclURL := strings.Replace(url, ":"+testRedisPassword+"@", "aigw-limits:acl-user-pw-93d1@", 1)
	ra, _ := redisStore(t, aclURL)
	waitState(t, ra, storeHealthy)
	lim := Limits{RequestsPerMinute: 1, TokensPerDay: 10, USDPerDay: 1}
	if refused, _, ok := ra.admit("acl", lim, now); !ok || refused != "" {
		t.Fatalf("ACL user: admit %q %v: %+v", refused, ok, ra.status())
	}
	if refused, _, ok := ra.admit("acl", lim, now); !ok || refused != limitRequestsPerMinute {
		t.Fatalf("ACL user: second admit %q %v: %+v", refused, ok, ra.status())
	}
	writeNow(t, ra, "acl", usage{input: 3, cost: 0.5}, now)
	if top, err := ra.top(now, 10); err != nil || len(top) == 0 {
		t.Fatalf("ACL user: top %v %v", top, err)
	}
	if err := ra.client.Set(ctx, "other-app:key", "x", 0).Err(); err == nil {
		t.Error("the ACL user may write other keys: the documented ACL is too wide")
	}
}
