package credential

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// A vercel_oidc source with `share` keeps its token in Caddy's configured
// storage, the engine Caddy fleets already share certificates through:
// one value per source identity (its settings and its project), written
// under the storage's own lock.
// Every instance reads it before refreshing (one mint per rotation for
// the whole fleet) and polls it (pushes and refusals reach every
// instance). Storage is never on the hot path: a storage fault only
// makes the instance refresh alone, as it would without share.

const (
	shareRecordVersion = 1
	// sharePollInterval is how often the stored value is read (±20%).
	sharePollInterval = 2 * time.Second
	// shareIOTimeout bounds one Load or Store.
	shareIOTimeout = 10 * time.Second
	// shareNoTokenLockWait bounds the wait for the lock when the instance
	// has no usable token: long enough for a live holder's mint and for a
	// dead holder's file lock to go stale (certmagic: 10s).
	shareNoTokenLockWait = 15 * time.Second
	// shareLockReserve is kept, out of the current token's usable time,
	// for a refresh alone after the lock could not be had: at most this,
	// and at most a quarter of that time.
	shareLockReserve = 3 * time.Second
	// shareMaxLockWait caps the wait for the lock while a token is usable.
	shareMaxLockWait = 2 * time.Minute
	// shareMaxRefused bounds the refusals a stored value carries.
	shareMaxRefused = 16
)

// sharedRecord is the stored value. It holds the token itself (a live
// credential: see docs/fleet.md on how private the storage must be) and, of
// the tokens the gateway refused, only digests.
type sharedRecord struct {
	Version   int             `json:"version"`
	Source    string          `json:"source"` // the storage id: a value for another source is foreign
	Token     string          `json:"token,omitempty"`
	Expires   time.Time       `json:"expires"`
	Obtained  time.Time       `json:"obtained"` // when the writer got it: the refresh point follows from it
	WrittenBy string          `json:"written_by"`
	WrittenAt time.Time       `json:"written_at"`
	Refused   []sharedRefusal `json:"refused,omitempty"`
}

// sharedRefusal is a token the gateway refused and that a different one
// replaced, by SHA-256 digest, until its exp.
type sharedRefusal struct {
	SHA256  string    `json:"sha256"`
	Expires time.Time `json:"expires"`
}

// SharedStatus is the fleet sharing of a source, on the status route.
type SharedStatus struct {
	Enabled bool `json:"enabled"`
	// Instance is this Caddy instance's id.
	Instance string `json:"instance"`
	// Key is where the token is kept in the storage.
	Key string `json:"key"`
	// LastRead is when this instance last read the stored value.
	LastRead *time.Time `json:"last_read,omitempty"`
	// LastWrite is when the stored token was last written, and WrittenBy
	// by which instance, as last read or written here.
	LastWrite *time.Time `json:"last_write,omitempty"`
	WrittenBy string     `json:"written_by,omitempty"`
	// LastError is the last storage fault, until an operation succeeds.
	LastError string `json:"last_error,omitempty"`
	// Team and Project are whom the shared token is for; both are empty
	// (and Key too) while the source does not know its project yet: it
	// shares nothing until then.
	Team    string `json:"team,omitempty"`
	Project string `json:"project,omitempty"`
}

// shareProject is the team and project a shared source's tokens are
// for: part of its storage id, and checked in every token it adopts or
// stores, so that fleets of different projects on one storage (an
// org-wide one, for certificates) never use each other's token.
type shareProject struct {
	Team    string
	Project string
	// fromToken: learned from the owner_id and project_id of the
	// source's own token, so compared exactly. Configured values are
	// compared only when they are ids (team_…, prj_…): a slug or a
	// project name cannot be compared with the claims.
	fromToken bool
}

// check says why a token for owner and project is not for p.
func (p shareProject) check(owner, project string) error {
	if p.fromToken && (owner != p.Team || project != p.Project) {
		return fmt.Errorf("token is for owner %s project %s, not %q %q", safetext.Quoted(owner), safetext.Quoted(project), p.Team, p.Project)
	}
	return oidc.CheckProject(&oidc.Claims{OwnerID: owner, ProjectID: project}, p.Team, p.Project)
}

