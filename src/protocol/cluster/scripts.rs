//! The Lua scripts that make each cluster step one atomic Redis command.
//!
//! Keys of a room `R` under the prefix `P` (`--redis-prefix`, default `wshub`):
//! `P:m:R` (hash: `e` epoch, `s` last seq), `P:h:R` (the history stream, entry
//! ids `<seq>-0`, fields `t` (ms timestamp) and `b` (the message body)),
//! `P:k:R` / `P:kz:R` (idempotency keys: key → seq, and by the time they were
//! stored), `P:p:R`
//! (presence: clientId → user), and the channel `P:c:R`. A node `N` has
//! `P:node:N` (its heartbeat, with a TTL) and `P:nm:N` (its members:
//! `room\nclientId` → user); `P:nodes` lists the nodes.
//!
//! Scripts build a few keys from the prefix (the reaper's), so this is for a
//! single Redis (or one primary), not Redis Cluster.

use redis::Script;

/// Publish: new epoch when the room's meta is gone or behind what the calling
/// node saw (see [`READ`]), idempotency check, next seq, XADD bounded by
/// MAXLEN, PUBLISH. An idempotency key is remembered for its own window
/// (`--idempotency-ttl-ms`), apart from history: the keys hash maps key →
/// seq, the keys-by-time sorted set holds each key scored by when it was
/// stored, and every publish forgets up to 100 keys older than the window.
/// KEYS: meta, stream, keys, keys-by-time. ARGV: body, history count, ttl
/// ms, channel, a fresh epoch, key (or ''), "node except", ts ms, the epoch
/// and seq the node saw last ('' and 0 for none), the keys' window in ms.
/// Returns {seq, epoch, duplicate (0/1)}.
pub(super) const PUBLISH: &str = r"
local epoch = redis.call('hget', KEYS[1], 'e')
if epoch and epoch == ARGV[9] and tonumber(redis.call('hget', KEYS[1], 's') or '0') < tonumber(ARGV[10]) then
  epoch = nil
end
if not epoch then
  epoch = ARGV[5]
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
  redis.call('del', KEYS[2], KEYS[3], KEYS[4])
end
local now = redis.call('time')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local window = tonumber(ARGV[11])
local gone = redis.call('zrangebyscore', KEYS[4], '-inf', now - window, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('hdel', KEYS[3], unpack(gone))
  redis.call('zrem', KEYS[4], unpack(gone))
end
local key = ARGV[6]
if key ~= '' then
  local s = redis.call('hget', KEYS[3], key)
  local at = redis.call('zscore', KEYS[4], key)
  if s and at and tonumber(at) > now - window then
    return {tonumber(s), epoch, 1}
  end
end
local seq = redis.call('hincrby', KEYS[1], 's', 1)
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', count, seq .. '-0', 't', ARGV[8], 'b', ARGV[1])
  redis.call('pexpire', KEYS[2], ARGV[3])
end
if key ~= '' then
  redis.call('hset', KEYS[3], key, seq)
  redis.call('zadd', KEYS[4], now, key)
  redis.call('pexpire', KEYS[3], window)
  redis.call('pexpire', KEYS[4], window)
end
redis.call('publish', ARGV[4], 'm ' .. seq .. ' ' .. epoch .. ' ' .. ARGV[7] .. '\n' .. ARGV[1])
return {seq, epoch, 0}
";

/// Join / catch up: the room's epoch (a new one when its meta is gone) and
/// seq, the newest history entries with ids from..to (at most `limit`, newest
/// first), and for a new member its presence entry and `presence:join` event.
/// A room whose seq is behind the one the calling node saw under the same
/// epoch lost writes (Redis restarted from an older snapshot, or a replica
/// that had not caught up was promoted): it gets a new epoch too, so no seq
/// is handed out twice under one epoch.
/// KEYS: meta, stream, presence, node members, keys, keys-by-seq (a new epoch
/// drops the old one's idempotency keys). ARGV: a fresh epoch, from (''
/// for no history), to ('' for the room's seq), limit, clientId, user,
/// node-members field, channel, event ('' for none), the epoch and seq the
/// node saw last ('' and 0 for none), the member's presence payload (JSON,
/// kept in the node's members for the reaper's `presence:leave`).
/// Returns {epoch, seq, entries, members in presence}.
pub(super) const READ: &str = r"
local epoch = redis.call('hget', KEYS[1], 'e')
local seq = 0
if epoch and epoch == ARGV[10] and tonumber(redis.call('hget', KEYS[1], 's') or '0') < tonumber(ARGV[11]) then
  epoch = nil
end
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
  redis.call('del', KEYS[2], KEYS[5], KEYS[6])
else
  seq = tonumber(redis.call('hget', KEYS[1], 's') or '0')
end
local entries = {}
if ARGV[2] ~= '' then
  local to = ARGV[3]
  if to == '' then to = tostring(seq) end
  if tonumber(ARGV[2]) <= tonumber(to) then
    entries = redis.call('xrevrange', KEYS[2], to .. '-0', ARGV[2] .. '-0', 'COUNT', ARGV[4])
  end
end
if ARGV[9] ~= '' then
  redis.call('hset', KEYS[3], ARGV[5], ARGV[6])
  redis.call('hset', KEYS[4], ARGV[7], ARGV[12])
  redis.call('publish', ARGV[8], ARGV[9])
end
return {epoch, seq, entries, redis.call('hlen', KEYS[3])}
";

/// Leave: drops the presence entry and publishes `presence:leave`.
/// KEYS: presence, node members. ARGV: clientId, node-members field, channel, event.
pub(super) const LEAVE: &str = r"
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[2])
redis.call('publish', ARGV[3], ARGV[4])
return 1
";

