package replay

import (
	"io"
	"strings"
	"testing"
)

// The budget counts only requests in flight: it grows by 4 KiB with
// each, and once a burst is over a lone request has room for a whole
// retry_body_limit body again. A body of unknown length takes its chunks
// one at a time, never past the budget, and gives them all back when the
// next would not fit.
func TestReplayBudgetReserve(t *testing.T) {
	b := NewBudget(0, 100<<10) // rounded up to 7 chunks: 112 KiB
	if got := b.Limit(); got != 7*chunkSize {
		t.Fatalf("limit with nothing in flight: %d, want %d", got, 7*chunkSize)
	}
	for range 40 {
		b.Enter()
	}
	if got, want := b.Limit(), int64(40*autoPerRequest); got != want || want != 10*chunkSize {
		t.Fatalf("limit with 40 in flight: %d, want %d (10 chunks)", got, want)
	}
	var tee teeBody
	tee.limit, tee.budget = 1<<20, b
	tee.src = io.NopCloser(strings.NewReader(""))
	chunk := make([]byte, chunkSize)
	for i := range 11 {
		tee.keep(chunk)
		if tee.dropped {
			if i != 10 {
				t.Fatalf("copy dropped at chunk %d, want at chunk 10 (past %d bytes)", i, b.Limit())
			}
			break
		}
	}
	if !tee.dropped || tee.why != ErrMemory || b.used.Load() != 0 {
		t.Errorf("dropped %v (%v), %d bytes reserved; want dropped for memory, nothing reserved", tee.dropped, tee.why, b.used.Load())
	}
	for range 40 {
		b.Leave()
	}
	if got := b.Limit(); got != 7*chunkSize {
		t.Errorf("limit once the burst is over: %d, want %d", got, 7*chunkSize)
	}

	fixed := NewBudget(64<<10, 1<<20)
	fixed.Enter()
	if got := fixed.Limit(); got != 64<<10 {
		t.Errorf("fixed limit %d, want %d whatever is in flight", got, 64<<10)
	}
	if !fixed.reserve(64<<10) || fixed.reserve(1) {
		t.Error("a fixed budget of 64 KiB did not hold exactly 64 KiB")
	}
	fixed.give(64 << 10)
	if fixed.used.Load() != 0 {
		t.Errorf("%d bytes still reserved", fixed.used.Load())
	}
}