// configuredProject is the project the mint or push settings name, nil
// when they name none (env and file only; push without project): the
// source's own token then says it.
func configuredProject(cfg *OIDCConfig) *shareProject {
	var p shareProject
	if cfg.Push != nil {
		p.Team, p.Project = cfg.Push.Team, cfg.Push.Project
	}
	if cfg.mint != nil {
		if p.Team == "" {
			p.Team = cfg.mint.team
		}
		if p.Project == "" {
			p.Project = cfg.mint.project
		}
	}
	if p.Project == "" {
		return nil
	}
	return &p
}

// shareIdentity is what sources on different instances must agree on to
// share one token: the team and project the tokens are for, where they
// are minted (api, project, team) and which pushed tokens are accepted;
// for a source with neither, its env variable and file. Secrets and
// timings are not part of it: instances may have their own access
// tokens.
func shareIdentity(cfg *OIDCConfig, p shareProject) string {
	id := struct {
		Team    string     `json:"team,omitempty"`
		Project string     `json:"project"`
		Mint    string     `json:"mint,omitempty"`
		Push    *PushRules `json:"push,omitempty"`
		Env     string     `json:"env,omitempty"`
		File    string     `json:"file,omitempty"`
	}{Team: p.Team, Project: p.Project, Mint: cfg.MintEndpoint, Push: cfg.Push}
	if id.Mint == "" && id.Push == nil {
		id.Env, id.File = cfg.Env, cfg.File
	}
	b, _ := json.Marshal(id)
	return hashString("ai_gateway_auth/vercel_oidc:" + string(b))[:32]
}

// shareIdent is where a shared source keeps its token, and for whom.
type shareIdent struct {
	id, key, lock string
	project       shareProject
}

func newShareIdent(cfg *OIDCConfig, p shareProject) *shareIdent {
	id := shareIdentity(cfg, p)
	return &shareIdent{
		id:      id,
		key:     "ai_gateway_auth/vercel_oidc/" + id + "/token.json",
		lock:    "ai_gateway_auth_vercel_oidc_" + id,
		project: p,
	}
}

type storageRef struct{ certmagic.Storage }

// sharer reads and writes one source's stored value and reports on it.
type sharer struct {
	// ident is set once: at provision when the settings name the
	// project, else by the source's first own token (learnProject).
	// Until then the sharer reads, writes and locks nothing.
	ident     atomic.Pointer[shareIdent]
	instance  string
	storage   atomic.Pointer[storageRef] // the newest config's
	log       func() *zap.Logger
	pollEvery time.Duration

	mu        sync.Mutex
	lastRead  time.Time
	lastWrite time.Time
	writtenBy string
	failing   map[string]error // op → its last error, while it fails
	lastErr   error
	lastBad   [32]byte // digest of the last ignored value, logged once

	ctx       context.Context // ends at stop: the poll and publishes end with it
	cancel    context.CancelFunc
	stopped   bool // under mu: no publish starts after stop
	pollOnce  sync.Once
	stopOnce  sync.Once
	pollDone  chan struct{}
	publishes sync.WaitGroup

	// started (under mu) is set once the source runs (startSharePoll):
	// before, nothing is stored, as `caddy validate` provisions too, and
	// the last token offered waits in pending.
	started bool
	pending *Credential
}

func newSharer(cfg OIDCConfig, logger func() *zap.Logger) *sharer {
	ctx, cancel := context.WithCancel(context.Background())
	sh := &sharer{
		instance:  cfg.instance,
		log:       logger,
		pollEvery: sharePollInterval,
		failing:   map[string]error{},
		ctx:       ctx,
		cancel:    cancel,
		pollDone:  make(chan struct{}),
	}
	sh.setStorage(cfg.storage)
	if cfg.shareProject != nil {
		sh.ident.Store(newShareIdent(&cfg, *cfg.shareProject))
	}
	return sh
}

