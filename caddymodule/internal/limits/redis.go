package limits

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Where the keys live, and how long what they count outlives its period.
const (
	redisKeyPrefix = "ai_gateway_auth:limits:"
	redisDayMargin = time.Hour
	// sweptMarkerLife is how long a swept reservation's marker waits for
	// its late settlement: a request that runs longer than
	// ReservationLifetime plus this is counted twice (worst + actual).
	sweptMarkerLife = 24 * time.Hour
)

var (
	// redisProbeInterval is the pause between probes of a failing Redis.
	redisProbeInterval = time.Second
	// redisSlowWait bounds what no request waits for: a probe, a batch of
	// settlements, the status route's reads.
	redisSlowWait = time.Second
	// maxRedisPending bounds what is kept for Redis while it is down:
	// settlements of reservations, and (client, day, month) sums of
	// what was counted locally; beyond it, they count locally only.
	maxRedisPending = 10_000
)

const (
	redisQueueLen = 4096 // settlements waiting for the writer
	redisBatchLen = 256  // operations per pipelined batch
)

// clientTag is the part of a client's keys that stands for its id: a
// hash, so that any id (any length, any bytes) makes a safe, fixed-size
// key, and distinct ids never share one.
func clientTag(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:16])
}

func clientBase(tag string) string { return redisKeyPrefix + "{" + tag + "}:" }

func keyMinute(tag string) string             { return clientBase(tag) + "rpm" }
func keyDay(tag string, day int64) string     { return clientBase(tag) + "day:" + dayDate(day) }
func keyMonth(tag string, month int64) string { return clientBase(tag) + "month:" + monthDate(month) }
func keyReservations(tag string) string       { return clientBase(tag) + "res" }
func keySwept(tag string) string              { return clientBase(tag) + "swept" }
func keyTop(day int64) string                 { return redisKeyPrefix + "top:" + dayDate(day) }

// When a period's keys expire.
func dayExpiry(day int64) time.Time     { return dayEnd(day).Add(redisDayMargin) }
func monthExpiry(month int64) time.Time { return monthEnd(month).Add(redisDayMargin) }
func clientKeys(tag string, day, month int64) []string {
	return []string{keyMinute(tag), keyDay(tag, day), keyMonth(tag, month), keyReservations(tag), keySwept(tag),
		keyDay(tag, day-1), keyMonth(tag, month-1)}
}

// Store states.
const (
	stateConnecting int32 = iota // not yet answered since it was set up
	stateHealthy
	stateFailing
)

// Redis is one Redis that limits are counted in, shared by every store
// (handler, config) that names the same URL: the glue keeps one per URL
// in a usage pool. It makes no connection until its first use.
type Redis struct {
	target *redisTarget
	client *redis.Client
	logger *zap.Logger

	state     atomic.Int32
	first     chan struct{} // closed when the first connection has been tried
	firstOnce sync.Once
	lastOK    atomic.Int64 // unix ns of the last answer

	startOnce sync.Once
	stop      chan struct{}
	done      sync.WaitGroup
	queue     chan op
	kick      chan struct{} // the writer has pending operations to send

	mu             sync.Mutex
	stopped        bool // Close ran: no goroutine may start
	probing        bool
	since          time.Time // when the current state began
	lastErr        string
	lastErrAt      time.Time
	pendingOps     []*settleOp         // settlements of reservations, in order
	pendingDeltas  map[deltaKey]*delta // what was counted locally, summed
	pendingDropped int64
}

// NewRedis checks a Redis URL (`redis://[[user]:password@]host[:port][/db]`,
// or `rediss://` for TLS) and sets up its client; no connection is made.
// The logger gets one warning when Redis starts failing and one info line
// when it answers again. No error, log line or status shows the URL's
// password.
func NewRedis(rawURL string, logger *zap.Logger) (*Redis, error) {
	t, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	r := &Redis{
		target:        t,
		client:        redis.NewClient(t.opts),
		logger:        logger,
		first:         make(chan struct{}),
		stop:          make(chan struct{}),
		queue:         make(chan op, redisQueueLen),
		kick:          make(chan struct{}, 1),
		pendingDeltas: map[deltaKey]*delta{},
		since:         time.Now(),
	}
	track(r, true)
	return r, nil
}

// Address is the URL without its credentials: scheme://host:port/db.
func (r *Redis) Address() string { return r.target.shown }

// HasPassword reports whether the URL carries a password.
func (r *Redis) HasPassword() bool { return r.target.hasPassword }

// start begins, at the first use, the writer and the first connection.
func (r *Redis) start() {
	r.startOnce.Do(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped { // closed before its first use
			return
		}
		r.done.Go(r.writer)
		r.startProbeLocked(false)
	})
}

// Close stops the writer, after it sent what waits (bounded by a
// second), and closes the client. It has the shape of caddy.Destructor's
// Destruct, which it is also named as.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	close(r.stop)
	r.mu.Unlock()
	r.done.Wait()
	track(r, false)
	return r.client.Close()
}

// Destruct is Close, for a caddy.UsagePool.
func (r *Redis) Destruct() error { return r.Close() }

// newRID is a reservation id: random, so ids from every instance of a
// fleet do not meet.
func newRID() string { return strconv.FormatUint(rand.Uint64()|1<<63, 16) }

// member is how a reservation is written in the reservations' sorted
// set: what a sweep needs to charge it.
func member(rid string, day, month int64, w amt) string {
	return rid + ":" + strconv.FormatInt(day, 10) + ":" + strconv.FormatInt(month, 10) + ":" +
		strconv.FormatInt(w.tok, 10) + ":" + strconv.FormatInt(w.nusd, 10) + ":" + strconv.FormatInt(w.in, 10)
}

