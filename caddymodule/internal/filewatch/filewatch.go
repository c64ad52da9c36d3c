// Package filewatch owns the re-reading of small local files (client
// keys, revocation lists, OIDC token files): a file is read once at once,
// then polled, and its new content (or a new error) is handed to a
// callback whenever its identity, size or modification time changes.
//
// It never parses what it reads, never logs (the callback decides what a
// change means and says so), and reads nothing larger than MaxSize.
// Polling a stat is cheap, needs no inotify, and sees atomic renames (a
// new inode) as well as in-place rewrites.
package filewatch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Interval is how often watched files are checked for changes. Tests
// shorten it, before any watcher starts.
var Interval = time.Second

// MaxSize guards against pointing a watcher at a huge file: a larger
// file is an error.
const MaxSize = 1 << 20

// Watcher re-reads a small file whenever its identity, size or
// modification time changes, and hands the content (or the error) to
// onChange. It runs until Stop is called.
type Watcher struct {
	path     string
	onChange func(content []byte, err error)

	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	last     os.FileInfo
	lastErr  string
}

// Watch reads path once now, calling onChange before it returns (so the
// first content is there before the first request), and then watches it
// in the background. Each distinct error is reported once; onChange is
// never called concurrently with itself.
func Watch(path string, onChange func(content []byte, err error)) *Watcher {
	w := &Watcher{path: path, onChange: onChange, stopCh: make(chan struct{}), done: make(chan struct{})}
	w.check()
	go w.run()
	return w
}

func (w *Watcher) run() {
	defer close(w.done)
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-w.stopCh:
			return
		case <-t.C:
			w.check()
		}
	}
}

func (w *Watcher) check() {
	info, err := os.Stat(w.path)
	if err == nil && !info.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", w.path)
	}
	if err != nil {
		// report each distinct error once
		if err.Error() != w.lastErr {
			w.lastErr, w.last = err.Error(), nil
			w.onChange(nil, err)
		}
		return
	}
	if w.last != nil && os.SameFile(w.last, info) && info.Size() == w.last.Size() && info.ModTime().Equal(w.last.ModTime()) {
		return
	}
	content, err := readSmallFile(w.path)
	if err != nil {
		if err.Error() != w.lastErr {
			w.lastErr, w.last = err.Error(), nil
			w.onChange(nil, err)
		}
		return
	}
	w.last, w.lastErr = info, ""
	w.onChange(content, nil)
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	content, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(content) > MaxSize {
		return nil, errors.New(path + ": file is larger than 1 MiB")
	}
	return content, nil
}

// Stop ends the watcher and waits for its goroutine; safe to call more
// than once, and on a nil Watcher.
func (w *Watcher) Stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.stopCh) })
	<-w.done
}