// learnProject gives a shared source whose settings name no project the
// project of its first own token (env, file) that says one, expired or
// not (a project does not expire): its storage id follows, and from then
// on it shares. Later tokens do not change it: the id of a running
// source never moves.
func (st *OIDCSource) learnProject(token string) {
	sh := st.share
	if sh == nil || sh.ident.Load() != nil {
		return
	}
	claims, err := oidc.UnverifiedClaims(token)
	if err != nil {
		return // not a token: the input reports that itself
	}
	if claims.ProjectID == "" {
		sh.log().Warn("the token has no project_id claim: this source shares nothing until it has a token that says its project")
		return
	}
	p := shareProject{Team: claims.OwnerID, Project: claims.ProjectID, fromToken: true}
	if id := newShareIdent(&st.cfg, p); sh.ident.CompareAndSwap(nil, id) {
		sh.log().Info("sharing this source's token with the instances of its project",
			zap.String("key", id.key), zap.String("team", safetext.Quoted(p.Team)), zap.String("project", safetext.Quoted(p.Project)))
	}
}

// keyOf is where the token is kept, "" while the project is unknown.
func (sh *sharer) keyOf() string {
	if id := sh.ident.Load(); id != nil {
		return id.key
	}
	return ""
}

// setStorage makes the sharer use the newest config's storage.
func (sh *sharer) setStorage(s certmagic.Storage) {
	if sh != nil && s != nil {
		sh.storage.Store(&storageRef{s})
	}
}

func (sh *sharer) store() certmagic.Storage { return sh.storage.Load().Storage }

// read loads the stored value. It returns nil, nil, nil when there is
// none or it is not this source's (logged); the credential is nil when
// the stored token has expired. An error is a storage fault.
func (sh *sharer) read(ctx context.Context) (*sharedRecord, *Credential, error) {
	id := sh.ident.Load()
	if id == nil {
		return nil, nil, nil // no project yet: nothing to read
	}
	ctx, cancel := context.WithTimeout(ctx, shareIOTimeout)
	defer cancel()
	raw, err := sh.store().Load(ctx, id.key)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	sh.noteOp("load", err)
	if err != nil || raw == nil {
		return nil, nil, err
	}
	now := time.Now()
	rec, cred, err := id.decode(raw, now)
	if err != nil {
		sh.ignore(raw, err)
		return nil, nil, nil
	}
	sh.mu.Lock()
	sh.lastRead, sh.lastWrite, sh.writtenBy = now, rec.WrittenAt, rec.WrittenBy
	sh.mu.Unlock()
	return rec, cred, nil
}

// decode checks that raw is this source's value, its token for the
// source's project; errors never quote it.
func (id *shareIdent) decode(raw []byte, now time.Time) (*sharedRecord, *Credential, error) {
	var rec sharedRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, nil, fmt.Errorf("not JSON: %v", err)
	}
	if rec.Version != shareRecordVersion || rec.Source != id.id {
		return nil, nil, fmt.Errorf("foreign value (version %d, source %s)", rec.Version, safetext.Quoted(rec.Source))
	}
	if rec.Token == "" {
		return &rec, nil, nil
	}
	cred, claims, err := ParseToken(rec.Token, now)
	if err != nil && !rec.Expires.IsZero() && !now.Before(rec.Expires) {
		return &rec, nil, nil // expired: its refusals still count
	}
	if err != nil {
		return nil, nil, fmt.Errorf("stored token: %v", err)
	}
	if err := id.project.check(claims.OwnerID, claims.ProjectID); err != nil {
		return nil, nil, fmt.Errorf("stored token: %v", err)
	}
	if !rec.Obtained.IsZero() && rec.Obtained.Before(now) {
		cred.obtained = rec.Obtained // the same refresh point on every instance
	}
	return &rec, cred, nil
}

// ignore logs a value that is not this source's, once per distinct value.
func (sh *sharer) ignore(raw []byte, why error) {
	d := sha256Sum(string(raw))
	sh.mu.Lock()
	seen := d == sh.lastBad
	sh.lastBad = d
	sh.mu.Unlock()
	if !seen {
		sh.log().Warn("ignoring the value in the shared storage: it is not this source's token",
			zap.String("key", sh.keyOf()), zap.String("reason", why.Error()))
	}
}

