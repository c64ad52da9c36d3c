package caddymodule

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Limits counted in Redis, for a fleet: every instance whose limits name
// the same Redis counts each client once, there. The rules are the
// ledger's (limits.go): a rolling minute counted per second, tokens and
// cost per UTC day, the same Retry-After.
//
// In Redis, under the prefix ai_gateway_auth:limits: (a client's keys
// carry a hash of its id, in a Redis Cluster hash tag, so that any id is
// a safe key and the admission script touches one slot):
//
//	{<h>}:rpm             hash: unix second -> requests admitted in it; expires 61 s after the last one
//	{<h>}:day:<date>      hash: id (the client id), in, out (tokens), cost (USD), req; expires 1 h after that UTC day
//	top:<date>            sorted set: <h> scored by the day's tokens, for the status route; expires with the day's hashes
//
// where <h> is the first 128 bits of SHA-256(client id), in hex, and
// <date> is the UTC day, 2006-01-02. Admission is one EVALSHA (the
// script checks the day's tokens and cost, then counts the request in
// the window, atomically); what an answer used is added by a background
// writer, in pipelined batches, one round trip each.
//
// Faults never stop traffic. A request waits for Redis at most
// redis_timeout (default redisWait, 50ms); when Redis fails
// (unreachable, slow, refused, a script error) the instance counts in
// its own ledger, as without redis, logs one warning, counts
// limit_store_errors_total{op}, shows the fault on the status route,
// and probes Redis once per redisProbeInterval until it answers (one
// info line then). What answers used meanwhile is kept (per client and
// day, bounded) and added to Redis when it is back.

// Where the keys live, and how long a day's keys outlive it.
const (
	redisKeyPrefix = "ai_gateway_auth:limits:"
	redisDayMargin = time.Hour
)

var (
	// redisWait is the longest a request waits for Redis, unless
	// redis_timeout says otherwise.
	redisWait = 50 * time.Millisecond
	// redisProbeInterval is the pause between probes of a failing Redis.
	redisProbeInterval = time.Second
	// redisSlowWait bounds what no request waits for: a probe, a batch of
	// records, the status route's read.
	redisSlowWait = time.Second
	// maxRedisPending bounds what is kept for Redis while it is down, in
	// (client, day) entries; beyond it, usage counts locally only.
	maxRedisPending = 10_000
)

const (
	redisQueueLen = 4096 // finished requests waiting for the writer
	redisBatchLen = 256  // (client, day) entries per pipelined batch
)

// Store ops, the label values of limit_store_errors_total.
const (
	storeOpAdmit  = "admit"
	storeOpRecord = "record"
	storeOpTop    = "top"
	storeOpProbe  = "probe"
)

var (
	limitStoreErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "limit_store_errors_total",
		Help:      "Failed round trips to the Redis that limits are counted in, by op (admit, record, top, probe). While it fails, each instance counts alone.",
	}, []string{"op"})

	storeErrAdmit  = limitStoreErrorsTotal.WithLabelValues(storeOpAdmit)
	storeErrRecord = limitStoreErrorsTotal.WithLabelValues(storeOpRecord)
	storeErrTop    = limitStoreErrorsTotal.WithLabelValues(storeOpTop)
	storeErrProbe  = limitStoreErrorsTotal.WithLabelValues(storeOpProbe)
)

func init() {
	collectors = append(collectors, limitStoreErrorsTotal)
}

// admitScript checks and counts one request, atomically.
//
//	KEYS[1] the client's minute window, KEYS[2] its day hash
//	ARGV[1] now (unix ms), ARGV[2] requests_per_minute, ARGV[3]
//	tokens_per_day, ARGV[4] usd_per_day (0: no limit), ARGV[5] the end
//	of the UTC day (unix ms)
//
// It returns {0, 0} when the request is admitted (and counted), else
// {1 tokens_per_day | 2 usd_per_day | 3 requests_per_minute, retry in
// ms}. With every limit 0 it touches nothing (the probe runs it so).
var admitScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local rpm, tpd, usd = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if tpd > 0 or usd > 0 then
  local d = redis.call('HMGET', KEYS[2], 'in', 'out', 'cost')
  if tpd > 0 and (tonumber(d[1]) or 0) + (tonumber(d[2]) or 0) >= tpd then
    return {1, tonumber(ARGV[5]) - now}
  end
  if usd > 0 and (tonumber(d[3]) or 0) >= usd then
    return {2, tonumber(ARGV[5]) - now}
  end
