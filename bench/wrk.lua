-- Closed-loop load for wrk: renders bench.hits templates, one sequence number per request,
-- and prints the latency distribution and status counts as one JSON line at the end.
--
-- The template comes from the file named by $BENCH_SPEC (written by bench/wrk.py):
--   return {method=..., path=..., headers={...}, body=..., secret=... or nil, start=N}
-- "{n}" in path, header values and body is replaced by the request's number. A signed
-- template gets X-Signature: sha256=<hex HMAC-SHA256 of the body>, computed with
-- libcrypto (which wrk links) through LuaJIT's FFI, so every webhook is a distinct order.

local spec = dofile(os.getenv("BENCH_SPEC"))
local counter = spec.start
statuses = {}  -- global: done() reads it from each thread with thread:get

local hmac_hex = nil
if spec.secret then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct evp_md_st EVP_MD;
    const EVP_MD *EVP_sha256(void);
    unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                        const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
  ]]
  local ok, crypto = pcall(function() ffi.C.EVP_sha256(); return ffi.C end)
  if not ok then crypto = ffi.load("libcrypto.so.3") end
  local md = ffi.new("unsigned char[32]")
  local md_len = ffi.new("unsigned int[1]")
  hmac_hex = function(key, data)
    crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, md, md_len)
    local out = {}
    for i = 0, md_len[0] - 1 do out[#out + 1] = string.format("%02x", md[i]) end
    return table.concat(out)
  end
end

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = spec.start + thread_index * 1000000000
end

local function fill(text, n)
  return (string.gsub(text, "{n}", n))
end

function request()
  counter = counter + 1
  local n = tostring(counter)
  local headers = {}
  for k, v in pairs(spec.headers) do headers[k] = fill(v, n) end
  local body = nil
  if spec.body ~= "" then body = fill(spec.body, n) end
  if hmac_hex then headers["X-Signature"] = "sha256=" .. hmac_hex(spec.secret, body or "") end
  return wrk.format(spec.method, fill(spec.path, n), headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, count in pairs(counts) do merged[status] = (merged[status] or 0) + count end
  end
  local parts = {}
  for status, count in pairs(merged) do parts[#parts + 1] = string.format('"%d": %d', status, count) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p99.9": %d, "max": %d, "mean": %.1f}}\n',
    summary.duration, summary.requests, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
