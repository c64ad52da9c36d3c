package limits

import (
	"sync"
	"time"
)

// Ticket is an admitted request: its worst case is reserved until it is
// settled. The caller ends every ticket with Settle (the request went
// upstream) or Abandon (it never did); one dropped anyway is charged its
// worst case when its reservation expires (ReservationLifetime). Its
// methods are safe for concurrent use.
type Ticket struct {
	client     string
	worst      amt
	day, month int64
	ledger     *Ledger
	res        *reservation // in the ledger: the ticket, or Redis's share; nil without room
	redis      *Redis       // settle there too
	// the reservation in Redis, when Redis was asked (it may have
	// reserved even when its answer was lost)
	member, rid string
	inRedis     bool // Redis admitted it

	mu      sync.Mutex
	state   ticketState
	charged amt // what Settle charged
}

type ticketState uint8

const (
	ticketOpen ticketState = iota
	ticketSettled
	ticketEstimated // settled from an estimate: Correct may replace it
	ticketCorrected
	ticketAbandoned
)

// Store is where the ticket was admitted and settles: "redis" or
// "local".
func (t *Ticket) Store() string {
	if t.inRedis {
		return "redis"
	}
	return "local"
}

// Worst is the worst case the ticket reserved, as counted (dollars
// rounded up to the nano-dollar).
func (t *Ticket) Worst() Amount {
	return Amount{Tokens: t.worst.tok, Input: t.worst.in, USD: usdOf(t.worst.nusd)}
}

// Settle ends the ticket: its reservation is replaced by actual, what
// the request used, charged to the day and month it was admitted in
// (a request admitted before midnight UTC and settled after counts
// toward the day it was admitted in: that day's budget reserved it); its
// concurrency slot is freed and the request counted. estimated marks the
// charge as an estimate (shown apart; Correct may replace it). A dollar
// figure that is NaN is missing: the worst case's is charged. Only the
// first Settle or Abandon counts; the others do nothing.
func (t *Ticket) Settle(actual Amount, estimated bool, now time.Time) {
	t.mu.Lock()
	if t.state != ticketOpen {
		t.mu.Unlock()
		return
	}
	a := actualOf(actual, t.worst)
	t.charged = a
	t.state = ticketSettled
	if estimated {
		t.state = ticketEstimated
	}
	t.mu.Unlock()
	t.end(a, estimated, 1, now)
}

// Abandon ends a ticket whose request never went upstream (refused after
// admission, or its connection to the gateway failed before the body was
// sent): the reservation and the slot are freed, nothing is charged and
// the request is not counted (it stays counted in the minute). A request
// that reached the gateway is settled instead, with an estimate if its
// figure is unknown. Only the first Settle or Abandon counts.
func (t *Ticket) Abandon() {
	t.mu.Lock()
	if t.state != ticketOpen {
		t.mu.Unlock()
		return
	}
	t.state = ticketAbandoned
	t.mu.Unlock()
	t.end(amt{}, false, 0, time.Time{})
}

func (t *Ticket) end(a amt, est bool, req int64, now time.Time) {
	if t.res != nil {
		t.ledger.settle(t.res, a, est, req, now)
	}
	if t.redis == nil {
		return
	}
	if t.member != "" {
		t.redis.enqueue(op{s: &settleOp{client: t.client, member: t.member, rid: t.rid, day: t.day, month: t.month,
			worst: t.worst, actual: a, est: est, req: req}})
		return
	}
	if req > 0 || a != (amt{}) { // counted locally while Redis failed: added when it answers
		var c counts
		c.charge(a, est, req)
		t.redis.enqueue(op{d: &delta{client: t.client, day: t.day, month: t.month, c: c, top: a.tok}})
	}
}

// Correct replaces an estimated settlement by the gateway's figure
// (reconciliation), in the same day and month; it may lower or raise
// what is spent. It applies once, after a Settle with estimated true, and
// reports whether it did.
func (t *Ticket) Correct(actual Amount, now time.Time) bool {
	t.mu.Lock()
	if t.state != ticketEstimated {
		t.mu.Unlock()
		return false
	}
	old := t.charged
	a := actualOf(actual, old)
	t.charged = a
	t.state = ticketCorrected
	t.mu.Unlock()
	if t.res != nil {
		t.ledger.correct(t.res, old, a)
	}
	if t.redis != nil {
		c := counts{tok: a.tok - old.tok, in: a.in - old.in, nusd: a.nusd - old.nusd, etok: -old.tok, enusd: -old.nusd, ereq: -1}
		t.redis.enqueue(op{d: &delta{client: t.client, day: t.day, month: t.month, c: c, top: a.tok - old.tok}})
	}
	return true
}
