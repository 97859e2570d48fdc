-- wrk script: POST pre-built request bodies (files 0.bin .. N-1.bin in $WRK_BODIES), in turn,
-- with Content-Type $WRK_CONTENT_TYPE (and $WRK_HEADER_NAME: $WRK_HEADER_VALUE when set);
-- prints one JSON line of results when done.
local dir = os.getenv("WRK_BODIES")
local count = tonumber(os.getenv("WRK_COUNT"))
local content_type = os.getenv("WRK_CONTENT_TYPE")
local requests_list = {}
local index = 0

function init(args)
  for i = 0, count - 1 do
    local f = assert(io.open(dir .. "/" .. i .. ".bin", "rb"))
    local body = f:read("*all")
    f:close()
    local headers = {["Content-Type"] = content_type}
    local extra = os.getenv("WRK_HEADER_NAME")
    if extra and extra ~= "" then headers[extra] = os.getenv("WRK_HEADER_VALUE") end
    requests_list[i + 1] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  index = index % count + 1
  return requests_list[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_s": %.3f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
