package gateway

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of a [ReconcilerConfig].
const (
	defaultWorkers       = 2
	defaultMaxPending    = 10_000
	defaultFirstDelay    = 3 * time.Second
	defaultMaxBackoff    = time.Minute
	defaultDeadline      = 5 * time.Minute
	defaultLookupTimeout = 30 * time.Second
)

// ErrDropped is what a callback gets when the proxy gave the lookup up
// itself: the queue was full and it was the oldest, or the reconciler
// stopped. [Reconciler.Enqueue] returns it after Stop.
var ErrDropped = errors.New("generation lookup dropped")

// ReconcilerConfig configures a [Reconciler].
type ReconcilerConfig struct {
	// BaseURL is the gateway's address, such as https://ai-gateway.vercel.sh;
	// lookups go to BaseURL/v1/generation. Required.
	BaseURL string
	// Client makes the calls. Default: one that follows no redirect.
	Client *http.Client
	// Credential gives the proxy's own credential per lookup; see
	// [Reconciler.SetCredential].
	Credential func(context.Context) (string, error)
	// Logger gets a line per lookup that failed for good. Default: none.
	Logger *zap.Logger
	// Workers is how many lookups run at once. Default: 2.
	Workers int
	// MaxPending bounds the lookups waiting or running; when full, the
	// oldest waiting one is dropped. Default: 10000.
	MaxPending int
	// FirstDelay is the wait before the first lookup; each retry waits
	// twice the one before, up to MaxBackoff. Default: 3s and 1m.
	FirstDelay, MaxBackoff time.Duration
	// Deadline is how long after Enqueue the last lookup is made.
	// Default: 5m.
	Deadline time.Duration
	// Timeout bounds one lookup. Default: 30s.
	Timeout time.Duration
}

// Reconciler looks generations up in the gateway's ledger, in the
// background, retrying until each is recorded or its deadline passes.
type Reconciler struct {
	call   *caller
	cfg    ReconcilerConfig
	logger *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu       sync.Mutex
	waiting  itemHeap   // by due time
	order    list.List  // the same items, oldest first
	inflight int        // taken by a worker
	dropped  []*pending // callbacks still to call with ErrDropped
	stopped  bool
}

type pending struct {
	id       string
	cb       func(Generation, error)
	deadline time.Time
	due      time.Time
	attempts int
	err      error // for a dropped one, why
	index    int   // in waiting
	elem     *list.Element
}

// NewReconciler checks cfg and starts the workers; they make no call
// until an id is enqueued. Stop ends them.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	call, err := newCaller(cfg.BaseURL, cfg.Client, cfg.Credential)
	if err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = defaultMaxPending
	}
	if cfg.FirstDelay <= 0 {
		cfg.FirstDelay = defaultFirstDelay
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = defaultMaxBackoff
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = defaultDeadline
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultLookupTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reconciler{call: call, cfg: cfg, logger: logger, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	r.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go r.work()
	}
	trackReconciler(r, true)
	return r, nil
}

// SetCredential replaces the function that gives the proxy's credential,
// from the next lookup on. The latest set wins.
func (r *Reconciler) SetCredential(f func(context.Context) (string, error)) {
	r.call.SetCredential(f)
}

// Enqueue asks for id to be looked up; cb is then called exactly once,
// from one of the reconciler's goroutines or from Stop (never from
// Enqueue, so cb may take a lock held around Enqueue), with the
// record or the final error: one wrapping [ErrRefused], [ErrNotYet] or a
// transport error once the deadline has passed, or [ErrDropped]. cb must
// not block for long. Enqueue returns [ErrInvalidID] for an id that is not
// AI Gateway's, and [ErrDropped] after Stop; cb is then never called.
func (r *Reconciler) Enqueue(id string, cb func(Generation, error)) error {
	if !validID.MatchString(id) {
		return ErrInvalidID
	}
	if cb == nil {
		return errors.New("gateway: Enqueue without a callback")
	}
	now := time.Now()
	p := &pending{id: id, cb: cb, deadline: now.Add(r.cfg.Deadline), due: now.Add(r.cfg.FirstDelay)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return fmt.Errorf("%w: the reconciler has stopped", ErrDropped)
	}
	if r.waiting.Len()+r.inflight >= r.cfg.MaxPending {
		victim := p // every pending lookup is running: the new one goes
		if front := r.order.Front(); front != nil {
			victim = front.Value.(*pending)
			r.remove(victim)
		}
		victim.err = fmt.Errorf("%w: %d lookups were pending", ErrDropped, r.cfg.MaxPending)
		r.dropped = append(r.dropped, victim)
		if victim == p {
			r.signal()
			return nil
		}
	}
	r.insert(p)
	r.signal()
	return nil
}