/// The nodes in the nodes set whose heartbeat key is gone (dead, paused, or
/// not yet back after a Redis outage: the caller decides).
/// KEYS: the nodes set. ARGV: the prefix with its `:`.
pub(super) const SILENT: &str = r"
local silent = {}
for _, id in ipairs(redis.call('smembers', KEYS[1])) do
  if redis.call('exists', ARGV[1] .. 'node:' .. id) == 0 then
    table.insert(silent, id)
  end
end
return silent
";

/// Reaps about ARGV[3] members of node ARGV[2] if its heartbeat key is still
/// gone: drops their presence entries and publishes each one's
/// `presence:leave` in the same step (so no leave is lost between the two);
/// the node leaves the nodes set with its last member. The page is the
/// members hash's `HSCAN` from cursor ARGV[4], the one the previous page
/// returned (restarting from 0 each page would find nothing once the buckets
/// it visits first are empty). Returns {-1, 0} when the node beats again,
/// else {how many members are left to reap, the cursor for the next page}.
/// KEYS: the nodes set. ARGV: the prefix with its `:`, the node id, the page
/// size, the cursor.
pub(super) const REAP: &str = r#"
local id = ARGV[2]
if redis.call('exists', ARGV[1] .. 'node:' .. id) == 1 then
  return {-1, 0}
end
local nm = ARGV[1] .. 'nm:' .. id
local scan = redis.call('hscan', nm, ARGV[4], 'COUNT', ARGV[3])
local page = scan[2]
local now = redis.call('time')
local ts = string.format('%.0f', now[1] * 1000 + math.floor(now[2] / 1000))
for i = 1, #page, 2 do
  local nl = string.find(page[i], '\n', 1, true)
  if nl then
    local room = string.sub(page[i], 1, nl - 1)
    redis.call('hdel', ARGV[1] .. 'p:' .. room, string.sub(page[i], nl + 1))
    redis.call('publish', ARGV[1] .. 'c:' .. room,
      'e - -\n{"type":"presence:leave","ts":' .. ts .. ',"payload":' .. page[i + 1] .. '}')
  end
  redis.call('hdel', nm, page[i])
end
local left = redis.call('hlen', nm)
if left == 0 then
  redis.call('srem', KEYS[1], id)
end
return {left, scan[1]}
"#;

/// The scripts, hashed once (EVALSHA, falling back to EVAL after a Redis restart).
pub(super) struct Scripts {
    pub publish: Script,
    pub read: Script,
    pub leave: Script,
    pub silent: Script,
    pub reap: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            leave: Script::new(LEAVE),
            silent: Script::new(SILENT),
            reap: Script::new(REAP),
        }
    }
}
