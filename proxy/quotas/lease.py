"""Lease arithmetic: how much of a counter's room a replica keeps for itself. Pure functions.

A replica admits calls against its *lease* — a hold on the shared counter under the replica's
id — with no I/O, and tops it up or shrinks it in its periodic sync. No replica can spend more
than it holds, so a hard limit holds across replicas whatever the lease sizes; the sizes only
decide how often the store is asked. Near the end of a limit leases stop: every call then asks
the store for exactly its own worst case (docs/quotas.md, "Leases").
"""

from __future__ import annotations

__all__ = [
    "EXACT_CALLS",
    "HORIZON_SECONDS",
    "IDLE_SECONDS",
    "MIN_CALLS",
    "SHARE",
    "free_room",
    "is_exact",
    "lease_change",
    "rate_update",
    "target_free",
]

# Leases only while the room left is worth this many of the counter's largest recent calls:
# below it, calls are admitted one by one in the store (exact to the last call).
EXACT_CALLS = 32
# A lease's spare room aims to cover this long at the recent rate of use...
HORIZON_SECONDS = 1.0
# ... and at least this many of the largest recent calls (a first burst needs no round trip)...
MIN_CALLS = 4
# ... and never more than this fraction of the room left, so others always find room too.
SHARE = 4
# Spare room not touched for this long goes back to the store (an idle replica strands none).
IDLE_SECONDS = 2.0


def free_room(limit: int, used: int, reserved: int, own_spare: int) -> int:
    """Room left on the counter for anyone, counting this replica's spare as free."""
    return max(0, limit - used - reserved + own_spare)


def is_exact(free: int, typical: int) -> bool:
    """Whether the counter is near its end: no leases, one store round trip per call."""
    return free < EXACT_CALLS * max(1, typical)


def target_free(free: int, typical: int, rate: float) -> int:
    """The spare room a lease should keep: the recent rate over the horizon, at least a few
    of the largest calls, at most a share of the room left; zero near the end."""
    if is_exact(free, typical):
        return 0
    want = max(int(rate * HORIZON_SECONDS), MIN_CALLS * max(1, typical))
    return min(want, free // SHARE)


def lease_change(spare: int, target: int, *, idle: bool, exact: bool) -> tuple[int, int]:
    """(give back, ask for): what one sync does to a lease whose spare room is ``spare``.

    Near the end or when idle every spare unit goes back. Otherwise the lease is topped up
    when its spare falls below half the target, and shrunk when it holds over twice the
    target (the room left fell, so the target did) — the hysteresis keeps syncs small."""
    if exact or idle:
        return spare, 0
    if spare < target // 2 or spare == 0 < target:
        return 0, target - spare
    if spare > 2 * target:
        return spare - target, 0
    return 0, 0


def rate_update(rate: float, taken: int, seconds: float, *, half_life: float = 2.0) -> float:
    """The rate of use (units a second) as an exponentially weighted mean over syncs."""
    if seconds <= 0:
        return rate
    weight: float = 0.5 ** (seconds / half_life)
    return rate * weight + (taken / seconds) * (1 - weight)