// Pending is the number of lookups waiting or running.
func (r *Reconciler) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiting.Len() + r.inflight
}

// Stop ends the workers, cancelling lookups in flight, and calls every
// pending callback with [ErrDropped] before it returns (a lookup that
// completed as it stopped still delivers its record).
func (r *Reconciler) Stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	drop := r.dropped
	r.dropped = nil
	for e := r.order.Front(); e != nil; e = r.order.Front() {
		p := e.Value.(*pending)
		r.remove(p)
		p.err = fmt.Errorf("%w: the reconciler stopped", ErrDropped)
		drop = append(drop, p)
	}
	r.mu.Unlock()
	callDropped(drop)
	trackReconciler(r, false)
}

func callDropped(drop []*pending) {
	for _, p := range drop {
		droppedCounter.Inc()
		p.cb(Generation{}, p.err)
	}
}

// signal wakes one waiting worker to look at the queue again.
func (r *Reconciler) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Reconciler) insert(p *pending) {
	heap.Push(&r.waiting, p)
	p.elem = r.order.PushBack(p)
}

func (r *Reconciler) remove(p *pending) {
	heap.Remove(&r.waiting, p.index)
	r.order.Remove(p.elem)
	p.elem = nil
}

// work takes due lookups until the reconciler stops.
func (r *Reconciler) work() {
	defer r.wg.Done()
	for r.ctx.Err() == nil {
		r.mu.Lock()
		drop := r.dropped
		r.dropped = nil
		var p *pending
		wait := time.Duration(-1) // nothing waiting
		if r.waiting.Len() > 0 {
			if wait = time.Until(r.waiting[0].due); wait <= 0 {
				p = r.waiting[0]
				r.remove(p)
				r.inflight++
				if r.waiting.Len() > 0 {
					r.signal() // another worker may take the next one
				}
			}
		}
		r.mu.Unlock()
		callDropped(drop)
		if p != nil {
			r.attempt(p)
			continue
		}
		var timer *time.Timer
		var fired <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fired = timer.C
		}
		select {
		case <-r.ctx.Done():
		case <-r.wake:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// attempt makes one lookup of p and calls its callback, or puts it back
// to wait for the next.
func (r *Reconciler) attempt(p *pending) {
	p.attempts++
	g, err := r.lookup(p.id)
	now := time.Now()
	r.mu.Lock()
	r.inflight--
	switch {
	case err == nil:
	case r.ctx.Err() != nil:
		err = fmt.Errorf("%w: the reconciler stopped (%w)", ErrDropped, err)
	case errors.Is(err, ErrRefused):
	case now.Before(p.deadline):
		if p.due = now.Add(r.backoff(p.attempts)); p.due.After(p.deadline) {
			p.due = p.deadline // one last lookup at the deadline
		}
		r.insert(p)
		r.mu.Unlock()
		r.logger.Debug("generation not reconciled yet", zap.String("id", p.id), zap.Int("attempts", p.attempts), zap.Error(err))
		return
	default:
		err = fmt.Errorf("no record after %d lookups in %v: %w", p.attempts, r.cfg.Deadline, err)
	}
	r.mu.Unlock()
	switch {
	case err == nil:
		reconciledCounter.Inc()
	case errors.Is(err, ErrDropped):
		droppedCounter.Inc()
	default:
		failedCounter.Inc()
		r.logger.Warn("generation not reconciled: its charge stays estimated", zap.String("id", p.id), zap.Error(err))
	}
	p.cb(g, err)
}

// backoff is the wait after the n-th failed lookup: FirstDelay doubled n
// times, at most MaxBackoff.
func (r *Reconciler) backoff(n int) time.Duration {
	if n >= 32 {
		return r.cfg.MaxBackoff
	}
	return min(r.cfg.FirstDelay<<n, r.cfg.MaxBackoff)
}

func (r *Reconciler) lookup(id string) (Generation, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	defer cancel()
	cred, err := r.call.credential(ctx)
	if err != nil {
		return Generation{}, err
	}
	return lookup(ctx, r.call.client, r.call.base, cred, id)
}

// itemHeap orders pending lookups by due time.
type itemHeap []*pending

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *itemHeap) Push(x any) {
	p := x.(*pending)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *itemHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.index = -1
	return p
}