// write stores c as the fleet's token, carrying prev's unexpired
// refusals and, if refused is not nil, that token's digest. A token for
// another project (the source's env or file now holds one) is not
// stored: it would be the token of the other project's fleet.
func (sh *sharer) write(ctx context.Context, c *Credential, prev *sharedRecord, refused *Credential) error {
	id := sh.ident.Load()
	if id == nil {
		return errors.New("no project known yet")
	}
	if err := id.project.check(c.ownerID, c.projectID); err != nil {
		sh.log().Warn("not storing this source's token for the fleet: it is for another project than the one the source shares",
			zap.String("key", id.key), zap.String("reason", err.Error()))
		return err
	}
	now := time.Now()
	rec := sharedRecord{
		Version: shareRecordVersion, Source: id.id,
		Token: c.value, Expires: c.expires, Obtained: c.obtained,
		WrittenBy: sh.instance, WrittenAt: now,
	}
	if refused != nil {
		rec.Refused = append(rec.Refused, sharedRefusal{SHA256: hashString(refused.value), Expires: refused.expires})
	}
	if prev != nil {
		for _, r := range prev.Refused {
			if now.Before(r.Expires) && len(rec.Refused) < shareMaxRefused {
				rec.Refused = append(rec.Refused, r)
			}
		}
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, shareIOTimeout)
	defer cancel()
	err = sh.store().Store(ctx, id.key, raw)
	sh.noteOp("store", err)
	if err == nil {
		sh.mu.Lock()
		sh.lastWrite, sh.writtenBy = now, sh.instance
		sh.mu.Unlock()
	}
	return err
}

// refusals are rec's refused digests.
func (rec *sharedRecord) refusals() map[[32]byte]time.Time {
	if rec == nil || len(rec.Refused) == 0 {
		return nil
	}
	m := make(map[[32]byte]time.Time, len(rec.Refused))
	for _, r := range rec.Refused {
		var d [32]byte
		if b, err := hex.DecodeString(r.SHA256); err == nil && len(b) == len(d) {
			copy(d[:], b)
			m[d] = r.Expires
		}
	}
	return m
}

// lockFor takes the storage lock for at most wait (and until ctx ends).
// It returns the lock's release, bound to the storage that was locked: a
// reload may swap the storage (setStorage) while the lock is held.
func (sh *sharer) lockFor(ctx context.Context, wait time.Duration) (unlock func(), err error) {
	id := sh.ident.Load()
	if id == nil {
		return nil, errors.New("no project known yet")
	}
	s := sh.store()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.Lock(ctx, id.lock); err != nil {
		if ctx.Err() == nil {
			sh.noteOp("lock", err) // a fault, not a wait that ran out
		}
		return nil, err
	}
	return func() { sh.unlock(s, id.lock) }, nil
}

// unlock releases the lock taken on s.
func (sh *sharer) unlock(s certmagic.Storage, name string) {
	// not the refresh's context: the lock is released even when it ended
	ctx, cancel := context.WithTimeout(context.Background(), shareIOTimeout)
	defer cancel()
	sh.noteOp("unlock", s.Unlock(ctx, name))
}

// noteOp counts a storage fault and logs when an operation starts or
// stops failing: a broken storage costs one log line, not one per poll.
func (sh *sharer) noteOp(op string, err error) {
	sh.mu.Lock()
	_, was := sh.failing[op]
	if err != nil {
		sh.failing[op] = err
		sh.lastErr = err
	} else {
		delete(sh.failing, op)
		if len(sh.failing) == 0 {
			sh.lastErr = nil
		}
	}
	sh.mu.Unlock()
	switch {
	case err != nil:
		storageErrorsTotal.WithLabelValues(op).Inc()
		if !was {
			sh.log().Warn("shared storage failed; this instance refreshes its token alone until it works again",
				zap.String("op", op), zap.String("key", sh.keyOf()), zap.Error(err))
		}
	case was:
		sh.log().Info("shared storage works again", zap.String("op", op), zap.String("key", sh.keyOf()))
	}
}

