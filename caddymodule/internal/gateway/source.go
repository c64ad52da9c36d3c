package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of a [SourceConfig].
const (
	defaultInterval     = time.Hour
	defaultRetryMin     = 30 * time.Second
	defaultRetryMax     = 10 * time.Minute
	defaultFetchTimeout = 30 * time.Second
)

// SourceConfig configures a [CatalogSource].
type SourceConfig struct {
	// BaseURL is the gateway's address, such as https://ai-gateway.vercel.sh;
	// the catalog is read from BaseURL/v1/models. Required.
	BaseURL string
	// Client makes the calls. Default: one that follows no redirect.
	Client *http.Client
	// Credential gives the proxy's own credential per fetch; see
	// [CatalogSource.SetCredential].
	Credential func(context.Context) (string, error)
	// Logger gets a line per failed fetch. Default: none.
	Logger *zap.Logger
	// Interval between good fetches, less up to a tenth at random.
	// Default: 1h.
	Interval time.Duration
	// RetryMin and RetryMax bound the wait after a failed fetch, doubling
	// from the first to the second. RetryMin is also the least time
	// between two fetches asked for by Refresh. Default: 30s and 10m.
	RetryMin, RetryMax time.Duration
	// Timeout bounds one fetch, body included. Default: 30s.
	Timeout time.Duration
}

// CatalogSource keeps a recent copy of the gateway's catalog, read in the
// background.
type CatalogSource struct {
	call      *caller
	url       string
	label     string // the metrics' gateway label
	cfg       SourceConfig
	logger    *zap.Logger
	current   atomic.Pointer[Catalog]
	refreshCh chan struct{}
	// tried is closed once the first fetch has ended, good or not, or the
	// source stopped: what a caller that has no catalog yet waits for.
	tried     chan struct{}
	triedOnce sync.Once

	mu          sync.Mutex
	started     bool
	stopped     bool
	cancel      context.CancelFunc
	done        chan struct{}
	lastAttempt time.Time
	nextAttempt time.Time
	lastErr     string
	failures    int
}

// NewCatalogSource checks cfg and makes a source that has no catalog yet.
// It makes no call: [CatalogSource.Start] begins reading.
func NewCatalogSource(cfg SourceConfig) (*CatalogSource, error) {
	call, err := newCaller(cfg.BaseURL, cfg.Client, cfg.Credential)
	if err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = defaultRetryMin
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = defaultRetryMax
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultFetchTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return &CatalogSource{
		call:      call,
		url:       call.base.JoinPath("v1", "models").String(),
		label:     gatewayLabel(call.base),
		cfg:       cfg,
		logger:    logger,
		refreshCh: make(chan struct{}, 1),
		tried:     make(chan struct{}),
	}, nil
}

// SetCredential replaces the function that gives the proxy's credential,
// from the next fetch on. The latest set wins.
func (s *CatalogSource) SetCredential(f func(context.Context) (string, error)) {
	s.call.SetCredential(f)
}

// Current is the latest good catalog, nil until one has been read. It
// takes no lock.
func (s *CatalogSource) Current() *Catalog { return s.current.Load() }

// Tried is closed once the first fetch has ended, good or not (then
// Current is the catalog, or still nil), or the source stopped.
func (s *CatalogSource) Tried() <-chan struct{} { return s.tried }

func (s *CatalogSource) markTried() { s.triedOnce.Do(func() { close(s.tried) }) }

// Start begins fetching in the background: at once, then every
// Interval, retrying failures with backoff. Calls after the first, and
// after Stop, do nothing.
func (s *CatalogSource) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	s.nextAttempt = time.Now()
	trackSource(s, true)
	go s.run(ctx)
}

// Stop ends the fetching, cancelling one in flight, and returns when it
// has ended. The last catalog stays readable.
func (s *CatalogSource) Stop() {
	s.mu.Lock()
	s.stopped = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	s.setNext(time.Time{})
	trackSource(s, false)
	s.markTried()
}

