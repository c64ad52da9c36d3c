package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
)

// checkSameAsLedger runs one random history of admissions (with random
// worst cases), settlements (lower or higher, some estimated),
// reconciliations, abandoned tickets and clock steps (crossing a UTC
// midnight that is also a month's end, and past reservations'
// lifetime, so that some are swept and settled late) through a local
// store and through Redis, for 2 clients: every admission gets the same
// answer, the same Retry-After to the millisecond and the same room
// left.
func checkSameAsLedger(t *testing.T, r *Redis, seed uint64, seen map[string]int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	local := NewStore(NewLedger(), nil, 0)
	shared := NewStore(NewLedger(), r, patient)
	// two policies (the same client may meet both): the day's limits
	// tighter than the month's, and the month's alone
	cfgs := []Config{
		{RequestsPerMinute: 6, ConcurrentRequests: 3, TokensPerDay: 400, USDPerDay: 0.25, TokensPerMonth: 3000, USDPerMonth: 1.5},
		{RequestsPerMinute: 4, ConcurrentRequests: 2, TokensPerMonth: 2500, USDPerMonth: 1.2},
	}
	now := time.Date(2031, 3, 31, 23, 40, 0, 0, time.UTC)
	clients := []string{fmt.Sprintf("same-%d-a", seed), fmt.Sprintf("same-%d-b:{x}", seed)}
	type pair struct {
		local, shared *Ticket
		slow          time.Time // not settled before then (its reservation expires first)
	}
	var open, estimated []pair
	midnight, months := 0, 0
	sweptBefore := counterValue(sweptRedis)
	for i := range 4000 {
		name := clients[rng.IntN(len(clients))]
		switch x := rng.IntN(100); {
		case x < 45:
			cfg := cfgs[rng.IntN(len(cfgs))]
			worst := Amount{Tokens: rng.Int64N(120), USD: float64(rng.IntN(8)) / 64} // exact in binary
			lt, lref := local.Admit(name, cfg, worst, now)
			st, sref := shared.Admit(name, cfg, worst, now)
			if (lt == nil) != (st == nil) || lref != nil && *lref != *sref {
				t.Fatalf("step %d at %s, %s, worst %+v: Redis says %+v (ticket %v); the ledger %+v (ticket %v)",
					i, now.Format(time.StampMilli), name, worst, sref, st != nil, lref, lt != nil)
			}
			if st != nil && st.Store() != "redis" {
				t.Fatalf("step %d: admitted %s: %+v", i, st.Store(), r.Status())
			}
			if lref != nil {
				seen[lref.Limit+map[bool]string{true: "/never", false: ""}[lref.NeverFits]]++
				continue
			}
			seen["admitted"]++
			p := pair{local: lt, shared: st}
			if rng.IntN(5) == 0 {
				p.slow = now.Add(ReservationLifetime)
			}
			open = append(open, p)
		case x < 65 && len(open) > 0:
			k := rng.IntN(len(open))
			p := open[k]
			if now.Before(p.slow) {
				continue
			}
			open = slices.Delete(open, k, k+1)
			w := p.local.Worst()
			actual := Amount{Tokens: rng.Int64N(w.Tokens + 40), USD: w.USD * float64(rng.IntN(5)) / 4}
			actual.Input = actual.Tokens / 3
			est := rng.IntN(3) == 0
			if rng.IntN(10) == 0 {
				p.local.Abandon()
				p.shared.Abandon()
				flush(t, r)
				continue
			}
			p.local.Settle(actual, est, now)
			p.shared.Settle(actual, est, now)
			if est {
				estimated = append(estimated, p)
			}
			flush(t, r)
		case x < 70 && len(estimated) > 0:
			k := rng.IntN(len(estimated))
			p := estimated[k]
			estimated = slices.Delete(estimated, k, k+1)
			actual := Amount{Tokens: rng.Int64N(150), USD: float64(rng.IntN(8)) / 64}
			p.local.Correct(actual, now)
			p.shared.Correct(actual, now)
			flush(t, r)
		case x >= 78:
			step := time.Duration(rng.Int64N(2500)) * time.Millisecond
			switch rng.IntN(30) {
			case 0:
				step = time.Duration(20+rng.IntN(50)) * time.Second
			case 1, 2:
				step = ReservationLifetime + time.Duration(rng.IntN(60))*time.Second
			case 3:
				step = time.Duration(2+rng.IntN(6)) * time.Hour
			}
			next := now.Add(step)
			if dayOf(next) != dayOf(now) {
				midnight++
			}
			if monthOf(next) != monthOf(now) {
				months++
			}
			now = next
		}
	}
	for _, p := range open {
		p.local.Abandon()
		p.shared.Abandon()
	}
	flush(t, r)
	swept := counterValue(sweptRedis) - sweptBefore
	if midnight < 2 || months == 0 || swept == 0 {
		t.Errorf("the history crossed %d midnights and %d months, swept %v reservations", midnight, months, swept)
	}
	t.Logf("seed %d: %d midnights, %v swept", seed, midnight, swept)
}

