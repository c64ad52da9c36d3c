package limits

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// The writer: settlements reach Redis in the background, in pipelined
// batches (one round trip for up to redisBatchLen of them), so that the
// end of an answer never waits for Redis. While Redis fails they wait,
// bounded, and are sent when it answers again.

// settleOp ends one reservation in Redis (settleScript).
type settleOp struct {
	client, member, rid string
	day, month          int64
	worst, actual       amt
	est                 bool
	req                 int64 // 1, or 0 for a request that never went upstream
}

// delta is what to add to a client's day and month hashes (and to the
// day's top): a settlement counted locally, a correction, the tokens of
// a sweep for the top.
type delta struct {
	client     string
	day, month int64
	c          counts
	top        int64
}

type deltaKey struct {
	client     string
	day, month int64
}

func (d *delta) add(o *delta) {
	d.c.tok += o.c.tok
	d.c.in += o.c.in
	d.c.nusd += o.c.nusd
	d.c.req += o.c.req
	d.c.etok += o.c.etok
	d.c.enusd += o.c.enusd
	d.c.ereq += o.c.ereq
	d.top += o.top
}

// op is one item of the writer's queue: a settlement, a delta, or a
// flush mark (closed once everything queued before it was attempted).
type op struct {
	s     *settleOp
	d     *delta
	flush chan struct{}
}

// enqueue hands o to the writer; it never waits. With the queue full, o
// waits with what is pending.
func (r *Redis) enqueue(o op) {
	r.start()
	select {
	case r.queue <- o:
		return
	default:
	}
	r.mu.Lock()
	r.keepLocked(o)
	r.mu.Unlock()
	r.kickWriter()
}

// keepLocked adds o to what waits for Redis, within maxRedisPending.
// r.mu must be held.
func (r *Redis) keepLocked(o op) {
	switch {
	case o.flush != nil:
		close(o.flush)
	case o.d != nil:
		k := deltaKey{o.d.client, o.d.day, o.d.month}
		if p := r.pendingDeltas[k]; p != nil {
			p.add(o.d)
			return
		}
		if r.pendingLenLocked() >= maxRedisPending {
			r.dropLocked()
			return
		}
		d := *o.d
		r.pendingDeltas[k] = &d
	case o.s != nil:
		if r.pendingLenLocked() >= maxRedisPending {
			r.dropLocked()
			return
		}
		r.pendingOps = append(r.pendingOps, o.s)
	}
}

func (r *Redis) pendingLenLocked() int { return len(r.pendingOps) + len(r.pendingDeltas) }

// dropLocked counts a settlement that found the wait list full: counted
// locally only (a reservation it would have settled is swept at its
// worst case).
func (r *Redis) dropLocked() {
	r.pendingDropped++
	storeErrSettle.Inc()
}

func (r *Redis) kickWriter() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Flush waits until every settlement handed to the writer before it was
// sent to Redis, or kept to be sent when Redis answers again, or ctx
// ends.
func (r *Redis) Flush(ctx context.Context) error {
	r.start()
	mark := make(chan struct{})
	select {
	case r.queue <- op{flush: mark}:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stop:
		return nil
	}
	select {
	case <-mark:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stop:
		return nil
	}
}

// batch is what one round trip sends.
type batch struct {
	ops    []*settleOp
	deltas map[deltaKey]*delta
	marks  []chan struct{}
}

func (b *batch) len() int { return len(b.ops) + len(b.deltas) }

func (b *batch) add(o op) {
	switch {
	case o.flush != nil:
		b.marks = append(b.marks, o.flush)
	case o.d != nil:
		k := deltaKey{o.d.client, o.d.day, o.d.month}
		if p := b.deltas[k]; p != nil {
			p.add(o.d)
		} else {
			d := *o.d
			b.deltas[k] = &d
		}
	case o.s != nil:
		b.ops = append(b.ops, o.s)
	}
}

// writer sends settlements to Redis in batches, one round trip each.
// While Redis fails they wait in the pending lists, sent first when it
// answers again.
func (r *Redis) writer() {
	b := &batch{deltas: map[deltaKey]*delta{}}
	for {
		stopping := false
		select {
		case <-r.stop:
			stopping = true
		case o := <-r.queue:
			b.add(o)
		case <-r.kick:
		}
	drain:
		for b.len() < redisBatchLen {
			select {
			case o := <-r.queue:
				b.add(o)
			default:
				break drain
			}
		}
		r.mu.Lock()
		if r.state.Load() != stateHealthy {
			for _, s := range b.ops {
				r.keepLocked(op{s: s})
			}
			for _, d := range b.deltas {
				r.keepLocked(op{d: d})
			}
			r.mu.Unlock()
			r.finish(b)
			if stopping {
				return
			}
			continue
		}
		// what waited goes first, then the new
		if len(r.pendingOps) > 0 || len(r.pendingDeltas) > 0 {
			n := min(len(r.pendingOps), max(redisBatchLen-b.len(), 0))
			b.ops = append(r.pendingOps[:n:n], b.ops...)
			r.pendingOps = r.pendingOps[n:]
			if len(r.pendingOps) == 0 {
				r.pendingOps = nil
			}
			for k, d := range r.pendingDeltas {
				if b.len() >= redisBatchLen {
					break
				}
				if p := b.deltas[k]; p != nil {
					p.add(d)
				} else {
					b.deltas[k] = d
				}
				delete(r.pendingDeltas, k)
			}
			if r.pendingLenLocked() > 0 {
				r.kickWriter() // the rest in the next batch
			}
		}
		r.mu.Unlock()
		if b.len() > 0 {
			failed, err := r.write(b)
			if err != nil {
				r.fail(opSettle, err)
				r.mu.Lock()
				for _, o := range failed {
					r.keepLocked(o)
				}
				r.mu.Unlock()
			} else {
				r.answered()
			}
		}
		r.finish(b)
		if stopping {
			if len(r.queue) > 0 {
				continue // what came in meanwhile, once more
			}
			return
		}
	}
}