end
if rpm > 0 then
  local sec = math.floor(now / 1000)
  local w = redis.call('HGETALL', KEYS[1])
  local sum, live, stale = 0, {}, {}
  for i = 1, #w, 2 do
    local s, c = tonumber(w[i]), tonumber(w[i + 1])
    if s < sec - 60 then
      stale[#stale + 1] = w[i]
    else
      sum = sum + c
      live[#live + 1] = {s, c}
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[1], unpack(stale))
  end
  if sum >= rpm then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local gone = 0
    for _, sc in ipairs(live) do
      gone = gone + sc[2]
      if sum - gone < rpm then
        return {3, (sc[1] + 61) * 1000 - now}
      end
    end
    return {3, 60000}
  end
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
return {0, 0}
`)

// Admission results of admitScript, by code.
var redisRefusals = [...]string{1: limitTokensPerDay, 2: limitUSDPerDay, 3: limitRequestsPerMinute}

// clientTag is the part of a client's keys that stands for its id: a
// hash, so that any id (any length, any bytes) makes a safe, fixed-size
// key, and distinct ids never share one.
func clientTag(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:16])
}

func redisMinuteKey(tag string) string { return redisKeyPrefix + "{" + tag + "}:rpm" }

func redisDayKey(tag string, day int64) string {
	return redisKeyPrefix + "{" + tag + "}:day:" + dayDate(day)
}

func redisTopKey(day int64) string { return redisKeyPrefix + "top:" + dayDate(day) }

func dayDate(day int64) string { return time.Unix(day*86400, 0).UTC().Format(time.DateOnly) }

// redisDayExpiry is when a day's keys expire.
func redisDayExpiry(day int64) time.Time { return time.Unix((day+1)*86400, 0).Add(redisDayMargin) }

// Store states.
const (
	storeConnecting int32 = iota // not yet answered since it was set up
	storeHealthy
	storeFailing
)

// redisLimits is one Redis, shared by every handler and config that
// names the same URL (in redisPool), so by one client and its pool.
type redisLimits struct {
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
	records   chan redisDelta
	kick      chan struct{} // the writer has pending records to send

	mu          sync.Mutex
	stopped     bool // Destruct ran: no goroutine may start
	probing     bool
	since       time.Time // when the current state began
	lastErr     string
	lastErrAt   time.Time
	pending     map[deltaKey]*redisDelta // what waits for Redis to answer again
	pendingLost int64
}

// redisDelta is what a client used on a day, to be added in Redis.
type redisDelta struct {
	name                    string
	day                     int64
	input, output, requests int64
	cost                    float64
}

type deltaKey struct {
	name string
	day  int64
}

func (d *redisDelta) add(o redisDelta) {
	d.input += o.input
	d.output += o.output
	d.requests += o.requests
	d.cost += o.cost
}

var redisPool = caddy.NewUsagePool()

// redisPoolKey names a URL in redisPool without holding it.
func redisPoolKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "redis:" + hex.EncodeToString(sum[:])
}

// acquireRedisLimits returns the store for a resolved Redis URL, shared
// with every other user of the same URL; release it with
// redisPool.Delete(key). No connection is made here.
func acquireRedisLimits(raw string) (*redisLimits, string, error) {
	key := redisPoolKey(raw)
	v, _, err := redisPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		t, err := parseRedisURL(raw)
		if err != nil {
			return nil, err
		}
		return newRedisLimits(t), nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*redisLimits), key, nil
}

func newRedisLimits(t *redisTarget) *redisLimits {
	return &redisLimits{
		target:  t,
		client:  redis.NewClient(t.opts),
		logger:  caddy.Log().Named("http.handlers.ai_gateway_auth"),
		first:   make(chan struct{}),
		stop:    make(chan struct{}),
		records: make(chan redisDelta, redisQueueLen),
		kick:    make(chan struct{}, 1),
		pending: map[deltaKey]*redisDelta{},
		since:   time.Now(),
	}
}

// start begins, at the first use, the writer and the first connection.
func (r *redisLimits) start() {
	r.startOnce.Do(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped { // released before its first use
			return
		}
		r.done.Go(r.writer)
		r.startProbeLocked(false)
	})
}

// Destruct implements caddy.Destructor: the last config using this Redis
// is gone. What waits to be written is sent (bounded by redisSlowWait).
func (r *redisLimits) Destruct() error {
	r.mu.Lock()
	r.stopped = true
	close(r.stop)
	r.mu.Unlock()
	r.done.Wait()
	return r.client.Close()
}

// admit asks Redis whether name may send a request now, and counts it
// there if so. ok is false when Redis did not answer in time (or is
// known to be failing): the caller counts locally.
func (r *redisLimits) admit(name string, lim Limits, now time.Time) (refused string, retry time.Duration, ok bool) {
	r.start()
	wait := redisWait
	if lim.RedisTimeout > 0 {
		wait = time.Duration(lim.RedisTimeout)
	}
	deadline := time.Now().Add(wait)
	switch r.state.Load() {
	case storeFailing:
		return "", 0, false
	case storeConnecting: // the first requests wait for the first connection, within the same bound
		t := time.NewTimer(wait)
		select {
		case <-r.first:
		case <-t.C:
		}
		t.Stop()
		if r.state.Load() != storeHealthy {
			return "", 0, false
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	tag := clientTag(name)
	day := utcDay(now)
	res, err := admitScript.Run(ctx, r.client, []string{redisMinuteKey(tag), redisDayKey(tag, day)},
		now.UnixMilli(), lim.RequestsPerMinute, lim.TokensPerDay, lim.USDPerDay, (day+1)*86400_000).Int64Slice()
	if err == nil && (len(res) != 2 || res[0] < 0 || res[0] >= int64(len(redisRefusals))) {
		err = fmt.Errorf("the admission script answered %v", res)
	}
	if err != nil {
		r.fail(storeOpAdmit, err)
		return "", 0, false
	}
	r.answered()
	return redisRefusals[res[0]], time.Duration(res[1]) * time.Millisecond, true
}

// record hands what a finished request used to the writer; it never
// waits.
func (r *redisLimits) record(name string, u usage, now time.Time) {
	r.start()
	d := redisDelta{name: name, day: utcDay(now), input: u.input, output: u.output, requests: 1, cost: u.cost}
	select {
	case r.records <- d:
	default: // the writer is behind: keep it for the next batch
		r.mu.Lock()
		r.keepLocked(d)
		r.mu.Unlock()
		r.kickWriter()
	}
}

// keepLocked adds d to what waits for Redis. r.mu must be held.
func (r *redisLimits) keepLocked(d redisDelta) {
	k := deltaKey{d.name, d.day}
	if p := r.pending[k]; p != nil {
		p.add(d)
		return
	}
	if len(r.pending) >= maxRedisPending {
		r.pendingLost++
		storeErrRecord.Inc()
		return
	}
	dd := d
	r.pending[k] = &dd
}

func (r *redisLimits) kickWriter() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// writer sends finished requests to Redis in batches, one round trip
// each. While Redis fails they wait in r.pending, which is sent when it
// answers again.
func (r *redisLimits) writer() {
	batch := map[deltaKey]*redisDelta{}
	add := func(d redisDelta) {
		k := deltaKey{d.name, d.day}
		if p := batch[k]; p != nil {
			p.add(d)
		} else {
			batch[k] = &d
		}
	}
	for {
		stopping := false
		select {
		case <-r.stop:
			stopping = true
		case d := <-r.records:
			add(d)
		case <-r.kick:
		}
	drain:
		for len(batch) < redisBatchLen {
			select {
			case d := <-r.records:
				add(d)
			default:
				break drain
			}
		}
		r.mu.Lock()
		if r.state.Load() != storeHealthy {
			for _, d := range batch {
				r.keepLocked(*d)
			}
			r.mu.Unlock()
			clear(batch)
			if stopping {
				return
			}
			continue
		}
		for k, d := range r.pending {
			if len(batch) >= redisBatchLen {
				r.kickWriter() // the rest in the next batch
				break
			}
			if p := batch[k]; p != nil {
				p.add(*d)
			} else {
				batch[k] = d
			}
			delete(r.pending, k)
		}
		r.mu.Unlock()
		if len(batch) > 0 {
			if err := r.write(batch); err != nil {
				r.fail(storeOpRecord, err)
				r.mu.Lock()
				for _, d := range batch {
					r.keepLocked(*d)
				}
				r.mu.Unlock()
			} else {
				r.answered()
			}
			clear(batch)
		}
		if stopping {
			if len(r.records) > 0 {
				continue // what came in meanwhile, once more
			}
			return
		}
	}
}

// write adds a batch to the clients' day counts, in one pipeline.
func (r *redisLimits) write(batch map[deltaKey]*redisDelta) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	today := utcDay(time.Now())
	pipe := r.client.Pipeline()
	for _, d := range batch {
		if d.day < today-1 {
			continue // its keys have expired: nothing to add to
		}
		tag := clientTag(d.name)
		key, top, exp := redisDayKey(tag, d.day), redisTopKey(d.day), redisDayExpiry(d.day)
		if d.input != 0 {
			pipe.HIncrBy(ctx, key, "in", d.input)
		}
		if d.output != 0 {
			pipe.HIncrBy(ctx, key, "out", d.output)
		}
		if d.cost != 0 {
			pipe.HIncrByFloat(ctx, key, "cost", d.cost)
		}
		pipe.HIncrBy(ctx, key, "req", d.requests)
		pipe.HSet(ctx, key, "id", d.name)
		pipe.ExpireAt(ctx, key, exp)
		pipe.ZIncrBy(ctx, top, float64(d.input+d.output), tag)
		pipe.ExpireAt(ctx, top, exp)
	}
	if pipe.Len() == 0 {
		return nil
	}
	_, err := pipe.Exec(ctx)
	return err
}

// top reads the n clients with the most tokens today, fleet-wide.
func (r *redisLimits) top(now time.Time, n int) ([]ClientUsage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	day := utcDay(now)
	tags, err := r.client.ZRevRange(ctx, redisTopKey(day), 0, int64(n-1)).Result()
	if err != nil || len(tags) == 0 {
		return nil, err
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(tags))
	for i, tag := range tags {
		cmds[i] = pipe.HMGet(ctx, redisDayKey(tag, day), "id", "in", "out", "cost", "req")
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
		num := func(i int) string { s, _ := v[i].(string); return s }
		in, _ := strconv.ParseInt(num(1), 10, 64)
		outTokens, _ := strconv.ParseInt(num(2), 10, 64)
		cost, _ := strconv.ParseFloat(num(3), 64)
		req, _ := strconv.ParseInt(num(4), 10, 64)
		out = append(out, ClientUsage{Client: id, Requests: req, InputTokens: in, OutputTokens: outTokens, Cost: cost})
	}
	slices.SortFunc(out, func(a, b ClientUsage) int {
		if c := cmp.Compare(b.InputTokens+b.OutputTokens, a.InputTokens+a.OutputTokens); c != 0 {
			return c
		}
		return cmp.Compare(a.Client, b.Client)
	})
	return out, nil
}
