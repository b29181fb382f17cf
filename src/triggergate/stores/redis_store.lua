-- triggergate's Redis store: every operation that touches more than one key, as one
-- atomic script (Redis runs a script to completion before any other command).
--
-- ARGV[1] operation, ARGV[2] key prefix, ARGV[3] now in epoch seconds or '' for the
-- server's TIME, ARGV[4] the operation's arguments as JSON. Key names are derived
-- here from the prefix, so the store needs one Redis primary (not Redis Cluster).
--
-- The admit rule mirrors triggergate.quota.evaluate: an event at `at` counts for a
-- limit COUNT/WINDOW when at > now - WINDOW; one more fits when every limit of every
-- check counts fewer than COUNT. Python rebuilds the Decision from the events and the
-- time returned here and checks that both agree.
--
-- The events of one quota key are one string (`q:<key>`, expiring with the key's
-- window), the smallest thing Redis stores per client:
--   * one event whose time is a whole number of 2^-22 s (every double between 2004
--     and 2106 is) is that number in decimal, which Redis keeps as a bare integer;
--   * otherwise ':' and then each event as an 8-byte big-endian double.
-- Both are exact. A pending reservation's ledger names its events by (key, time),
-- so a refund removes exactly the event it added; the ledger goes once settled.
-- Before this layout a quota key was a sorted set of reservation ids scored by
-- time: such a key is still read (GET answers WRONGTYPE) and rewritten in the packed
-- form at its next reservation, so an upgrade forgets no event.

local op, P = ARGV[1], ARGV[2]
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local a = cjson.decode(ARGV[4])

-- Lua's tostring keeps 14 digits; scores need all 17 to round-trip exactly.
local function num(x) return string.format('%.17g', x) end

-- Give a key at least `ms` to live; `before` is its PTTL before the write
-- (-2 absent, -1 deliberately persistent, which stays so).
local function extend(key, before, ms)
  ms = math.max(math.ceil(ms), 1)
  if before == -2 or (before >= 0 and before < ms) then redis.call('PEXPIRE', key, ms) end
end

local function zadd_kept(key, score, member, ms)
  local before = redis.call('PTTL', key)
  redis.call('ZADD', key, 'GT', score, member)
  extend(key, before, ms)
end

-- The sweep index: member -> when it stops mattering; the index outlives its members.
local function index(member, until_at)
  zadd_kept(P .. 'exp', until_at, member, (until_at - now) * 1000)
end

local function live(rk)
  local found = redis.call('HMGET', rk, 'doc', 'e')
  if not found[1] then return nil end
  if found[2] ~= '' and tonumber(found[2]) <= now then return nil end
  return found[1]
end

local function put_record(r)
  local rk, ki = P .. 'r:' .. r.kind .. ':' .. r.id, P .. 'k:' .. r.kind
  redis.call('DEL', rk)
  if r.e == nil then
    redis.call('HSET', rk, 'doc', r.doc, 'e', '')
    redis.call('ZADD', ki, r.at, r.id)
    redis.call('PERSIST', ki)
    return
  end
  local ms = (r.e - now) * 1000
  if ms < 1 then
    redis.call('ZREM', ki, r.id)
    return
  end
  redis.call('HSET', rk, 'doc', r.doc, 'e', num(r.e))
  redis.call('PEXPIRE', rk, math.ceil(ms))
  local before = redis.call('PTTL', ki)
  redis.call('ZADD', ki, r.at, r.id)
  extend(ki, before, ms)
  index('r:' .. r.kind .. ':' .. r.id, r.e)
end

-- -- quota events ----------------------------------------------------------------

local UNIT = 4194304  -- 2^22: events are stored as whole numbers of 2^-22 s when exact
local WHOLE = 9223372036854775807  -- the largest integer Redis keeps as a bare integer

local function decode(v)
  local out = {}
  if not v then return out end
  if string.byte(v, 1) == 58 then  -- ':' then doubles
    for i = 2, #v, 8 do out[#out + 1] = struct.unpack('>d', v, i) end
  else
    out[1] = tonumber(v) / UNIT
  end
  return out
end

local function encode(events)
  if #events == 1 then
    local units = events[1] * UNIT  -- exact: a power of two
    if units >= 0 and units < WHOLE and units == math.floor(units) then
      return string.format('%.0f', units)
    end
  end
  local parts = {':'}
  for i, at in ipairs(events) do parts[i + 1] = struct.pack('>d', at) end
  return table.concat(parts)
end

