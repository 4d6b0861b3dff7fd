"""The Lua scripts behind every change of sector state, one per job.

Each script runs atomically inside Redis, so a check and the write it guards can't be split
by another client. Time is read from the server (``TIME``): workers with skewed clocks agree
on when a lease expires. Every key a script touches arrives in ``KEYS``; a script that moves
a sector between states gets the index key of each state it may read, and finds the one it
needs through the request's ``index`` map (``"<state>:<kind>"`` → position in ``KEYS``).
Parameters come as one JSON request in ``ARGV[1]`` (fields named, nothing positional).

The state-changing scripts share one layout of ``KEYS``::

    KEYS[1] sector hash   KEYS[2] history   KEYS[3] lease index   KEYS[4] deadline index
    KEYS[5] outbox        KEYS[6] unclaimed KEYS[7..] state indexes (and a script's extras)

and every script that changes a record gets the record's listing key last (``KEYS[#KEYS]``):
it rewrites the record's JSON there, so a listing sends stored bytes.

and each declares the source states it accepts: a request whose sector is elsewhere is
refused as an illegal transition, and nothing changes.

Messages: every move into a queued work phase issues the phase's next message id
(``<sector>/<n>``) with its not-before time, and puts the sector in the outbox; the sender
hands it to Celery with that task id and marks it sent (``SENT``). A claim must present the
current id, so a superseded or duplicated message never runs a phase.
"""

import json

from sealpool.store.model import LISTING_FIELDS

# The record's JSON as Sector.model_dump(mode="json") gives it (fields in order, defaults
# filled in), kept ready at KEYS[#KEYS] for listings. A sector in a terminal state keeps
# none: final sectors are most of a pool, and a listing builds theirs from the hash.
_LISTING = (
    "local LISTING = {"
    + ", ".join(
        f"{{{json.dumps(n)}, {json.dumps(h)}, {json.dumps(d)}}}" for n, h, d in LISTING_FIELDS
    )
    + "}"
    + r"""
-- `text` as a JSON string ('/' left as it is, as Python writes it)
local function quoted(text) return (string.gsub(cjson.encode(text), '\\/', '/')) end
local function keep_listing()
  local flat = redis.call('HGETALL', KEYS[1])
  local h, attempts, runs = {}, {}, {}
  for j = 1, #flat, 2 do
    local name = flat[j]
    if string.sub(name, 1, 9) == 'attempts.' then
      attempts[#attempts + 1] = quoted(string.sub(name, 10)) .. ':' .. flat[j + 1]
    elseif string.sub(name, 1, 4) == 'run.' then
      runs[#runs + 1] = quoted(string.sub(name, 5)) .. ':' .. quoted(flat[j + 1])
    else
      h[name] = flat[j + 1]
    end
  end
  local parts = {}
  for i, field in ipairs(LISTING) do
    local how, value = field[2], h[field[1]]
    if how == 'attempts' then value = '{' .. table.concat(attempts, ',') .. '}'
    elseif how == 'runs' then value = '{' .. table.concat(runs, ',') .. '}'
    elseif value == nil then value = field[3]
    elseif how == 'text' then value = quoted(value) end
    parts[i] = '"' .. field[1] .. '":' .. value
  end
  redis.call('SET', KEYS[#KEYS], '{' .. table.concat(parts, ',') .. '}')
end
"""
)

