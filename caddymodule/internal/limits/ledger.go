package limits

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"
)

// Ledger is one process's counts, per client: the rolling minute,
// tokens and dollars spent per UTC day and month, the reservations in
// flight. It is safe for concurrent use and bounded (max_clients, the
// largest value registered). The glue keeps one per process, shared by
// every handler and kept across config reloads; with Redis, it holds this
// instance's share and is what the instance counts on while Redis does
// not answer.
type Ledger struct {
	mu      sync.Mutex
	clients map[string]*entry
	// owners registered a max_clients value; the largest applies
	owners map[any]int
	// noRoomUntil: an eviction found no client it may forget; until then
	// a new client is refused at once (a stream of new clients must not
	// cost a scan each), with noRoomRetry.
	noRoomUntil time.Time
	noRoomRetry time.Time
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	l := &Ledger{clients: map[string]*entry{}, owners: map[any]int{}}
	track(l, true)
	return l
}

// Destruct forgets the ledger's gauges (it has the shape of
// caddy.Destructor, for a usage pool).
func (l *Ledger) Destruct() error {
	track(l, false)
	return nil
}

// Register makes maxClients (0: DefaultMaxClients) count for the
// ledger's bound until Unregister(owner): the largest registered value
// applies.
func (l *Ledger) Register(owner any, maxClients int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.owners[owner] = maxClients
}

// Unregister undoes Register.
func (l *Ledger) Unregister(owner any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.owners, owner)
}

// capacity is the ledger's bound. l.mu must be held.
func (l *Ledger) capacity() int {
	n := 0
	for _, m := range l.owners {
		n = max(n, m)
	}
	if n == 0 {
		return DefaultMaxClients
	}
	return n
}

// counts is what a client spent in a period.
type counts struct {
	tok, in, nusd, req int64
	// of which estimated: the charges settled from an estimate (or a
	// swept worst case), and their requests
	etok, enusd, ereq int64
}

// charge adds a: req requests (0 or 1), marked estimated if est.
func (c *counts) charge(a amt, est bool, req int64) {
	c.tok += a.tok
	c.in += a.in
	c.nusd += a.nusd
	c.req += req
	if est {
		c.etok += a.tok
		c.enusd += a.nusd
		c.ereq += req
	}
}

// uncharge takes back a charge made with charge(a, true, 1).
func (c *counts) uncharge(a amt) {
	c.tok -= a.tok
	c.in -= a.in
	c.nusd -= a.nusd
	c.req--
	c.etok -= a.tok
	c.enusd -= a.nusd
	c.ereq--
}

// period is a client's counts in one UTC day or month.
type period struct {
	n           int64 // the day or the month
	spent       counts
	rtok, rnusd int64 // reserved by tickets in flight admitted in this period
}

// entry is one client's counts.
type entry struct {
	name       string
	day, month period
	live       []*reservation // in flight
	nextExpiry int64          // unix ms of the first expiry in live; MaxInt64 without
	window     *minuteWindow
	lastSeen   int64 // unix seconds
	// refused by a day or month limit whose worst case could not fit:
	// that period's number + 1 (kept until the period ends)
	refusedDay, refusedMonth int64
	// the tightest token and dollar limits this client was checked
	// against in the current day and month (0: none), to tell whether it
	// is over one
	tightTPD, tightNUPD, tightTPM, tightNUPM int64
}

// reservation is a ticket's worst case, held in an entry until settled.
type reservation struct {
	e          *entry
	worst      amt
	day, month int64
	expiry     int64 // unix ms
	idx        int   // in e.live while live
	swept      bool  // expired unsettled: charged its worst case
	shadow     bool  // Redis holds the ticket; this is the instance's share
}

func (e *entry) minute(now time.Time) *minuteWindow {
	if e.window == nil {
		e.window = &minuteWindow{head: now.Unix()}
	}
	e.window.advance(now.Unix())
	return e.window
}

// roll moves e's periods to now's: counts of a day or month that ended
// start again (reservations still in flight charge their own period).
func (e *entry) roll(now time.Time) {
	if d := dayOf(now); e.day.n != d {
		e.day = period{n: d}
		e.tightTPD, e.tightNUPD = 0, 0
	}
	if m := monthOf(now); e.month.n != m {
		e.month = period{n: m}
		e.tightTPM, e.tightNUPM = 0, 0
	}
}

