-- The wrk script of bench/latency.ts: each connection alternates PUT /kv/<new key>
-- (32-byte value, fsynced by fixtures/kv before the answer) and GET /healthz.
--
-- Every request carries `x-request-id: <n>` (unique in its thread), which fixtures/kv
-- echoes, so a response is paired with its request whatever connection it came on:
-- per request the start (gettimeofday, µs since the epoch: the clock wrk itself times
-- with and Date.now() reads), the latency (µs, measured from the request() call,
-- which wrk makes right before the write; within µs of wrk's own start), the status
-- and the answering pid (`x-baton-pid`). A request still unanswered when the run ends
-- is written with latency -1: either in flight at the end or lost (its connection was
-- closed or reset under it, which wrk itself does not count when the server closed it).
--
-- With one connection per thread (-tN -cN) the thread id is the connection slot, so
-- per-connection stalls can be read from the records too (bench/latency.ts runs a
-- second, 4-connection wrk like that).
--
-- done() collects the records from every thread, writes them to $WRK_RECORDS, one line
-- per request: "thread start latency status pid put" (put: 1 for the PUT, 0 for the
-- GET), and prints one line "WRK_JSON {...}":
-- wrk's own summary and errors, and its latency percentiles (as `wrk --latency` prints
-- them: wrk 4 corrects its histogram for coordinated omission).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_usec; } bench_timeval;
  int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now_us()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

-- main state ------------------------------------------------------------------------
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- thread state ----------------------------------------------------------------------
local n = 0
local value = string.rep("v", 32)
-- request number -> start (µs); records: start, latency, status, pid, ...
pending = {}
records = {}
local calls = 0

function request()
  calls = calls + 1
  n = n + 1
  local headers = { ["x-request-id"] = tostring(n) }
  -- wrk calls thread 0's request() once before the run to check the request's syntax.
  if not (id == 0 and calls == 1) then pending[n] = now_us() end
  if n % 2 == 1 then
    return wrk.format("PUT", "/kv/l" .. id .. "-" .. n, headers, value)
  end
  return wrk.format("GET", "/healthz", headers)
end

function response(status, headers, body)
  local t = now_us()
  local rid = tonumber(headers["x-request-id"])
  local start = rid and pending[rid]
  if start then
    pending[rid] = nil
    records[#records + 1] = start
    records[#records + 1] = t - start
    records[#records + 1] = status
    records[#records + 1] = tonumber(headers["x-baton-pid"]) or 0
    records[#records + 1] = rid % 2 -- 1: the PUT, 0: the GET
  end
end

-- main state, after the run ---------------------------------------------------------
function done(summary, latency, requests)
  local path = os.getenv("WRK_RECORDS")
  local written, unanswered = 0, 0
  if path then
    local f = assert(io.open(path, "w"))
    for _, t in ipairs(threads) do
      local id = t:get("id")
      local r = t:get("records")
      local buf = {}
      local i = 1
      while r[i] do
        buf[#buf + 1] = string.format("%d %d %d %d %d %d\n", id, r[i], r[i + 1], r[i + 2], r[i + 3], r[i + 4])
        i = i + 5
        written = written + 1
        if #buf >= 4096 then
          f:write(table.concat(buf))
          buf = {}
        end
      end
      for rid, start in pairs(t:get("pending")) do
        buf[#buf + 1] = string.format("%d %d -1 0 0 %d\n", id, start, rid % 2)
        unanswered = unanswered + 1
      end
      f:write(table.concat(buf))
    end
    f:close()
  end
  local p = {}
  for _, q in ipairs({ 50, 90, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"durationUs":%d,"requests":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"percentiles":{%s}},"records":%d,"unanswered":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(p, ","), written, unanswered))
end
