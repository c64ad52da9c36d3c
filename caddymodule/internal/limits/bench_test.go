package limits

import (
	"strconv"
	"testing"
	"time"
)

// The cost of a hard budget per request: reserve (Admit) and settle,
// in the process's ledger, and in Redis (a real redis-server on
// loopback; skipped when there is none):
//
//	go test ./caddymodule/internal/limits -run '^$' -bench AdmitSettle -benchtime 2s -count 3
//
// The clients rotate over 1000 ids, each under its limits, with every
// limit set (the script reads the day's and the month's hashes, the
// minute's window and the reservations). /redis is what a request
// waits for: the admission's round trip (one EVALSHA), its settlement
// handed to the writer; /redis-flushed also waits for the settlement's
// own round trip (a pipeline of one, the worst case: under load the
// writer sends up to 256 per round trip), so it is reserve + settle end
// to end; /redis-ping is the floor, one PING on the same client. The
// Redis runs wait up to 20 s, not 50 ms, so that every admission is a
// round trip to Redis even on a loaded machine (a fallback would
// measure the ledger).
func BenchmarkAdmitSettle(b *testing.B) {
	cfg := Config{RequestsPerMinute: 1_000_000, ConcurrentRequests: 1000, TokensPerDay: 1 << 40, TokensPerMonth: 1 << 41, USDPerDay: 1e6, USDPerMonth: 1e7}
	worst, actual := Amount{Tokens: 140_000, Input: 100_000, USD: 0.55}, Amount{Tokens: 101_200, Input: 100_000, USD: 0.31}
	names := make([]string, 1000)
	for i := range names {
		names[i] = "sandbox:team_bench/prj_bench/sbx_" + strconv.Itoa(i)
	}
	run := func(b *testing.B, s *Store, flushed bool) {
		errs := counterValue(storeErrors.WithLabelValues(opAdmit))
		i := 0
		for b.Loop() {
			now := time.Now()
			tk, ref := s.Admit(names[i%len(names)], cfg, worst, now)
			if ref != nil {
				b.Fatalf("refused: %+v", *ref)
			}
			tk.Settle(actual, false, now)
			if flushed {
				flush(b, s.redis)
			}
			i++
		}
		if n := counterValue(storeErrors.WithLabelValues(opAdmit)) - errs; n > 0 {
			b.Errorf("%v admissions fell back to local counting: the figure is not Redis's", n)
		}
	}
	b.Run("local", func(b *testing.B) {
		run(b, NewStore(NewLedger(), nil, 0), false)
	})
	b.Run("redis", func(b *testing.B) {
		run(b, NewStore(NewLedger(), healthyRedis(b, redisServer(b)), patient), false)
	})
	b.Run("redis-flushed", func(b *testing.B) {
		run(b, NewStore(NewLedger(), healthyRedis(b, redisServer(b)), patient), true)
	})
	b.Run("redis-ping", func(b *testing.B) {
		r := healthyRedis(b, redisServer(b))
		ctx := b.Context()
		for b.Loop() {
			if err := r.client.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis-parallel", func(b *testing.B) {
		s := NewStore(NewLedger(), healthyRedis(b, redisServer(b)), patient)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				now := time.Now()
				if tk, _ := s.Admit(names[i%len(names)], cfg, worst, now); tk != nil {
					tk.Settle(actual, false, now)
				}
				i++
			}
		})
	})
}
