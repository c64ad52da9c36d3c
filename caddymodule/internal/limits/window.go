package limits

import "time"

// windowSlots counts a rolling minute in seconds: the current second
// and the 60 before it, so that whatever fell within the last 60 s is
// always counted (refusing up to a second early, never admitting more).
const windowSlots = 61

type minuteWindow struct {
	counts [windowSlots]uint32
	head   int64 // the second of the newest slot
	sum    uint32
}

// advance moves the window to sec, forgetting the seconds that left it.
func (w *minuteWindow) advance(sec int64) {
	if sec <= w.head {
		return
	}
	if sec-w.head >= windowSlots {
		w.counts, w.sum = [windowSlots]uint32{}, 0
	} else {
		for s := w.head + 1; s <= sec; s++ {
			i := s % windowSlots
			w.sum -= w.counts[i]
			w.counts[i] = 0
		}
	}
	w.head = sec
}

func (w *minuteWindow) add(sec int64) {
	w.counts[sec%windowSlots]++
	w.sum++
}

// retryAfter is how long until the window holds fewer than limit.
func (w *minuteWindow) retryAfter(now time.Time, limit uint32) time.Duration {
	var gone uint32
	for s := w.head - windowSlots + 1; s <= w.head; s++ {
		gone += w.counts[s%windowSlots]
		if w.sum-gone < limit {
			return time.Unix(s+windowSlots, 0).Sub(now)
		}
	}
	return time.Minute
}
