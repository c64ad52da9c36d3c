package credential

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Backoff after a failed refresh: doubles from minBackoff up to maxBackoff,
// with ±20% jitter so that many proxies do not retry in step.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// DefaultForcedRefreshInterval is the least time between two refreshes
// forced by upstream 401s: however many requests are refused, and
// whatever made the gateway refuse them, a source mints at most once per
// interval on their word.
const DefaultForcedRefreshInterval = 10 * time.Second

// loadFunc produces the best credential a source can get right now, given
// the one it holds (which may be nil). With force, the upstream refused
// current: the result must be a different token (minted even when
// current is not due), or an error. It may do I/O.
type loadFunc func(ctx context.Context, current *Credential, force bool) (*Credential, error)

// refresher caches one source's credential and keeps it fresh. Readers
// take the credential from an atomic pointer; a background loop refreshes
// it refreshBefore ahead of its expiry; every refresh, however it is
// started, runs through one singleflight key, so there is at most one per
// source at a time; a failed refresh keeps the still-valid credential and
// retries with capped exponential backoff and jitter.
type refresher struct {
	kind          string
	refreshBefore time.Duration
	// expiryMargin, when set, replaces the default margin before exp in
	// which a token is not sent.
	expiryMargin time.Duration
	// forcedInterval is the least time between two forced refreshes.
	forcedInterval time.Duration
	load           loadFunc
	// onStart, if set, runs once when the loop starts (first use): the
	// fleet poll of a shared source starts with it.
	onStart func()
	// logger is the newest config's: a reload that keeps the state swaps it.
	logger atomic.Pointer[zap.Logger]

	current atomic.Pointer[Credential]
	group   singleflight.Group
	// loadMu runs one load at a time, scheduled or forced by a 401.
	loadMu sync.Mutex

	mu          sync.Mutex
	lastErr     error
	lastRefresh time.Time
	failures    int
	nextAttempt time.Time // no refresh before this while backing off
	// rejected holds tokens the upstream refused and that a different
	// token replaced (by digest, until their exp): they are never
	// installed or used again.
	rejected   map[[32]byte]time.Time
	lastForced time.Time // the last refresh forced by an upstream 401

	// ctx ends when the refresher stops, cancelling a refresh in flight.
	ctx       context.Context
	cancel    context.CancelFunc
	kick      chan struct{}
	startLoop sync.Once
	stopOnce  sync.Once
	done      chan struct{}
}

func newRefresher(kind string, refreshBefore time.Duration, load loadFunc, logger *zap.Logger) *refresher {
	ctx, cancel := context.WithCancel(context.Background())
	r := &refresher{
		kind:           kind,
		refreshBefore:  refreshBefore,
		forcedInterval: DefaultForcedRefreshInterval,
		load:           load,
		ctx:            ctx,
		cancel:         cancel,
		kick:           make(chan struct{}, 1),
		done:           make(chan struct{}),
	}
	r.setLogger(logger)
	return r
}

// setLogger makes the refresher log through the newest config's logger.
func (r *refresher) setLogger(l *zap.Logger) { r.logger.Store(l) }

func (r *refresher) log() *zap.Logger { return r.logger.Load() }

// Current returns the cached credential if it is usable at now. It starts
// the background loop on first use (not at provision, so that `caddy
// validate` makes no network call) and nudges it when a refresh is due.
func (r *refresher) Current(now time.Time) *Credential {
	r.run()
	c := r.current.Load()
	if !c.Usable(now) {
		r.nudge()
		return nil
	}
	if !c.refreshAt.IsZero() && !now.Before(c.refreshAt) {
		r.nudge()
	}
	return c
}

