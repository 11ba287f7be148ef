"""The Lua scripts behind Redis slot leases: each grant, release and renewal is atomic.

Keys of one server (``{key}`` is its normalised base URL, a Redis hash tag):

- ``kitty:slots:{key}:leases`` sorted set: lease id -> expiry (ms, Redis server time).
- ``kitty:slots:{key}:waiting`` sorted set: ``<ticket>:<lease id>`` -> its aged key,
  ``enqueued_s * aging_per_s - priority`` (lowest first); equal scores sort by member, so
  the zero-padded ticket makes ties first come first served.
- ``kitty:slots:{key}:wexp`` sorted set: the same members -> expiry; a dead process's
  waiters leave the queue when they are no longer renewed.
- ``kitty:slots:{key}:wmember`` hash: lease id -> its waiting member.
- ``kitty:slots:{key}:ticket`` counter.
- ``kitty:slots:{key}:epoch``: when (ms, Redis time) grants to waiters may begin, set by the
  first script that finds it missing (see below).

Redis keeps leases in memory only. A script that finds the epoch key missing sees data that
are new or were lost (Redis restarted empty, with leases still held by their processes).
A lease granted before that restart lives until its expiry, at most one TTL after Redis
started (``INFO server`` ``uptime_in_seconds``, to the second, rounded up). Until then no
waiter is granted: holders' renewals take their leases back (RENEW re-adds a held lease
while there is room) and waiters queue again, so the cap stays exact. A Redis up for
longer than the TTL opens the grants at once: its first use costs nothing.

Every script first drops expired leases and waiters, then grants free slots to the head of
the queue (once the epoch allows), publishes ``grant <id> <id>...`` on the store's channel,
and returns ``{ms until the next lease expires (or sooner, with waiters, the grants open)
or -1, leases, waiting, granted ids}``. Time is the Redis
server's (``TIME``), so hosts with skewed clocks agree: on lease expiries, and on the aging
of waiters, which ENQUEUE computes from ``TIME`` (callers pass their priority and the aging
rate, never their own clock; with a wall clock per host, 10 s of skew were 500 tokens).
"""

from __future__ import annotations

KEY_SUFFIXES = ("leases", "waiting", "wexp", "wmember", "ticket", "epoch")

_PUMP = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function forget_waiter(member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('HDEL', KEYS[4], string.sub(member, 18))
end

-- When grants to waiters may begin: the epoch key, set when missing (new or lost data) to
-- one TTL after Redis started, when every lease granted before the start has expired.
-- uptime_in_seconds is whole seconds of Redis's clock minus whole seconds of its start, so
-- the start was before (now's whole second - uptime + 1 s): never too early.
local function grants_open_at(now, ttl)
  local opens = redis.call('GET', KEYS[6])
  if opens then return tonumber(opens) end
  local uptime = string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')
  opens = (math.floor(now / 1000) - tonumber(uptime or 0) + 1) * 1000 + ttl
  redis.call('SET', KEYS[6], opens)
  return opens
end

local function pump(now, capacity, ttl, channel)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    forget_waiter(member)
  end
  local granted = {}
  local opens = grants_open_at(now, ttl)
  local free = capacity - redis.call('ZCARD', KEYS[1])
  if free > 0 and now >= opens then
    for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
      local lease = string.sub(member, 18)
      forget_waiter(member)
      if not redis.call('ZSCORE', KEYS[1], lease) then  -- a stale waiter already holding
        redis.call('ZADD', KEYS[1], now + ttl, lease)
        granted[#granted + 1] = lease
      end
    end
  end
  if #granted > 0 then
    redis.call('PUBLISH', channel, 'grant ' .. table.concat(granted, ' '))
  end
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wake = -1
  if #first > 0 then wake = tonumber(first[2]) - now end
  if now < opens and redis.call('ZCARD', KEYS[2]) > 0 and (wake < 0 or opens - now < wake) then
    wake = opens - now  -- the waiters' processes come back when the grants open
  end
  return {wake, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), granted}
end
"""

ENQUEUE = (
    _PUMP
    + """
-- ARGV: lease, priority, capacity, ttl_ms, channel, aging per s, key ('' or the key this
-- waiter got before, when it queues again). Returns pump's result plus the key used.
local now = now_ms()
local old = redis.call('HGET', KEYS[4], ARGV[1])
if old then forget_waiter(old) end
local score = ARGV[7]
if score == '' then
  score = string.format('%.17g', now / 1000 * tonumber(ARGV[6]) - tonumber(ARGV[2]))
end
local ticket = redis.call('INCR', KEYS[5])
local member = string.format('%016d', ticket) .. ':' .. ARGV[1]
redis.call('ZADD', KEYS[2], score, member)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), member)
redis.call('HSET', KEYS[4], ARGV[1], member)
local result = pump(now, tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
result[5] = score
return result
"""
)

RELEASE = (
    _PUMP
    + """
-- ARGV: lease, capacity, ttl_ms, channel. Gives a lease back or leaves the queue.
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[1])
local member = redis.call('HGET', KEYS[4], ARGV[1])
if member then forget_waiter(member) end
return pump(now, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
"""
)

RENEW = (
    _PUMP
    + """
-- ARGV: capacity, ttl_ms, channel, n_held, held ids..., waiting ids...
-- A held lease that expired (a heartbeat lost) is taken again when there is room, else
-- reported lost. A waiter granted while its grant message was missed is reported granted;
-- one that left the queue (expired, or Redis restarted empty) is reported missing.
local now = now_ms()
local capacity, ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine, lost, missing = {}, {}, {}
for i = 5, 4 + n do
  local lease = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], lease) or redis.call('ZCARD', KEYS[1]) < capacity then
    redis.call('ZADD', KEYS[1], now + ttl, lease)
  else
    lost[#lost + 1] = lease
  end
end
for i = 5 + n, #ARGV do
  local lease = ARGV[i]
  local member = redis.call('HGET', KEYS[4], lease)
  if member then
    redis.call('ZADD', KEYS[3], now + ttl, member)
  elseif redis.call('ZSCORE', KEYS[1], lease) then
    mine[#mine + 1] = lease
  else
    missing[#missing + 1] = lease
  end
end
local result = pump(now, capacity, ttl, ARGV[3])
result[5], result[6], result[7] = mine, lost, missing
return result
"""
)

COUNTS = """
-- Leases and waiters of one server, after dropping expired ones (read-mostly).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[3], now, '+inf')}
"""