// checkHistories runs checkSameAsLedger for seeds and checks that,
// together, they met every kind of answer.
func checkHistories(t *testing.T, r *Redis, seeds ...uint64) {
	seen := map[string]int{}
	for _, seed := range seeds {
		checkSameAsLedger(t, r, seed, seen)
	}
	for _, want := range []string{"admitted", RequestsPerMinute, ConcurrentRequests, TokensPerDay, TokensPerDay + "/never",
		USDPerDay, USDPerDay + "/never", TokensPerMonth, TokensPerMonth + "/never", USDPerMonth, USDPerMonth + "/never"} {
		if seen[want] == 0 {
			t.Errorf("the histories never had %q: %v", want, seen)
		}
	}
	t.Logf("answers: %v", seen)
}

// The Lua scripts answer exactly as the ledger (see checkSameAsLedger).
func TestRedisAdmitMatchesLedger(t *testing.T) {
	_, url := newTestRedis(t)
	r := healthyRedis(t, url)
	checkHistories(t, r, 0, 1, 2)
}

// The window on a known timeline: 3 requests at 00:00:50, a fourth at
// 00:01:05 waits 46 s (the same figures as TestLimitsWindows).
func TestRedisWindowFigures(t *testing.T) {
	_, url := newTestRedis(t)
	s := NewStore(NewLedger(), healthyRedis(t, url), patient)
	cfg := Config{RequestsPerMinute: 3}
	start := time.Date(2031, 1, 1, 0, 0, 50, 0, time.UTC)
	for range 3 {
		admitted(t, s, "clock", cfg, Amount{}, start).Settle(Amount{}, false, start)
	}
	if ref := refused(t, s, "clock", cfg, Amount{}, start.Add(15*time.Second), RequestsPerMinute); ref.RetryAfter != 46*time.Second {
		t.Fatalf("after the minute boundary: %+v, want 46s", *ref)
	}
	admitted(t, s, "clock", cfg, Amount{}, start.Add(61*time.Second))
}

