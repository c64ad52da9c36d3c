package filewatch

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	Interval = 5 * time.Millisecond
	os.Exit(m.Run())
}

// events records what a watcher reported.
type events struct {
	mu   sync.Mutex
	seen []string // content, or "error: ..."
}

func (e *events) onChange(content []byte, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.seen = append(e.seen, "error: "+err.Error())
		return
	}
	e.seen = append(e.seen, string(content))
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen...)
}

// waitFor polls until the last event satisfies ok, failing after a
// generous deadline (it never assumes a fast machine).
func (e *events) waitFor(t *testing.T, what string, ok func(last string) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l := e.list(); len(l) > 0 && ok(l[len(l)-1]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; events: %q", what, e.list())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestWatchReadsAtOnceAndOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ev events
	w := Watch(path, ev.onChange)
	defer w.Stop()
	if got := ev.list(); len(got) != 1 || got[0] != "one" {
		t.Fatalf("before Watch returned: %q, want the content once", got)
	}

	// an in-place rewrite of another size
	if err := os.WriteFile(path, []byte("two two"), 0o600); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the rewrite", func(l string) bool { return l == "two two" })

	// an atomic rename: a new inode
	tmp := filepath.Join(dir, "keys.tmp")
	if err := os.WriteFile(tmp, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the renamed file", func(l string) bool { return l == "three" })

	// removed: one error, however many polls see it
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the error", func(l string) bool { return strings.HasPrefix(l, "error: ") })
	n := len(ev.list())
	time.Sleep(20 * Interval)
	if got := ev.list(); len(got) != n {
		t.Errorf("the same error was reported again: %q", got[n-1:])
	}

	// back: read again
	if err := os.WriteFile(path, []byte("four"), 0o600); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the file's return", func(l string) bool { return l == "four" })
}

func TestWatchErrors(t *testing.T) {
	dir := t.TempDir()
	var missing events
	Watch(filepath.Join(dir, "nope"), missing.onChange).Stop()
	if got := missing.list(); len(got) != 1 || !strings.Contains(got[0], "no such file") {
		t.Errorf("a missing file: %q", got)
	}

	var notRegular events
	Watch(dir, notRegular.onChange).Stop()
	if got := notRegular.list(); len(got) != 1 || !strings.Contains(got[0], "is not a regular file") {
		t.Errorf("a directory: %q", got)
	}

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	var tooLarge events
	Watch(big, tooLarge.onChange).Stop()
	if got := tooLarge.list(); len(got) != 1 || !strings.Contains(got[0], "larger than 1 MiB") {
		t.Errorf("a file over MaxSize: %q", got)
	}

	exact := filepath.Join(dir, "exact")
	if err := os.WriteFile(exact, make([]byte, MaxSize), 0o600); err != nil {
		t.Fatal(err)
	}
	var fits events
	Watch(exact, fits.onChange).Stop()
	if got := fits.list(); len(got) != 1 || len(got[0]) != MaxSize {
		t.Errorf("a file of exactly MaxSize was not read whole")
	}
}

func TestStopTwiceAndNil(t *testing.T) {
	var ev events
	w := Watch(filepath.Join(t.TempDir(), "f"), ev.onChange)
	w.Stop()
	w.Stop()
	var none *Watcher
	none.Stop()
}