// entry returns name's counts, created if needed, its periods rolled and
// its expired reservations swept; nil when there is no room for a new
// client, with when to retry. l.mu must be held.
func (l *Ledger) entry(name string, now time.Time) (*entry, time.Time) {
	e := l.clients[name]
	if e == nil {
		if capacity := l.capacity(); len(l.clients) >= capacity {
			if now.Before(l.noRoomUntil) {
				return nil, l.noRoomRetry
			}
			l.evict(now, capacity)
			if len(l.clients) >= capacity {
				return nil, l.noRoomRetry
			}
		}
		e = &entry{name: name, nextExpiry: math.MaxInt64}
		l.clients[name] = e
	}
	e.roll(now)
	l.sweep(e, now)
	e.lastSeen = now.Unix()
	return e, time.Time{}
}

// sweep charges e's expired reservations their worst case, marked
// estimated, and frees their slots. l.mu must be held.
func (l *Ledger) sweep(e *entry, now time.Time) {
	ms := now.UnixMilli()
	if ms < e.nextExpiry {
		return
	}
	next := int64(math.MaxInt64)
	for i := 0; i < len(e.live); {
		r := e.live[i]
		if r.expiry > ms {
			next = min(next, r.expiry)
			i++
			continue
		}
		e.unlive(r)
		r.swept = true
		for _, p := range e.periods(r) {
			p.rtok -= r.worst.tok
			p.rnusd -= r.worst.nusd
			p.spent.charge(r.worst, true, 1)
		}
		if !r.shadow {
			sweptLocal.Inc()
		}
	}
	e.nextExpiry = next
}

// unlive takes r out of e.live.
func (e *entry) unlive(r *reservation) {
	last := len(e.live) - 1
	e.live[r.idx] = e.live[last]
	e.live[r.idx].idx = r.idx
	e.live[last] = nil
	e.live = e.live[:last]
	r.idx = -1
}

// periods returns e's periods that r was admitted in (none, one or both,
// after a midnight).
func (e *entry) periods(r *reservation) []*period {
	// an array on the stack, not a slice per settlement
	var out [2]*period
	n := 0
	if e.day.n == r.day {
		out[n], n = &e.day, n+1
	}
	if e.month.n == r.month {
		out[n], n = &e.month, n+1
	}
	return out[:n]
}

// tighten notes the limits e is checked against now.
func (e *entry) tighten(lim limitsOf) {
	tight := func(t *int64, v int64) {
		if v > 0 && (*t == 0 || v < *t) {
			*t = v
		}
	}
	tight(&e.tightTPD, lim.tpd)
	tight(&e.tightNUPD, lim.nupd)
	tight(&e.tightTPM, lim.tpm)
	tight(&e.tightNUPM, lim.nupm)
}

// over reports whether e is over a day or month limit now (or was
// refused by one this period): kept until that period ends.
func (e *entry) over() bool {
	d, m := &e.day, &e.month
	return e.refusedDay == d.n+1 || e.tightTPD > 0 && d.spent.tok >= e.tightTPD || e.tightNUPD > 0 && d.spent.nusd >= e.tightNUPD ||
		e.refusedMonth == m.n+1 || e.tightTPM > 0 && m.spent.tok >= e.tightTPM || e.tightNUPM > 0 && m.spent.nusd >= e.tightNUPM
}

// overUntil is when e stops being over its limits.
func (e *entry) overUntil() time.Time {
	d, m := &e.day, &e.month
	if e.refusedMonth == m.n+1 || e.tightTPM > 0 && m.spent.tok >= e.tightTPM || e.tightNUPM > 0 && m.spent.nusd >= e.tightNUPM {
		return monthEnd(m.n)
	}
	return dayEnd(d.n)
}

// counted reports whether e has anything counted against a limit now:
// a reservation in flight, a request in the current minute, tokens or
// dollars today, or this month under a monthly limit.
func (e *entry) counted(now time.Time) bool {
	if len(e.live) > 0 || e.window != nil && e.minute(now).sum > 0 {
		return true
	}
	if e.day.spent.tok > 0 || e.day.spent.nusd > 0 {
		return true
	}
	return (e.tightTPM > 0 || e.tightNUPM > 0) && (e.month.spent.tok > 0 || e.month.spent.nusd > 0)
}

