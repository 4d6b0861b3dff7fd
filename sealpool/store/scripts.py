"""The Lua scripts behind every change of sector state.

Each script runs atomically inside Redis, so a check and the write it guards can't be split
by another client. Time is read from the server (``TIME``), so workers with skewed clocks
agree on when a lease expires. Key names beside ``KEYS`` are built from the pool's prefix
inside the scripts (the state indexes depend on the state read there): sealpool expects a
single Redis server, not a cluster.
"""

# Shared helpers, prepended to the scripts that use them.
_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index_key(prefix, state, kind)
  return prefix .. ':state:' .. state .. ':' .. kind
end
local function index_score(priority, created_ms)
  return tonumber(priority) * 1e13 + tonumber(created_ms)
end
-- HSET the (field, value) pairs of ARGV from position `first`; "" deletes the field.
local function apply_patch(key, first)
  for i = first, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', key, ARGV[i])
    else
      redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    end
  end
end
local function record(history, actor, event, from, to, detail, at)
  redis.call('XADD', history, '*', 'at', at, 'actor', actor, 'event', event,
             'from', from, 'to', to, 'detail', detail)
end
"""

# CREATE a sector, at most once per request id.
# KEYS[1] request key, KEYS[2] the miner's sequence counter
# ARGV[1] key prefix, ARGV[2] miner, ARGV[3] kind, ARGV[4] priority,
# ARGV[5] request key TTL (s), ARGV[6] actor, ARGV[7] initial state, ARGV[8..] field pairs
# Returns {sector id, 1} when created, {sector id, 0} when the request was seen before.
CREATE = (
    _HELPERS
    + """
local known = redis.call('GET', KEYS[1])
if known then return {known, 0} end
local number = redis.call('INCR', KEYS[2])
local id = ARGV[2] .. '-' .. number
local key = ARGV[1] .. ':sector:' .. id
local now = now_ms()
redis.call('HSET', key, 'id', id, 'miner', ARGV[2], 'number', number, 'kind', ARGV[3],
           'priority', ARGV[4], 'state', ARGV[7], 'created_ms', now, 'updated_ms', now,
           'version', 1)
apply_patch(key, 8)
redis.call('ZADD', index_key(ARGV[1], ARGV[7], ARGV[3]), index_score(ARGV[4], now), id)
record(ARGV[1] .. ':history:' .. id, ARGV[6], 'create', '', ARGV[7], ARGV[3], now)
redis.call('SET', KEYS[1], id, 'EX', ARGV[5])
return {id, 1}
"""
)

# CLAIM a work phase: the lease goes to one worker and a new fencing token is issued. A
# phase that reads the sector's temp files names the worker's host: it binds an unbound
# sector to that host, and is refused on any other host than the bound one.
# KEYS[1] sector hash, KEYS[2] fencing counter, KEYS[3] lease index, KEYS[4] history
# ARGV[1] phase, ARGV[2] worker, ARGV[3] lease length (ms), ARGV[4] host ("" = any)
# Returns {token, lease expiry (ms), the record's field-value list} on success, {0, reason}
# when the phase can't be claimed.
CLAIM = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'status', 'lease_expires_ms',
                     'lease_owner', 'host')
if not f[1] then return {0, 'no such sector'} end
if f[2] ~= ARGV[1] then return {0, 'sector is in ' .. f[2] .. ', not ' .. ARGV[1]} end
if ARGV[4] ~= '' and f[6] and f[6] ~= ARGV[4] then
  return {0, 'temp data is on ' .. f[6] .. ', not ' .. ARGV[4]}
end
local now = now_ms()
local taken_over = ''
if f[3] == 'running' then
  if tonumber(f[4]) > now then return {0, 'leased to ' .. f[5]} end
  taken_over = ' (lease of ' .. f[5] .. ' expired)'
elseif f[3] ~= 'queued' then
  return {0, 'phase is not queued'}
end
local token = redis.call('INCR', KEYS[2])
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[2], 'lease_token', token,
           'lease_expires_ms', expires, 'updated_ms', now)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'host', ARGV[4]) end
redis.call('HINCRBY', KEYS[1], 'attempts.' .. ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[3], expires, f[1])
local on_host = ''
if ARGV[4] ~= '' then on_host = ' on ' .. ARGV[4] end
record(KEYS[4], ARGV[2], 'claim', ARGV[1], ARGV[1], 'token ' .. token .. on_host .. taken_over,
       now)
return {token, expires, redis.call('HGETALL', KEYS[1])}
"""
)

