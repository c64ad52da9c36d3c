package credential

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc/oidctest"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// The file is re-read whenever it changes, however it changes; a file
// that disappears or breaks never takes away a still-valid token; an
// older token never replaces a fresher one.
func TestOIDCFileChanges(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	// tokens of different lengths, so each rewrite changes the size even
	// within one mtime tick
	tokN := func(hours int) string {
		return oidctest.OIDCToken(t, now.Add(time.Duration(hours)*time.Hour), func(c jwt.MapClaims) {
			c["pad"] = strings.Repeat("x", hours)
		})

	}
	tok1, tok2, tok3, tokOld, tok4, tok5 := tokN(1), tokN(2), tokN(3), tokN(0), tokN(4), tokN(5)
	path := writeFile(t, dir, "oidc-token", tok1)
	s := newTestSource(t, OIDCConfig{File: path})
	if valueOf(s.Current(time.Now())) != tok1 {
		t.Fatal("file token not used at provision")
	}

	// rewritten in place (same inode)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "VERCEL_OIDC_TOKEN=%s\n", tok2)
	f.Close()
	eventually(t, "in-place rewrite picked up", func() bool { return valueOf(s.Current(time.Now())) == tok2 })

	// atomic rename over the file
	writeFile(t, dir, "oidc-token.tmp", tok3)
	if err := os.Rename(filepath.Join(dir, "oidc-token.tmp"), path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "atomic rename picked up", func() bool { return valueOf(s.Current(time.Now())) == tok3 })

	// an earlier-expiring token does not replace the fresher one (tokOld
	// expires now, so it is not even usable)
	writeFile(t, dir, "oidc-token", tokOld)
	eventually(t, "expired file token reported", func() bool {
		return strings.Contains(loadErrorOrEmpty(s), "token expired at")
	})
	if valueOf(s.Current(time.Now())) != tok3 {
		t.Error("an older token replaced a fresher one")
	}
	writeFile(t, dir, "oidc-token", tok4)
	eventually(t, "fresher token picked up", func() bool { return valueOf(s.Current(time.Now())) == tok4 })

	// deleted: the still-valid token stays; the reason is reported
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deletion noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "no such file") })
	if valueOf(s.Current(time.Now())) != tok4 {
		t.Error("token lost when the file was deleted")
	}

	// replaced by a directory
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	eventually(t, "directory noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "is not a regular file") })
	if valueOf(s.Current(time.Now())) != tok4 {
		t.Error("token lost when the file became a directory")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// truncated
	writeFile(t, dir, "oidc-token", "")
	eventually(t, "empty file noticed", func() bool { return strings.Contains(loadErrorOrEmpty(s), "no token in it") })
	if valueOf(s.Current(time.Now())) != tok4 {
		t.Error("token lost when the file was truncated")
	}

	// and back
	writeFile(t, dir, "oidc-token", tok5)
	eventually(t, "file back", func() bool { return valueOf(s.Current(time.Now())) == tok5 })
}

// loadErrorOrEmpty is the reason the source's inputs give for having no
// token (what a 503 and the status report), ignoring the cached token; ""
// when an input has one.
func loadErrorOrEmpty(s *OIDCSource) string {
	if _, err := s.load(context.Background(), nil, false); err != nil {
		return err.Error()
	}
	return ""
}

// A token file that does not exist yet is not a config error (e.g.
// `vercel env pull` runs after the proxy starts): the token is used as
// soon as the file appears.
func TestOIDCFileAppearsLater(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env.local")
	s := newTestSource(t, OIDCConfig{File: path})
	if c := s.Current(time.Now()); c != nil {
		t.Fatal("a token from nowhere")
	}
	if msg := loadErrorOrEmpty(s); !strings.Contains(msg, "file "+path) || !strings.Contains(msg, "no such file") {
		t.Errorf("reason %q does not name the missing file", msg)
	}
	tok := oidctest.OIDCToken(t, time.Now().Add(time.Hour))
	writeFile(t, dir, ".env.local.tmp", "VERCEL_OIDC_TOKEN=\""+tok+"\"\n")
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "token used once the file appears", func() bool { return valueOf(s.Current(time.Now())) == tok })
}

// newTestSource is a source of cfg, with the defaults the module applies,
// destructed at the end of the test.
func newTestSource(t *testing.T, cfg OIDCConfig) *OIDCSource {
	t.Helper()
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = DefaultRefreshBefore
	}
	if cfg.ForcedRefreshInterval == 0 {
		cfg.ForcedRefreshInterval = DefaultForcedRefreshInterval
	}
	key, err := cfg.Key()
	if err != nil {
		t.Fatal(err)
	}
	s := NewOIDCSource(cfg, key, zap.NewNop())
	t.Cleanup(func() { _ = s.Destruct() })
	return s
}

// A source a reload keeps logs through the newest config's logger, not
// the one of the config that created it (and will be unloaded first).
func TestAdoptTakesTheNewestLogger(t *testing.T) {
	s := newTestSource(t, OIDCConfig{Env: "AIGW_TEST_OIDC_ADOPT"})
	newer := zap.NewExample()
	s.Adopt(OIDCConfig{}, newer)
	if s.logger.Load() != newer || s.refresher.log() != newer {
		t.Error("after a reload the source still logs through the old config's logger")
	}
}