// Every key expires with its window: the minute's 61 s after its last
// request, the day's an hour after that UTC day ends, the month's an
// hour after the month ends; reservations leave with their settlement;
// then nothing is left, whatever the number of clients.
func TestRedisKeysExpire(t *testing.T) {
	mr, url := newTestRedis(t)
	s := NewStore(NewLedger(), healthyRedis(t, url), patient)
	now := time.Now()
	cfg := Config{RequestsPerMinute: 10, TokensPerDay: 1000, USDPerDay: 1, TokensPerMonth: 10000, ConcurrentRequests: 2}
	var inFlight []*Ticket
	for i := range 50 {
		name := "expiring-" + strconv.Itoa(i)
		admitted(t, s, name, cfg, Amount{Tokens: 10, USD: 0.1}, now).Settle(Amount{Tokens: 5, Input: 3, USD: 0.01}, false, now)
		if i < 5 {
			inFlight = append(inFlight, admitted(t, s, name, cfg, Amount{Tokens: 10, USD: 0.1}, now))
		}
	}
	settled(t, s)
	dayLeft := dayExpiry(dayOf(now)).Sub(time.Now())
	monthLeft := monthExpiry(monthOf(now)).Sub(time.Now())
	kinds := map[string]int{}
	for _, k := range mr.Keys() {
		if !strings.HasPrefix(k, redisKeyPrefix) {
			t.Errorf("key %q lacks the prefix", k)
		}
		ttl := mr.TTL(k)
		about := func(want time.Duration) {
			if ttl <= 0 || ttl > want+time.Minute || ttl < want-time.Minute {
				t.Errorf("%s: TTL %v, want about %v", k, ttl, want)
			}
		}
		switch kind := k[strings.LastIndex(k, "}")+2:]; {
		case kind == "rpm":
			if ttl <= 0 || ttl > 61*time.Second {
				t.Errorf("%s: TTL %v, want at most 61 s", k, ttl)
			}
			kinds["rpm"]++
		case strings.HasPrefix(kind, "day:"), strings.HasPrefix(k, redisKeyPrefix+"top:"):
			about(dayLeft)
			kinds["day"]++
		case strings.HasPrefix(kind, "month:"), kind == "res":
			about(monthLeft)
			kinds[kind[:3]]++
		default:
			t.Errorf("unexpected key %s", k)
		}
	}
	if want := map[string]int{"rpm": 50, "day": 51, "mon": 50, "res": 5}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("keys %v, want %v (a window, a day, a month per client; one top; reservations of the 5 in flight)", kinds, want)
	}
	for _, tk := range inFlight {
		tk.Settle(Amount{}, false, now)
	}
	settled(t, s)
	mr.FastForward(62 * time.Second)
	for _, k := range mr.Keys() {
		if strings.HasSuffix(k, ":rpm") || strings.HasSuffix(k, ":res") {
			t.Errorf("%s outlived its minute or its reservations", k)
		}
	}
	mr.FastForward(dayLeft)
	for _, k := range mr.Keys() {
		if !strings.Contains(k, ":month:") {
			t.Errorf("%s outlived its day", k)
		}
	}
	mr.FastForward(monthLeft - dayLeft)
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("after the month and its margin, %d keys are left: %q", len(keys), keys[:min(3, len(keys))])
	}
}

// Client ids are opaque: any length, any bytes. Ids that differ only in
// the characters keys are built from count apart, every key has the
// prefix and a bounded size, and the top gets each id back whole.
func TestRedisHostileClientIDs(t *testing.T) {
	mr, url := newTestRedis(t)
	s := NewStore(NewLedger(), healthyRedis(t, url), patient)
	now := t0
	ids := []string{
		"a", "a:", ":a", "a:b", "a{b}", "{a}", "{a}:rpm", "a\nb", "a\r\nFLUSHALL\r\n", "a b", "a\x00b", "",
		redisKeyPrefix + "top:" + dayDate(dayOf(now)), "}" + clientTag("a") + "{",
		strings.Repeat("x", 1<<20), strings.Repeat("x", 1<<20) + "y", "sandbox:team_1/prj_2/sbx_3", "ümlaut-é",
	}
	cfg := Config{RequestsPerMinute: 2}
	for i, id := range ids {
		tk := admitted(t, s, id, cfg, Amount{Tokens: 5000}, now)
		admitted(t, s, id, cfg, Amount{}, now).Abandon()
		refused(t, s, id, cfg, Amount{}, now, RequestsPerMinute)
		tk.Settle(Amount{Tokens: int64(1000 + i), Input: int64(1000 + i)}, false, now)
	}
	settled(t, s)
	for _, k := range mr.Keys() {
		if !strings.HasPrefix(k, redisKeyPrefix) || len(k) > 100 || strings.ContainsAny(k, "\r\n\x00 ") {
			t.Errorf("unsafe key %.120q", k)
		}
	}
	// a window, a day and a month per id, one top: nothing shared
	if n := len(mr.Keys()); n != 3*len(ids)+1 {
		t.Errorf("%d keys for %d ids, want %d", n, len(ids), 3*len(ids)+1)
	}
	top, _ := s.Top(now, len(ids))
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

// Many goroutines admitting the same client at once through one store
// (as the requests of one instance do): exactly the limit is admitted.
func TestRedisConcurrentAdmit(t *testing.T) {
	_, url := newTestRedis(t)
	checkConcurrentAdmit(t, NewStore(NewLedger(), healthyRedis(t, url), patient), 100)
}

func checkConcurrentAdmit(t *testing.T, s *Store, limit int) {
	cfg := Config{RequestsPerMinute: limit}
	name := fmt.Sprintf("crowd-%d", time.Now().UnixNano())
	var admittedN, refusedN, local atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 8 {
				tk, ref := s.Admit(name, cfg, Amount{}, time.Now())
				switch {
				case ref != nil:
					refusedN.Add(1)
				case tk.Store() != "redis":
					local.Add(1)
				default:
					admittedN.Add(1)
					tk.Settle(Amount{}, false, time.Now())
				}
			}
		})
	}
	wg.Wait()
	if local.Load() != 0 || admittedN.Load() != int64(limit) || refusedN.Load() != 32*8-int64(limit) {
		t.Errorf("admitted %d, refused %d, counted locally %d; want exactly %d admitted", admittedN.Load(), refusedN.Load(), local.Load(), limit)
	}
}

