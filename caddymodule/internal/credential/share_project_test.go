package credential

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
)

// forOtherProject makes a test token for another team and project.
func forOtherProject(c jwt.MapClaims) { c["owner_id"], c["project_id"] = "team_other", "prj_other" }

// The storage id names the team and project the tokens are for, and what
// decides which tokens a source gets (mint endpoint, push settings, or
// the env name and file); not secrets or timings, nor the env value of
// each instance.
func TestShareIdentity(t *testing.T) {
	mint := OIDCConfig{MintEndpoint: "https://api.vercel.com/v1/projects/prj_a/token?source=ai-gateway-auth&teamId=team_a"}
	mintSame := mint
	mintSame.MintAccessTokenHash, mintSame.RefreshBefore, mintSame.EnvValueHash = "other", time.Minute, "other"
	mintOther := mint
	mintOther.MintEndpoint = strings.Replace(mint.MintEndpoint, "prj_a", "prj_b", 1)
	pushed := mint
	pushed.Push = &PushRules{Team: "team_a", Project: "prj_a"}
	env := OIDCConfig{Env: "VERCEL_OIDC_TOKEN", EnvValueHash: "instance 1's"}
	envSame := OIDCConfig{Env: "VERCEL_OIDC_TOKEN", EnvValueHash: "instance 2's"}
	file := OIDCConfig{File: "/run/vercel/oidc-token"}
	a := shareProject{Team: "team_a", Project: "prj_a"}
	tokA := shareProject{Team: "team_a", Project: "prj_a", fromToken: true}
	tokB := shareProject{Team: "team_a", Project: "prj_b", fromToken: true}
	tokTeamB := shareProject{Team: "team_b", Project: "prj_a", fromToken: true}

	if shareIdentity(&mint, a) != shareIdentity(&mintSame, a) {
		t.Error("secrets or timings change the storage id")
	}
	if shareIdentity(&env, tokA) != shareIdentity(&envSame, tokA) {
		t.Error("two instances of one project with their own env tokens have different storage ids")
	}
	seen := map[string]string{}
	for name, id := range map[string]string{
		"mint":                      shareIdentity(&mint, a),
		"mint, other project":       shareIdentity(&mintOther, a),
		"mint and push":             shareIdentity(&pushed, a),
		"env, project A":            shareIdentity(&env, tokA),
		"env, project B":            shareIdentity(&env, tokB),
		"env, project A of team B":  shareIdentity(&env, tokTeamB),
		"file, project A":           shareIdentity(&file, tokA),
		"file, project B":           shareIdentity(&file, tokB),
		"file, project A of team B": shareIdentity(&file, tokTeamB),
	} {
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share a storage id", name, other)
		}
		seen[id] = name
	}
}

// A stored token is for the source's project when its owner_id and
// project_id are the source's: exactly, for a project learned from the
// source's own token; for configured values, when they are ids (a slug
// or a project name cannot be compared with the claims).
func TestShareProjectCheck(t *testing.T) {
	for _, tc := range []struct {
		name           string
		p              shareProject
		owner, project string
		ok             bool
	}{
		{"learned, same", shareProject{"team_a", "prj_a", true}, "team_a", "prj_a", true},
		{"learned, other project", shareProject{"team_a", "prj_a", true}, "team_a", "prj_b", false},
		{"learned, other team", shareProject{"team_a", "prj_a", true}, "team_b", "prj_a", false},
		{"learned, no claims", shareProject{"team_a", "prj_a", true}, "", "", false},
		{"learned odd values, other", shareProject{"acme", "agents", true}, "acme", "other", false},
		{"learned without team, a team", shareProject{"", "prj_a", true}, "team_a", "prj_a", false},
		{"configured ids, same", shareProject{Team: "team_a", Project: "prj_a"}, "team_a", "prj_a", true},
		{"configured ids, other project", shareProject{Team: "team_a", Project: "prj_a"}, "team_a", "prj_b", false},
		{"configured ids, other team", shareProject{Team: "team_a", Project: "prj_a"}, "team_b", "prj_a", false},
		{"configured names", shareProject{Team: "acme", Project: "agents"}, "team_a", "prj_a", true},
	} {
		if err := tc.p.check(tc.owner, tc.project); (err == nil) != tc.ok {
			t.Errorf("%s: check(%q, %q) = %v, want ok %v", tc.name, tc.owner, tc.project, err, tc.ok)
		}
	}
}

