package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/caddyserver/certmagic"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// memStorage is a certmagic.Storage in memory shared by the "instances"
// of a test; fail makes every operation fail, as an unreachable storage.
type memStorage struct {
	mu    sync.Mutex
	data  map[string][]byte
	locks map[string]bool
	fail  error
	taken int // locks obtained
}

func newMemStorage() *memStorage {
	return &memStorage{data: map[string][]byte{}, locks: map[string]bool{}}
}

func (m *memStorage) setFail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

func (m *memStorage) Lock(ctx context.Context, name string) error {
	for {
		m.mu.Lock()
		if m.fail != nil {
			m.mu.Unlock()
			return m.fail
		}
		if !m.locks[name] {
			m.locks[name] = true
			m.taken++
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (m *memStorage) Unlock(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	delete(m.locks, name)
	return nil
}

func (m *memStorage) Store(_ context.Context, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.data[key] = append([]byte(nil), value...)
	return nil
}

func (m *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	v, ok := m.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), v...), nil
}

func (m *memStorage) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.data, key)
	return nil
}

func (m *memStorage) Exists(_ context.Context, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.data[key]
	return ok
}

func (m *memStorage) List(context.Context, string, bool) ([]string, error) { return nil, nil }

func (m *memStorage) Stat(context.Context, string) (certmagic.KeyInfo, error) {
	return certmagic.KeyInfo{}, fs.ErrNotExist
}

// only returns the single value stored (the tests share one source).
func (m *memStorage) only(t *testing.T) (string, []byte) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.data) != 1 {
		t.Fatalf("storage holds %d values, want 1", len(m.data))
	}
	for k, v := range m.data {
		return k, append([]byte(nil), v...)
	}
	return "", nil
}

func (m *memStorage) put(key string, v []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[key] = v
}

// shareMintAPI is a Vercel token API minting tokens that live lifetime.
type shareMintAPI struct {
	srv      *httptest.Server
	mints    atomic.Int32
	lifetime time.Duration
}

func newShareMintAPI(t *testing.T, lifetime time.Duration) *shareMintAPI {
	a := &shareMintAPI{lifetime: lifetime}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.mints.Add(1)
		tok := oidctest.OIDCToken(t, time.Now().Add(a.lifetime), func(c jwt.MapClaims) { c["jti"] = fmt.Sprint("mint-", n) })
		fmt.Fprintf(w, `{"token":%q}`, tok)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// sharedInstance is one "instance" of a shared minting source (for
// testTeam/testProject): its own state (as in its own process) on the
// common storage.
func sharedInstance(t *testing.T, storage certmagic.Storage, name string, api *shareMintAPI, refreshBefore time.Duration) (*OIDCSource, *observer.ObservedLogs) {
	t.Helper()
	m := newTestMinter(t, api.srv.URL)
	return sharedSource(t, storage, name, OIDCConfig{RefreshBefore: refreshBefore, MintEndpoint: m.endpoint, mint: m})
}

// sharedSource is one instance's state of a shared source with cfg's
// inputs, resolved as Provision does, on the common storage.
func sharedSource(t *testing.T, storage certmagic.Storage, name string, cfg OIDCConfig) (*OIDCSource, *observer.ObservedLogs) {
	t.Helper()
	cfg.Share, cfg.storage, cfg.instance = true, storage, name
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = DefaultRefreshBefore
	}
	cfg.shareProject = configuredProject(&cfg)
	core, logs := observer.New(zap.InfoLevel)
	st := newOIDCSource(cfg, name, zap.New(core))
	st.share.pollEvery = time.Hour // tests poll by hand with pollOnce
	t.Cleanup(func() { st.Destruct() })
	return st, logs
}

func fetch(t *testing.T, st *OIDCSource) *Credential {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := st.refresher.Fetch(ctx)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return c
}