// The writer sends settlements in batches; the top reads them.
func TestRedisSettlementsReachTop(t *testing.T) {
	_, url := newTestRedis(t)
	s := NewStore(NewLedger(), healthyRedis(t, url), patient)
	now := t0
	for i := range 500 {
		admitted(t, s, "busy", Config{}, Amount{Tokens: 3}, now).Settle(Amount{Tokens: 3, Input: 2, USD: 0.5}, false, now)
		if i%5 == 0 {
			admitted(t, s, "quiet", Config{}, Amount{}, now).Settle(Amount{Tokens: 1, Input: 1}, true, now)
		}
	}
	settled(t, s)
	top, from := s.Top(now, 10)
	if from != "redis" || len(top) != 2 {
		t.Fatalf("top %+v from %q", top, from)
	}
	if b := top[0]; b.Client != "busy" || b.InputTokens != 1000 || b.OutputTokens != 500 || b.Cost != 250 || b.Requests != 500 {
		t.Errorf("top[0] = %+v", b)
	}
	if q := top[1]; q.Client != "quiet" || q.Requests != 100 || q.EstimatedTokens != 100 {
		t.Errorf("top[1] = %+v", q)
	}
}

// A reservation Redis lost (a restart without persistence, an eviction)
// is found nowhere at its settlement: the figure is charged in full,
// never dropped.
func TestRedisLostReservation(t *testing.T) {
	mr, url := newTestRedis(t)
	s := NewStore(NewLedger(), healthyRedis(t, url), patient)
	cfg := Config{TokensPerDay: 1000}
	tk := admitted(t, s, "lost", cfg, Amount{Tokens: 600}, t0)
	mr.FlushAll()
	tk.Settle(Amount{Tokens: 450, Input: 400}, true, t0)
	settled(t, s)
	st := s.ClientStatus("lost", cfg, t0)
	if st.From != "redis" || st.Today.Tokens != 450 || st.Today.EstimatedTokens != 450 || st.Today.Requests != 1 || st.Reserved.Tokens != 0 || st.Left[TokensPerDay] != 550 {
		t.Errorf("status %+v", st)
	}
}

