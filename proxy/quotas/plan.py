"""From policies to store charges, and from counter states to headers, refusals and statuses.

Pure: no I/O, the time passed in. The service strings these together around the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..errors import QuotaExceeded
from .estimate import Estimate
from .policy import (
    WINDOW_SECONDS,
    LimitName,
    LimitStatus,
    Period,
    Policy,
    format_reset,
    period_end,
    period_label,
    period_start,
    retry_after,
    units_to_usd,
    usd_to_units,
    utc,
    window_end,
    window_index,
)
from .store import Charge, ChargeKind, CounterState

__all__ = [
    "ADJECTIVE",
    "CounterId",
    "Line",
    "amount",
    "counter_name",
    "parse_counter",
    "plan",
    "rate_headers",
    "refusal",
    "status_of",
]

# A period counter outlives its period by more than any hold can (the service caps a hold's
# life at 4 h), so a late settlement still finds it; a window counter by a minute.
PERIOD_GRACE = timedelta(days=1)
WINDOW_GRACE = timedelta(minutes=2)
# A budget refusal that only in-flight holds caused may fit again as soon as they settle.
IN_FLIGHT_RETRY = timedelta(seconds=1)
ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class Line:
    """One limit of one policy as it applies to one call."""

    policy: Policy
    limit: LimitName
    charge: Charge
    period: str  # day | week | month | minute
    period_start: datetime
    resets_at: datetime

    @property
    def strict(self) -> bool:
        """A hard budget or token quota: without its store a call is refused, not admitted."""
        return self.charge.kind == "hold" and self.limit in ("budget_usd", "tokens")


def counter_name(policy: Policy, limit: LimitName, label: str) -> str:
    """``t7:*:budget_usd:m2026-11`` (tenant-wide) or ``t7:k12:rpm:29411234`` (one key).

    Counters belong to the tenant or key, not to the policy row: replacing a policy keeps the
    period's spend. The tenant part leads, the Redis store's hash tag."""
    scope = "*" if policy.key_id is None else f"k{policy.key_id}"
    return f"t{policy.tenant_id}:{scope}:{limit}:{label}"


@dataclass(frozen=True, slots=True)
class CounterId:
    tenant_id: int
    key_id: int | None
    limit: str
    period: str  # day | week | month | minute
    start: datetime
    end: datetime


def parse_counter(name: str) -> CounterId | None:
    """What :func:`counter_name` wrote (None for anything else): the tenant, key and period of
    a counter — all a seed from the ledger needs, even for a batch replayed after a restart."""
    try:
        tenant, scope, limit, label = name.split(":")
        key_id = None if scope == "*" else int(scope.removeprefix("k"))
        if label.isdigit():
            start = datetime.fromtimestamp(int(label) * WINDOW_SECONDS, UTC)
            return CounterId(int(tenant[1:]), key_id, limit, "minute", start,
                             start + timedelta(seconds=WINDOW_SECONDS))  # fmt: skip
        period: Period = {"d": "day", "w": "week", "m": "month"}[label[0]]  # type: ignore[assignment]
        day = datetime.fromisoformat(label[1:] + ("-01" if period == "month" else ""))
        start = period_start(period, day.replace(tzinfo=UTC))
        return CounterId(int(tenant[1:]), key_id, limit, period, start, period_end(period, start))
    except (ValueError, KeyError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where one limit of one policy version counts in one period or minute window."""

    counter: str
    kind: ChargeKind
    limit: int
    expires_at: datetime
    period: str
    start: datetime
    end: datetime


_SLOTS: dict[tuple[int, datetime, str, object], _Slot] = {}


def _slot(policy: Policy, limit: LimitName, now: datetime) -> _Slot:
    """The slot of ``now`` (UTC), computed once per policy version, limit and period."""
    window = limit in ("rpm", "tpm")
    when: object = window_index(now) if window else now.date()
    key = (policy.id, policy.updated_at, limit, when)
    slot = _SLOTS.get(key)
    if slot is None:
        if len(_SLOTS) > 10_000:  # old periods and policy versions: start afresh
            _SLOTS.clear()
        slot = _SLOTS[key] = _window_slot(policy, limit, now) if window else _period_slot(
            policy, limit, now)  # fmt: skip
    return slot


def _period_slot(policy: Policy, limit: LimitName, now: datetime) -> _Slot:
    label, start, end = period_label(policy.period, now), *_bounds(policy.period, now)
    usd = policy.budget_usd
    value = policy.tokens if usd is None or limit != "budget_usd" else usd_to_units(usd)
    assert value is not None
    kind: ChargeKind = "hold" if policy.mode == "hard" else "soft"
    return _Slot(counter_name(policy, limit, label), kind, value, end + PERIOD_GRACE,
                 policy.period, start, end)  # fmt: skip


def _bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    return period_start(period, now), period_end(period, now)


def _window_slot(policy: Policy, limit: LimitName, now: datetime) -> _Slot:
    index = window_index(now)
    end = window_end(now)
    value = policy.rpm if limit == "rpm" else policy.tpm
    assert value is not None
    kind: ChargeKind = "count" if limit == "rpm" else "hold"
    return _Slot(counter_name(policy, limit, str(index)), kind, value, end + WINDOW_GRACE,
                 "minute", end - timedelta(minutes=1), end)  # fmt: skip