// The project the settings name: push's team and project, completed by
// the mint block's; none for env and file only, or a push without a
// project and no mint.
func TestConfiguredProject(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  OIDCConfig
		want *shareProject
	}{
		{"env only", OIDCConfig{Env: "VERCEL_OIDC_TOKEN"}, nil},
		{"file only", OIDCConfig{File: "/run/token"}, nil},
		{"push", OIDCConfig{Push: &PushRules{Team: "team_a", Project: "prj_a"}}, &shareProject{Team: "team_a", Project: "prj_a"}},
		{"push without project", OIDCConfig{Push: &PushRules{Team: "team_a"}}, nil},
		{"mint by name", OIDCConfig{mint: &Minter{team: "acme", project: "agents"}}, &shareProject{Team: "acme", Project: "agents"}},
		{"mint without team", OIDCConfig{mint: &Minter{project: "prj_a"}}, &shareProject{Project: "prj_a"}},
		{"mint without project", OIDCConfig{mint: &Minter{team: "team_a"}}, nil},
		{"push team, mint project", OIDCConfig{Push: &PushRules{Team: "team_a"}, mint: &Minter{team: "acme", project: "agents"}},
			&shareProject{Team: "team_a", Project: "agents"}},
	} {
		got := configuredProject(&tc.cfg)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// Env-only sources of two projects, under the same variable name, on one
// storage: each stores its token under its own project's id, and neither
// adopts the other's, although B's expires later, not even an instance
// whose own token has expired; that instance, of project A, uses A's. A
// value under A's id that holds B's token (a writer that got it wrong)
// is ignored with the warning.
func TestShareEnvSourcesOfTwoProjects(t *testing.T) {
	storage := newMemStorage()
	envInstance := func(name, tok string) *OIDCSource {
		t.Setenv("AIGW_TEST_SHARE_ENV", tok) // read when the state is made
		st, _ := sharedSource(t, storage, name, OIDCConfig{Env: "AIGW_TEST_SHARE_ENV"})
		return st
	}
	tokA := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	tokB := oidctest.OIDCToken(t, time.Now().Add(3*time.Hour), forOtherProject)
	a, b := envInstance("a", tokA), envInstance("b", tokB)
	if a.share.keyOf() == "" || a.share.keyOf() == b.share.keyOf() {
		t.Fatalf("storage keys %q and %q", a.share.keyOf(), b.share.keyOf())
	}
	if st := b.share.status(); st.Team != "team_other" || st.Project != "prj_other" {
		t.Errorf("B's status: team %q, project %q", st.Team, st.Project)
	}
	a.publish(a.envCred) // as at their refresh
	b.publish(b.envCred)
	storage.mu.Lock()
	n := len(storage.data)
	storage.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d stored values, want one per project", n)
	}

	expired := oidctest.OIDCToken(t, time.Now().Add(-time.Minute))
	a2 := envInstance("a2", expired)
	if a2.share.keyOf() != a.share.keyOf() {
		t.Fatal("an instance of project A with an expired token does not share A's storage id")
	}
	for _, st := range []*OIDCSource{a, a2} {
		st.pollOnce()
		if c := st.refresher.Current(time.Now()); c == nil || c.value != tokA {
			t.Errorf("instance %s does not use A's token", st.id)
		}
	}
	b.pollOnce()
	if c := b.refresher.Current(time.Now()); c == nil || c.value != tokB {
		t.Error("B does not use its own token")
	}

	c, logs := sharedSource(t, storage, "c", OIDCConfig{Env: "AIGW_TEST_SHARE_ENV"}) // the expired A token
	storage.put(c.share.keyOf(), recordJSON(t, c.share.ident.Load().id, tokB))
	c.pollOnce()
	if cur := c.refresher.Current(time.Now()); cur != nil {
		t.Error("a token of project B stored under A's id was used")
	}
	if logs.FilterMessage("ignoring the value in the shared storage: it is not this source's token").Len() != 1 {
		t.Error("the foreign token is not logged")
	}
}