// Faults never stop traffic: with Redis gone, admission falls back to
// the instance's ledger (which knows what this instance admitted, and
// its tickets in flight), with one warning, the error counted and shown
// without the password; no request dials Redis while it is down (the
// probe does, about once per interval); tickets keep where they were
// admitted; what was settled meanwhile waits and is sent when Redis is
// back, with one info line, and counts are fleet-wide again. A script
// error falls back the same way.
func TestRedisFaultsFallBackAndRecover(t *testing.T) {
	setProbeInterval(t, 50*time.Millisecond)
	mr, url := newTestRedis(t)
	r, logs := newRedis(t, url)
	waitState(t, r, stateHealthy)
	s := NewStore(NewLedger(), r, 2*time.Second)
	cfg := Config{RequestsPerMinute: 4, ConcurrentRequests: 2, TokensPerDay: 1000}
	name := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	now := t0
	inRedis := admitted(t, s, name, cfg, Amount{Tokens: 100}, now)
	admitted(t, s, name, cfg, Amount{}, now).Settle(Amount{Tokens: 1}, false, now)
	if inRedis.Store() != "redis" || mr.HGet(keyMinute(clientTag(name)), strconv.FormatInt(now.Unix(), 10)) != "2" {
		t.Fatalf("Redis did not count: %s", inRedis.Store())
	}

	settled(t, s) // nothing left for the writer to find Redis gone with
	admitErrs, probeErrs := counterValue(storeErrors.WithLabelValues(opAdmit)), counterValue(storeErrors.WithLabelValues(opProbe))
	mr.Close()
	// the ledger noted the 2 Redis admitted, and the one in flight
	local := admitted(t, s, name, cfg, Amount{Tokens: 200}, now)
	if local.Store() != "local" {
		t.Fatalf("with Redis down, admitted in %s", local.Store())
	}
	refused(t, s, name, cfg, Amount{}, now, ConcurrentRequests)
	for range 100 {
		s.Admit("other-"+name, cfg, Amount{}, now)
	}
	if got := counterValue(storeErrors.WithLabelValues(opAdmit)) - admitErrs; got != 1 {
		t.Errorf("admit errors grew by %v, want 1: requests do not try a failing Redis", got)
	}
	st := s.Status()
	if st.Healthy || st.State != "failing" || st.LastError == "" || strings.Contains(st.LastError, testRedisPassword) {
		t.Errorf("status while down: %+v", st)
	}
	if cs := s.ClientStatus(name, cfg, now); cs.From != "local" || cs.InFlight != 2 || cs.Reserved.Tokens != 300 {
		t.Errorf("client status while down: %+v", cs)
	}
	inRedis.Settle(Amount{Tokens: 70, Input: 50}, false, now)
	local.Settle(Amount{Tokens: 7, Input: 4}, true, now)
	deadline := time.Now().Add(20 * time.Second)
	for s.Status().Pending < 2 || counterValue(storeErrors.WithLabelValues(opProbe))-probeErrs < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no pending settlement or no probe: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, stateHealthy)
	settled(t, s)
	day := keyDay(clientTag(name), dayOf(now))
	if mr.HGet(day, "tok") != "78" || mr.HGet(day, "req") != "3" || mr.HGet(day, "etok") != "7" || mr.HGet(day, "rtok") != "0" {
		t.Errorf("after the outage, Redis's day: tok %s req %s etok %s rtok %s; want 78, 3, 7, 0",
			mr.HGet(day, "tok"), mr.HGet(day, "req"), mr.HGet(day, "etok"), mr.HGet(day, "rtok"))
	}
	if st := s.Status(); st.Pending != 0 || !st.Healthy {
		t.Errorf("status after recovery: %+v", st)
	}
	// fleet-wide again: Redis's window has its 2, so 2 more
	later := now.Add(time.Second)
	admitted(t, s, name, cfg, Amount{}, later)
	admitted(t, s, name, cfg, Amount{}, later)
	refused(t, s, name, cfg, Amount{}, later, RequestsPerMinute)

	// a script error: the same fallback
	mr.SetError("ERR injected failure")
	if tk := admitted(t, s, "script-"+name, cfg, Amount{}, later); tk.Store() != "local" {
		t.Errorf("with a script error: admitted in %s", tk.Store())
	}
	if st := s.Status(); st.Healthy || !strings.Contains(st.LastError, "injected failure") {
		t.Errorf("status with a script error: %+v", st)
	}
	mr.SetError("")
	waitState(t, r, stateHealthy)

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

// While Redis is down, what waits for it is bounded: the rest counts
// locally only, counted as dropped (a Redis reservation it would have
// settled is swept at its worst case).
func TestRedisPendingBounded(t *testing.T) {
	setProbeInterval(t, time.Hour)
	old := maxRedisPending
	maxRedisPending = 10
	t.Cleanup(func() { maxRedisPending = old })
	mr, url := newTestRedis(t)
	r := healthyRedis(t, url)
	s := NewStore(NewLedger(), r, 2*time.Second)
	mr.Close()
	for i := range 30 {
		admitted(t, s, fmt.Sprintf("down-%d", i), Config{}, Amount{}, t0).Settle(Amount{Tokens: 1}, false, t0)
	}
	waitState(t, r, stateFailing)
	flush(t, r)
	if st := s.Status(); st.Pending != 10 || st.PendingDropped != 20 {
		t.Errorf("status %+v, want 10 pending, 20 dropped", st)
	}
}

