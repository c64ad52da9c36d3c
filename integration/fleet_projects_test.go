package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envShareSite is an env-only vercel_oidc source with share: what it
// shares is known only from its token's claims.
func envShareSite(gw string) string {
	return fmt.Sprintf(`	ai_gateway_auth {
		credential vercel_oidc {
			env VERCEL_OIDC_TOKEN
			share
		}
		client_key sk-placeholder
	}
	reverse_proxy %s`, gw)
}

// storedTokens are the tokens in the shared storage folder, by file.
func storedTokens(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "ai_gateway_auth", "vercel_oidc", "*", "token.json"))
	out := map[string]string{}
	for _, f := range files {
		var rec struct {
			Token string `json:"token"`
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &rec) == nil {
			out[f] = rec.Token
		}
	}
	return out
}

// TestFleetSharingPerProject: two proxies of two projects (their own
// team, project, gateway) share one storage folder, as an org-wide
// storage for certificates would be, with the same env-only source. Each
// stores its token when it is due; neither ever forwards the other's,
// although project B's expires later than project A's, not even once
// A's own has expired and A has none.
func TestFleetSharingPerProject(t *testing.T) {
	t.Parallel()
	vA, vB := newFakeVercel(t), newFakeVercel(t)
	gwA, gwB := newFakeGateway(t, vA), newFakeGateway(t, vB)
	dir := t.TempDir()
	storage := fleetStorage(dir)
	// short lives: each proxy refreshes (and so stores its token) at half
	// its life; B's expires later. Each is asked at once, while its token
	// is fresh.
	tc := newTestClient(t)
	start := func(v *fakeVercel, gw *fakeGateway, ttl time.Duration) (*caddyProc, string) {
		tok := v.Token(ttl)
		p := startCaddy(t, caddyOptions{Global: storage, Env: map[string]string{"VERCEL_OIDC_TOKEN": tok}}, envShareSite(gw.URL()))
		if res := tc.chat(t, p.URL, "sk-placeholder"); res.Status != http.StatusOK {
			t.Fatalf("first request: status %d: %s", res.Status, res.Body)
		}
		assertForwarded(t, lastRequest(t, gw), tok, "oidc")
		return p, tok
	}
	pA, tokA := start(vA, gwA, 16*time.Second)
	pB, tokB := start(vB, gwB, 32*time.Second)

	// requests to both all along; only what the gateways got is checked
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			tc.tryChat(pA.URL, "sk-placeholder")
			tc.tryChat(pB.URL, "sk-placeholder")
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	eventually(t, waitTimeout, "project B's token is stored", func() string {
		for _, tok := range storedTokens(t, dir) {
			if tok == tokB {
				return ""
			}
		}
		return "not yet"
	})
	seenB := time.Now()
	// A reads the storage twice after B's token is there
	for range 2 {
		from := time.Now()
		eventually(t, waitTimeout, "A reads the storage", func() string {
			s, body := fleetStatus(t, pA)
			if s.Shared == nil || s.Shared.LastRead == nil || !s.Shared.LastRead.After(from) {
				return "no read since " + from.Format(time.StampMilli) + ": " + body
			}
			return ""
		})
	}
	close(stop)
	<-done
	t.Logf("A read the storage twice in the %s after B's token was stored; A's own token expired %s before that",
		time.Since(seenB).Round(100*time.Millisecond), time.Since(vA.usableUntil(tokA)).Round(100*time.Millisecond))

	expA, _ := vA.expOf(tokA)
	expB, _ := vB.expOf(tokB)
	for _, c := range []struct {
		name       string
		p          *caddyProc
		gw         *fakeGateway
		own, other string
		otherExp   time.Time
	}{{"A", pA, gwA, tokA, tokB, expB}, {"B", pB, gwB, tokB, tokA, expA}} {
		for _, r := range c.gw.Requests() {
			if r.Credential == c.other {
				t.Fatalf("proxy %s forwarded the other project's token", c.name)
			}
			if r.Credential != c.own {
				t.Fatalf("proxy %s forwarded a token that is not its own", c.name)
			}
		}
		if expiresAt(t, c.p).Equal(c.otherExp) {
			t.Errorf("proxy %s holds the other project's token", c.name)
		}
		t.Logf("proxy %s: %d requests reached its gateway, all with its own token", c.name, len(c.gw.Requests()))
	}
	stored := storedTokens(t, dir)
	var got []string
	for _, tok := range stored {
		switch tok {
		case tokA:
			got = append(got, "A")
		case tokB:
			got = append(got, "B")
		default:
			got = append(got, "unknown")
		}
	}
	if len(stored) != 2 || !strings.Contains(strings.Join(got, ","), "A") || !strings.Contains(strings.Join(got, ","), "B") {
		t.Errorf("stored values: %v, want one for each project", got)
	}
	assertNoSecrets(t, "responses", tc.Transcript(), append(secretsOf(vA), secretsOf(vB)...)...)
}
