"""The quota store on Redis: shared by every replica, each change one Lua script (atomic).

Per counter two keys, both under a hash tag of the counter's tenant part (``t7`` of
``t7:*:budget_usd:m2026-11``) so one tenant's keys share a Redis Cluster slot:

- ``<prefix>{t7}:<counter>:c``, a hash: ``used``, ``reserved``, ``exp``, ``r:<holder>`` = each
  hold, ``b:<holder>`` = the last batch of that holder applied (what makes a retry harmless);
- ``<prefix>{t7}:<counter>:z``, a sorted set of holders scored by the hold's expiry (ms).

Amounts are integers (1e-10 USD, tokens, requests), never floats on the wire. Lua compares them
as doubles, exact below 2^53 units (about $900,000 in one counter). Times come from the
service's clock as ARGV, never from Redis, so replicas agree (keep their clocks in NTP sync).
A counter stores its expiry (``exp``) and is treated as gone past it by that clock; Redis's own
TTL (the same instant, relative to the service's clock) frees the memory.

The client (:meth:`RedisStore.from_url`) waits for a pooled connection rather than failing
when all are busy, retries a command once on a fresh connection when the one it took turns out
dead, and every failure — whatever the client raises — becomes :class:`StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .store import CounterState, EntryState, HoldOps, StoreUnavailable, Sync, SyncResult

__all__ = ["RedisStore"]

log = logging.getLogger("gemini_meter.quotas")

# Helpers shared by the scripts: release expired holds, forget expired counters, set expiry.
_HELPERS = """
local function sweep(c, z, now)
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #ids == 0 then return end
  local freed = 0
  for _, id in ipairs(ids) do
    local a = redis.call('HGET', c, 'r:' .. id)
    if a then
      freed = freed + tonumber(a)
      redis.call('HDEL', c, 'r:' .. id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  if freed > 0 then redis.call('HINCRBY', c, 'reserved', -freed) end
end
local function num(v) return tonumber(v or '0') or 0 end
-- A counter past its expiry (by the service's clock) starts afresh, as if Redis had dropped it.
local function fresh(c, z, now)
  local e = redis.call('HGET', c, 'exp')
  if e and tonumber(e) <= now then redis.call('DEL', c, z) end
end
-- The counter lives until the latest expiry any caller gave it.
local function keep(c, z, exp, now)
  local e = math.max(tonumber(exp), num(redis.call('HGET', c, 'exp')))
  redis.call('HSET', c, 'exp', string.format('%.0f', e))
  local ttl = math.max(1000, e - now)
  redis.call('PEXPIRE', c, ttl)
  redis.call('PEXPIRE', z, ttl)
end
local function int(v) return string.format('%.0f', v) end
"""

# KEYS: c1, z1, c2, z2 ... ARGV: now, holder, hold_until, batch ('' = none), n, then per entry
# kind, limit, exp, create, spend, release, drop, force, want; then the number of calls and per
# call its length and (entry, amount) pairs. Rules: proxy.quotas.store.apply_sync.
# Returns {1, missing entries...} or {0, ncalls, refused per call (0 = admitted, else position),
# then per entry used, reserved, hold, granted}.
_SYNC = (
    _HELPERS
    + """
local now, holder, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local batch = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local function arg(i, f) return ARGV[5 + (i - 1) * 9 + f] end
local missing = {}
for i = 1, n do
  fresh(KEYS[2 * i - 1], KEYS[2 * i], now)
  if arg(i, 4) == '0' and redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then
    table.insert(missing, i - 1)
  end
end
if #missing > 0 then
  table.insert(missing, 1, 1)
  return missing
end
local used, reserved, own = {}, {}, {}
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  sweep(c, z, now)
  local v = redis.call('HMGET', c, 'used', 'reserved', 'r:' .. holder, 'b:' .. holder)
  used[i], reserved[i], own[i] = num(v[1]), num(v[2]), num(v[3])
  if not (batch and v[4] and tonumber(v[4]) >= batch) then
    used[i] = math.max(0, used[i] + tonumber(arg(i, 5)))
    local cut = math.min(tonumber(arg(i, 6)), own[i])
    if arg(i, 7) == '1' then cut = own[i] end
    local force = tonumber(arg(i, 8))
    own[i] = own[i] + force - cut
    reserved[i] = reserved[i] + force - cut
    if batch then redis.call('HSET', c, 'b:' .. holder, ARGV[4]) end
  end
end
local out = {0}
local pos = 5 + n * 9 + 1
local ncalls = tonumber(ARGV[pos])
table.insert(out, ncalls)
pos = pos + 1
for _ = 1, ncalls do
  local len = tonumber(ARGV[pos])
  local bad = 0
  for j = 0, len - 1 do
    local i, a = tonumber(ARGV[pos + 1 + 2 * j]) + 1, tonumber(ARGV[pos + 2 + 2 * j])
    local kind, limit = arg(i, 1), tonumber(arg(i, 2))
    local ok
    if kind == 'soft' then ok = used[i] < limit else ok = used[i] + reserved[i] + a <= limit end
    if not ok then bad = j + 1 break end
  end
  if bad == 0 then
    for j = 0, len - 1 do
      local i, a = tonumber(ARGV[pos + 1 + 2 * j]) + 1, tonumber(ARGV[pos + 2 + 2 * j])
      local kind = arg(i, 1)
      if kind == 'hold' then
        own[i] = own[i] + a
        reserved[i] = reserved[i] + a
      elseif kind == 'count' then
        used[i] = used[i] + a
      end
    end
  end
  table.insert(out, bad)
  pos = pos + 1 + 2 * len
end
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  local kind, limit, want = arg(i, 1), tonumber(arg(i, 2)), tonumber(arg(i, 9))
  local granted = 0
  if want > 0 and kind ~= 'soft' then
    granted = math.max(0, math.min(want, limit - used[i] - reserved[i]))
    own[i] = own[i] + granted
    reserved[i] = reserved[i] + granted
  end
  redis.call('HSET', c, 'used', int(used[i]), 'reserved', int(reserved[i]))
  if own[i] > 0 then
    redis.call('HSET', c, 'r:' .. holder, int(own[i]))
    local until_ = math.max(hold, tonumber(redis.call('ZSCORE', z, holder) or '0'))
    redis.call('ZADD', z, until_, holder)
  else
    redis.call('HDEL', c, 'r:' .. holder)
    redis.call('ZREM', z, holder)
  end
  keep(c, z, arg(i, 3), now)
  table.insert(out, int(used[i]))
  table.insert(out, int(reserved[i]))
  table.insert(out, int(own[i]))
  table.insert(out, int(granted))
end
return out
"""
)

# KEYS: c1, z1, ... ARGV: now_ms. Read-only: used and the reserved amount not yet expired.
_USAGE = """
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  local v = redis.call('HMGET', c, 'used', 'reserved', 'exp')
  if v[3] and tonumber(v[3]) <= now then v = {'0', '0'} end
  local stale = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    stale = stale + tonumber(redis.call('HGET', c, 'r:' .. id) or '0')
  end
  table.insert(out, v[1] or '0')
  table.insert(out, string.format('%.0f', (tonumber(v[2] or '0') or 0) - stale))
end
return out
"""

# KEYS: c, z. ARGV: now_ms, used, expires_ms, overwrite (0: only create; 1: set used, keep holds).
_SEED = (
    _HELPERS
    + """
local now = tonumber(ARGV[1])
fresh(KEYS[1], KEYS[2], now)
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'used', ARGV[2])
elseif redis.call('HSETNX', KEYS[1], 'used', ARGV[2]) == 0 then
  return 0
end
redis.call('HSETNX', KEYS[1], 'reserved', 0)
keep(KEYS[1], KEYS[2], ARGV[3], now)
return 0
"""
)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class RedisStore(HoldOps):
    """Owns its client: :meth:`aclose` closes it."""

    def __init__(self, client: Redis, *, prefix: str = "gemini-meter:quota:") -> None:
        self._redis = client
        self._prefix = prefix
        self._sync = client.register_script(_SYNC)
        self._usage = client.register_script(_USAGE)
        self._seed = client.register_script(_SEED)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "gemini-meter:quota:",
        timeout: float = 2.0,
        max_connections: int = 64,
    ) -> RedisStore:
        """A client whose pool makes callers wait for a connection (back-pressure, never an
        error), bounds every wait by ``timeout``, and replaces a dead connection at once."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        )
        return cls(Redis.from_pool(pool), prefix=prefix)

    def _keys(self, counter: str) -> list[str]:
        tag = counter.split(":", 1)[0]
        base = f"{self._prefix}{{{tag}}}:{counter}"
        return [f"{base}:c", f"{base}:z"]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except Exception as exc:  # redis errors, OSError, a closed transport's RuntimeError...
            # Whatever went wrong, the pooled connections may be dead: start afresh.
            with contextlib.suppress(Exception):
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            raise StoreUnavailable(f"quota store (Redis): {type(exc).__name__}: {exc}") from exc

    async def sync(self, sync: Sync, *, now: datetime, hold_until: datetime) -> SyncResult:
        keys = [k for e in sync.entries for k in self._keys(e.counter)]
        batch = "" if sync.batch is None else sync.batch
        args: list[Any] = [_ms(now), sync.holder, _ms(hold_until), batch, len(sync.entries)]
        for e in sync.entries:
            args += [e.kind, e.limit, _ms(e.expires_at), int(e.create), e.spend, e.release,
                     int(e.drop), e.force, e.want]  # fmt: skip
        args.append(len(sync.calls))
        for call in sync.calls:
            args.append(len(call))
            for i, amount in call:
                args += [i, amount]
        out = [int(v) for v in await self._run(self._sync, keys, args)]
        if out[0] == 1:
            return SyncResult(missing=tuple(out[1:]))
        ncalls = out[1]
        refused = tuple(None if r == 0 else r - 1 for r in out[2 : 2 + ncalls])
        rest = out[2 + ncalls :]
        states = tuple(EntryState(*rest[i : i + 4]) for i in range(0, len(rest), 4))
        return SyncResult((), refused, states)

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        if not counters:
            return ()
        keys = [k for c in counters for k in self._keys(c)]
        ints = [int(v) for v in await self._run(self._usage, keys, [_ms(now)])]
        return tuple(CounterState(ints[i], ints[i + 1]) for i in range(0, len(ints), 2))

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        await self._run(self._seed, self._keys(counter), [_ms(now), used, _ms(expires_at), 0])

    async def rebuild(
        self, counter: str, used: int, *, now: datetime, expires_at: datetime
    ) -> None:
        await self._run(self._seed, self._keys(counter), [_ms(now), used, _ms(expires_at), 1])

    async def collect(self, *, now: datetime) -> None:
        return None  # every key carries a TTL

    async def aclose(self) -> None:
        await self._redis.aclose()