// Fetch returns a usable credential, refreshing (shared with every other
// caller) when there is none, unless the source is backing off after a
// failure, in which case it answers at once with the last error.
func (r *refresher) Fetch(ctx context.Context) (*Credential, error) {
	r.run()
	c := r.current.Load()
	if c.Usable(time.Now()) {
		return c, nil
	}
	r.mu.Lock()
	wait := time.Until(r.nextAttempt)
	lastErr := r.lastErr
	r.mu.Unlock()
	if wait > 0 && lastErr != nil {
		if c != nil {
			// lastErr predates the token's expiry: say why there is none now
			lastErr = safetext.Refuse("token expired; last refresh: "+safetext.Public(lastErr, "failed"),
				fmt.Sprintf("token expired at %s; last refresh: %v", c.expires.UTC().Format(time.RFC3339), lastErr))

		}
		return nil, fmt.Errorf("%w (next attempt in %s)", lastErr, wait.Round(time.Second))
	}
	ch := r.group.DoChan("refresh", r.refreshShared)
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*Credential), nil
	case <-ctx.Done():
		return nil, safetext.Refuse("still refreshing", fmt.Sprintf("still refreshing after waiting: %v", context.Cause(ctx)))
	}
}

// RetryAfter is how long a client should wait before the source may have
// a credential again: the time to the next attempt, at least 1s.
func (r *refresher) RetryAfter() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := time.Until(r.nextAttempt); d > time.Second {
		return d
	}
	return time.Second
}

// Offer installs c if it expires later than the cached credential (or the
// cached one is no longer usable): inputs that learn of a token without a
// refresh (a rewritten file, a pushed token) call it. It reports whether c
// was installed.
func (r *refresher) Offer(c *Credential) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.installLocked(c, now) {
		return false
	}
	// a fresh token ends any failure state: the status must not show an
	// old error next to a usable token
	r.failures, r.lastErr, r.nextAttempt, r.lastRefresh = 0, nil, time.Time{}, now
	return true
}

func (r *refresher) installLocked(c *Credential, now time.Time) bool {
	if c == nil || r.rejectedLocked(c) {
		return false
	}
	if c = r.prepare(c); !c.Usable(now) {
		return false
	}
	old := r.current.Load()
	// a refused token (its digest learned from the fleet's storage) gives
	// way to any usable one
	if old.Usable(now) && !r.rejectedLocked(old) && !c.expires.After(old.expires) {
		return false
	}
	r.current.Store(c)
	return true
}

// prepare returns the copy of c that is installed: c may be held by an
// input and installed again later, while readers of an earlier install
// still look at it. The copy carries the refresh point and the margin.
func (r *refresher) prepare(c *Credential) *Credential {
	if c.expires.IsZero() {
		return c
	}
	cp := *c
	cp.refreshAt = refreshPoint(c, r.refreshBefore)
	if r.expiryMargin > 0 {
		cp.setExpiryMargin(r.expiryMargin)
	}
	return &cp
}

// Refused is told that the upstream answered 401 to a request sent with
// c, and returns the credential a replay should use, or nil for none.
//
// A 401 is only a request's word, and a client may be able to provoke
// one (a header stripped on the way, a skewed clock), so it never takes
// the credential away from the other clients on its own: c is dropped
// only once a different, usable token has replaced it. Getting one is a
// forced refresh (a mint even when c is not due, or a newer token from
// the env or the file), at most once per forcedInterval whatever the
// number of refused requests; concurrent callers share it.
func (r *refresher) Refused(ctx context.Context, c *Credential) *Credential {
	if cur := r.current.Load(); r.replaced(cur, c, time.Now()) {
		return cur // another request already replaced it
	}
	ch := r.group.DoChan("refused", func() (any, error) { return r.forceRefresh(c), nil })
	select {
	case res := <-ch:
		fresh, _ := res.Val.(*Credential)
		// the flight is shared by every refused token: one run for another
		// token may return c itself, which is no replacement for c
		if fresh != nil && fresh.value == c.value {
			return nil
		}
		return fresh
	case <-ctx.Done():
		return nil
	}
}

// replaced reports whether cur is a usable credential other than c.
func (r *refresher) replaced(cur, c *Credential, now time.Time) bool {
	return cur.Usable(now) && cur.value != c.value
}