// A file-only source whose file is not there yet does not know its
// project: it reads, writes and locks nothing, so it adopts nothing.
// Once the file appears, its token's project gives the storage id; the
// token is stored there, and a second instance reading the same path
// shares it. The file rewritten with another project's token: that token
// is the source's own input and is used here, but it is never stored, and
// the storage id stays.
func TestShareFileProjectLearnedLater(t *testing.T) {
	storage := newMemStorage()
	dir := t.TempDir()
	path := dir + "/token"
	a, logs := sharedSource(t, storage, "a", OIDCConfig{File: path})
	if st := a.share.status(); st.Key != "" || st.Project != "" {
		t.Errorf("status before any token: key %q, project %q", st.Key, st.Project)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.refresher.Fetch(ctx); err == nil {
		t.Fatal("a token from nowhere")
	}
	a.pollOnce()
	storage.mu.Lock()
	n, taken := len(storage.data), storage.taken
	storage.mu.Unlock()
	if n != 0 || taken != 0 {
		t.Fatalf("without a project: %d values stored, %d locks taken; want none", n, taken)
	}

	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	writeFile(t, dir, "token", tok)
	eventually(t, "the file's token is used", func() bool { return valueOf(a.Current(time.Now())) == tok })
	eventually(t, "the file's token is stored", func() bool {
		storage.mu.Lock()
		defer storage.mu.Unlock()
		return strings.Contains(string(storage.data[a.share.keyOf()]), tok)
	})
	if st := a.share.status(); st.Team != oidctest.Team || st.Project != oidctest.Project || st.Key == "" {
		t.Errorf("status: key %q, team %q, project %q", st.Key, st.Team, st.Project)
	}
	if logs.FilterMessage("sharing this source's token with the instances of its project").Len() != 1 {
		t.Error("the project learned is not logged")
	}
	b, _ := sharedSource(t, storage, "b", OIDCConfig{File: path})
	if b.share.keyOf() != a.share.keyOf() {
		t.Error("a second instance of the same project has another storage id")
	}

	key := a.share.keyOf()
	other := oidctest.OIDCToken(t, time.Now().Add(2*time.Hour), forOtherProject)
	writeFile(t, dir, "token", other)
	eventually(t, "the rewritten file's token is used", func() bool { return valueOf(a.Current(time.Now())) == other })
	a.share.stop() // waits for publishes in flight
	if rec := storedRecord(t, storage); rec.Token != tok {
		t.Error("another project's token was stored")
	}
	if a.share.keyOf() != key {
		t.Error("the storage id moved")
	}
	if logs.FilterMessage("not storing this source's token for the fleet: it is for another project than the one the source shares").Len() == 0 {
		t.Error("the token not stored is not logged")
	}
}

// A token pushed to an instance that has served nothing yet (its source
// not started) is stored at once; another instance, push-only and
// without a token, whose refreshes fail and back off, uses it at its
// next read of the storage and shows no failure any more.
func TestSharePushToUnstartedSource(t *testing.T) {
	storage := newMemStorage()
	pushOnly := OIDCConfig{Push: &PushRules{Team: oidctest.Team, Project: oidctest.Project}}
	idle, _ := sharedSource(t, storage, "idle", pushOnly)
	waiting, _ := sharedSource(t, storage, "waiting", pushOnly)
	if _, err := waiting.refresher.Fetch(context.Background()); err == nil {
		t.Fatal("a push-only source has a token before any push")
	}
	if st := waiting.refresher.status(time.Now()); st.LastError == "" || st.NextRefresh == nil {
		t.Fatalf("the failed refresh is not backing off: %+v", st)
	}

	pushed := mustParse(t, oidctest.OIDCToken(t, time.Now().Add(time.Hour)))
	if !idle.Offer(pushed) {
		t.Fatal("the pushed token was not used")
	}
	eventually(t, "the token pushed to the idle instance is stored", func() bool {
		storage.mu.Lock()
		defer storage.mu.Unlock()
		return strings.Contains(string(storage.data[idle.share.keyOf()]), pushed.value)
	})
	waiting.pollOnce()
	if c := waiting.refresher.Current(time.Now()); c == nil || c.value != pushed.value {
		t.Fatal("the waiting instance does not use the pushed token after a read")
	}
	if st := waiting.refresher.status(time.Now()); st.LastError != "" {
		t.Errorf("the waiting instance still shows the failure: %q", st.LastError)
	}
}