func storedRecord(t *testing.T, m *memStorage) sharedRecord {
	t.Helper()
	_, raw := m.only(t)
	var rec sharedRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// The first instance mints and stores; the second uses the stored token
// without minting. The value names its writer; the status says who wrote
// it and when it was read, never the token.
func TestShareSecondInstanceAdoptsStoredToken(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, _ := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
	b, _ := sharedInstance(t, storage, "instance-b", api, 5*time.Minute)

	ca := fetch(t, a)
	key, _ := storage.only(t)
	if want := "ai_gateway_auth/vercel_oidc/" + a.share.ident.Load().id + "/token.json"; key != want {
		t.Errorf("stored at %q, want %q", key, want)
	}
	rec := storedRecord(t, storage)
	if rec.WrittenBy != "instance-a" || rec.Token != ca.value || rec.Source != a.share.ident.Load().id {
		t.Errorf("stored record: written_by %q, source %q, token stored: %v", rec.WrittenBy, rec.Source, rec.Token == ca.value)
	}
	cb := fetch(t, b)
	if cb.value != ca.value {
		t.Fatal("the second instance did not use the stored token")
	}
	if n := api.mints.Load(); n != 1 {
		t.Errorf("%d mints, want 1", n)
	}
	st := b.share.status()
	if !st.Enabled || st.WrittenBy != "instance-a" || st.LastRead == nil || st.LastWrite == nil || st.Instance != "instance-b" {
		t.Errorf("status: %+v", st)
	}
	js, _ := json.Marshal(st)
	if strings.Contains(string(js), ca.value) {
		t.Error("the status holds the token")
	}
}

// Two instances due at once: one mints under the storage lock, the other
// waits, re-reads and uses that token. One mint.
func TestShareConcurrentRefreshMintsOnce(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	// refresh_before longer than half the tokens' life: a token obtained
	// long ago is due, a freshly minted one is not
	a, _ := sharedInstance(t, storage, "instance-a", api, 40*time.Minute)
	b, _ := sharedInstance(t, storage, "instance-b", api, 40*time.Minute)
	old := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(30*time.Minute)))
	old.obtained = time.Now().Add(-30 * time.Minute)
	if err := a.share.write(context.Background(), old, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, cur, err := a.share.read(context.Background())
	if err != nil || cur == nil || !time.Now().After(refreshPoint(cur, 40*time.Minute)) {
		t.Fatalf("the stored token is not due: %v %v", cur, err)
	}

	var wg sync.WaitGroup
	got := make([]*Credential, 2)
	for i, st := range []*OIDCSource{a, b} {
		wg.Go(func() {
			c, err := st.sharedLoad(context.Background(), cur, false)
			if err != nil {
				t.Errorf("sharedLoad: %v", err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	if got[0] == nil || got[1] == nil || got[0].value != got[1].value || got[0].value == old.value {
		t.Fatal("the instances did not end with the same new token")
	}
	if n := api.mints.Load(); n != 1 {
		t.Errorf("%d mints, want 1", n)
	}
	if rec := storedRecord(t, storage); rec.Token != got[0].value {
		t.Error("the new token was not stored")
	}
}

// A forced refresh on one instance (the gateway refused its token)
// stores the new token and the refused one's digest; the other instance,
// at its next poll, stops using the refused token. The refused token's
// value is never stored.
func TestShareRefusalReachesOtherInstances(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, _ := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
	b, logs := sharedInstance(t, storage, "instance-b", api, 5*time.Minute)
	t1 := fetch(t, a)
	if fetch(t, b).value != t1.value {
		t.Fatal("b does not share a's token")
	}

	t2 := a.refresher.Refused(context.Background(), t1)
	if t2 == nil || t2.value == t1.value {
		t.Fatal("a's forced refresh did not replace the refused token")
	}
	rec := storedRecord(t, storage)
	if len(rec.Refused) != 1 || rec.Refused[0].SHA256 != hashString(t1.value) || rec.Token != t2.value {
		t.Fatalf("stored record: %d refusals, token replaced: %v", len(rec.Refused), rec.Token == t2.value)
	}
	if _, raw := storage.only(t); strings.Contains(string(raw), t1.value) {
		t.Error("the refused token's value is in the storage")
	}

	b.pollOnce()
	if cur := b.refresher.Current(time.Now()); cur == nil || cur.value != t2.value {
		t.Fatal("b still uses the refused token after a poll")
	}
	if !b.refresher.IsRejected(t1) {
		t.Error("b does not hold the refused token as rejected")
	}
	if b.refresher.Offer(t1) {
		t.Error("b installs the refused token again")
	}
	if n := api.mints.Load(); n != 2 {
		t.Errorf("%d mints, want 2", n)
	}
	if logs.FilterMessage("using the token stored by another instance").Len() != 1 {
		t.Error("b did not log that it took the stored token")
	}
}

// A token offered to one instance (a push) is stored and adopted by the
// other at its next poll; an older one is not stored, even when published.
func TestSharePushReachesOtherInstances(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, _ := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
	b, _ := sharedInstance(t, storage, "instance-b", api, 5*time.Minute)
	fetch(t, a)
	fetch(t, b)

	pushed := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(3*time.Hour)))
	if !a.offer(pushed) {
		t.Fatal("the pushed token was not used")
	}
	eventually(t, "the pushed token is stored", func() bool {
		m := storage
		m.mu.Lock()
		defer m.mu.Unlock()
		return strings.Contains(string(m.data[a.share.keyOf()]), pushed.value)
	})
	b.pollOnce()
	if cur := b.refresher.Current(time.Now()); cur == nil || cur.value != pushed.value {
		t.Fatal("b does not use the pushed token after a poll")
	}
	older := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(2*time.Hour)))
	if b.offer(older) {
		t.Error("an older token was used")
	}
	// offer rejects it before publishing: the publish path itself must
	// keep the later-expiring stored token too
	b.publish(older)
	b.share.stop() // waits for publishes in flight
	if rec := storedRecord(t, storage); rec.Token != pushed.value {
		t.Error("the stored token was replaced by an older one")
	}
}

// Provision already reads the token file and offers its token, and
// `caddy validate` provisions too: nothing is stored before the source
// runs. The token offered meanwhile is stored once it does.
func TestShareNothingStoredBeforeStart(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, _ := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)

	offered := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(3*time.Hour)))
	if !a.offer(offered) {
		t.Fatal("the offered token was not used")
	}
	a.share.publishes.Wait() // a publish started by offer would be done
	storage.mu.Lock()
	n, taken := len(storage.data), storage.taken
	storage.mu.Unlock()
	if n != 0 || taken != 0 {
		t.Fatalf("before the source runs: %d values stored, %d locks taken; want none", n, taken)
	}

	if c := fetch(t, a); c.value != offered.value {
		t.Fatal("the source does not serve the offered token")
	}
	eventually(t, "the offered token is stored once the source runs", func() bool {
		storage.mu.Lock()
		defer storage.mu.Unlock()
		return strings.Contains(string(storage.data[a.share.keyOf()]), offered.value)
	})
	if n := api.mints.Load(); n != 0 {
		t.Errorf("%d mints, want 0", n)
	}
}