def _line(policy: Policy, limit: LimitName, now: datetime, amount: int) -> Line:
    s = _slot(policy, limit, now)
    charge = Charge(s.counter, s.kind, s.limit, amount if s.kind != "soft" else 0, s.expires_at)
    return Line(policy, limit, charge, s.period, s.start, s.end)


def plan(
    policies: Sequence[Policy],
    est: Estimate,
    worst_units: int | None,
    now: datetime,
    *,
    count_request: bool = True,
) -> list[Line]:
    """The charges a call makes: hard limits and TPM hold its worst case, RPM counts it.

    A call whose cost cannot be estimated (a model the catalog does not price) holds $0: it is
    still refused once the budget is spent, and the ledger records it as unpriced.
    ``count_request=False``: a charge inside something already counted as a request (a Live
    session's next turn) holds money and tokens but is not another request."""
    now = utc(now)
    lines = []
    for p in policies:
        if p.budget_usd is not None:
            lines.append(_line(p, "budget_usd", now, worst_units or 0))
        if p.tokens is not None:
            lines.append(_line(p, "tokens", now, est.total_tokens))
        if p.rpm is not None and count_request:
            lines.append(_line(p, "rpm", now, 1))
        if p.tpm is not None:
            # Like a hard budget: the prompt and the maximum output are held in the window the
            # call is admitted in, and replaced by its real tokens when it ends.
            lines.append(_line(p, "tpm", now, est.total_tokens))
    return lines


def _remaining(charge: Charge, state: CounterState) -> int:
    held = state.reserved if charge.kind != "soft" else 0
    return max(0, charge.limit - state.used - held)


def rate_headers(
    lines: Sequence[Line], states: Sequence[CounterState], now: datetime
) -> dict[str, str]:
    """OpenAI's x-ratelimit-* trios: requests from RPM; tokens from TPM, else the token quota.
    Where a tenant and a key policy both limit, the one with less left is reported."""
    best: dict[str, tuple[int, Line]] = {}  # limit name -> (remaining, line)
    for line, st in zip(lines, states, strict=True):
        if line.limit != "budget_usd":
            left = _remaining(line.charge, st)
            if line.limit not in best or left < best[line.limit][0]:
                best[line.limit] = (left, line)
    out: dict[str, str] = {}
    for suffix, names in (("requests", ("rpm",)), ("tokens", ("tpm", "tokens"))):
        name = next((n for n in names if n in best), None)
        if name is not None:
            left, line = best[name]
            out[f"x-ratelimit-limit-{suffix}"] = str(line.charge.limit)
            out[f"x-ratelimit-remaining-{suffix}"] = str(left)
            seconds = (line.resets_at - now).total_seconds()
            out[f"x-ratelimit-reset-{suffix}"] = format_reset(seconds)
    return out


def _value(line: Line, units: int) -> Decimal:
    return units_to_usd(units) if line.limit == "budget_usd" else Decimal(units)


def status_of(line: Line, state: CounterState) -> LimitStatus:
    return LimitStatus(
        tenant=line.policy.tenant,
        key_prefix=line.policy.key_prefix,
        limit=line.limit,
        mode=line.policy.mode,
        period=line.period,
        limit_value=_value(line, line.charge.limit),
        used=_value(line, state.used),
        reserved=_value(line, max(0, state.reserved)),
        resets_at=line.resets_at,
    )


def amount(line: Line, units: int) -> str:
    """``$0.008`` for a budget, ``8,000 tokens`` for a token quota, for messages and logs."""
    if line.limit == "budget_usd":
        return f"${units_to_usd(units).normalize():f}"
    return f"{units:,} tokens"


def refusal(
    line: Line, state: CounterState, now: datetime, headers: dict[str, str]
) -> QuotaExceeded:
    """The 429 for a call that did not fit: what was reached, by whom, and when to retry."""
    c, p = line.charge, line.policy
    reset = line.resets_at
    if c.kind != "soft" and state.used + c.amount <= c.limit:
        # Only holds stand in the way: calls in flight, other replicas' leases. Both may
        # settle or go back within a second.
        reset = min(reset, now + IN_FLIGHT_RETRY)
    at = f"It resets at {utc(line.resets_at).isoformat()}."
    if line.limit in ("budget_usd", "tokens"):
        code = "insufficient_quota"
        what = "budget" if line.limit == "budget_usd" else "token quota"
        message = (
            f"Quota exceeded for {p.scope}: {amount(line, state.used)} used of the "
            f"{amount(line, c.limit)} "
            f"{ADJECTIVE[line.period]} {what}"
        )
        if c.kind == "hold":
            message += (
                f", {amount(line, state.reserved)} held by calls in flight; this call may use up "
                f"to {amount(line, c.amount)} (its prompt and maximum output)"
            )
        message += f". {at}"
    else:
        code = "rate_limit_exceeded"
        unit = "requests" if line.limit == "rpm" else "tokens"
        message = (
            f"Rate limit reached for {p.scope}: {state.used:,} of {c.limit:,} {unit} per minute "
            f"used"
        )
        if line.limit == "tpm":
            message += (
                f", {state.reserved:,} held by calls in flight; this call may use up to "
                f"{c.amount:,} (its prompt and maximum output)"
            )
        message += f". Retry in {retry_after(reset, now)} s."
    return QuotaExceeded(
        message, code=code, headers={**headers, "Retry-After": str(retry_after(reset, now))}
    )
