//! The Lua scripts that make each state change of a turn atomic in Redis.
//!
//! A turn's results are a list (`<prefix>:items:<id>`, one JSON [`ResultEntry`] per element,
//! appended with `RPUSH`, read by index with `LRANGE`): a list of a few items takes about
//! 0.5 KB, where a stream preallocates a 4 KB node (Redis 7, `stream-node-max-bytes`).
//!
//! [`ResultEntry`]: crate::wire::ResultEntry
//!
//! A turn's status hash (`<prefix>:status:<id>`) holds `status` (queued, running, complete,
//! error, cancelled), `runtime`, `attempts`, `worker`, `published` (items published by the
//! current attempt), `cancel` (1 once asked), `error`, `submitted_ms`, `updated_ms`, `entry`
//! (the job's stream entry). The pair (`worker`, `attempts`) fences a worker: only the
//! current attempt may publish, so a worker that lost its job (reclaimed after the visibility
//! timeout) cannot add to the result.

use std::sync::LazyLock;

use redis::Script;

/// Enqueues a job unless its execution id is known.
/// KEYS: status, jobs. ARGV: job JSON, runtime, ttl, now.
/// Returns {1, entry id} when enqueued, {0, status} when the id was already submitted.
pub(crate) static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGET', KEYS[1], 'status') or 'unknown'}
end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'runtime', ARGV[2], 'attempts', 0,
  'submitted_ms', ARGV[4], 'updated_ms', ARGV[4], 'entry', entry)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, entry}
",
    )
});

/// A worker takes a job. KEYS: status, items. ARGV: worker, max attempts, ttl, now, runtime,
/// entry. Returns {decision, attempt, previous worker}: `skip` (already finished: its
/// status as third element), `run`, `cancelled` (asked before it started), `lost` (an
/// earlier attempt published part of the result), `dead` (too many attempts).
pub(crate) static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'complete' or status == 'error' or status == 'cancelled' then
  return {'skip', 0, status}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local previous = redis.call('HGET', KEYS[1], 'worker') or ''
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'updated_ms', ARGV[4],
  'published', 0, 'runtime', ARGV[5], 'entry', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  return {'cancelled', attempt, previous}
end
if attempt > tonumber(ARGV[2]) then
  return {'dead', attempt, previous}
end
if attempt > 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  return {'lost', attempt, previous}
end
return {'run', attempt, previous}
",
    )
});

/// Publishes result items of the current attempt, and with the final one records the status,
/// acknowledges and deletes the job, and (for a poison job) adds the dead letter.
/// KEYS: status, items, jobs, inbox (or an unused name), dead.
/// ARGV: worker, attempt, ttl, now, group, entry, first seq, final status ('' if not final),
/// error text, has inbox (0/1), execution id, dead letter JSON ('' if none), items...
/// Returns 1 when published (or already published by an earlier try of the same call), 0 when
/// the worker no longer owns the turn.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1]
  or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2]
  or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], 'worker') == ARGV[1]
    and redis.call('HGET', KEYS[1], 'attempts') == ARGV[2]
    and redis.call('HGET', KEYS[1], 'status') == ARGV[8] then
    return 1
  end
  return 0
end
local published = tonumber(redis.call('HGET', KEYS[1], 'published') or '0')
local first = tonumber(ARGV[7])
local count = #ARGV - 12
if published == first + count then
  return 1
end
if published ~= first then
  return 0
end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 13))
redis.call('HSET', KEYS[1], 'published', first + count, 'updated_ms', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[10] == '1' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'id', ARGV[11])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[8])
  if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[1], 'error', ARGV[9])
  end
  redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
  redis.call('XDEL', KEYS[3], ARGV[6])
  if ARGV[12] ~= '' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'id', ARGV[11], 'letter', ARGV[12])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Renews a running job so it is not reclaimed. KEYS: status, jobs. ARGV: worker, attempt,
/// group, entry. Returns 0 when the worker no longer owns it, 1 when renewed, 2 when renewed
/// and a cancel was asked.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1]
  or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2]
  or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[1], 0, ARGV[4], 'JUSTID')
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  return 2
end
return 1
",
    )
});

/// Cancels a turn. KEYS: status, items, cancels. ARGV: cancelled item JSON, ttl, now,
/// execution id. Returns `unknown`, `cancelled` (it was queued: ended now), `signalled` (it
/// runs: its worker is told), or the status of a turn that had already finished.
pub(crate) static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return 'unknown'
end
if status == 'queued' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', 1, 'updated_ms', ARGV[3],
    'error', 'cancelled before a worker took it')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'id', ARGV[4])
  return 'signalled'
end
return status
",
    )
});

/// A worker advertises itself and removes the adverts of workers that stopped renewing
/// theirs. KEYS: workers hash. ARGV: consumer, advert JSON, now (ms), ttl (ms).
pub(crate) static ADVERTISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[3])
for i = 1, #all, 2 do
  local ok, advert = pcall(cjson.decode, all[i + 1])
  if (not ok) or type(advert) ~= 'table' or (tonumber(advert['expires_ms']) or 0) < now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
",
    )
});
