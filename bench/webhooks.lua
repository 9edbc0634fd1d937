-- wrk script for the webhook_ingest scenario: cycles through pre-signed deliveries (one per
-- line of BENCH_REQUESTS: "<signature header>\t<body>"), each thread taking its own stride so
-- no event id is sent twice while the file lasts; optionally paces every thread to a shared
-- schedule (BENCH_RATE requests/s in total, Debian's wrk 4 has no -R) with delay(); counts
-- statuses and "accepted"/"duplicate" bodies, collects the Server-Timing durations, and writes
-- a JSON summary to BENCH_OUT. With BENCH_REQUESTS empty it sends plain GETs through the same
-- hooks: the baseline pays the generator's per-response work too.
--   BENCH_REQUESTS=... BENCH_OUT=... [BENCH_RATE=500] wrk -t2 -c32 -d30s -s bench/webhooks.lua URL

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } timespec_t;
  int clock_gettime(int clk_id, timespec_t *tp);
]]
local ts = ffi.new("timespec_t")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  -- `threads` lives in the main script state only: the stride (the thread count) comes from
  -- the environment.
  stride = tonumber(os.getenv("BENCH_THREADS") or "1")
  lines = {}
  local file = os.getenv("BENCH_REQUESTS") or ""
  if file ~= "" then
    for line in io.lines(file) do
      local tab = line:find("\t", 1, true)
      lines[#lines + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
    end
  end
  position = index + 1
  statuses = {}
  accepted, duplicate, timings, sent = 0, 0, {}, 0
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  interval = rate > 0 and (stride * 1000.0 / rate) or 0
  next_slot = nil
end

function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  if next_slot == nil then next_slot = now + index * interval / stride end
  local wait = next_slot - now
  next_slot = next_slot + interval
  if wait < 0 then return 0 end
  return math.floor(wait)
end

function request()
  sent = sent + 1
  if #lines == 0 then return wrk.format("GET") end -- the baseline (/healthz): same script, GETs
  local item = lines[position]
  if item == nil then -- the file ran out: start again (the repeats answer "duplicate")
    position = index + 1
    item = lines[position]
  end
  position = position + stride
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-LinkSync-Signature"] = item[1],
  }, item[2])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    if body:find("duplicate", 1, true) then duplicate = duplicate + 1 else accepted = accepted + 1 end
  end
  local timing = headers["Server-Timing"] or headers["server-timing"]
  if timing then
    local dur = timing:match("dur=([%d%.]+)")
    if dur then timings[#timings + 1] = tonumber(dur) end
  end
end

local function percentile(sorted, q)
  if #sorted == 0 then return nil end
  local i = math.floor(q / 100 * (#sorted - 1) + 0.5) + 1
  return sorted[i]
end

function done(summary, latency, requests)
  local all_statuses, acc, dup, server = {}, 0, 0, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      all_statuses[tostring(status)] = (all_statuses[tostring(status)] or 0) + n
    end
    acc = acc + thread:get("accepted")
    dup = dup + thread:get("duplicate")
    for _, v in ipairs(thread:get("timings")) do server[#server + 1] = v end
  end
  table.sort(server)
  local parts = {}
  for status, n in pairs(all_statuses) do parts[#parts + 1] = string.format('"%s": %d', status, n) end
  local e = summary.errors
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_s": %.3f, "statuses": {%s}, "accepted": %d, "duplicate": %d, '
      .. '"socket_errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, '
      .. '"server_p50_ms": %s, "server_p99_ms": %s}\n',
    summary.requests, summary.duration / 1e6, table.concat(parts, ", "), acc, dup,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    tostring(percentile(server, 50) or "null"), tostring(percentile(server, 99) or "null")))
  out:close()
end
