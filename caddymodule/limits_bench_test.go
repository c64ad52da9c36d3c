package caddymodule

import (
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
)

// The cost of admission per request: counting in the process's ledger,
// and counting in Redis (one EVALSHA on loopback, to a real
// redis-server; skipped when there is none). The difference is the
// latency a shared Redis adds to each request:
//
//	go test ./caddymodule -run '^$' -bench 'LimitAdmit' -benchtime 2s -count 3
//
// The clients rotate over 1000 ids, each under its limits, with every
// limit set (the script reads the day's hash and the minute's). The
// Redis runs wait up to 5 s, not redisWait, so that every admission is
// a round trip to Redis even on a loaded machine (a fallback would
// measure the ledger).
func BenchmarkLimitAdmit(b *testing.B) {
	lim := Limits{RequestsPerMinute: 1_000_000, TokensPerDay: 1 << 40, USDPerDay: 1e9}
	names := make([]string, 1000)
	for i := range names {
		names[i] = "sk-aigw-bench-sandbox-" + strconv.Itoa(i)
	}
	run := func(b *testing.B, s *spend) {
		i := 0
		for b.Loop() {
			if refused, _ := s.admit(names[i%len(names)], s.limits, time.Now()); refused != "" {
				b.Fatalf("refused: %s", refused)
			}
			i++
		}
	}
	b.Run("local", func(b *testing.B) {
		run(b, &spend{ledger: newLedger(), limits: lim, limited: true, logger: zap.NewNop()})
	})
	b.Run("redis", func(b *testing.B) {
		setRedisWaits(b, 5*time.Second, time.Second)
		url := redisServer(b)
		r, _ := redisStore(b, url)
		waitState(b, r, storeHealthy)
		s := &spend{ledger: newLedger(), limits: lim, limited: true, shared: r, logger: zap.NewNop()}
		errs := counterValue(storeErrAdmit)
		run(b, s)
		if n := counterValue(storeErrAdmit) - errs; n > 0 {
			b.Errorf("%v admissions fell back to local counting: the figure is not Redis's", n)
		}
	})
	// the floor: one PING on the same client and loopback
	b.Run("redis-ping", func(b *testing.B) {
		url := redisServer(b)
		r, _ := redisStore(b, url)
		ctx := b.Context()
		for b.Loop() {
			if err := r.client.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis-parallel", func(b *testing.B) {
		setRedisWaits(b, 5*time.Second, time.Second)
		url := redisServer(b)
		r, _ := redisStore(b, url)
		waitState(b, r, storeHealthy)
		s := &spend{ledger: newLedger(), limits: lim, limited: true, shared: r, logger: zap.NewNop()}
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				s.admit(names[i%len(names)], s.limits, time.Now())
				i++
			}
		})
	})
}
