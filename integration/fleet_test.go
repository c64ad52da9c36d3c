package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fleetSite is the site every instance of a fleet runs: a minting,
// pushable vercel_oidc source with share.
func fleetSite(v *fakeVercel, gw string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			%s
			push /ai-gateway-auth/token {
				issuer   %s
				jwks_url %s/%s/.well-known/jwks
			}
			share
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, mintBlock(v.URL()), v.Issuer(), v.URL(), v.TeamSlug, gw)
}

// fleetHeader names, in what the gateway received, the instance a
// request was sent to (the proxy passes it through).
const fleetHeader = "X-Fleet-Instance"

// fleetTraffic sends a chat request to each instance about every 100 ms
// until stopped, and records every answer that is not a 200.
type fleetTraffic struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	ok     int
	failed []string
}

func startFleetTraffic(t *testing.T, fleet ...*caddyProc) *fleetTraffic {
	ft := &fleetTraffic{stopCh: make(chan struct{})}
	tc := newTestClient(t)
	for i, p := range fleet {
		ft.wg.Go(func() {
			for {
				select {
				case <-ft.stopCh:
					return
				case <-time.After(100 * time.Millisecond):
				}
				res, err := tc.try(http.MethodPost, p.URL+"/v1/chat/completions",
					map[string]string{"Authorization": "Bearer sk-placeholder", fleetHeader: p.URL}, chatBody)
				ft.mu.Lock()
				switch {
				case err != nil:
					ft.failed = append(ft.failed, fmt.Sprintf("instance %d at %s: %v", i+1, time.Now().Format(time.StampMilli), err))
				case res.Status != http.StatusOK:
					ft.failed = append(ft.failed, fmt.Sprintf("instance %d at %s: status %d: %s", i+1, time.Now().Format(time.StampMilli), res.Status, res.Body))
				default:
					ft.ok++
				}
				ft.mu.Unlock()
			}
		})
	}
	t.Cleanup(ft.stop)
	return ft
}

// stop ends the traffic and returns the count of 200s and the failures.
func (ft *fleetTraffic) stop() {
	select {
	case <-ft.stopCh:
	default:
		close(ft.stopCh)
	}
	ft.wg.Wait()
}

func (ft *fleetTraffic) check(t *testing.T, what string) int {
	t.Helper()
	ft.stop()
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.failed) > 0 {
		t.Errorf("%s: %d of %d requests failed; first: %s", what, len(ft.failed), len(ft.failed)+ft.ok, ft.failed[0])
	}
	if ft.ok == 0 {
		t.Errorf("%s: no request succeeded", what)
	}
	return ft.ok
}

// fleetSource is the status of an instance's vercel_oidc source.
type fleetSource struct {
	Usable      bool       `json:"usable"`
	Expires     *time.Time `json:"expires"`
	LastRefresh *time.Time `json:"last_refresh"`
	NextRefresh *time.Time `json:"next_refresh"`
	LastError   string     `json:"last_error"`
	Shared      *struct {
		Enabled   bool       `json:"enabled"`
		Instance  string     `json:"instance"`
		Key       string     `json:"key"`
		LastRead  *time.Time `json:"last_read"`
		LastWrite *time.Time `json:"last_write"`
		WrittenBy string     `json:"written_by"`
		LastError string     `json:"last_error"`
	} `json:"shared"`
}

func fleetStatus(t *testing.T, p *caddyProc) (fleetSource, string) {
	t.Helper()
	// a loaded machine may drop an admin connection now and then: try a
	// few times (a dead instance fails them all)
	var res response
	var err error
	for range 5 {
		if res, err = newTestClient(t).try(http.MethodGet, p.Admin+"/ai_gateway_auth/status", nil, ""); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Handlers []struct {
			Sources []fleetSource `json:"sources"`
		} `json:"handlers"`
	}
	if err := json.Unmarshal(res.Body, &doc); err != nil || len(doc.Handlers) != 1 || len(doc.Handlers[0].Sources) != 1 {
		t.Fatalf("status: %v: %s", err, res.Body)
	}
	return doc.Handlers[0].Sources[0], string(res.Body)
}

