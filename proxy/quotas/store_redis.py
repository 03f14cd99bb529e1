"""The quota store on Redis: shared by every replica, each change one Lua script (atomic).

Per counter two keys, both under a hash tag of the counter's tenant part (``t7`` of
``t7:*:budget_usd:m2026-11``) so one call's keys share a Redis Cluster slot:

- ``<prefix>{t7}:<counter>:c``, a hash: ``used``, ``reserved`` and ``r:<rid>`` = each hold;
- ``<prefix>{t7}:<counter>:z``, a sorted set of rids scored by the hold's expiry (ms).

Amounts are integers (1e-10 USD, tokens, requests) added with HINCRBY, never floats. Lua
compares them as doubles, exact below 2^53 units (about $900,000 in one counter). Times come from
the service's clock as ARGV, never from Redis, so replicas agree (keep their clocks in NTP sync).
A counter stores its expiry (``exp``) and is treated as gone past it by that clock; Redis's own
TTL (the same instant, relative to the service's clock) frees the memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .store import Charge, CounterState, ReserveResult, Settlement, StoreUnavailable

__all__ = ["RedisStore"]

# Helpers shared by the scripts: release expired holds, forget expired counters, set expiry.
_SWEEP = """
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
local function keep(c, z, exp, now)
  redis.call('HSET', c, 'exp', exp)
  local ttl = math.max(1000, tonumber(exp) - now)
  redis.call('PEXPIRE', c, ttl)
  redis.call('PEXPIRE', z, ttl)
end
"""

# KEYS: c1, z1, c2, z2 ... ARGV: now_ms, rid, hold_until_ms, then per charge kind, limit, amount,
# expires_ms. Returns {refused index (0 = none), used1, reserved1, used2, ...} as strings.
_RESERVE = (
    _SWEEP
    + """
local now, rid, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 2
local used, reserved = {}, {}
for i = 1, n do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  fresh(c, z, now)
  sweep(c, z, now)
  local v = redis.call('HMGET', c, 'used', 'reserved')
  used[i], reserved[i] = num(v[1]), num(v[2])
end
local refused = 0
for i = 1, n do
  local kind, limit, amount = ARGV[4 * i], tonumber(ARGV[4 * i + 1]), tonumber(ARGV[4 * i + 2])
  local ok
  if kind == 'hold' then ok = used[i] + reserved[i] + amount <= limit
  elseif kind == 'soft' then ok = used[i] < limit
  else ok = used[i] + amount <= limit end
  if not ok then refused = i break end
end
if refused == 0 then
  for i = 1, n do
    local c, z = KEYS[2 * i - 1], KEYS[2 * i]
    local kind, amount = ARGV[4 * i], ARGV[4 * i + 2]
    if kind == 'hold' then
      redis.call('HINCRBY', c, 'reserved', amount)
      redis.call('HSET', c, 'r:' .. rid, amount)
      redis.call('ZADD', z, hold, rid)
    elseif kind == 'count' then
      redis.call('HINCRBY', c, 'used', amount)
    end
    keep(c, z, ARGV[4 * i + 3], now)
  end
end
local out = {refused}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[2 * i - 1], 'used', 'reserved')
  table.insert(out, v[1] or '0')
  table.insert(out, v[2] or '0')
end
return out
"""
)

# KEYS: c1, z1, ... ARGV: now_ms, rid, then per settlement add, release (0/1), expires_ms.
_SETTLE = (
    _SWEEP
    + """
local now, rid = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local c, z = KEYS[2 * i - 1], KEYS[2 * i]
  local add, release = ARGV[3 * i], ARGV[3 * i + 1]
  fresh(c, z, now)
  sweep(c, z, now)
  if release == '1' then
    local a = redis.call('HGET', c, 'r:' .. rid)
    if a then
      redis.call('HDEL', c, 'r:' .. rid)
      redis.call('ZREM', z, rid)
      redis.call('HINCRBY', c, 'reserved', -tonumber(a))
    end
  end
  if redis.call('HINCRBY', c, 'used', add) < 0 then redis.call('HSET', c, 'used', 0) end
  if redis.call('HEXISTS', c, 'reserved') == 0 then redis.call('HSET', c, 'reserved', 0) end
  keep(c, z, ARGV[3 * i + 2], now)
  local v = redis.call('HMGET', c, 'used', 'reserved')
  table.insert(out, v[1])
  table.insert(out, v[2])
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

