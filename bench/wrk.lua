-- wrk script for bench/run.sh: POSTs a chat completion request of about
-- BODY bytes (default: a short one) and prints one parsable line at the end.
--   wrk ... -s bench/wrk.lua URL -- "<Authorization value>" json|stream [BODY]
function init(args)
  local auth, mode, size = args[1], args[2] or "json", tonumber(args[3] or "0")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = auth
  local stream = "false"
  if mode == "stream" then
    stream = "true"
    wrk.headers["Accept"] = "text/event-stream"
  end
  -- an agent's request: its whole conversation so far, then the question
  local head = '{"model":"openai/gpt-4o-mini","stream":' .. stream .. ',"messages":['
  local turn = '{"role":"user","content":"Here is what we have so far, line by line."},'
  local last = '{"role":"user","content":"Say something short."}]}'
  local n = math.max(0, math.floor((size - #head - #last) / #turn))
  wrk.body = head .. string.rep(turn, n) .. last
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d socket_errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