// Refresh asks for a fetch now, or, when one started less than RetryMin
// ago, as soon as RetryMin has passed. Requests made while one waits are
// one request. It does not wait for the fetch.
func (s *CatalogSource) Refresh() {
	select {
	case s.refreshCh <- struct{}{}:
	default:
	}
}

func (s *CatalogSource) run(ctx context.Context) {
	defer close(s.done)
	next := time.Now()
	var last time.Time // when the latest fetch started
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.refreshCh:
			t.Stop()
			if soonest := last.Add(s.cfg.RetryMin); !last.IsZero() && time.Now().Before(soonest) {
				if soonest.Before(next) {
					next = soonest
				}
				s.setNext(next)
				continue
			}
		}
		select { // a Refresh asked for before now is this fetch
		case <-s.refreshCh:
		default:
		}
		last = time.Now()
		s.mu.Lock()
		s.lastAttempt = last
		s.mu.Unlock()
		err := s.fetch(ctx)
		if ctx.Err() != nil {
			return // stopped: the outcome is not a failure of the gateway
		}
		next = s.record(err)
		s.markTried()
	}
}

// record notes a fetch's outcome and returns when to fetch next.
func (s *CatalogSource) record(err error) time.Time {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		fetchesOK.Inc()
		if s.failures > 0 || s.lastErr != "" {
			c := s.current.Load()
			s.logger.Info("model catalog read", zap.String("url", s.url), zap.Int("models", c.Len()), zap.Int("skipped", c.Skipped()), zap.Int("failures_before", s.failures))
		}
		s.failures, s.lastErr = 0, ""
		jitter := time.Duration(rand.Int64N(int64(s.cfg.Interval/10) + 1))
		s.nextAttempt = now.Add(s.cfg.Interval - jitter)
		return s.nextAttempt
	}
	fetchesError.Inc()
	s.failures++
	s.lastErr = err.Error()
	wait := s.cfg.RetryMax
	if s.failures < 32 {
		wait = min(s.cfg.RetryMin<<(s.failures-1), s.cfg.RetryMax)
	}
	s.nextAttempt = now.Add(wait)
	s.logger.Warn("reading the model catalog failed; the last good copy stays in use",
		zap.String("url", s.url), zap.Error(err), zap.Int("failures", s.failures),
		zap.Duration("retry_in", wait), zap.Bool("have_catalog", s.current.Load() != nil))
	return s.nextAttempt
}

func (s *CatalogSource) setNext(t time.Time) {
	s.mu.Lock()
	s.nextAttempt = t
	s.mu.Unlock()
}

// fetch reads the catalog once and, if it is good, makes it current.
func (s *CatalogSource) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cred, err := s.call.credential(ctx)
	if err != nil {
		return err
	}
	resp, err := get(ctx, s.call.client, s.url, cred)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	c, err := ParseCatalog(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", s.url, scrub(err, cred))
	}
	c.fetched = time.Now()
	s.current.Store(c)
	return nil
}

// Status is what the admin status route shows of a catalog source. It
// names the URL but never the credential.
type Status struct {
	URL       string    `json:"url"`
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// AgeSeconds is absent until a catalog has been read.
	AgeSeconds *int64 `json:"age_seconds,omitempty"`
	Models     int    `json:"models"`
	Skipped    int    `json:"skipped_models"`
	// LastError is the latest fetch's error; empty when it succeeded.
	LastError   string    `json:"last_error,omitempty"`
	Failures    int       `json:"consecutive_failures"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// NextAttempt is zero when the source is not running.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// Status reports the current catalog and the latest fetch.
func (s *CatalogSource) Status() Status {
	c := s.current.Load()
	s.mu.Lock()
	st := Status{
		URL:         s.url,
		LastError:   s.lastErr,
		Failures:    s.failures,
		LastAttempt: s.lastAttempt,
		NextAttempt: s.nextAttempt,
	}
	s.mu.Unlock()
	if c != nil {
		age := int64(time.Since(c.fetched) / time.Second)
		st.FetchedAt, st.AgeSeconds = c.fetched, &age
		st.Models, st.Skipped = c.Len(), c.Skipped()
	}
	return st
}