func (sh *sharer) status() *SharedStatus {
	if sh == nil {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := &SharedStatus{Enabled: true, Instance: sh.instance,
		LastRead: timePtr(sh.lastRead), LastWrite: timePtr(sh.lastWrite), WrittenBy: sh.writtenBy}
	if id := sh.ident.Load(); id != nil {
		st.Key, st.Team, st.Project = id.key, id.project.Team, id.project.Project
	}
	if sh.lastErr != nil {
		st.LastError = sh.lastErr.Error()
	}
	return st
}

// stop ends the poll and waits for it and for publishes in flight.
func (sh *sharer) stop() {
	if sh == nil {
		return
	}
	sh.stopOnce.Do(func() {
		sh.mu.Lock()
		sh.stopped = true
		sh.mu.Unlock()
		sh.cancel()
		sh.pollOnce.Do(func() { close(sh.pollDone) }) // never started
		<-sh.pollDone
		sh.publishes.Wait()
	})
}

// lockWait is how long a refresh waits for the storage lock: while the
// current token is usable, until shortly before it stops being usable
// (a lock held by a dead instance expires well before that with
// certmagic's file storage), then the instance refreshes alone.
func lockWait(current *Credential, now time.Time) time.Duration {
	if !current.Usable(now) {
		return shareNoTokenLockWait
	}
	if current.expires.IsZero() {
		return shareMaxLockWait
	}
	left := current.usableUntil.Sub(now)
	return min(max(left-min(shareLockReserve, left/4), time.Second), shareMaxLockWait)
}

// sharedLoad is the refresh of a shared source: the stored token if
// another instance already refreshed, else under the storage lock the
// stored token again, or the source's own load (mint, file, env) whose
// result is stored. Any storage fault falls back to the own load.
func (st *OIDCSource) sharedLoad(ctx context.Context, current *Credential, force bool) (*Credential, error) {
	sh := st.share
	if sh.ident.Load() == nil { // no project yet: nothing to share
		return st.load(ctx, current, force)
	}
	rec, stored, err := sh.read(ctx)
	if err != nil {
		return st.load(ctx, current, force)
	}
	if c := st.adoptable(rec, stored, current, force); c != nil {
		return c, nil
	}
	wait := lockWait(current, time.Now())
	unlock, err := sh.lockFor(ctx, wait)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if errors.Is(err, context.DeadlineExceeded) { // a fault was logged by noteOp
			sh.log().Warn("the shared storage lock was held too long; refreshing alone",
				zap.String("key", sh.keyOf()), zap.Duration("waited", wait))
		}
		// the holder may have stored a token meanwhile (or the poll
		// adopted one): look once more before refreshing alone
		if rec, stored, err := sh.read(ctx); err == nil {
			if c := st.adoptable(rec, stored, current, force); c != nil {
				return c, nil
			}
		}
		c, lerr := st.load(ctx, current, force)
		// stored without the lock, for the others that may be waiting:
		// compared with what is stored right now, so that a token pushed
		// meanwhile is not overwritten by an older one
		if rec, stored, err := sh.read(ctx); err == nil {
			st.publishLoaded(ctx, c, current, force, rec, stored)
		}
		return c, lerr
	}
	defer unlock()
	sh.log().Info("took the shared storage lock to refresh the token for the fleet", zap.String("key", sh.keyOf()))
	if rec2, stored2, err := sh.read(ctx); err == nil {
		if c := st.adoptable(rec2, stored2, current, force); c != nil {
			return c, nil // another instance refreshed while this one waited
		}
		rec, stored = rec2, stored2
	}
	c, lerr := st.load(ctx, current, force)
	st.publishLoaded(ctx, c, current, force, rec, stored)
	return c, lerr
}

// adoptable is the stored token if this instance should use it instead of
// refreshing: usable, not refused, not due, and a change from current
// (for a forced refresh, any other token; else one that expires later).
// The stored refusals are taken in first.
func (st *OIDCSource) adoptable(rec *sharedRecord, stored, current *Credential, force bool) *Credential {
	r := st.refresher
	r.adoptShared(nil, rec.refusals())
	now := time.Now()
	if !stored.Usable(now) || r.IsRejected(stored) || !now.Before(refreshPoint(stored, st.cfg.RefreshBefore)) {
		return nil
	}
	if current != nil && stored.value == current.value {
		return nil
	}
	if !force && current.Usable(now) && !r.IsRejected(current) && !stored.expires.After(current.expires) {
		return nil
	}
	return stored
}