// forceRefresh runs one forced refresh for c (see Refused); only ever
// called through the singleflight group.
func (r *refresher) forceRefresh(c *Credential) *Credential {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	start := time.Now()
	if cur := r.current.Load(); r.replaced(cur, c, start) {
		return cur // a refresh that ran meanwhile replaced it
	}
	r.mu.Lock()
	if since := start.Sub(r.lastForced); !r.lastForced.IsZero() && since < r.forcedInterval {
		r.mu.Unlock()
		observeForcedRefresh(r.kind, forcedThrottled)
		if ce := r.log().Check(zap.WarnLevel, "upstream refused the credential; not refreshing again so soon, keeping it"); ce != nil {
			ce.Write(zap.String("source", r.kind), zap.Duration("since_last_forced_refresh", since),
				zap.Duration("interval", r.forcedInterval))
		}
		return nil
	}
	r.lastForced = start
	r.mu.Unlock()

	fresh, err := r.load(r.ctx, c, true)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && (!fresh.Usable(now) || fresh.value == c.value || r.rejectedLocked(fresh)) {
		err = errors.New("no different token")
	}
	if err != nil {
		observeForcedRefresh(r.kind, forcedKept)
		r.log().Warn("upstream refused the credential; no different token could be had, so it is kept for the other requests",
			zap.String("source", r.kind), zap.Time("expires", c.expires), zap.Error(err))
		return nil
	}
	r.rejectLocked(c, now)
	fresh = r.prepare(fresh)
	r.current.Store(fresh)
	r.failures, r.lastErr, r.nextAttempt, r.lastRefresh = 0, nil, time.Time{}, now
	observeForcedRefresh(r.kind, forcedReplaced)
	r.report("success", now.Sub(start))
	r.log().Warn("upstream refused the credential; replaced it with a fresh one",
		zap.String("source", r.kind), zap.Time("refused_expires", c.expires), zap.Time("expires", fresh.expires))
	r.nudge() // reschedule the loop for the new token's refresh point
	return fresh
}

// rejectLocked records that the upstream refused c (and that a different
// token replaced it), until c's exp.
func (r *refresher) rejectLocked(c *Credential, now time.Time) {
	if r.rejected == nil {
		r.rejected = map[[32]byte]time.Time{}
	}
	for d, exp := range r.rejected {
		if !now.Before(exp) {
			delete(r.rejected, d)
		}
	}
	r.rejected[sha256Sum(c.value)] = c.expires
}

// IsRejected reports whether the upstream refused c before.
func (r *refresher) IsRejected(c *Credential) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejectedLocked(c)
}

func (r *refresher) rejectedLocked(c *Credential) bool {
	if len(r.rejected) == 0 {
		return false
	}
	_, ok := r.rejected[sha256Sum(c.value)]
	return ok
}

// refreshPoint is refreshBefore ahead of exp, but never earlier than half
// the credential's life, so a short-lived token does not cause a refresh
// storm when refreshBefore exceeds its lifetime.
func refreshPoint(c *Credential, refreshBefore time.Duration) time.Time {
	at := c.expires.Add(-refreshBefore)
	if half := c.obtained.Add(c.expires.Sub(c.obtained) / 2); at.Before(half) {
		at = half
	}
	return at
}

func (r *refresher) nudge() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run starts the background loop (and onStart) unless it runs already:
// on first use, never at provision.
func (r *refresher) run() { r.startLoop.Do(r.start) }

func (r *refresher) start() {
	go r.loop()
	if r.onStart != nil {
		r.onStart()
	}
}

// Stop ends the background loop and waits for it. It is safe to call
// more than once, and when the loop never started.
func (r *refresher) Stop() {
	r.stopOnce.Do(func() {
		r.cancel()
		r.startLoop.Do(func() { close(r.done) }) // never started: nothing to wait for
		<-r.done
	})
}