# KEYS: c, z ... ARGV: until_ms, rid. Only holds still present are pushed back (XX).
_EXTEND = """
for i = 1, #KEYS / 2 do
  redis.call('ZADD', KEYS[2 * i], 'XX', ARGV[1], ARGV[2])
end
return 0
"""

# KEYS: c, z. ARGV: now_ms, used, expires_ms.
_SEED = (
    _SWEEP
    + """
local now = tonumber(ARGV[1])
fresh(KEYS[1], KEYS[2], now)
if redis.call('HSETNX', KEYS[1], 'used', ARGV[2]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', 0)
  keep(KEYS[1], KEYS[2], ARGV[3], now)
end
return 0
"""
)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _pairs(values: Sequence[Any]) -> tuple[CounterState, ...]:
    ints = [int(v) for v in values]
    return tuple(CounterState(ints[i], ints[i + 1]) for i in range(0, len(ints), 2))


class RedisStore:
    """Owns its client: :meth:`aclose` closes it."""

    def __init__(self, client: Redis, *, prefix: str = "gemini-meter:quota:") -> None:
        self._redis = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._usage = client.register_script(_USAGE)
        self._extend = client.register_script(_EXTEND)
        self._seed = client.register_script(_SEED)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "gemini-meter:quota:") -> RedisStore:
        # Bounded waits: a hung Redis must fail a call's admission quickly, not hold it.
        client = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        return cls(client, prefix=prefix)

    def _keys(self, counter: str) -> list[str]:
        tag = counter.split(":", 1)[0]
        base = f"{self._prefix}{{{tag}}}:{counter}"
        return [f"{base}:c", f"{base}:z"]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"quota store (Redis): {exc}") from exc

    async def reserve(
        self, rid: str, charges: Sequence[Charge], *, now: datetime, hold_until: datetime
    ) -> ReserveResult:
        keys = [k for c in charges for k in self._keys(c.counter)]
        args: list[Any] = [_ms(now), rid, _ms(hold_until)]
        for c in charges:
            args += [c.kind, c.limit, c.amount, _ms(c.expires_at)]
        out = await self._run(self._reserve, keys, args)
        refused = int(out[0])
        return ReserveResult(refused - 1 if refused else None, _pairs(out[1:]))

    async def settle(
        self, rid: str, settlements: Sequence[Settlement], *, now: datetime
    ) -> tuple[CounterState, ...]:
        keys = [k for s in settlements for k in self._keys(s.counter)]
        args: list[Any] = [_ms(now), rid]
        for s in settlements:
            args += [s.add, int(s.release), _ms(s.expires_at)]
        return _pairs(await self._run(self._settle, keys, args))

    async def extend(
        self, holds: Sequence[tuple[str, Sequence[str]]], *, now: datetime, until: datetime
    ) -> None:
        for rid, counters in holds:
            keys = [k for c in counters for k in self._keys(c)]
            await self._run(self._extend, keys, [_ms(until), rid])

    async def usage(self, counters: Sequence[str], *, now: datetime) -> tuple[CounterState, ...]:
        if not counters:
            return ()
        keys = [k for c in counters for k in self._keys(c)]
        return _pairs(await self._run(self._usage, keys, [_ms(now)]))

    async def seed(self, counter: str, used: int, *, now: datetime, expires_at: datetime) -> None:
        await self._run(self._seed, self._keys(counter), [_ms(now), used, _ms(expires_at)])

    async def collect(self, *, now: datetime) -> None:
        return None  # every key carries a TTL

    async def aclose(self) -> None:
        await self._redis.aclose()
