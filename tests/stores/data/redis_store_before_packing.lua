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

if op == 'reserve' or op == 'peek' then
  local admit, out = true, {}
  for i, c in ipairs(a.checks) do
    local k = P .. 'q:' .. c.key
    for _, l in ipairs(c.limits) do
      if redis.call('ZCOUNT', k, '(' .. num(now - l[2]), '+inf') >= l[1] then admit = false end
    end
    out[i + 2] = redis.call('ZRANGEBYSCORE', k, '(' .. num(now - c.horizon), '+inf', 'WITHSCORES')
  end
  out[1], out[2] = (admit and 1 or 0), num(now)
  if op == 'peek' or not admit then return out end
  local top = 0
  for _, c in ipairs(a.checks) do
    local k = P .. 'q:' .. c.key
    local before = redis.call('PTTL', k)
    redis.call('ZADD', k, now, a.rid)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', num(now - c.horizon))
    extend(k, before, c.horizon * 1000)
    index('q:' .. c.key, now + c.horizon)
    top = math.max(top, c.horizon)
  end
  local lk = P .. 'l:' .. a.rid
  redis.call('HSET', lk, 'doc', a.ledger, 'at', num(now), 'keys', a.keys, 'state', 'pending')
  redis.call('PEXPIRE', lk, top * 1000)
  zadd_kept(P .. 'pending', now, a.rid, top * 1000)
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
  local n = redis.call('ZCARD', k)
  redis.call('DEL', k)
  redis.call('ZREM', P .. 'exp', 'q:' .. a.key)
  return n

elseif op == 'apply' then
  for _, rid in ipairs({a.settle or false, a.release or false}) do
    local lk = P .. 'l:' .. tostring(rid)
    if rid and redis.call('HGET', lk, 'state') == 'pending' then
      redis.call('ZREM', P .. 'pending', rid)
      if rid == a.settle then
        redis.call('HSET', lk, 'state', 'started')
      else
        redis.call('HSET', lk, 'state', 'refunded')
        for _, key in ipairs(cjson.decode(redis.call('HGET', lk, 'keys'))) do
          redis.call('ZREM', P .. 'q:' .. key, rid)
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
    else
      -- The index said every event of this key left its longest window.
      removed = removed + redis.call('ZCARD', P .. m)
      redis.call('DEL', P .. m)
    end
  end
  return removed
end
return redis.error_reply('unknown operation ' .. tostring(op))