// expiresAt is the exp an instance's status reports, zero if none.
func expiresAt(t *testing.T, p *caddyProc) time.Time {
	t.Helper()
	s, _ := fleetStatus(t, p)
	if s.Expires == nil {
		return time.Time{}
	}
	return *s.Expires
}

// sentBy is what the gateway received from instance p since index from.
func sentBy(gw *fakeGateway, p *caddyProc, from int) []gatewayRequest {
	var out []gatewayRequest
	for _, r := range gw.Requests()[from:] {
		if r.Header.Get(fleetHeader) == p.URL {
			out = append(out, r)
		}
	}
	return out
}

// TestFleetSharesOneToken: three `caddy run` processes share one
// file_system storage folder. With 10 s tokens and steady traffic on all
// three for 30 s, every request is answered 200 and the Vercel API is
// called at most once per rotation plus once (alone, each instance would
// mint at every rotation). A token pushed to instance 1 is what
// instances 2 and 3 send within a few seconds, without a request to them
// in between. A token the gateway refused on instance 1 stops being sent
// by 2 and 3 without any of them being refused. With the storage folder
// made unwritable (its subfolders replaced by files, which stops root
// too), every instance keeps serving and refreshing alone, and says so
// in its log, its status and its metrics.
func TestFleetSharesOneToken(t *testing.T) {
	t.Parallel()
	const ttl, steady = 10 * time.Second, 30 * time.Second
	v := newFakeVercel(t)
	v.SetTTL(ttl)
	gw := newFakeGateway(t, v)
	storageDir := t.TempDir()
	fleet := startFleet(t, 3, storageDir, caddyOptions{Env: mintEnv(v)}, fleetSite(v, gw.URL()))
	tc := newTestClient(t)

	// Steady traffic: one mint per rotation for the whole fleet.
	traffic := startFleetTraffic(t, fleet...)
	time.Sleep(steady)
	ok := traffic.check(t, "steady traffic")
	mints := v.Mints()
	if len(mints) == 0 {
		t.Fatal("no mint")
	}
	elapsed := time.Since(mints[0].At)
	// a token is refreshed at half its life: at most one rotation per ttl/2
	rotations := int(math.Ceil(elapsed.Seconds() / (ttl / 2).Seconds()))
	tokens := map[string]bool{}
	for _, r := range gw.Requests() {
		tokens[r.Credential] = true
	}
	t.Logf("fleet figures: 3 instances, %s of steady traffic (%d requests, all 200), %s tokens: %d rotations in %s, %d mint calls (alone: about %d), %d distinct tokens sent",
		steady, ok, ttl, rotations, elapsed.Round(time.Second), len(mints), 3*(rotations+1), len(tokens))
	if len(mints) > rotations+1 {
		t.Errorf("%d mint calls for %d rotations: want at most %d", len(mints), rotations+1, rotations+1)
	}
	for i, p := range fleet {
		st, body := fleetStatus(t, p)
		if st.Shared == nil || !st.Shared.Enabled || st.Shared.LastRead == nil || st.Shared.WrittenBy == "" || st.Shared.Instance == "" {
			t.Errorf("instance %d: status shows no sharing: %s", i+1, body)
		}
		for tok := range tokens {
			if strings.Contains(body, tok) {
				t.Fatalf("instance %d: the status holds a token", i+1)
			}
		}
	}
	// where the token lands, and how private it is
	files, _ := filepath.Glob(filepath.Join(storageDir, "ai_gateway_auth", "vercel_oidc", "*", "token.json"))
	if len(files) != 1 {
		t.Fatalf("token files in the storage: %v", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stored token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if fi, err := os.Stat(filepath.Dir(files[0])); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("stored token folder: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}

	// A push to instance 1 reaches 2 and 3 through the storage.
	traffic = startFleetTraffic(t, fleet...)
	pushed := v.Token(time.Hour)
	pushedExp, _ := v.expOf(pushed)
	res := tc.do(t, http.MethodPost, fleet[0].URL+pushPath, nil, `{"token":"`+pushed+`"}`)
	if res.Status != http.StatusNoContent || res.Header.Get("Ai-Gateway-Auth-Token-Used") != "true" {
		t.Fatalf("push: status %d, used %q: %s", res.Status, res.Header.Get("Ai-Gateway-Auth-Token-Used"), res.Body)
	}
	pushedAt := time.Now()
	for i, p := range fleet[1:] {
		eventually(t, 10*time.Second, fmt.Sprintf("instance %d uses the pushed token", i+2), func() string {
			if got := expiresAt(t, p); !got.Equal(pushedExp) {
				return "its token expires at " + got.String()
			}
			return ""
		})
	}
	t.Logf("pushed token in use on instances 2 and 3 after %s", time.Since(pushedAt).Round(100*time.Millisecond))
	traffic.check(t, "traffic around the push")
	for i, p := range fleet {
		if res := tc.do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer sk-placeholder", fleetHeader: p.URL}, chatBody); res.Status != http.StatusOK {
			t.Fatalf("instance %d: status %d", i+1, res.Status)
		}
		if r := lastRequest(t, gw); r.Credential != pushed {
			t.Errorf("instance %d did not send the pushed token", i+1)
		}
	}
	mintsBefore := len(v.Mints())

	// The gateway refuses the pushed token: instance 1 replaces it (one
	// mint) and records the refusal; 2 and 3, asked nothing meanwhile,
	// stop using it.
	gw.Revoke(pushed)
	revoked := time.Now()
	from := len(gw.Requests())
	if res := tc.do(t, http.MethodPost, fleet[0].URL+"/v1/chat/completions",
		map[string]string{"Authorization": "Bearer sk-placeholder", fleetHeader: fleet[0].URL}, chatBody); res.Status != http.StatusOK {
		t.Fatalf("instance 1 after the revocation: status %d: %s", res.Status, res.Body)
	}
	for i, p := range fleet[1:] {
		eventually(t, 10*time.Second, fmt.Sprintf("instance %d drops the refused token", i+2), func() string {
			if got := expiresAt(t, p); got.Equal(pushedExp) || got.IsZero() {
				return "it still holds it"
			}
			return ""
		})
	}
	traffic = startFleetTraffic(t, fleet...)
	time.Sleep(time.Second)
	traffic.check(t, "traffic after the revocation")
	for i, p := range fleet[1:] {
		sent := sentBy(gw, p, from)
		if len(sent) == 0 {
			t.Fatalf("instance %d sent nothing", i+2)
		}
		for _, r := range sent {
			if r.Credential == pushed || r.Status == http.StatusUnauthorized {
				t.Fatalf("instance %d sent the refused token", i+2)
			}
		}
	}
	// one mint for the refusal, plus the fleet's scheduled rotations
	// (one per half token life) if this phase lasted that long on a busy
	// machine: never one per instance
	phase := time.Since(revoked)
	due := int(math.Ceil(phase.Seconds() / (ttl / 2).Seconds()))
	if n := len(v.Mints()) - mintsBefore; n < 1 || n > 1+due {
		t.Errorf("%d mints for one refused token in %s, want 1 (plus at most %d scheduled rotations)",
			n, phase.Round(time.Millisecond), due)
	}

	// The storage breaks: its subfolders become files. Every instance
	// keeps refreshing alone.
	for _, sub := range []string{"ai_gateway_auth", "locks"} {
		path := filepath.Join(storageDir, sub)
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("not a folder"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err == nil {
			t.Fatalf("%s can still be written to", path)
		}
	}
	broken := time.Now()
	traffic = startFleetTraffic(t, fleet...)
	for i, p := range fleet {
		eventually(t, 30*time.Second, fmt.Sprintf("instance %d refreshes alone", i+1), func() string {
			s, _ := fleetStatus(t, p)
			if s.Shared == nil {
				return "no shared status"
			}
			if s.LastRefresh == nil || s.LastRefresh.Before(broken) || s.Shared.LastError == "" {
				return fmt.Sprintf("last refresh %v, storage error %q", s.LastRefresh, s.Shared.LastError)
			}
			return ""
		})
	}
	time.Sleep(ttl / 2) // one more rotation each, alone
	traffic.check(t, "traffic with the storage broken")
	for i, p := range fleet {
		if !strings.Contains(p.Logs(), "shared storage failed; this instance refreshes its token alone") {
			t.Errorf("instance %d did not log the storage fault", i+1)
		}
		if n := adminMetrics(t, p).value(t, "caddy_ai_gateway_auth_storage_errors_total", "op", "load"); n == 0 {
			t.Errorf("instance %d: storage_errors_total{op=load} is 0", i+1)
		}
	}
	t.Logf("storage broken: %d mint calls in %s by 3 instances alone", len(v.Mints())-mintsBefore-1, time.Since(broken).Round(time.Second))
}

// TestFleetLockHolderKilled: the instance that holds the storage lock
// while it mints (the mint is held) is killed with SIGKILL. The other two
// take over once the dead instance's lock goes stale (certmagic's file
// lock: 10 s without an update), before their token stops being usable:
// no request to them fails.
func TestFleetLockHolderKilled(t *testing.T) {
	t.Parallel()
	// refreshed at 30 s; usable until 55 s: the survivors take over about
	// 10 s after the kill (the stale lock), with room to spare on a busy
	// machine
	const ttl = 60 * time.Second
	v := newFakeVercel(t)
	v.SetTTL(ttl)
	gw := newFakeGateway(t, v)
	fleet := startFleet(t, 3, t.TempDir(), caddyOptions{Env: mintEnv(v)}, fleetSite(v, gw.URL()))
	tc := newTestClient(t)
	for i, p := range fleet {
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("instance %d: status %d: %s", i+1, res.Status, res.Body)
		}
	}
	if n := len(v.Mints()); n != 1 {
		t.Fatalf("%d mints to start the fleet, want 1", n)
	}
	first := lastRequest(t, gw).Credential
	firstExp, _ := v.expOf(first)
	const lockLine = "took the shared storage lock to refresh the token for the fleet"
	before := make([]int, len(fleet))
	for i, p := range fleet {
		before[i] = strings.Count(p.Logs(), lockLine)
	}

	held, release := v.Hold()
	defer release()
	traffic := startFleetTraffic(t, fleet...)
	select {
	case <-held:
	case <-time.After(waitTimeout):
		t.Fatal("no refresh started")
	}
	holder := -1
	eventually(t, 10*time.Second, "the lock holder logs it", func() string {
		for i, p := range fleet {
			if strings.Count(p.Logs(), lockLine) > before[i] {
				holder = i
				return ""
			}
		}
		return "no instance logged taking the lock"
	})
	traffic.check(t, "traffic before the kill")
	survivors := append(append([]*caddyProc(nil), fleet[:holder]...), fleet[holder+1:]...)
	traffic = startFleetTraffic(t, survivors...)
	if err := fleet[holder].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-fleet[holder].exited
	killed := time.Now()
	release()
	t.Logf("killed instance %d holding the lock during its mint; the old token stays usable for another %s",
		holder+1, time.Until(v.usableUntil(first)).Round(time.Second))

	for i, p := range survivors {
		eventually(t, time.Until(firstExp), fmt.Sprintf("survivor %d takes over", i+1), func() string {
			if got := expiresAt(t, p); !got.After(firstExp) {
				return "its token still expires at " + got.String()
			}
			return ""
		})
	}
	tookOver := time.Since(killed)
	traffic.check(t, "traffic to the survivors")
	for _, r := range gw.Requests() {
		if r.Status == http.StatusUnauthorized {
			t.Fatalf("the gateway refused a request: %s", r.Reject)
		}
	}
	t.Logf("survivors took over %s after the kill; %d mint calls completed in all (the killed instance's was cut off)",
		tookOver.Round(100*time.Millisecond), len(v.Mints()))
}
