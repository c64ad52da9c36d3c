// Package limits owns what each client may use: per-client counts (the
// rolling minute, tokens and US dollars per UTC day and per UTC calendar
// month, requests in flight), admission, reservations, settlement and
// reconciliation, the Redis store that a fleet counts in, and its
// fallback to the process's own ledger. It never handles HTTP, never
// prices a request, never reads a body and never imports Caddy: the
// caller gives each request's worst case and each answer's figure. The
// module (the glue) keeps one *Ledger per process and one *Redis per URL
// in caddy.UsagePools, makes a *Store per handler or policy, calls
// Store.Admit before a request goes upstream, and ends every *Ticket.
//
// # Admission is a reservation
//
// Store.Admit(client, cfg, worst, now) decides one request whose worst
// case is worst (the caller's figure: input estimate plus output cap,
// priced; zero for an endpoint that costs nothing). It is admitted iff,
// for every token and dollar limit of the day and of the month,
//
//	spent + reserved by tickets in flight + worst ≤ limit, and spent < limit
//
// and fewer than concurrent_requests tickets are in flight, and the
// rolling minute holds fewer than requests_per_minute requests. Then the
// worst case is reserved (in the day and the month of admission), a slot
// is taken and the request counted in the minute, all at once: in Redis,
// one script does it atomically. The second condition is the rule for a
// zero worst case: a limit that is used up (spent ≥ limit) refuses every
// request until its period ends, a model listing too; one not used up
// admits a free request even when requests in flight hold all its room.
//
// A refusal names one limit: of those that refuse, the one that frees
// last (ties in the order tokens_per_month, usd_per_month,
// tokens_per_day, usd_per_day, concurrent_requests,
// requests_per_minute). Its RetryAfter is
//   - the period's end (midnight UTC, or 00:00 UTC on the 1st of the next
//     month) when the worst case can never fit what is left of it
//     (spent + worst > limit, or the limit is used up): NeverFits, with
//     what is Left, so that the message can say the cap does not fit and
//     an agent can lower it;
//   - InFlightRetry (1 s) when it would fit once requests in flight
//     settle, and for concurrent_requests: when they settle is unknown,
//     and a second is short enough to retry and long enough not to spin;
//   - when the oldest request leaves the window, for requests_per_minute
//     (counted per second: whatever fell within the last 60 s counts).
//
// A new client the ledger has no room for is refused too_many_clients
// (see the ledger below).
//
// # Settlement and reconciliation
//
// Ticket.Settle(actual, estimated, now) replaces the reservation by what
// the request used, frees its slot and counts the request, exactly once
// (a second Settle or an Abandon after it does nothing). The charge goes
// to the day and the month the ticket was admitted in: a request
// admitted at 23:59:59 UTC and settled after midnight counts toward the
// day that reserved it, so each day's budget holds, and the new day's
// admissions never count yesterday's reservations. estimated marks the
// charge as an estimate (an answer whose usage never arrived): it is
// counted, and shown apart. Ticket.Correct(actual, now) later replaces
// an estimated charge by the gateway's figure (lower or higher), once.
// Ticket.Abandon() ends a ticket whose request never went upstream:
// nothing is charged, the request is not counted (it stays in the
// minute). The caller ends every ticket with Settle or Abandon; a
// ticket dropped anyway is charged its worst case when its reservation
// expires.
//
// # A reservation's lifetime
//
// A reservation lives ReservationLifetime (15 minutes, far above any
// answer an agent waits for). The next admission of its client (or read
// of its status, or, in the ledger, a metrics scrape or an eviction)
// after that sweeps it: its worst case is charged, marked estimated,
// and its slot freed. A request that was still running settles later by
// actual − worst (no double count): in Redis the sweep leaves a marker
// for 24 h that the settle script looks for. A reservation whose
// instance died, or whose caller dropped it, is so charged its worst
// case: no money is lost. A reservation Redis never recorded (its
// admission's answer was lost) or lost is found nowhere at settlement
// and charged the actual figure in full.
//
// # Units
//
// Tokens are input plus output. Dollars are counted in whole
// nano-dollars (1e-9 USD), so sums are exact and the same in the ledger
// and in Redis: a worst case is rounded up, an actual figure to the
// nearest. A dollar worst case that is NaN or infinite fits no dollar
// limit; a NaN actual figure is missing and charged at the worst case's
// dollars; negatives count as nothing. Each figure of one request is
// counted up to 2^53 (about $9 million).
//
// # The ledger
//
// One per process, safe for concurrent use, bounded by max_clients (the
// largest value registered; default 100,000). When a new client finds it
// full it makes room, down to seven eighths of the bound: first every
// client with nothing counted against a limit now; then, least recently
// seen first, clients under every limit with nothing in flight (their
// counts start again); never a client with a ticket in flight, nor one
// over a day or month limit it was checked against (or refused by one
// because its worst case could not fit) before that period ends. When
// every client is kept, a new client is refused too_many_clients until
// the first kept one may go (a second when one has a ticket in flight,
// else midnight UTC or the 1st). With Redis, the ledger also holds this
// instance's share (a shadow of every ticket Redis admitted), so that it
// starts from it when Redis stops answering.
//
// # Redis
//
// Keys, under the prefix ai_gateway_auth:limits:, where <h> is the first
// 128 bits of SHA-256(client id) in hex, in a Cluster hash tag so that a
// script touches one slot and any id makes a short, safe key; <date> is
// the UTC day (2006-01-02), <month> the UTC month (2006-01):
//
//	{<h>}:rpm             hash: unix second -> requests admitted in it; expires 61 s after the last admission
//	{<h>}:day:<date>      hash: id (the client id), tok, in (of tok, input), nusd (nano-USD), req,
//	                      etok, enusd, ereq (of those, estimated), rtok, rnusd (reserved in flight);
//	                      expires 1 h after that UTC day ends
//	{<h>}:month:<month>   hash: the same fields for the month; expires 1 h after that month ends
//	{<h>}:res             sorted set: the reservations in flight, member <rid>:<day>:<month>:<tokens>:<nano-USD>:<input>
//	                      (rid random, day and month numbered from the epoch and year 0), score its expiry (unix ms);
//	                      gone when empty, else expires 1 h after the month of the latest admission ends
//	{<h>}:swept           sorted set: rid of each swept reservation, score when swept (unix ms);
//	                      markers older than 24 h are trimmed, the key expires 24 h after the last sweep
//	top:<date>            sorted set: <h> scored by the day's tokens, for Top; expires with the day's hashes
//
// Round trips: Admit is one EVALSHA (admitScript: sweep, check, reserve;
// the reserved sums and the in-flight count are kept, so admission reads
// a few fields, not every reservation). Settle, Abandon and Correct are
// handed to a background writer per Redis, which sends them in pipelined
// batches (up to 256 per round trip; a settlement is one EVALSHA of
// settleScript plus the top's ZINCRBY): at most two round trips per
// request, of which the request waits for one. ClientStatus is one
// EVALSHA (statusScript, which sweeps too); Top is two (ZREVRANGE, then
// HMGETs in one pipeline). The commands, for a Redis ACL user: evalsha
// eval exists hincrby hmget hgetall hdel hset pexpire pexpireat zadd
// zcard zrange zrangebyscore zrem zremrangebyscore zincrby zrevrange, on
// ~ai_gateway_auth:limits:* (a test runs this ACL against a real
// redis-server and checks that each command is needed).
//
// Faults never stop traffic. An admission waits for Redis at most the
// store's timeout (DefaultRedisTimeout, 50 ms); when Redis fails
// (unreachable, slow, refused, a script error) the instance counts in
// its ledger, logs one warning, counts limit_store_errors_total{op},
// shows the fault in Status, and probes Redis once a second (each script
// in a mode that writes nothing) until it answers (one info line). A
// ticket settles where it was admitted, and in Redis too: settlements
// and what was counted locally wait (bounded: 10,000 settlements and
// (client, day, month) sums; beyond, they count locally only, and a
// reservation a dropped settlement would have ended is swept at its
// worst case) and are sent when Redis answers again. A batch whose
// answer was lost may be counted twice: over, never under.
//
// # Metrics
//
// Collectors returns them (built once; the caller registers them in each
// config's registry): limit_store_errors_total{op} (admit, settle, top,
// probe, client), limit_reservations_swept_total{store} (local, redis),
// limit_tickets_in_flight, limit_store_pending{address}; all named
// caddy_ai_gateway_auth_….
package limits