_HELPERS = (
    _LISTING
    + """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index_score(priority, created_ms)
  return tonumber(priority) * 1e13 + tonumber(created_ms)
end
-- HSET each field of `fields` (already encoded strings); "" deletes the field.
local function set_fields(key, fields)
  if not fields then return end
  for name, value in pairs(fields) do
    if value == '' then redis.call('HDEL', key, name) else redis.call('HSET', key, name, value) end
  end
end
local function record(actor, event, from, to, detail, at)
  redis.call('XADD', KEYS[2], '*', 'at', at, 'actor', actor, 'event', event,
             'from', from, 'to', to, 'detail', detail)
end
-- The leased run of the phase just completed, as 'run.<phase>' = '<claimed, ms after
-- created> <ms it ran> <worker>': what phase times are measured from once the history is
-- compacted.
local function record_run(f, now)
  local h = redis.call('HMGET', KEYS[1], 'lease_since_ms', 'lease_owner')
  if not h[1] then return end
  local since = tonumber(h[1])
  redis.call('HSET', KEYS[1], 'run.' .. f.state, string.format('%d %d %s',
             since - tonumber(f.created_ms), now - since, h[2]))
end
-- Compact the history of a sector that reached a final state: its stream goes into the
-- shared archive (req.compact == 'archive': one entry, the events as JSON rows of
-- {ms after the first, actor, event, from, to, detail}, trimmed after req.archive_ms) or
-- is dropped. The record keeps its runs, and adds to 'archived' the archive entry's id
-- ('-' for a dropped stream).
local function compact(req, f, now)
  local entries = redis.call('XRANGE', KEYS[2], '-', '+')
  if #entries == 0 then return end
  local id = '-'
  if req.compact == 'archive' then
    local first = tonumber(entries[1][2][2])
    local rows = {}
    for i, entry in ipairs(entries) do
      local v = entry[2]
      rows[i] = {tonumber(v[2]) - first, v[4], v[6], v[8], v[10], v[12]}
    end
    id = redis.call('XADD', KEYS[req.archive], 'MINID', '~',
                    string.format('%d', now - req.archive_ms), '*',
                    'id', f.id, 'at', first, 'events', cjson.encode(rows))
  end
  local before = redis.call('HGET', KEYS[1], 'archived')
  redis.call('HSET', KEYS[1], 'archived', before and (before .. ' ' .. id) or id)
  redis.call('DEL', KEYS[2])
end
local function in_list(list, value)
  for _, each in ipairs(list) do if each == value then return true end end
  return false
end
local function drop_message(id)
  redis.call('HDEL', KEYS[1], 'msg_id', 'msg_at_ms', 'msg_sent_ms', 'msg_holder')
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZREM', KEYS[6], id)
end
-- A new message for the sector's queued phase, to run from `at` (ms); older ids are dead.
local function issue_message(id, at)
  local n = redis.call('HINCRBY', KEYS[1], 'msg_seq', 1)
  redis.call('HSET', KEYS[1], 'msg_id', id .. '/' .. n, 'msg_at_ms', at)
  redis.call('HDEL', KEYS[1], 'msg_sent_ms', 'msg_holder')
  redis.call('ZADD', KEYS[5], at, id)
  redis.call('ZREM', KEYS[6], id)
end
-- Move the sector (current fields `f`) to req.target: indexes, lease, status, deadline,
-- message and history. The caller has checked every fence.
local function transition(req, f, now)
  if not in_list(req.sources, f.state) then return {0, 'illegal transition', f.state} end
  redis.call('ZREM', KEYS[req.index[f.state .. ':' .. f.kind]], f.id)
  if req.run then record_run(f, now) end
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_token', 'lease_expires_ms', 'lease_since_ms')
  redis.call('ZREM', KEYS[3], f.id)
  set_fields(KEYS[1], req.fields)
  redis.call('HSET', KEYS[1], 'state', req.target, 'updated_ms', now)
  if req.status == '' then
    redis.call('HDEL', KEYS[1], 'status')
    drop_message(f.id)
  else
    redis.call('HSET', KEYS[1], 'status', req.status)
    issue_message(f.id, now + (req.delay_ms or 0))
  end
  local h = redis.call('HMGET', KEYS[1], 'priority', 'deadline_epoch')
  redis.call('ZADD', KEYS[req.index[req.target .. ':' .. f.kind]],
             index_score(h[1], f.created_ms), f.id)
  if req.terminal or not h[2] then
    redis.call('ZREM', KEYS[4], f.id)
  else
    redis.call('ZADD', KEYS[4], h[2], f.id)
  end
  record(req.actor, req.event, f.state, req.target, req.detail or '', now)
  if req.compact then compact(req, f, now) end
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  if req.terminal then redis.call('DEL', KEYS[#KEYS]) else keep_listing() end
  if req.record then return {1, '', redis.call('HGETALL', KEYS[1])} end
  return {1, '', {}}
end
local function read(key)
  local v = redis.call('HMGET', key, 'id', 'state', 'status', 'kind', 'created_ms',
                       'lease_token', 'lease_expires_ms', 'version', 'msg_id')
  if not v[1] then return nil end
  return {id = v[1], state = v[2], status = v[3], kind = v[4], created_ms = v[5],
          token = v[6], expires = tonumber(v[7] or 0), version = v[8], msg_id = v[9]}
end
local function leads(key, leader)
  return not leader or redis.call('GET', key) == leader
end
"""
)