// publishLoaded stores what the own load produced, when it is a usable
// token that the storage does not hold yet and that should replace it.
func (st *OIDCSource) publishLoaded(ctx context.Context, c, current *Credential, force bool, rec *sharedRecord, stored *Credential) {
	now := time.Now()
	if !c.Usable(now) || (stored != nil && c.value == stored.value) {
		return
	}
	if stored.Usable(now) && !st.refresher.IsRejected(stored) && !force && !c.expires.After(stored.expires) {
		return
	}
	var refused *Credential
	if force && current != nil && c.value != current.value {
		refused = current
	}
	// a storage fault is counted and logged by noteOp, a token for another
	// project by write: either way this instance goes on alone
	_ = st.share.write(ctx, c, rec, refused)
}

// offer installs a token learned outside a refresh (a push, the file)
// and, with share, stores it for the fleet in the background; before the
// source runs (at provision, also by `caddy validate`), only once it does.
func (st *OIDCSource) offer(c *Credential) bool {
	installed := st.refresher.Offer(c)
	if sh := st.share; installed && sh != nil {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if !sh.started {
			sh.pending = c
		} else {
			st.publishLocked(c)
		}
	}
	return installed
}

// publishLocked starts publishing c unless the sharer stopped; sh.mu is
// held.
func (st *OIDCSource) publishLocked(c *Credential) {
	sh := st.share
	if !sh.stopped {
		sh.publishes.Add(1)
		go func() {
			defer sh.publishes.Done()
			st.publish(c)
		}()
	}
}

// publish stores c under the lock unless the storage holds a token that
// expires later.
func (st *OIDCSource) publish(c *Credential) {
	sh := st.share
	unlock, err := sh.lockFor(sh.ctx, shareNoTokenLockWait)
	if err != nil {
		return // also while the project is unknown: nothing is shared
	}
	defer unlock()
	rec, stored, err := sh.read(sh.ctx)
	if err != nil {
		return
	}
	st.publishLoaded(sh.ctx, c, nil, false, rec, stored)
}

// startSharePoll starts the poll of the stored value and the publishing
// of offered tokens (the last one offered before is published now); the
// refresher calls it on first use, so that `caddy validate` touches no
// storage.
func (st *OIDCSource) startSharePoll() {
	sh := st.share
	sh.pollOnce.Do(func() { go st.poll() })
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.started = true
	if c := sh.pending; c != nil {
		sh.pending = nil
		st.publishLocked(c)
	}
}

// poll adopts, every couple of seconds, a fresher stored token (pushed to
// or refreshed by another instance) and the refusals of other instances.
func (st *OIDCSource) poll() {
	sh := st.share
	defer close(sh.pollDone)
	for {
		wait := time.Duration(float64(sh.pollEvery) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-sh.ctx.Done():
			return
		case <-time.After(wait):
		}
		st.pollOnce()
	}
}

// pollOnce reads the stored value once and adopts what it brings.
func (st *OIDCSource) pollOnce() {
	rec, stored, err := st.share.read(st.share.ctx)
	if err != nil || rec == nil {
		return
	}
	if st.refresher.adoptShared(stored, rec.refusals()) {
		st.share.log().Info("using the token stored by another instance",
			zap.String("written_by", rec.WrittenBy), zap.Time("expires", stored.expires))
	}
}

// adoptShared takes in refusals recorded by other instances and installs
// c if it is usable and expires later than the current token, or the
// current token is one of those refused. It reports whether c was
// installed.
func (r *refresher) adoptShared(c *Credential, refused map[[32]byte]time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for d, exp := range r.rejected {
		if !now.Before(exp) {
			delete(r.rejected, d)
		}
	}
	for d, exp := range refused {
		if now.Before(exp) {
			if r.rejected == nil {
				r.rejected = map[[32]byte]time.Time{}
			}
			r.rejected[d] = exp
		}
	}
	if c == nil || !r.installLocked(c, now) {
		return false
	}
	r.failures, r.lastErr, r.nextAttempt, r.lastRefresh = 0, nil, time.Time{}, now
	r.nudge() // reschedule the loop for the new token's refresh point
	return true
}