// A Redis that accepts connections but never answers: each request waits
// at most the store's timeout, then the instance counts alone.
func TestRedisSlowFallsBack(t *testing.T) {
	setProbeInterval(t, time.Hour)
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
	r, logs := newRedis(t, "redis://:"+testRedisPassword+"@"+ln.Addr().String()+"/3")
	s := NewStore(NewLedger(), r, 50*time.Millisecond)
	cfg := Config{RequestsPerMinute: 1}
	start := time.Now()
	tk := admitted(t, s, "slow", cfg, Amount{}, time.Now())
	took := time.Since(start)
	t.Logf("the first request waited %v for a Redis that never answers (timeout 50ms)", took)
	if took > 10*time.Second { // bounds a hang only
		t.Errorf("a request waited %v", took)
	}
	if tk.Store() != "local" {
		t.Errorf("admitted in %s", tk.Store())
	}
	refused(t, s, "slow", cfg, Amount{}, time.Now(), RequestsPerMinute)
	waitState(t, r, stateFailing)
	st := s.Status()
	if st.LastError == "" || strings.Contains(st.LastError, testRedisPassword) || st.Address != "redis://"+ln.Addr().String()+"/3" {
		t.Errorf("status: %+v", st)
	}
	if len(logs.FilterMessageSnippet("limits store not answering").All()) != 1 {
		t.Errorf("want one warning: %v", logs.All())
	}
}

// The password never shows: not in a parse error, a dial error, a
// refused AUTH, the status or a log line.
func TestRedisPasswordNeverShown(t *testing.T) {
	setProbeInterval(t, time.Hour)
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
		if _, err := NewRedis(bad, nil); err != nil && strings.Contains(err.Error(), "ecret") {
			t.Errorf("%q: the error shows the password: %v", bad, err)
		}
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	mr := miniredis.RunT(t)
	mr.RequireAuth("another-password")
	for _, addr := range []string{closedAddr, mr.Addr()} {
		r, logs := newRedis(t, "redis://:"+enc+"@"+addr+"/0")
		if !r.HasPassword() {
			t.Error("HasPassword is false")
		}
		s := NewStore(NewLedger(), r, 2*time.Second)
		if tk := admitted(t, s, "x", Config{RequestsPerMinute: 1}, Amount{}, time.Now()); tk.Store() != "local" {
			t.Fatalf("%s: admitted through a Redis that should fail", addr)
		}
		waitState(t, r, stateFailing)
		st, _ := json.Marshal(s.Status())
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
	}
}