# CREATE a Pending sector, at most once per request id, with its deals taken off the
# waiting list in the same step (a deal is never packed into two sectors). With a leader
# fence, only the leading supervisor creates.
# KEYS[1] sector hash, KEYS[2] history, KEYS[3] request key, KEYS[4] Pending index of the
# kind, KEYS[5] waiting deals, KEYS[6] deal → sector, KEYS[7] leader key, KEYS[8] listing
# ARGV[1] {id, miner, number (a string), kind, priority, actor, ttl_s, deal_ids (strings),
# deals (their JSON list), leader?}
# Returns {1, id} when created, {2, id} when the request was seen before, {0, reason}.
CREATE = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local known = redis.call('GET', KEYS[3])
if known then return {2, known} end
if not leads(KEYS[7], req.leader) then return {0, 'not the leader'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'sector ' .. req.id .. ' exists'} end
for _, deal in ipairs(req.deal_ids) do
  if not redis.call('ZSCORE', KEYS[5], deal) then
    return {0, 'deal ' .. deal .. ' is not waiting for a sector'}
  end
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'id', req.id, 'miner', req.miner, 'number', req.number,
           'kind', req.kind, 'priority', req.priority, 'state', 'Pending',
           'created_ms', now, 'updated_ms', now, 'version', 1, 'deal_ids', req.deals)
for _, deal in ipairs(req.deal_ids) do
  redis.call('ZREM', KEYS[5], deal)
  redis.call('HSET', KEYS[6], deal, req.id)
end
redis.call('ZADD', KEYS[4], index_score(req.priority, now), req.id)
keep_listing()
record(req.actor, 'create', '', 'Pending', req.kind .. ' ' .. req.deals, now)
redis.call('SET', KEYS[3], req.id, 'EX', req.ttl_s)
return {1, req.id}
"""
)

# NUMBERS: take ARGV[1] sector numbers for one miner, none ever given before: above the
# miner's counter and at least ARGV[2] (its floor), at most ARGV[3] (0: no limit).
# KEYS[1] the miner's counter (the last number given).
# Returns {1, first number taken} or {0, the next number, past the limit}.
NUMBERS = """
local count, floor, last = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local given = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), floor - 1)
if last > 0 and given + count > last then return {0, string.format('%d', given + 1)} end
redis.call('SET', KEYS[1], string.format('%d', given + count))
return {1, string.format('%d', given + 1)}
"""

# START a Pending sector: the only way into AddPiece from Pending, once; with a leader
# fence, only while the caller leads, and the start time is recorded for the fill rate.
# KEYS[1..6] the common layout, KEYS[7..] indexes, KEYS[n-2] leader key, KEYS[n-1] last
# start, KEYS[n] listing
# ARGV[1] {sources, target, status, index, actor, event, leader?, record}
# Returns {1, "", record} or {0, reason, state}.
START = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local f = read(KEYS[1])
if not f then return {0, 'no such sector', ''} end
if not leads(KEYS[#KEYS - 2], req.leader) then return {0, 'not the leader', f.state} end
local now = now_ms()
local moved = transition(req, f, now)
if moved[1] == 1 then redis.call('SET', KEYS[#KEYS - 1], now) end
return moved
"""
)

