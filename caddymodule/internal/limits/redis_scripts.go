package limits

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches the keys of one client (one hash tag,
// so one Cluster slot), all named in KEYS. Numbers cross as decimal
// strings: Lua's numbers are doubles, exact for integers up to 2^53,
// and int() writes them back without an exponent.

// luaCommon is shared by the scripts: integer formatting, increments,
// and the sweep of expired reservations.
//
// sweep(res, swept, day, yesterday, month, lastMonth, now, today, thisMonth, life)
// charges every reservation of res whose expiry is at or before now its
// worst case, marked estimated, in its day's and month's hashes (when
// they still exist: today's or yesterday's day, this month or the last;
// older ones have expired), frees its slot, and leaves a marker in swept
// (member: the reservation id, score: now; kept for life ms) so that its
// late settlement corrects by actual − worst. It returns how many it
// swept and their tokens charged to today and to yesterday (for the
// top).
const luaCommon = `
local function int(x) return string.format('%.0f', x) end
local wrote = false
local function incr(k, f, x)
  if x ~= 0 then
    redis.call('HINCRBY', k, f, int(x))
    wrote = true
  end
end
local function sweep(res, swept, dayKey, yesterdayKey, monthKey, lastMonthKey, now, today, thisMonth, life)
  local gone = redis.call('ZRANGEBYSCORE', res, '-inf', now)
  if #gone == 0 then
    return 0, 0, 0
  end
  local n, tokToday, tokYesterday = 0, 0, 0
  for _, m in ipairs(gone) do
    local rid, d, mo, t, u, i = string.match(m, '^(%x+):(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if rid then
      d, mo, t, u, i = tonumber(d), tonumber(mo), tonumber(t), tonumber(u), tonumber(i)
      local function charge(k)
        if redis.call('EXISTS', k) == 1 then
          incr(k, 'rtok', -t)
          incr(k, 'rnusd', -u)
          incr(k, 'tok', t)
          incr(k, 'in', i)
          incr(k, 'nusd', u)
          incr(k, 'req', 1)
          incr(k, 'etok', t)
          incr(k, 'enusd', u)
          incr(k, 'ereq', 1)
          return t
        end
        return 0
      end
      if d == today then
        tokToday = tokToday + charge(dayKey)
      elseif d == today - 1 then
        tokYesterday = tokYesterday + charge(yesterdayKey)
      end
      if mo == thisMonth then
        charge(monthKey)
      elseif mo == thisMonth - 1 then
        charge(lastMonthKey)
      end
      redis.call('ZADD', swept, now, rid)
      n = n + 1
    end
  end
  redis.call('ZREMRANGEBYSCORE', res, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', swept, '-inf', now - life)
  redis.call('PEXPIRE', swept, life)
  return n, tokToday, tokYesterday
end
`

// admitScript sweeps the client's expired reservations, checks a request
// against every limit and, if it fits, reserves its worst case, counts
// it in the minute and takes a slot, atomically: the ledger's rule
// (Ledger.check), with the same Retry-After to the millisecond.
//
//	KEYS: 1 minute window, 2 day hash, 3 month hash, 4 reservations,
//	5 swept markers, 6 yesterday's day hash, 7 last month's hash
//	ARGV: 1 now (unix ms), 2 requests_per_minute, 3 concurrent_requests,
//	4 tokens_per_day, 5 usd_per_day (nano-USD), 6 tokens_per_month,
//	7 usd_per_month (nano-USD), 8 worst tokens, 9 worst nano-USD, 10 the
//	day, 11 the month, 12 the day's end (ms), 13 the month's end (ms),
//	14 the reservation member ("" probes: nothing is written), 15 its
//	expiry (ms), 16 when the day's hash expires (ms), 17 when the
//	month's hash and the reservations expire (ms), 18 the swept markers'
//	life (ms), 19 the in-flight retry (ms)
//
// It returns {code, retry ms, never fits (0|1), left (tokens or
// nano-USD, a string), swept, swept tokens today, swept tokens
// yesterday}; code 0 admits, else it is an index of redisRefusals.
var admitScript = redis.NewScript(luaCommon + `
local now = tonumber(ARGV[1])
local today, thisMonth = tonumber(ARGV[10]), tonumber(ARGV[11])
local swept, sweptToday, sweptYesterday = sweep(KEYS[4], KEYS[5], KEYS[2], KEYS[6], KEYS[3], KEYS[7], now, today, thisMonth, tonumber(ARGV[18]))

local code, retry, never, left = 0, 0, 0, 0
local function consider(c, r, n, l)
  if code == 0 or r > retry then
    code, retry, never, left = c, r, n, l
  end
end
local inFlightRetry = tonumber(ARGV[19])
local function budget(c, spent, reserved, worst, limit, endMs)
  if limit <= 0 then
    return
  end
  local l = limit - spent
  if l < 0 then
    l = 0
  end
  if spent >= limit or spent + worst > limit then
    consider(c, endMs - now, 1, l)
  elseif spent + reserved + worst > limit then
    consider(c, inFlightRetry, 0, l)
  end
end
local wt, wu = tonumber(ARGV[8]), tonumber(ARGV[9])
local tpd, nupd, tpm, nupm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if tpm > 0 or nupm > 0 then
  local h = redis.call('HMGET', KEYS[3], 'tok', 'nusd', 'rtok', 'rnusd')
  budget(3, tonumber(h[1]) or 0, tonumber(h[3]) or 0, wt, tpm, tonumber(ARGV[13]))
  budget(4, tonumber(h[2]) or 0, tonumber(h[4]) or 0, wu, nupm, tonumber(ARGV[13]))
end
if tpd > 0 or nupd > 0 then
  local h = redis.call('HMGET', KEYS[2], 'tok', 'nusd', 'rtok', 'rnusd')
  budget(1, tonumber(h[1]) or 0, tonumber(h[3]) or 0, wt, tpd, tonumber(ARGV[12]))
  budget(2, tonumber(h[2]) or 0, tonumber(h[4]) or 0, wu, nupd, tonumber(ARGV[12]))
end
local conc = tonumber(ARGV[3])
if conc > 0 and redis.call('ZCARD', KEYS[4]) >= conc then
  consider(6, inFlightRetry, 0, 0)
end
local rpm = tonumber(ARGV[2])
local sec = math.floor(now / 1000)
if rpm > 0 then
  local w = redis.call('HGETALL', KEYS[1])
  local sum, live, stale = 0, {}, {}
  for i = 1, #w, 2 do
    local s, c = tonumber(w[i]), tonumber(w[i + 1])
    if s < sec - 60 then
      stale[#stale + 1] = w[i]
    else
      sum = sum + c
      live[#live + 1] = {s, c}
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[1], unpack(stale))
  end
  if sum >= rpm then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local gone, r = 0, 60000
    for _, sc in ipairs(live) do
      gone = gone + sc[2]
      if sum - gone < rpm then
        r = (sc[1] + 61) * 1000 - now
        break
      end
    end
    consider(5, r, 0, 0)
  end
end
if code ~= 0 or ARGV[14] == '' then
  return {code, retry, never, int(left), swept, sweptToday, sweptYesterday}
end

if rpm > 0 then
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
redis.call('ZADD', KEYS[4], ARGV[15], ARGV[14])
redis.call('PEXPIREAT', KEYS[4], ARGV[17])
if wt ~= 0 or wu ~= 0 then
  incr(KEYS[2], 'rtok', wt)
  incr(KEYS[2], 'rnusd', wu)
  redis.call('PEXPIREAT', KEYS[2], ARGV[16])
  incr(KEYS[3], 'rtok', wt)
  incr(KEYS[3], 'rnusd', wu)
  redis.call('PEXPIREAT', KEYS[3], ARGV[17])
end
return {0, 0, 0, '0', swept, sweptToday, sweptYesterday}
`)

// Refusals of admitScript, by code.
var redisRefusals = [...]string{1: TokensPerDay, 2: USDPerDay, 3: TokensPerMonth, 4: USDPerMonth, 5: RequestsPerMinute, 6: ConcurrentRequests}

// settleScript ends a reservation: it replaces the worst case by what
// the request used, in the day and the month it was admitted in, and
// frees its slot. A reservation already swept (a marker in the swept
// set) was charged its worst case: the script corrects by actual −
// worst, where those hashes still exist. One found nowhere (never
// written: its admission's answer was lost, or Redis lost it) is
// charged the actual figure in full: counted twice rather than not at
// all.
//
//	KEYS: 1 day hash, 2 month hash, 3 reservations, 4 swept markers
//	ARGV: 1 the reservation member ("" probes: nothing is done), 2 its
//	id, 3-5 worst tokens, nano-USD, input tokens, 6-8 actual tokens,
//	nano-USD, input tokens, 9 estimated (0|1), 10 requests (1, or 0 for
//	a request that never went upstream), 11 when the day's hash
//	expires (ms), 12 when the month's does (ms), 13 the client id
//
// It returns 0 (settled), 1 (corrected after a sweep) or 2 (found
// nowhere).
var settleScript = redis.NewScript(luaCommon + `
if ARGV[1] == '' then
  return 0
end
local wt, wu, wi = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local at, au, ai = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local est, req = ARGV[9] == '1', tonumber(ARGV[10])
local path = 0
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  if redis.call('ZREM', KEYS[4], ARGV[2]) == 1 then
    path = 1
  else
    path = 2
  end
end
local function charge(k, expireAt)
  wrote = false
  local exists = redis.call('EXISTS', k) == 1
  if path == 1 then
    if not exists then
      return
    end
    incr(k, 'tok', at - wt)
    incr(k, 'in', ai - wi)
    incr(k, 'nusd', au - wu)
    incr(k, 'req', req - 1)
    local et, eu, er = -wt, -wu, -1
    if est then
      et, eu, er = et + at, eu + au, er + req
    end
    incr(k, 'etok', et)
    incr(k, 'enusd', eu)
    incr(k, 'ereq', er)
  else
    if path == 0 and exists then
      incr(k, 'rtok', -wt)
      incr(k, 'rnusd', -wu)
    end
    incr(k, 'tok', at)
    incr(k, 'in', ai)
    incr(k, 'nusd', au)
    incr(k, 'req', req)
    if est then
      incr(k, 'etok', at)
      incr(k, 'enusd', au)
      incr(k, 'ereq', req)
    end
  end
  if wrote then
    redis.call('HSET', k, 'id', ARGV[13])
    redis.call('PEXPIREAT', k, expireAt)
  end
end
charge(KEYS[1], ARGV[11])
charge(KEYS[2], ARGV[12])
return path
`)

// statusScript sweeps the client's expired reservations (as admission
// does) and reads its counts, in one round trip.
//
//	KEYS: as admitScript's
//	ARGV: 1 now (unix ms), 2 the day, 3 the month, 4 the swept markers'
//	life (ms)
//
// It returns strings: the day's tok, in, nusd, req, etok, enusd, ereq,
// rtok, rnusd; the month's same nine; the requests in the current
// minute; reservations in flight and their tokens, input tokens and
// nano-USD; swept, swept tokens today, swept tokens yesterday.
var statusScript = redis.NewScript(luaCommon + `
local now = tonumber(ARGV[1])
local swept, sweptToday, sweptYesterday = sweep(KEYS[4], KEYS[5], KEYS[2], KEYS[6], KEYS[3], KEYS[7], now, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
local out = {}
local fields = {'tok', 'in', 'nusd', 'req', 'etok', 'enusd', 'ereq', 'rtok', 'rnusd'}
for _, k in ipairs({KEYS[2], KEYS[3]}) do
  local h = redis.call('HMGET', k, unpack(fields))
  for i = 1, #fields do
    out[#out + 1] = int(tonumber(h[i]) or 0)
  end
end
local sec = math.floor(now / 1000)
local w = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #w, 2 do
  if tonumber(w[i]) >= sec - 60 then
    sum = sum + tonumber(w[i + 1])
  end
end
out[#out + 1] = int(sum)
local res = redis.call('ZRANGE', KEYS[4], 0, -1)
local rt, ri, ru = 0, 0, 0
for _, m in ipairs(res) do
  local t, u, i = string.match(m, ':(%d+):(%d+):(%d+)$')
  rt, ru, ri = rt + (tonumber(t) or 0), ru + (tonumber(u) or 0), ri + (tonumber(i) or 0)
end
out[#out + 1] = int(#res)
out[#out + 1] = int(rt)
out[#out + 1] = int(ri)
out[#out + 1] = int(ru)
out[#out + 1] = int(swept)
out[#out + 1] = int(sweptToday)
out[#out + 1] = int(sweptYesterday)
return out
`)
