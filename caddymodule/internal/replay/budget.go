package replay

import "sync/atomic"

// Budget caps the memory that the replay copies of one handler's
// requests in flight use together. Each copy lives only from the first
// byte the upstream reads until its status, but uploads that happen at
// the same moment each need theirs at that moment: 300 agents sending
// 1 MiB at once would hold 300 MiB that plain Caddy never holds, and a
// hostile client uploading slowly could hold copies for as long as it
// likes. A body that finds the budget spent streams upstream without a
// copy; if its answer is a 401, the client gets that 401 marked for a
// retry (see the module's replay), which the OpenAI and Anthropic SDKs do
// at once.
//
// The default grows with the traffic: autoPerRequest for each request in
// flight, and never less than room for one body of the largest kept size
// (retry_body_limit), so that a lone client's requests always have room
// and, under any traffic shape, the copies add at most that much per open
// stream to what plain Caddy holds (twice that with the GC's headroom,
// which grows with the live heap).
type Budget struct {
	fixed int64 // > 0: retry_memory_limit, a fixed total
	floor int64 // the default's minimum: the chunks of a retry_body_limit body

	open atomic.Int64 // requests in flight that may be replayed
	used atomic.Int64 // bytes reserved by their copies
}

// autoPerRequest is the default budget's share of each request in flight:
// 4% of what plain Caddy holds per open stream (~100 KiB: bench/scale.sh),
// 8% with the GC's headroom, within issue 9's 15%.
const autoPerRequest = 4 << 10

// NewBudget returns a budget of fixed bytes (retry_memory_limit), or,
// for 0, the default that grows with the requests in flight and holds
// at least one body of bodyLimit bytes (retry_body_limit).
func NewBudget(fixed, bodyLimit int64) *Budget {
	// a copy takes whole chunks
	return &Budget{fixed: fixed, floor: (bodyLimit + chunkSize - 1) / chunkSize * chunkSize}
}

// Limit is the budget at the moment, in bytes.
func (b *Budget) Limit() int64 {
	if b.fixed > 0 {
		return b.fixed
	}
	return max(b.floor, autoPerRequest*b.open.Load())
}

// Enter and Leave bracket a request that may be replayed.
func (b *Budget) Enter() { b.open.Add(1) }

// Leave ends what Enter began.
func (b *Budget) Leave() { b.open.Add(-1) }

// reserve takes n bytes for a copy, or reports that the copies in flight
// already use the budget.
func (b *Budget) reserve(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.Limit() {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// give returns n reserved bytes.
func (b *Budget) give(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// Status is a handler's replay budget at the moment, in the admin status
// route: what to look at when sizing retry_memory_limit.
type Status struct {
	RequestsInFlight int64 `json:"requests_in_flight"` // that may be replayed
	MemoryInUse      int64 `json:"memory_in_use"`      // bytes held by their copies
	MemoryLimit      int64 `json:"memory_limit"`       // bytes, at this moment
}

// Status is the budget at the moment.
func (b *Budget) Status() Status {
	return Status{RequestsInFlight: b.open.Load(), MemoryInUse: b.used.Load(), MemoryLimit: b.Limit()}
}