# CLAIM a queued work phase with its current message: the lease goes to one worker and a
# new fencing token is issued. A phase that reads the sector's temp files names the
# worker's host: it binds an unbound sector to that host, and is refused on any other.
# KEYS[1..6] the common layout, KEYS[7] fencing counter, KEYS[8] listing
# ARGV[1] {phase, worker, lease_ms, host ("" = any), msg ("" = any)}
# Returns {token, lease expiry (ms), record} or {0, reason}.
CLAIM = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local f = read(KEYS[1])
if not f then return {0, 'no such sector'} end
if f.state ~= req.phase then return {0, 'sector is in ' .. f.state .. ', not ' .. req.phase} end
if f.status ~= 'queued' then return {0, req.phase .. ' is ' .. (f.status or 'not queued')} end
if req.msg ~= '' and f.msg_id and f.msg_id ~= req.msg then
  return {0, 'message ' .. req.msg .. ' superseded by ' .. f.msg_id}
end
local bound = redis.call('HGET', KEYS[1], 'host')
if req.host ~= '' and bound and bound ~= req.host then
  return {0, 'temp data is on ' .. bound .. ', not ' .. req.host}
end
local now = now_ms()
local token = redis.call('INCR', KEYS[7])
local expires = now + tonumber(req.lease_ms)
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', req.worker,
           'lease_token', token, 'lease_expires_ms', expires, 'lease_since_ms', now,
           'updated_ms', now)
drop_message(f.id)
local on_host = ''
if req.host ~= '' then
  redis.call('HSET', KEYS[1], 'host', req.host)
  on_host = ' on ' .. req.host
end
redis.call('HINCRBY', KEYS[1], 'attempts.' .. req.phase, 1)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[3], expires, f.id)
record(req.worker, 'claim', req.phase, req.phase, 'token ' .. token .. on_host, now)
keep_listing()
return {token, expires, redis.call('HGETALL', KEYS[1])}
"""
)

# RENEW a live lease, optionally saving progress (e.g. a sent message's id). A lease that
# has expired can't be renewed: a supervisor may be taking the phase over.
# KEYS[1] sector hash, KEYS[2] lease index, KEYS[3] listing; ARGV[1] token, ARGV[2] lease
# length (ms), ARGV[3] fields to set, a JSON object ("" deletes)
# Returns the new expiry (ms), or {0, reason}.
RENEW = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'status', 'lease_token', 'lease_expires_ms')
if f[2] ~= 'running' or f[3] ~= ARGV[1] then return {0, 'not the lease holder'} end
local now = now_ms()
if tonumber(f[4]) <= now then return {0, 'lease expired'} end
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_expires_ms', expires)
set_fields(KEYS[1], cjson.decode(ARGV[3]))
redis.call('ZADD', KEYS[2], expires, f[1])
keep_listing()
return expires
"""
)

# FINISH a leased phase (complete, retry, fail, hand back), fenced by the lease's token.
# KEYS[1..6] the common layout, KEYS[7..] indexes
# ARGV[1] {token, phase, sources, target, status, terminal, index, actor, event, detail,
# fields, delay_ms, record}
# Returns {1, "", record} or {0, reason, state}.
FINISH = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local f = read(KEYS[1])
if not f then return {0, 'no such sector', ''} end
if f.status ~= 'running' or f.token ~= req.token or f.state ~= req.phase then
  return {0, 'stale token', f.state}
end
return transition(req, f, now_ms())
"""
)

# TAKE_OVER a phase whose lease expired (its worker died or hung), fenced by the expired
# lease's token: refused when the worker renewed meanwhile or someone took over first.
# KEYS and ARGV[1] as FINISH. Returns {1, "", record} or {0, reason, state}.
TAKE_OVER = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local f = read(KEYS[1])
if not f then return {0, 'no such sector', ''} end
local now = now_ms()
if f.status ~= 'running' or f.token ~= req.token or f.expires > now then
  return {0, 'stale token', f.state}
end
return transition(req, f, now)
"""
)

# MOVE a sector for an operator or the supervisor, from one of the declared source states;
# with a version, only if the sector is still as the caller read it (required for a move to
# the state it is in).
# KEYS[1..6] the common layout, KEYS[7..] indexes
# ARGV[1] {sources, target, status, terminal, index, actor, event, detail, fields, version?,
# delay_ms, record}
# Returns {1, "", record} or {0, reason, state}.
MOVE = (
    _HELPERS
    + """
local req = cjson.decode(ARGV[1])
local f = read(KEYS[1])
if not f then return {0, 'no such sector', ''} end
if req.version and f.version ~= tostring(req.version) then
  return {0, 'changed meanwhile', f.state}
end
return transition(req, f, now_ms())
"""
)