// A storage that fails every operation: each instance mints alone and
// serves; the fault is counted and logged once, not once per operation;
// when the storage works again, that is logged and the token is stored.
func TestShareStorageFaultsDegradeToAlone(t *testing.T) {
	storage := newMemStorage()
	storage.setFail(errors.New("connection refused"))
	api := newShareMintAPI(t, time.Hour)
	a, logs := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
	b, _ := sharedInstance(t, storage, "instance-b", api, 5*time.Minute)
	before := counterValue(storageErrorsTotal.WithLabelValues("load"))

	fetch(t, a)
	fetch(t, b)
	for range 5 {
		a.pollOnce()
	}
	if n := api.mints.Load(); n != 2 {
		t.Errorf("%d mints, want 2 (each instance alone)", n)
	}
	if d := counterValue(storageErrorsTotal.WithLabelValues("load")) - before; d < 7 {
		t.Errorf("storage_errors_total{op=load} grew by %v, want at least 7", d)
	}
	if n := logs.FilterMessage("shared storage failed; this instance refreshes its token alone until it works again").Len(); n != 1 {
		t.Errorf("%d warnings for a storage that keeps failing, want 1", n)
	}
	if st := a.share.status(); !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("status last_error %q", st.LastError)
	}

	storage.setFail(nil)
	a.pollOnce()
	if logs.FilterMessage("shared storage works again").Len() != 1 {
		t.Error("recovery not logged")
	}
	if st := a.share.status(); st.LastError != "" {
		t.Errorf("status last_error %q after recovery", st.LastError)
	}
	pushed := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(3*time.Hour)))
	a.offer(pushed)
	a.share.stop()
	if rec := storedRecord(t, storage); rec.Token != pushed.value {
		t.Error("nothing stored once the storage works again")
	}
}