-- A key's events, and whether it is still a sorted set of the layout before packing.
local function events_of(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then
    local old, out = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), {}
    for i = 2, #old, 2 do out[#out + 1] = tonumber(old[i]) end
    return out, true
  end
  return decode(v), false
end

local function store_events(k, events, ms)
  if #events == 0 then
    redis.call('DEL', k)
  elseif ms then
    redis.call('SET', k, encode(events), 'PX', math.max(math.ceil(ms), 1))
  else
    redis.call('SET', k, encode(events), 'KEEPTTL')
  end
end

-- The events of each check that its longest window still covers, and whether one
-- more fits every limit of every check.
local function evaluate(checks)
  local admit, found, kept = true, {}, {}
  for i, c in ipairs(checks) do
    local events, old = events_of(P .. 'q:' .. c.key)
    local inside, texts = {}, {}
    for _, at in ipairs(events) do
      if at > now - c.horizon then
        inside[#inside + 1] = at
        texts[#texts + 1] = num(at)
      end
    end
    for _, l in ipairs(c.limits) do
      local used = 0
      for _, at in ipairs(inside) do
        if at > now - l[2] then used = used + 1 end
      end
      if used >= l[1] then admit = false end
    end
    found[i], kept[i] = texts, {inside, old}
  end
  return admit, found, kept
end

if op == 'reserve' then
  local admit, found, kept = evaluate(a.checks)
  local out = {admit and 1 or 0, num(now)}
  for i, texts in ipairs(found) do out[i + 2] = texts end
  if not admit then return out end
  local top = 0
  for i, c in ipairs(a.checks) do
    local k, inside = P .. 'q:' .. c.key, kept[i][1]
    inside[#inside + 1] = now
    store_events(k, inside, c.horizon * 1000)
    if kept[i][2] then redis.call('ZREM', P .. 'exp', 'q:' .. c.key) end
    top = math.max(top, c.horizon)
  end
  -- The longest window in use, for the sweep (which knows no limits).
  local hk = P .. 'horizon'
  top = math.max(top, tonumber(redis.call('GET', hk) or '0'))
  redis.call('SET', hk, top, 'PX', top * 1000)
  local lk = P .. 'l:' .. a.rid
  redis.call('HSET', lk, 'doc', a.ledger, 'at', num(now), 'keys', a.keys, 'state', 'pending')
  redis.call('PEXPIRE', lk, top * 1000)
  zadd_kept(P .. 'pending', now, a.rid, top * 1000)
  return out

elseif op == 'peek' then
  -- Several independent peeks in one call: {now, {events per check} per peek}.
  local out = {num(now)}
  for i, checks in ipairs(a.batch) do
    local _, found = evaluate(checks)
    out[i + 1] = found
  end
  return out

elseif op == 'pending' then
  local out = {}
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'pending', '-inf', '(' .. num(a.older_than))) do
    local e = redis.call('HMGET', P .. 'l:' .. rid, 'doc', 'at', 'keys', 'state')
    if e[4] == 'pending' then out[#out + 1] = {rid, e[1], e[2], e[3]} end
  end
  return out

elseif op == 'reset' then
  local k = P .. 'q:' .. a.key
  local events = events_of(k)
  redis.call('DEL', k)
  redis.call('ZREM', P .. 'exp', 'q:' .. a.key)
  return #events

elseif op == 'apply' then
  for _, rid in ipairs({a.settle or false, a.release or false}) do
    local lk = P .. 'l:' .. tostring(rid)
    local e = rid and redis.call('HMGET', lk, 'state', 'at', 'keys')
    if e and e[1] == 'pending' then
      redis.call('ZREM', P .. 'pending', rid)
      redis.call('DEL', lk)
      if rid == a.release then
        local at = tonumber(e[2])
        for _, key in ipairs(cjson.decode(e[3])) do
          local k = P .. 'q:' .. key
          local events, old = events_of(k)
          if old then
            redis.call('ZREM', k, rid)
          else
            for i, t in ipairs(events) do
              if t == at then
                table.remove(events, i)
                store_events(k, events)
                break
              end
            end
          end
        end
      end
    end
  end
  for _, r in ipairs(a.records) do put_record(r) end
  for _, o in ipairs(a.outbox) do
    redis.call('HSET', P .. 'oi', o.id, o.item)
    redis.call('ZADD', P .. 'o', o.due, o.id)
  end
  return 1

elseif op == 'put_new' then
  if live(P .. 'r:' .. a.kind .. ':' .. a.id) then return 0 end
  put_record(a)
  return 1

elseif op == 'get' then
  return live(P .. 'r:' .. a.kind .. ':' .. a.id)

elseif op == 'delete' then
  redis.call('DEL', P .. 'r:' .. a.kind .. ':' .. a.id)
  redis.call('ZREM', P .. 'k:' .. a.kind, a.id)
  return 1

elseif op == 'query' then
  -- Pages past members whose record already expired; bounded to ten pages.
  local out, offset = {}, 0
  for _ = 1, 10 do
    local ids = redis.call('ZREVRANGEBYSCORE', P .. 'k:' .. a.kind, '(' .. num(a['until']),
      num(a.since), 'LIMIT', offset, a.limit)
    for _, id in ipairs(ids) do
      local doc = live(P .. 'r:' .. a.kind .. ':' .. id)
      if doc and #out < a.limit then out[#out + 1] = doc end
    end
    if #out >= a.limit or #ids < a.limit then break end
    offset = offset + #ids
  end
  return out

elseif op == 'claim' then
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'o', '-inf', num(now), 'LIMIT', 0, a.limit)) do
    redis.call('ZADD', P .. 'o', now + a.lease, id)
    out[#out + 1] = redis.call('HGET', P .. 'oi', id)
  end
  return out

elseif op == 'ack' then
  redis.call('ZREM', P .. 'o', a.id)
  redis.call('HDEL', P .. 'oi', a.id)
  return 1

elseif op == 'retry' then
  if not redis.call('ZSCORE', P .. 'o', a.id) then return 0 end
  redis.call('HSET', P .. 'oi', a.id, a.item)
  redis.call('ZADD', P .. 'o', a.due, a.id)
  return 1

elseif op == 'bury' then
  redis.call('ZREM', P .. 'o', a.id)
  redis.call('HDEL', P .. 'oi', a.id)
  redis.call('HSET', P .. 'di', a.id, a.item)
  redis.call('ZADD', P .. 'd', 'NX', now, a.id)
  return 1

elseif op == 'dead' then
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. 'd', 0, a.limit - 1)) do
    out[#out + 1] = redis.call('HGET', P .. 'di', id)
  end
  return out

elseif op == 'revive' then
  local ids = a.id and {a.id} or redis.call('ZRANGE', P .. 'd', 0, -1)
  local n = 0
  for _, id in ipairs(ids) do
    local item = redis.call('HGET', P .. 'di', id)
    if item then
      redis.call('HDEL', P .. 'di', id)
      redis.call('ZREM', P .. 'd', id)
      redis.call('HSET', P .. 'oi', id, item)
      redis.call('ZADD', P .. 'o', 0, id)
      n = n + 1
    end
  end
  return n

elseif op == 'sweep' then
  local removed = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', num(now), 'LIMIT', 0, a.limit)) do
    redis.call('ZREM', P .. 'exp', m)
    local kind, id = string.match(m, '^r:([^:]*):(.*)$')
    if kind then
      local rk = P .. m
      local e = redis.call('HGET', rk, 'e')
      if e and e ~= '' and tonumber(e) <= now then
        redis.call('DEL', rk)
        removed = removed + 1
      end
      if redis.call('EXISTS', rk) == 0 then redis.call('ZREM', P .. 'k:' .. kind, id) end
    elseif redis.call('TYPE', P .. m).ok == 'zset' then
      -- A quota key of the layout before packing whose events all left its window.
      removed = removed + redis.call('ZCARD', P .. m)
      redis.call('DEL', P .. m)
    end
  end
  -- Packed quota keys expire by themselves; this pass, a few keys per call from a
  -- cursor, drops those whose events all left the longest window in use by the
  -- clock given here (the injected one, in tests) before their expiry comes.
  local horizon = tonumber(redis.call('GET', P .. 'horizon') or '')
  if horizon then
    local ck = P .. 'sweep'
    local glob = string.gsub(P, '[%*%?%[%]\\]', '\\%0') .. 'q:*'
    local page = redis.call('SCAN', redis.call('GET', ck) or '0', 'MATCH', glob, 'COUNT', a.limit,
      'TYPE', 'string')
    redis.call('SET', ck, page[1], 'PX', horizon * 1000)
    for _, k in ipairs(page[2]) do
      local events, last = events_of(k), -math.huge
      for _, at in ipairs(events) do last = math.max(last, at) end
      if last <= now - horizon then
        removed = removed + #events
        redis.call('DEL', k)
      end
    end
  end
  return removed
end
return redis.error_reply('unknown operation ' .. tostring(op))
