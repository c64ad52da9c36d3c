-- wrk script for bench/run.sh: POSTs a small chat completion request and
-- prints one parsable line at the end.
--   wrk ... -s bench/wrk.lua URL -- "<Authorization value>" json|stream
function init(args)
  local auth, mode = args[1], args[2] or "json"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = auth
  local stream = "false"
  if mode == "stream" then
    stream = "true"
    wrk.headers["Accept"] = "text/event-stream"
  end
  wrk.body = '{"model":"openai/gpt-4o-mini","stream":' .. stream ..
    ',"messages":[{"role":"user","content":"Say something short."}]}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d socket_errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
