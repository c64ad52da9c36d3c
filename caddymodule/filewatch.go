package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// fileWatchInterval is how often watched files are checked for changes.
// Polling a stat is cheap, needs no inotify, and sees atomic renames
// (a new inode) as well as in-place rewrites. Tests shorten it.
var fileWatchInterval = time.Second

// maxWatchedFileSize guards against pointing a watcher at a huge file.
const maxWatchedFileSize = 1 << 20

// fileWatcher re-reads a small file whenever its identity, size or
// modification time changes, and hands the content (or the error) to
// onChange. It runs until stop is called.
type fileWatcher struct {
	path     string
	onChange func(content []byte, err error)

	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	last     os.FileInfo
	lastErr  string
}

// watchFile reads path once now (so the first content is there before the
// first request) and then watches it in the background.
func watchFile(path string, onChange func(content []byte, err error)) *fileWatcher {
	w := &fileWatcher{path: path, onChange: onChange, stopCh: make(chan struct{}), done: make(chan struct{})}
	w.check()
	go w.run()
	return w
}

func (w *fileWatcher) run() {
	defer close(w.done)
	t := time.NewTicker(fileWatchInterval)
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

func (w *fileWatcher) check() {
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
	content, err := io.ReadAll(io.LimitReader(f, maxWatchedFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(content) > maxWatchedFileSize {
		return nil, errors.New(path + ": file is larger than 1 MiB")
	}
	return content, nil
}

// stop ends the watcher; safe to call more than once.
func (w *fileWatcher) stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.stopCh) })
	<-w.done
}