func (r *refresher) loop() {
	defer close(r.done)
	timer := time.NewTimer(0) // first pass at once: get a credential if there is none
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
		}
		if r.due(time.Now()) {
			// the outcome is the refresh's own business: it logs, counts
			// and keeps the error for Fetch and the status
			_, _, _ = r.group.Do("refresh", r.refreshShared)
		}
		timer.Reset(r.untilNext(time.Now()))
	}
}

// due reports whether a refresh should run now.
func (r *refresher) due(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.nextAttempt) {
		return false
	}
	c := r.current.Load()
	return !c.Usable(now) || (!c.refreshAt.IsZero() && !now.Before(c.refreshAt))
}

// untilNext is how long the loop sleeps before looking again.
func (r *refresher) untilNext(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.nextAttempt
	if c := r.current.Load(); c.Usable(now) && !c.refreshAt.IsZero() && c.refreshAt.After(next) {
		next = c.refreshAt
	} else if c.Usable(now) && c.refreshAt.IsZero() {
		return time.Hour // nothing to refresh; inputs that change call Offer
	}
	if d := next.Sub(now); d > 0 {
		return d
	}
	return 0
}

// refreshShared runs one refresh; it is only ever called through the
// singleflight group, so at most one runs per source at a time.
func (r *refresher) refreshShared() (any, error) {
	start := time.Now()
	if c := r.current.Load(); c.Usable(start) && (c.refreshAt.IsZero() || start.Before(c.refreshAt)) {
		// Nothing to do: a caller that found no usable token started this
		// just after another refresh installed one.
		return c, nil
	}
	if old := r.current.Load(); old != nil && !old.Usable(start) && !old.expires.IsZero() {
		r.log().Warn("credential expired", zap.String("source", r.kind), zap.Time("expired", old.expires))
	}
	r.loadMu.Lock()
	c, err := r.load(r.ctx, r.current.Load(), false)
	r.loadMu.Unlock()
	now := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	if c.Usable(now) {
		r.installLocked(c, now)
	}
	best := r.current.Load()
	if err == nil && !best.Usable(now) {
		err = errors.New("no usable token")
	}
	if err == nil && !best.refreshAt.IsZero() && !now.Before(best.refreshAt) {
		err = fmt.Errorf("no fresher token available (the current one expires at %s)", best.expires.UTC().Format(time.RFC3339))
	}
	if err != nil {
		r.failures++
		r.lastErr = err
		r.nextAttempt = now.Add(backoff(r.failures))
		r.report("failure", now.Sub(start))
		r.log().Warn("credential refresh failed",
			zap.String("source", r.kind),
			zap.Error(err),
			zap.Bool("still_usable", best.Usable(now)),
			zap.Time("next_attempt", r.nextAttempt))
		if best.Usable(now) {
			return best, nil
		}
		return nil, err
	}
	r.failures = 0
	r.lastErr = nil
	r.nextAttempt = time.Time{}
	r.lastRefresh = now
	r.report("success", now.Sub(start))
	r.log().Info("credential refreshed",
		zap.String("source", r.kind),
		zap.Time("expires", best.expires),
		zap.Time("next_refresh", best.refreshAt))
	return best, nil
}

func (r *refresher) report(result string, took time.Duration) {
	observeRefresh(r.kind, result, took)
}

// backoff is the wait after the n-th consecutive failure (n >= 1).
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 16 {
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// status fills the refresher's part of a SourceStatus.
func (r *refresher) status(now time.Time) SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.current.Load()
	st := SourceStatus{Kind: r.kind, Usable: c.Usable(now), LastRefresh: timePtr(r.lastRefresh)}
	if c != nil {
		st.Method = c.method
		st.Expires = timePtr(c.expires)
		st.NextRefresh = timePtr(c.refreshAt)
	}
	if r.lastErr != nil {
		st.LastError = r.lastErr.Error()
		if r.nextAttempt.After(now) {
			st.NextRefresh = timePtr(r.nextAttempt)
		}
	}
	return st
}