func (b *batch) reset() {
	b.ops = b.ops[:0]
	clear(b.deltas)
	b.marks = b.marks[:0]
}

// finish closes b's flush marks and empties it.
func (r *Redis) finish(b *batch) {
	for _, m := range b.marks {
		close(m)
	}
	b.reset()
}

// write sends a batch in one pipeline (and, if Redis had forgotten the
// settle script, its settlements once more with the script's text). It
// returns what failed, to be kept for later: a failed batch may have been
// partly applied, so a retry may count some of it twice (over, never
// under).
func (r *Redis) write(b *batch) (failed []op, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	pipe := r.client.Pipeline()
	tops := map[int64]bool{} // the days whose top this batch touches
	settles := make([]*redis.Cmd, len(b.ops))
	for i, s := range b.ops {
		settles[i] = settleScript.EvalSha(ctx, pipe, settleKeys(s), settleArgs(s)...)
		addTop(ctx, pipe, tops, s.client, s.day, s.actual.tok)
	}
	type span struct {
		d          *delta
		start, end int
	}
	spans := make([]span, 0, len(b.deltas))
	for _, d := range b.deltas {
		start := pipe.Len()
		addDelta(ctx, pipe, tops, d)
		spans = append(spans, span{d, start, pipe.Len()})
	}
	for day := range tops {
		pipe.PExpireAt(ctx, keyTop(day), dayExpiry(day))
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		r.settled(b.ops, settles)
		return nil, nil
	}
	for _, sp := range spans {
		for _, c := range cmds[sp.start:sp.end] {
			if c.Err() != nil {
				failed = append(failed, op{d: sp.d})
				break
			}
		}
	}
	var ok, again []*settleOp
	var okCmds []*redis.Cmd
	for i, c := range settles {
		switch e := c.Err(); {
		case e == nil:
			ok = append(ok, b.ops[i])
			okCmds = append(okCmds, c)
		case redis.HasErrorPrefix(e, "NOSCRIPT"):
			again = append(again, b.ops[i])
		default:
			failed = append(failed, op{s: b.ops[i]})
		}
	}
	if len(again) > 0 {
		pipe := r.client.Pipeline()
		retried := make([]*redis.Cmd, len(again))
		for i, s := range again {
			retried[i] = settleScript.Eval(ctx, pipe, settleKeys(s), settleArgs(s)...)
		}
		_, _ = pipe.Exec(ctx)
		for i, c := range retried {
			if e := c.Err(); e != nil {
				failed = append(failed, op{s: again[i]})
				err = e
			} else {
				ok = append(ok, again[i])
				okCmds = append(okCmds, c)
			}
		}
	}
	r.settled(ok, okCmds)
	if len(failed) == 0 {
		return nil, nil
	}
	return failed, err
}

// settled reads the settle script's answers: a settlement that found
// its reservation swept had its tokens counted in the top twice (worst
// by the sweep, actual by the batch): the next batch takes worst back.
func (r *Redis) settled(ops []*settleOp, cmds []*redis.Cmd) {
	for i, c := range cmds {
		if path, err := c.Int64(); err == nil && path == 1 && ops[i].worst.tok != 0 {
			s := ops[i]
			r.enqueue(op{d: &delta{client: s.client, day: s.day, top: -s.worst.tok}})
		}
	}
}

func settleKeys(s *settleOp) []string {
	tag := clientTag(s.client)
	return []string{keyDay(tag, s.day), keyMonth(tag, s.month), keyReservations(tag), keySwept(tag)}
}

func settleArgs(s *settleOp) []any {
	est := 0
	if s.est {
		est = 1
	}
	return []any{s.member, s.rid, s.worst.tok, s.worst.nusd, s.worst.in, s.actual.tok, s.actual.nusd, s.actual.in,
		est, s.req, dayExpiry(s.day).UnixMilli(), monthExpiry(s.month).UnixMilli(), s.client}
}

// addTop adds tokens to the client's score in the day's top (whose
// expiry the batch sets once).
func addTop(ctx context.Context, pipe redis.Pipeliner, tops map[int64]bool, client string, day, tokens int64) {
	if tokens == 0 {
		return
	}
	pipe.ZIncrBy(ctx, keyTop(day), float64(tokens), clientTag(client))
	tops[day] = true
}

// addDelta adds d to the client's day and month hashes, and to the top.
func addDelta(ctx context.Context, pipe redis.Pipeliner, tops map[int64]bool, d *delta) {
	if d.c != (counts{}) {
		tag := clientTag(d.client)
		for _, k := range []struct {
			key string
			exp time.Time
		}{{keyDay(tag, d.day), dayExpiry(d.day)}, {keyMonth(tag, d.month), monthExpiry(d.month)}} {
			for _, f := range []struct {
				name string
				v    int64
			}{{"tok", d.c.tok}, {"in", d.c.in}, {"nusd", d.c.nusd}, {"req", d.c.req}, {"etok", d.c.etok}, {"enusd", d.c.enusd}, {"ereq", d.c.ereq}} {
				if f.v != 0 {
					pipe.HIncrBy(ctx, k.key, f.name, f.v)
				}
			}
			pipe.HSet(ctx, k.key, "id", d.client)
			pipe.PExpireAt(ctx, k.key, k.exp)
		}
	}
	addTop(ctx, pipe, tops, d.client, d.day, d.top)
}