# SENT: the sender handed message ARGV[1] to the broker; it is recorded in the history
# either way, and, while it is still the sector's message, moves from the outbox to the
# unclaimed messages. (A fast worker may have claimed it already.)
# KEYS[1..6] the common layout, KEYS[7] listing; ARGV[1] message id, ARGV[2] phase,
# ARGV[3] detail
# Returns 1, or 0 when the id is no longer the sector's message.
SENT = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'msg_id', 'msg_at_ms', 'msg_sent_ms')
local now = now_ms()
record('sender', 'dispatch', ARGV[2], ARGV[2], ARGV[1] .. ' ' .. ARGV[3], now)
if f[2] ~= ARGV[1] then return 0 end
if not f[4] then
  redis.call('HSET', KEYS[1], 'msg_sent_ms', now)
  redis.call('ZREM', KEYS[5], f[1])
  redis.call('ZADD', KEYS[6], f[3], f[1])
  keep_listing()
end
return 1
"""
)

# HELD: a worker process took message ARGV[1] to hold until its countdown ends; ARGV[2]
# names that process (its host and phase), so a holder that dies is noticed.
# KEYS[1] sector hash, KEYS[2] listing. Returns 1, or 0 when the id is no longer the
# sector's message.
HELD = (
    _LISTING
    + """
if redis.call('HGET', KEYS[1], 'msg_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'msg_holder', ARGV[2])
keep_listing()
return 1
"""
)

# REISSUE the message of a queued phase, replacing message ARGV[1] (a message the broker
# lost, or one that arrived before its phase could run): the old id is dead from now on.
# KEYS[1..6] the common layout, KEYS[7] listing; ARGV[1] the message id replaced, ARGV[2]
# delay (ms), ARGV[3] why. Returns the record, or {} when the id is no longer the sector's message.
REISSUE = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'msg_id', 'state', 'status')
if f[2] ~= ARGV[1] or f[4] ~= 'queued' then return {} end
local now = now_ms()
issue_message(f[1], now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'updated_ms', now)
record('sender', 'reissue', f[3], f[3], ARGV[1] .. ': ' .. ARGV[3], now)
keep_listing()
return redis.call('HGETALL', KEYS[1])
"""
)

# PRIORITIZE a sector: a new priority, re-scored in its state index. A queued phase gets a
# new message, so it is sent again at its new place in the queue.
# KEYS[1..6] the common layout, KEYS[7] the sector's state index, KEYS[8] listing
# ARGV[1] priority, ARGV[2] actor, ARGV[3] detail
# Returns the record, or {} when the sector has that priority already (or is gone).
PRIORITIZE = (
    _HELPERS
    + """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'priority', 'created_ms', 'status')
if not f[1] or f[3] == ARGV[1] then return {} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'priority', ARGV[1], 'updated_ms', now)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[7], index_score(ARGV[1], f[4]), f[1])
if f[5] == 'queued' then issue_message(f[1], now) end
record(ARGV[2], 'priority', f[2], f[2], ARGV[1] .. ' ' .. ARGV[3], now)
keep_listing()
return redis.call('HGETALL', KEYS[1])
"""
)

# IN_BROKER: where the message ids ARGV[1..] are in the broker: waiting in a queue's lists
# (KEYS[2..]), or delivered to a worker and not yet acknowledged (kombu's unacked hash,
# KEYS[1]: a countdown held in a worker's timer, or a message whose worker died before
# running it). Read-only. Returns {ids queued, ids delivered}.
IN_BROKER = """
local wanted = {}
for _, id in ipairs(ARGV) do wanted[id] = true end
local function scan(payloads, found)
  for _, payload in ipairs(payloads) do
    for id in string.gmatch(payload, '"id": "([^"]+)"') do
      if wanted[id] then found[#found + 1] = id; wanted[id] = nil end
    end
  end
  return found
end
local queued = {}
for i = 2, #KEYS do scan(redis.call('LRANGE', KEYS[i], 0, -1), queued) end
return {queued, scan(redis.call('HVALS', KEYS[1]), {})}
"""
