-- aggregator_read.lua: the merged values of one window, in one round trip.
--
--   EVAL <this script> 0 <prefix> <size_ms> <start_ms> [top_n] [dims]
--
-- prefix: AGGREGATOR_REDIS_PREFIX (default "cs:agg"); size_ms: 60000, 300000
-- or 3600000; start_ms: the window start; top_n: how many top URLs (default
-- 100, 0 for none); dims: comma list of the dimensions whose counts to return
-- (default "url,category,device_type,country,event_type"; "" for none: much
-- cheaper on big windows, top URLs still need "url").
--
-- Returns a JSON object (see services/aggregator/README.md, "Reading a
-- window"). The same text is embedded in aggregator_redis.c (ag_redis_read_lua);
-- keep them identical (the unit test checks it).
local p, size, start = ARGV[1], ARGV[2], ARGV[3]
local topn = tonumber(ARGV[4] or "100")
local want = ARGV[5] or "url,category,device_type,country,event_type"
local base = p .. ":w:" .. size .. ":" .. start
local srcs = redis.call("SMEMBERS", base .. ":src")
table.sort(srcs)
local names = {"events", "page_views", "purchases", "revenue_micros", "sessions",
               "session_ms_sum", "bounces", "conversions", "late"}
local tot = {}
for _, f in ipairs(names) do tot[f] = 0 end
local dims = {}
for d in string.gmatch(want, "[^,]+") do dims[d] = {} end
if topn > 0 and dims["url"] == nil then dims["url"] = {} end
local hll = {}
local final = #srcs > 0
for _, s in ipairs(srcs) do
  local h = redis.call("HGETALL", base .. ":t:" .. s)
  local sf = false
  for i = 1, #h, 2 do
    if tot[h[i]] ~= nil then tot[h[i]] = tot[h[i]] + tonumber(h[i + 1]) end
    if h[i] == "final" and h[i + 1] == "1" then sf = true end
  end
  if not sf then final = false end
  if string.sub(s, 1, 1) == "r" then hll[#hll + 1] = base .. ":u:" .. s end
  for d, acc in pairs(dims) do
    local kv = redis.call("HGETALL", base .. ":d:" .. d .. ":" .. s)
    for i = 1, #kv, 2 do acc[kv[i]] = (acc[kv[i]] or 0) + tonumber(kv[i + 1]) end
  end
end
local out = {size_ms = tonumber(size), start_ms = tonumber(start),
             end_ms = tonumber(start) + tonumber(size), sources = #srcs, final = final}
for _, f in ipairs(names) do out[f] = tot[f] end
out.unique_users = 0
if #hll > 0 then out.unique_users = redis.call("PFCOUNT", unpack(hll)) end
out.sessions_closed = tot.sessions
out.avg_session_ms = 0
out.bounce_rate = 0
out.conversion_rate = 0
if tot.sessions > 0 then
  out.avg_session_ms = tot.session_ms_sum / tot.sessions
  out.bounce_rate = tot.bounces / tot.sessions
  out.conversion_rate = tot.conversions / tot.sessions
end
local top = {}
if topn > 0 then
  local items = {}
  for k, v in pairs(dims["url"]) do
    if v > 0 then items[#items + 1] = {k, v} end
  end
  table.sort(items, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] < b[1]
  end)
  for i = 1, math.min(topn, #items) do top[i] = {url = items[i][1], count = items[i][2]} end
end
out.top_urls = top
local counts = {}
for d in string.gmatch(want, "[^,]+") do counts[d] = dims[d] end
out.counts = counts
return cjson.encode(out)
