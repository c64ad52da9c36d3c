package limits

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// How a Redis of limits is doing: a failure switches the instance to
// counting alone (one warning), a probe switches it back (one info
// line), and Status shows where it stands.

// answered notes a round trip that worked.
func (r *Redis) answered() { r.lastOK.Store(time.Now().UnixNano()) }

// fail notes a failed round trip. The first failure of a healthy store
// logs one warning and starts the probe; the instance counts locally
// until the probe finds Redis answering.
func (r *Redis) fail(op string, err error) {
	storeErrors.WithLabelValues(op).Inc()
	msg := r.target.scrub(err.Error())
	now := time.Now()
	r.mu.Lock()
	r.lastErr, r.lastErrAt = msg, now
	was := r.state.Load()
	if was != stateFailing {
		r.state.Store(stateFailing)
		r.since = now
	}
	r.mu.Unlock()
	if was != stateFailing {
		r.logger.Warn("limits store not answering; counting limits on this instance alone until it does (a client may get up to its limit once per instance meanwhile)",
			zap.String("store", "redis"), zap.String("address", r.target.shown), zap.String("op", op), zap.String("error", msg))
		r.startProbe(true)
	}
}

// startProbe runs the probe unless it runs already: after a pause (none
// for the first connection), once per redisProbeInterval until Redis
// answers, then the store is healthy again.
func (r *Redis) startProbe(pause bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startProbeLocked(pause)
}

// startProbeLocked is startProbe with r.mu held.
func (r *Redis) startProbeLocked(pause bool) {
	if r.probing || r.stopped {
		return
	}
	r.probing = true
	r.done.Go(func() { r.probe(pause) })
}

func (r *Redis) probe(pause bool) {
	t := time.NewTimer(0)
	if pause {
		t.Reset(redisProbeInterval)
	}
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.mu.Lock()
			r.probing = false
			r.mu.Unlock()
			r.firstOnce.Do(func() { close(r.first) })
			return
		case <-t.C:
		}
		err := r.ping()
		if err != nil {
			r.fail(opProbe, err) // warns if this is the first failure
			r.firstOnce.Do(func() { close(r.first) })
			t.Reset(redisProbeInterval)
			continue
		}
		r.answered()
		now := time.Now()
		r.mu.Lock()
		r.probing = false
		was, down := r.state.Load(), now.Sub(r.since)
		r.state.Store(stateHealthy)
		r.since = now
		r.mu.Unlock()
		r.firstOnce.Do(func() { close(r.first) })
		if was == stateFailing {
			r.logger.Info("limits store answers again; counting limits fleet-wide",
				zap.String("store", "redis"), zap.String("address", r.target.shown), zap.Duration("failed_for", down))
		} else {
			r.logger.Debug("limits store connected", zap.String("store", "redis"), zap.String("address", r.target.shown))
		}
		r.kickWriter() // what waited for Redis
		return
	}
}

// ping runs each script in its probe mode (it writes nothing): it checks
// the connection, the credentials and the permission to run them, and
// has Redis cache them for the writer's pipelines.
func (r *Redis) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), redisSlowWait)
	defer cancel()
	keys := clientKeys(clientTag(""), 0, 0)
	if err := admitScript.Run(ctx, r.client, keys, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "", 0, 0, 0, 1, 0).Err(); err != nil {
		return err
	}
	if err := settleScript.Run(ctx, r.client, keys[1:5], "", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "").Err(); err != nil {
		return err
	}
	return statusScript.Run(ctx, r.client, keys, 0, 0, 0, 1).Err()
}

// Status is how a store counts, for the status route.
type Status struct {
	// Store is "local" (each instance counts alone) or "redis".
	Store string `json:"store"`
	// Address is the Redis URL without its credentials.
	Address string `json:"address,omitempty"`
	// Healthy: counts are fleet-wide now. False while connecting or
	// failing: the instance counts alone. Always true for local.
	Healthy bool `json:"healthy"`
	// State is connecting, healthy or failing; Since is when it began.
	State string    `json:"state,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// LastOK is the last round trip that worked.
	LastOK time.Time `json:"last_ok,omitzero"`
	// LastError is the last failure (never a password), at LastErrorAt.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Pending is how many settlements, and (client, day, month) sums of
	// what was counted locally, wait to be sent to Redis;
	// PendingDropped how many found that list full.
	Pending        int   `json:"pending,omitempty"`
	PendingDropped int64 `json:"pending_dropped,omitempty"`
}

// Status says how Redis is doing; it starts the first connection if no
// request has.
func (r *Redis) Status() Status {
	r.start()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{
		Store: "redis", Address: r.target.shown, Since: r.since.UTC(), LastError: r.lastErr,
		Pending: r.pendingLenLocked(), PendingDropped: r.pendingDropped,
	}
	if !r.lastErrAt.IsZero() {
		st.LastErrorAt = r.lastErrAt.UTC()
	}
	if ns := r.lastOK.Load(); ns != 0 {
		st.LastOK = time.Unix(0, ns).UTC()
	}
	switch r.state.Load() {
	case stateConnecting:
		st.State = "connecting"
	case stateHealthy:
		st.State, st.Healthy = "healthy", true
	default:
		st.State = "failing"
	}
	return st
}

// healthy reports whether Redis answers now (starting it if needed).
func (r *Redis) healthy() bool {
	r.start()
	return r.state.Load() == stateHealthy
}
