package limits

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const testRedisPassword = "redis-test-pw-Zq81xK0c"

// patient is the Redis timeout of tests about what Redis counts: long
// enough that a loaded machine (-race, 2 cores) never turns a slow
// answer into a fallback. Tests about faults use short ones.
const patient = 20 * time.Second

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// setProbeInterval probes a failing Redis every d until the test ends.
func setProbeInterval(t testing.TB, d time.Duration) {
	old := redisProbeInterval
	redisProbeInterval = d
	t.Cleanup(func() { redisProbeInterval = old })
}

// newTestRedis is a miniredis that requires testRedisPassword, and its
// URL.
func newTestRedis(t testing.TB) (*miniredis.Miniredis, string) {
	mr := miniredis.RunT(t)
	mr.RequireAuth(testRedisPassword)
	return mr, "redis://:" + testRedisPassword + "@" + mr.Addr() + "/0"
}

// newRedis is a Redis for url, closed when the test ends, with its log
// lines observed.
func newRedis(t testing.TB, url string) (*Redis, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	r, err := NewRedis(url, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, logs
}

// healthyRedis is newRedis, once it answers.
func healthyRedis(t testing.TB, url string) *Redis {
	t.Helper()
	r, _ := newRedis(t, url)
	waitState(t, r, stateHealthy)
	return r
}

// waitState waits until the store is in state (or fails the test after a
// deadline that only bounds a hang).
func waitState(t testing.TB, r *Redis, state int32) {
	t.Helper()
	r.start()
	deadline := time.Now().Add(20 * time.Second)
	for r.state.Load() != state {
		if time.Now().After(deadline) {
			t.Fatalf("store state %d, want %d: %+v", r.state.Load(), state, r.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flush waits for r's writer (a hang fails the test).
func flush(t testing.TB, r *Redis) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// redisServer starts a real redis-server on a free loopback port (no
// persistence), with a password, or skips the test when there is none.
func redisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH (apt-get install redis-server, or ./test.sh): the tests against a real Redis are skipped")
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

// backend makes the stores of one kind of test: a local ledger, a
// miniredis, a real redis-server. A fleet is several stores, each with a
// ledger and a Redis client of its own, on one Redis.
type backend struct {
	name  string
	fleet func(t *testing.T, n int) []*Store
}

func backends() []backend {
	return []backend{
		{"local", func(t *testing.T, n int) []*Store {
			return []*Store{NewStore(NewLedger(), nil, 0)}
		}},
		{"miniredis", func(t *testing.T, n int) []*Store {
			_, url := newTestRedis(t)
			return redisFleet(t, url, n)
		}},
		{"redis-server", func(t *testing.T, n int) []*Store {
			return redisFleet(t, redisServer(t), n)
		}},
	}
}

func redisFleet(t *testing.T, url string, n int) []*Store {
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = NewStore(NewLedger(), healthyRedis(t, url), patient)
	}
	return stores
}

// settled waits until what the stores settled is in Redis.
func settled(t testing.TB, stores ...*Store) {
	t.Helper()
	for _, s := range stores {
		if s.redis != nil {
			flush(t, s.redis)
		}
	}
}

// admitted fails the test unless the request is admitted.
func admitted(t testing.TB, s *Store, client string, cfg Config, worst Amount, now time.Time) *Ticket {
	t.Helper()
	tk, ref := s.Admit(client, cfg, worst, now)
	if ref != nil {
		t.Fatalf("%s at %s: refused: %+v", client, now.Format(time.DateTime), *ref)
	}
	return tk
}

// refused fails the test unless the request is refused by limit.
func refused(t testing.TB, s *Store, client string, cfg Config, worst Amount, now time.Time, limit string) *Refusal {
	t.Helper()
	tk, ref := s.Admit(client, cfg, worst, now)
	if ref == nil {
		tk.Abandon()
		t.Fatalf("%s at %s: admitted, want refused by %s", client, now.Format(time.DateTime), limit)
	}
	if ref.Limit != limit {
		t.Fatalf("%s at %s: refused by %s (%+v), want %s", client, now.Format(time.DateTime), ref.Limit, *ref, limit)
	}
	return ref
}