// evict makes room, down to seven eighths of capacity (so that the next
// evictions are far apart): first every client with nothing counted
// against a limit now; then, least recently seen first, clients under
// every limit with nothing in flight (their counts start again); never a
// client with a reservation in flight, or over a day or month limit
// before that period ends. When none may go, new clients are refused
// until the first kept one may. l.mu must be held.
func (l *Ledger) evict(now time.Time, capacity int) {
	for name, e := range l.clients {
		e.roll(now)
		l.sweep(e, now)
		if !e.counted(now) {
			delete(l.clients, name)
		}
	}
	target := capacity - capacity/8
	if len(l.clients) <= target {
		return
	}
	type seen struct {
		name string
		at   int64
	}
	var under []seen
	free := time.Time{}
	for name, e := range l.clients {
		switch {
		case len(e.live) > 0:
			free = earliest(free, now.Add(InFlightRetry))
		case e.over():
			free = earliest(free, e.overUntil())
		default:
			under = append(under, seen{name, e.lastSeen})
		}
	}
	slices.SortFunc(under, func(a, b seen) int { return cmp.Compare(a.at, b.at) })
	for _, s := range under[:min(len(under), len(l.clients)-target)] {
		delete(l.clients, s.name)
	}
	if len(l.clients) >= capacity {
		l.noRoomUntil = now.Add(time.Second)
		l.noRoomRetry = free
	}
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// admit checks a request of name with worst case w against lim and, if
// it fits, reserves w and counts the request in the minute. A forced
// admission (Redis admitted the request: this is the instance's share)
// is never refused, and is nil without room.
func (l *Ledger) admit(name string, lim limitsOf, w amt, now time.Time, force bool) (*reservation, *Refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, retry := l.entry(name, now)
	if e == nil {
		if force {
			return nil, nil
		}
		return nil, &Refusal{Limit: TooManyClients, RetryAfter: retry.Sub(now)}
	}
	e.tighten(lim)
	if !force {
		if ref := l.check(e, lim, w, now); ref != nil {
			return nil, ref
		}
	}
	if lim.rpm > 0 {
		e.minute(now).add(now.Unix())
	}
	r := &reservation{e: e, worst: w, day: e.day.n, month: e.month.n, expiry: now.Add(ReservationLifetime).UnixMilli(), idx: len(e.live), shadow: force}
	e.live = append(e.live, r)
	e.nextExpiry = min(e.nextExpiry, r.expiry)
	for _, p := range []*period{&e.day, &e.month} {
		p.rtok += w.tok
		p.rnusd += w.nusd
	}
	return r, nil
}

// check is the admission rule (the Lua script's, in redis_scripts.go):
// every limit is checked, and the one that frees last refuses (ties: in
// the order tokens_per_month, usd_per_month, tokens_per_day,
// usd_per_day, concurrent_requests, requests_per_minute). l.mu must be
// held.
func (l *Ledger) check(e *entry, lim limitsOf, w amt, now time.Time) *Refusal {
	var ref *Refusal
	consider := func(limit string, retry time.Duration, never bool, left Amount) {
		if ref == nil || retry > ref.RetryAfter {
			ref = &Refusal{Limit: limit, RetryAfter: retry, NeverFits: never, Left: left}
		}
	}
	budget := func(name string, spent, reserved, worst, limit int64, end time.Time, usd bool, refused *int64, n int64) {
		if limit <= 0 {
			return
		}
		var left Amount
		if usd {
			left.USD = usdOf(max(limit-spent, 0))
		} else {
			left.Tokens = max(limit-spent, 0)
		}
		switch {
		case spent >= limit || spent+worst > limit:
			consider(name, end.Sub(now), true, left)
			*refused = n + 1
		case spent+reserved+worst > limit:
			consider(name, InFlightRetry, false, left)
		}
	}
	d, m := &e.day, &e.month
	budget(TokensPerMonth, m.spent.tok, m.rtok, w.tok, lim.tpm, monthEnd(m.n), false, &e.refusedMonth, m.n)
	budget(USDPerMonth, m.spent.nusd, m.rnusd, w.nusd, lim.nupm, monthEnd(m.n), true, &e.refusedMonth, m.n)
	budget(TokensPerDay, d.spent.tok, d.rtok, w.tok, lim.tpd, dayEnd(d.n), false, &e.refusedDay, d.n)
	budget(USDPerDay, d.spent.nusd, d.rnusd, w.nusd, lim.nupd, dayEnd(d.n), true, &e.refusedDay, d.n)
	if lim.conc > 0 && int64(len(e.live)) >= lim.conc {
		consider(ConcurrentRequests, InFlightRetry, false, Amount{})
	}
	if lim.rpm > 0 {
		if win := e.minute(now); int64(win.sum) >= lim.rpm {
			consider(RequestsPerMinute, win.retryAfter(now, uint32(lim.rpm)), false, Amount{})
		}
	}
	return ref
}

// settle ends r: its reservation is replaced by a, charged to its own
// day and month (as far as the entry still holds them), marked estimated
// if est, with req requests (1, or 0 for a request that never went
// upstream). A reservation a sweep charged its worst case is corrected by
// a − worst instead.
func (l *Ledger) settle(r *reservation, a amt, est bool, req int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := r.e
	if !r.swept {
		e.unlive(r)
		for _, p := range e.periods(r) {
			p.rtok -= r.worst.tok
			p.rnusd -= r.worst.nusd
			p.spent.charge(a, est, req)
		}
		if !now.IsZero() {
			e.lastSeen = max(e.lastSeen, now.Unix())
		}
		return
	}
	if l.clients[e.name] != e {
		return // forgotten since the sweep: its counts started again
	}
	for _, p := range e.periods(r) {
		p.spent.uncharge(r.worst)
		p.spent.charge(a, est, req)
	}
}

// correct replaces a settled estimate old by a, in r's day and month.
func (l *Ledger) correct(r *reservation, old, a amt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := r.e
	if l.clients[e.name] != e {
		return
	}
	for _, p := range e.periods(r) {
		p.spent.uncharge(old)
		p.spent.charge(a, false, 1)
	}
}

// inFlight sweeps what expired by now (a client that never comes back
// would keep it otherwise) and counts the reservations held (tickets in
// flight, shadows of Redis's included).
func (l *Ledger) inFlight(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.clients {
		l.sweep(e, now)
		n += len(e.live)
	}
	return n
}

// Clients is how many clients the ledger holds.
func (l *Ledger) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// ClientUsage is one client's use today (UTC), as the status route's
// top_clients_today shows it.
type ClientUsage struct {
	Client       string  `json:"client"`
	Requests     int64   `json:"requests"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	Cost         float64 `json:"cost,omitempty"`
	// EstimatedTokens of InputTokens + OutputTokens were charged from an
	// estimate (an answer without usage, or a reservation swept at its
	// worst case), not yet reconciled.
	EstimatedTokens int64 `json:"estimated_tokens,omitempty"`
}

func usageOf(name string, c counts) ClientUsage {
	return ClientUsage{Client: name, Requests: c.req, InputTokens: c.in, OutputTokens: c.tok - c.in, Cost: usdOf(c.nusd), EstimatedTokens: c.etok}
}

// byTokens orders the top: most tokens first, then by id.
func byTokens(a, b ClientUsage) int {
	if c := cmp.Compare(b.InputTokens+b.OutputTokens, a.InputTokens+a.OutputTokens); c != 0 {
		return c
	}
	return cmp.Compare(a.Client, b.Client)
}

// top returns the n clients with the most tokens today.
func (l *Ledger) top(now time.Time, n int) []ClientUsage {
	if n <= 0 {
		return nil
	}
	day := dayOf(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ClientUsage, 0, min(n+1, len(l.clients)))
	for name, e := range l.clients {
		if e.day.n != day || e.day.spent.req == 0 {
			continue
		}
		c := usageOf(name, e.day.spent)
		if len(out) == n && byTokens(c, out[n-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(out, c, byTokens)
		out = slices.Insert(out, i, c)
		if len(out) > n {
			out = out[:n]
		}
	}
	return out
}

// view is a client's counts now, for ClientStatus: zero for a client
// the ledger does not hold. It creates nothing.
func (l *Ledger) view(name string, now time.Time) (v clientView) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.clients[name]
	if e == nil {
		return v
	}
	e.roll(now)
	l.sweep(e, now)
	v.day, v.month = e.day.spent, e.month.spent
	for _, r := range e.live {
		v.reserved.tok += r.worst.tok
		v.reserved.in += r.worst.in
		v.reserved.nusd += r.worst.nusd
	}
	v.inFlight = int64(len(e.live))
	v.dayReserved = amt{tok: e.day.rtok, nusd: e.day.rnusd}
	v.monthReserved = amt{tok: e.month.rtok, nusd: e.month.rnusd}
	if e.window != nil {
		v.minute = int64(e.minute(now).sum)
	}
	return v
}

// clientView is one client's counts at a moment, from the ledger or
// from Redis.
type clientView struct {
	day, month                 counts
	reserved                   amt // every reservation in flight
	dayReserved, monthReserved amt // of which admitted today, this month
	inFlight, minute           int64
}