// NewRedis and NewStore connect nowhere (Provision must not, and it also
// runs for `caddy validate`): the first admission does.
func TestRedisLazy(t *testing.T) {
	mr, url := newTestRedis(t)
	r, _ := newRedis(t, url)
	s := NewStore(NewLedger(), r, patient)
	if n := mr.TotalConnectionCount(); n != 0 {
		t.Fatalf("%d connections before the first use", n)
	}
	if r.Address() != "redis://"+mr.Addr()+"/0" {
		t.Errorf("address %q", r.Address())
	}
	if tk := admitted(t, s, "lazy", Config{}, Amount{}, t0); tk.Store() != "redis" {
		t.Errorf("the first admission counted %s", tk.Store())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.client.Ping(context.Background()).Err(); err != redis.ErrClosed {
		t.Errorf("after Close: %v, want the client closed", err)
	}
}

// The ACL of a Redis user for limits (docs/fleet.md): every command the
// scripts, the writer, the top and the probe run, on the module's keys
// only.
const redisACL = "on ~ai_gateway_auth:limits:* resetchannels -@all +evalsha +eval +exists +hincrby +hmget +hgetall +hdel +hset +pexpire +pexpireat +zadd +zcard +zrange +zrangebyscore +zrem +zremrangebyscore +zincrby +zrevrange"

// The same checks against a real redis-server (its Lua is not
// miniredis's): the ledger's semantics, the concurrency, the TTLs; and
// the ACL: a user with exactly the documented commands does everything,
// one without any one of them fails somewhere, and none may touch other
// keys.
func TestRedisRealServer(t *testing.T) {
	url := redisServer(t)
	r := healthyRedis(t, url)
	checkHistories(t, r, 7, 8, 9)
	checkConcurrentAdmit(t, NewStore(NewLedger(), r, patient), 100)

	ctx := context.Background()
	now := time.Now()
	s := NewStore(NewLedger(), r, patient)
	admitted(t, s, "ttl", Config{RequestsPerMinute: 5}, Amount{Tokens: 1}, now).Settle(Amount{Tokens: 1, USD: 0.1}, false, now)
	held := admitted(t, s, "ttl", Config{RequestsPerMinute: 5}, Amount{Tokens: 1}, now)
	settled(t, s)
	tag := clientTag("ttl")
	if ttl := r.client.PTTL(ctx, keyMinute(tag)).Val(); ttl <= 0 || ttl > 61*time.Second {
		t.Errorf("window TTL %v", ttl)
	}
	for k, until := range map[string]time.Time{
		keyDay(tag, dayOf(now)): dayExpiry(dayOf(now)), keyTop(dayOf(now)): dayExpiry(dayOf(now)),
		keyMonth(tag, monthOf(now)): monthExpiry(monthOf(now)), keyReservations(tag): monthExpiry(monthOf(now)),
	} {
		want := until.Sub(time.Now())
		if ttl := r.client.PTTL(ctx, k).Val(); ttl < want-time.Minute || ttl > want+time.Minute {
			t.Errorf("%s: TTL %v, want about %v", k, ttl, want)
		}
	}
	held.Abandon()

	commands := strings.Fields(redisACL)[4:]
	user := func(name string, acl []string) string {
		args := []any{"ACL", "SETUSER", name, "reset"}
		for _, f := range acl {
			args = append(args, f)
		}
		args = append(args, ">acl-user-pw-93d1")
		if err := r.client.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Replace(url, ":"+testRedisPassword+"@", name+":acl-user-pw-93d1@", 1)
	}
	// everything a store does: admit (with a sweep, a refusal of each
	// kind), settle (each path), correct, abandon, status, top, probe
	scenario := func(r *Redis) error {
		errs := func() (n float64) {
			for _, op := range []string{opAdmit, opSettle, opTop, opProbe, opClient} {
				n += counterValue(storeErrors.WithLabelValues(op))
			}
			return n
		}
		before := errs()
		s := NewStore(NewLedger(), r, patient)
		cfg := Config{RequestsPerMinute: 3, ConcurrentRequests: 2, TokensPerDay: 1000, USDPerMonth: 1}
		name := fmt.Sprintf("acl-%d", rand.Uint64())
		a, _ := s.Admit(name, cfg, Amount{Tokens: 600, USD: 0.5}, t0)
		b, _ := s.Admit(name, cfg, Amount{Tokens: 300}, t0)
		s.Admit(name, cfg, Amount{Tokens: 1}, t0)
		if a != nil && b != nil {
			b.Settle(Amount{Tokens: 100}, true, t0)
			b.Correct(Amount{Tokens: 50}, t0)
		}
		later := t0.Add(ReservationLifetime + time.Minute)
		if c, _ := s.Admit(name, cfg, Amount{Tokens: 10}, later); c != nil { // sweeps a
			c.Abandon()
		}
		if a != nil {
			a.Settle(Amount{Tokens: 500}, false, later)
		}
		s.ClientStatus(name, cfg, later)
		flush(t, r)
		if top, from := s.Top(t0, 10); from != "redis" || len(top) == 0 {
			return fmt.Errorf("top %v from %q", top, from)
		}
		if err := r.ping(); err != nil {
			return err
		}
		if n := errs() - before; n != 0 || r.Status().State != "healthy" {
			return fmt.Errorf("%v store errors: %+v", n, r.Status())
		}
		if st := s.ClientStatus(name, cfg, later); st.From != "redis" || st.Today.Tokens != 550 || st.Today.Requests != 2 || st.Today.EstimatedTokens != 0 {
			return fmt.Errorf("client status %+v", st)
		}
		return nil
	}
	if err := r.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	full := healthyRedis(t, user("aigw-limits", strings.Fields(redisACL)))
	if err := scenario(full); err != nil {
		t.Fatalf("ACL user: %v", err)
	}
	if err := full.client.Set(ctx, "other-app:key", "x", 0).Err(); err == nil {
		t.Error("the ACL user may write other keys: the documented ACL is too wide")
	}
	setProbeInterval(t, time.Hour)
	for i, c := range commands {
		acl := append(strings.Fields(redisACL)[:4:4], slices.Delete(slices.Clone(commands), i, i+1)...)
		if err := r.client.ScriptFlush(ctx).Err(); err != nil { // as after a restart: EVAL loads them again
			t.Fatal(err)
		}
		rr, _ := newRedis(t, user("aigw-less-"+strconv.Itoa(i), acl))
		rr.start()
		<-rr.first
		if rr.state.Load() != stateHealthy {
			t.Logf("without %s: the probe fails: %s", c, rr.Status().LastError)
		} else if err := scenario(rr); err == nil {
			t.Errorf("without %s, everything works: the documented ACL is wider than needed", c)
		} else {
			t.Logf("without %s: %v", c, err)
		}
	}
}