# RENEW a lease held with a token, optionally saving progress (e.g. a sent message's id).
# KEYS[1] sector hash, KEYS[2] lease index; ARGV[1] token, ARGV[2] lease length (ms),
# ARGV[3..] field pairs to set ("" deletes)
# Returns the new expiry (ms), or 0 when the token no longer owns the lease.
RENEW = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'status', 'lease_token')
if f[2] ~= 'running' or f[3] ~= ARGV[1] then return 0 end
local expires = now_ms() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_expires_ms', expires)
apply_patch(KEYS[1], 3)
redis.call('ZADD', KEYS[2], expires, f[1])
return expires
"""
)

# MOVE a sector to another state, fenced by a lease token or, for operator and supervisor
# actions, unfenced. Ends any lease.
# KEYS[1] sector hash, KEYS[2] history, KEYS[3] lease index, KEYS[4] deadline index
# ARGV[1] key prefix, ARGV[2] token ("" = unfenced), ARGV[3] phase the token must hold,
# ARGV[4] target state, ARGV[5] target status ("" = none), ARGV[6] allowed source states,
# comma-separated, ARGV[7] 1 when the target is terminal, ARGV[8] actor, ARGV[9] event,
# ARGV[10] detail, ARGV[11] a condition: "" none, "expired" the token's lease must have
# expired (taking over from a dead worker), "=N" the sector must be at version N (a
# decision taken on a record read earlier), ARGV[12] "1" to have the record returned,
# ARGV[13..] field pairs to set ("" deletes)
# Returns {1, "", the record's field-value list (empty unless asked for)}, or {0, reason,
# current state} when refused.
MOVE = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'status', 'lease_token', 'kind',
                     'priority', 'created_ms', 'lease_expires_ms', 'version')
if not f[1] then return {0, 'no such sector', ''} end
local state = f[2]
local now = now_ms()
if ARGV[2] ~= '' then
  if f[3] ~= 'running' or f[4] ~= ARGV[2] or state ~= ARGV[3] then
    return {0, 'stale token', state}
  end
  if ARGV[11] == 'expired' and tonumber(f[8]) > now then return {0, 'stale token', state} end
end
if string.sub(ARGV[11], 1, 1) == '=' and f[9] ~= string.sub(ARGV[11], 2) then
  return {0, 'changed meanwhile', state}
end
if not string.find(',' .. ARGV[6] .. ',', ',' .. state .. ',', 1, true) then
  return {0, 'illegal transition', state}
end
redis.call('ZREM', index_key(ARGV[1], state, f[5]), f[1])
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_token', 'lease_expires_ms')
redis.call('ZREM', KEYS[3], f[1])
apply_patch(KEYS[1], 13)
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'updated_ms', now)
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], 'status')
else
  redis.call('HSET', KEYS[1], 'status', ARGV[5])
end
local priority = redis.call('HGET', KEYS[1], 'priority')
redis.call('ZADD', index_key(ARGV[1], ARGV[4], f[5]), index_score(priority, f[7]), f[1])
local deadline = redis.call('HGET', KEYS[1], 'deadline_epoch')
if ARGV[7] == '1' or not deadline then
  redis.call('ZREM', KEYS[4], f[1])
else
  redis.call('ZADD', KEYS[4], deadline, f[1])
end
record(KEYS[2], ARGV[8], ARGV[9], state, ARGV[4], ARGV[10], now)
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[12] == '1' then return {1, '', redis.call('HGETALL', KEYS[1])} end
return {1, '', {}}
"""
)

# PRIORITIZE a sector: a new priority, re-scored in its state index. No state change.
# KEYS[1] sector hash, KEYS[2] history; ARGV[1] key prefix, ARGV[2] priority, ARGV[3] actor,
# ARGV[4] detail. Returns 1, or 0 when the sector has that priority already (or is gone).
PRIORITIZE = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'kind', 'priority', 'created_ms')
if not f[1] or f[4] == ARGV[2] then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[1], 'priority', ARGV[2], 'updated_ms', now)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', index_key(ARGV[1], f[2], f[3]), index_score(ARGV[2], f[5]), f[1])
record(KEYS[2], ARGV[3], 'priority', f[2], f[2], ARGV[2] .. ' ' .. ARGV[4], now)
return 1
"""
)