// errNotAsked: Redis is failing (or did not connect in time); the
// admission was not sent.
var errNotAsked = errors.New("redis is not answering")

// admit runs the admission script. asked reports whether the script was
// sent (then, on an error, it may have reserved: the ticket settles the
// member there anyway). err is nil when Redis answered.
func (r *Redis) admit(client string, lim limitsOf, w amt, now time.Time, mem string, wait time.Duration) (ref *Refusal, asked bool, err error) {
	r.start()
	deadline := time.Now().Add(wait)
	switch r.state.Load() {
	case stateFailing:
		return nil, false, errNotAsked
	case stateConnecting: // the first requests wait for the first connection, within the same bound
		t := time.NewTimer(wait)
		select {
		case <-r.first:
		case <-t.C:
		}
		t.Stop()
		if r.state.Load() != stateHealthy {
			return nil, false, errNotAsked
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	tag := clientTag(client)
	day, month := dayOf(now), monthOf(now)
	ms := now.UnixMilli()
	res, err := admitScript.Run(ctx, r.client, clientKeys(tag, day, month),
		ms, lim.rpm, lim.conc, lim.tpd, lim.nupd, lim.tpm, lim.nupm, w.tok, w.nusd,
		day, month, dayEnd(day).UnixMilli(), monthEnd(month).UnixMilli(),
		mem, now.Add(ReservationLifetime).UnixMilli(), dayExpiry(day).UnixMilli(), monthExpiry(month).UnixMilli(),
		sweptMarkerLife.Milliseconds(), InFlightRetry.Milliseconds()).Slice()
	var v []int64
	if err == nil {
		v, err = int64s(res, 7)
	}
	if err == nil && (v[0] < 0 || v[0] >= int64(len(redisRefusals))) {
		err = fmt.Errorf("the admission script answered %v", res)
	}
	if err != nil {
		r.fail(opAdmit, err)
		return nil, true, err
	}
	r.answered()
	r.swept(client, day, v[4], v[5], v[6])
	if v[0] == 0 {
		return nil, true, nil
	}
	ref = &Refusal{Limit: redisRefusals[v[0]], RetryAfter: time.Duration(v[1]) * time.Millisecond, NeverFits: v[2] == 1}
	switch ref.Limit {
	case TokensPerDay, TokensPerMonth:
		ref.Left.Tokens = v[3]
	case USDPerDay, USDPerMonth:
		ref.Left.USD = usdOf(v[3])
	}
	return ref, true, nil
}

// swept counts what a script swept, and hands its tokens to the top.
func (r *Redis) swept(client string, day, n, today, yesterday int64) {
	if n == 0 {
		return
	}
	sweptRedis.Add(float64(n))
	if today != 0 {
		r.enqueue(op{d: &delta{client: client, day: day, top: today}})
	}
	if yesterday != 0 {
		r.enqueue(op{d: &delta{client: client, day: day - 1, top: yesterday}})
	}
}

// int64s reads a script's answer: n integers (as integers or strings).
func int64s(res []any, n int) ([]int64, error) {
	if len(res) != n {
		return nil, fmt.Errorf("a script answered %d values, want %d", len(res), n)
	}
	out := make([]int64, n)
	for i, x := range res {
		switch x := x.(type) {
		case int64:
			out[i] = x
		case string:
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("a script answered %q", x)
			}
			out[i] = v
		default:
			return nil, fmt.Errorf("a script answered %T", x)
		}
	}
	return out, nil
}

// view reads a client's counts (sweeping its expired reservations), in
// one round trip.
func (r *Redis) view(client string, now time.Time) (v clientView, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	tag := clientTag(client)
	day, month := dayOf(now), monthOf(now)
	res, err := statusScript.Run(ctx, r.client, clientKeys(tag, day, month), now.UnixMilli(), day, month, sweptMarkerLife.Milliseconds()).Slice()
	var x []int64
	if err == nil {
		x, err = int64s(res, 2*9+8)
	}
	if err != nil {
		r.fail(opClient, err)
		return v, err
	}
	r.answered()
	read := func(x []int64) (c counts, reserved amt) {
		return counts{tok: x[0], in: x[1], nusd: x[2], req: x[3], etok: x[4], enusd: x[5], ereq: x[6]}, amt{tok: x[7], nusd: x[8]}
	}
	v.day, v.dayReserved = read(x[0:9])
	v.month, v.monthReserved = read(x[9:18])
	v.minute, v.inFlight = x[18], x[19]
	v.reserved = amt{tok: x[20], in: x[21], nusd: x[22]}
	r.swept(client, day, x[23], x[24], x[25])
	return v, nil
}

// top reads the n clients with the most tokens today, fleet-wide.
func (r *Redis) top(now time.Time, n int) ([]ClientUsage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	day := dayOf(now)
	tags, err := r.client.ZRevRange(ctx, keyTop(day), 0, int64(n-1)).Result()
	if err != nil || len(tags) == 0 {
		return nil, err
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(tags))
	for i, tag := range tags {
		cmds[i] = pipe.HMGet(ctx, keyDay(tag, day), "id", "tok", "in", "nusd", "req", "etok")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]ClientUsage, 0, len(tags))
	for _, c := range cmds {
		v := c.Val()
		id, ok := v[0].(string)
		if !ok { // the day's hash expired or was removed
			continue
		}
		num := func(i int) int64 {
			s, _ := v[i].(string)
			n, _ := strconv.ParseInt(s, 10, 64)
			return n
		}
		out = append(out, usageOf(id, counts{tok: num(1), in: num(2), nusd: num(3), req: num(4), etok: num(5)}))
	}
	slices.SortFunc(out, byTokens)
	return out, nil
}