// Values that are not this source's token are ignored with one log line
// each: garbage, another source's value, a token for another project.
func TestShareIgnoresCorruptAndForeignValues(t *testing.T) {
	api := newShareMintAPI(t, time.Hour)
	foreignToken := oidctest.OIDCToken(t, time.Now().Add(3*time.Hour), func(c jwt.MapClaims) { c["project_id"] = "prj_other" })
	for name, value := range map[string]func(id string) []byte{
		"garbage": func(string) []byte { return []byte("\x00not json{") },
		"other source": func(string) []byte {
			return recordJSON(t, "0123456789abcdef", oidctest.OIDCToken(t, time.Now().Add(3*time.Hour)))
		},
		"other project":   func(id string) []byte { return recordJSON(t, id, foreignToken) },
		"not a JWT":       func(id string) []byte { return recordJSON(t, id, "sk-not-a-jwt") },
		"other version":   func(id string) []byte { return []byte(`{"version":99,"source":"` + id + `"}`) },
		"wrong JSON type": func(string) []byte { return []byte(`{"version":"one"}`) },
	} {
		t.Run(name, func(t *testing.T) {
			storage := newMemStorage()
			a, logs := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
			storage.put(a.share.keyOf(), value(a.share.ident.Load().id))
			mintsBefore := api.mints.Load()
			c := fetch(t, a)
			a.pollOnce()
			a.pollOnce()
			if api.mints.Load() != mintsBefore+1 || c.value == foreignToken {
				t.Error("the instance used the value instead of minting")
			}
			if n := logs.FilterMessage("ignoring the value in the shared storage: it is not this source's token").Len(); n != 1 {
				t.Errorf("%d log lines, want 1", n)
			}
			if rec := storedRecord(t, storage); rec.Token != c.value {
				t.Error("the minted token did not replace the ignored value")
			}
		})
	}
}

// A lock that is never released (a holder on a storage without lock
// expiry): the instance waits only until shortly before its token stops
// being usable, then refreshes alone.
func TestShareLockHeldTooLongRefreshesAlone(t *testing.T) {
	storage := newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, logs := sharedInstance(t, storage, "instance-a", api, 5*time.Minute)
	if err := storage.Lock(context.Background(), a.share.ident.Load().lock); err != nil {
		t.Fatal(err)
	}
	// usable for about 4s more (margin: a tenth of 5s): waits about 3s
	cur := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(5*time.Second)))
	mintsBefore := api.mints.Load()
	c, err := a.sharedLoad(context.Background(), cur, true)
	waited := time.Now()
	if err != nil || c == nil || c.value == cur.value {
		t.Fatalf("sharedLoad: %v %v", c, err)
	}
	// no check against the wall clock after the wait (it depends on the
	// machine's speed; lockWait's bound is TestShareLockWait's): the token
	// got after the wait is a fresh mint, usable when the wait ended and
	// expiring after cur
	if n := api.mints.Load(); n != mintsBefore+1 {
		t.Errorf("%d mints after the wait, want 1", n-mintsBefore)
	}
	if !c.Usable(waited) || !c.expires.After(cur.expires) {
		t.Error("the token got after the wait is not a freshly minted one")
	}
	if logs.FilterMessage("the shared storage lock was held too long; refreshing alone").Len() != 1 {
		t.Error("the wait that ran out is not logged")
	}
	if rec := storedRecord(t, storage); rec.Token != c.value {
		t.Error("the token minted alone was not stored for the others")
	}
}

// A reload that swaps the storage while the lock is held: the lock is
// released on the storage it was taken on.
func TestShareUnlockOnLockedStorage(t *testing.T) {
	first, second := newMemStorage(), newMemStorage()
	api := newShareMintAPI(t, time.Hour)
	a, _ := sharedInstance(t, first, "instance-a", api, 5*time.Minute)
	unlock, err := a.share.lockFor(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a.share.setStorage(second)
	unlock()
	first.mu.Lock()
	held := first.locks[a.share.ident.Load().lock]
	first.mu.Unlock()
	if held {
		t.Error("the lock on the storage it was taken on is still held")
	}
}

func TestShareLockWait(t *testing.T) {
	now := time.Now()
	usableFor := func(d time.Duration) *Credential {
		c := New("x", MethodOIDC, now.Add(d), now.Add(-time.Hour))
		c.setExpiryMargin(0)
		return c
	}
	for _, tc := range []struct {
		c    *Credential
		want time.Duration
	}{
		{nil, shareNoTokenLockWait},
		{usableFor(-time.Second), shareNoTokenLockWait},
		{usableFor(time.Second), time.Second},
		{usableFor(4 * time.Second), 3 * time.Second}, // a quarter kept for a refresh alone
		{usableFor(40 * time.Second), 40*time.Second - shareLockReserve},
		{usableFor(time.Hour), shareMaxLockWait},
	} {
		if got := lockWait(tc.c, now); got != tc.want {
			t.Errorf("lockWait(%v) = %s, want %s", tc.c, got, tc.want)
		}
	}
}

func mustParse(t *testing.T, tok string) *Credential {
	t.Helper()
	c, _, err := ParseToken(tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func recordJSON(t *testing.T, source, token string) []byte {
	b, err := json.Marshal(sharedRecord{Version: shareRecordVersion, Source: source, Token: token,
		Expires: time.Now().Add(3 * time.Hour), WrittenBy: "someone", WrittenAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
