"""One store counter as this replica sees it: its lease, the calls it admitted, what they used.

Everything here is synchronous and runs on the event loop, so a call's admission against the
lease is atomic without a lock. The store's side moves only in syncs (proxy.quotas.syncer).

    hold     what the store holds for this replica (as of the last sync, minus what it is
             already giving back)
    held     worst cases of the calls in flight admitted against it
    pending  use settled (or requests counted) here, not yet sent
    sending  use in a sent batch the store has not confirmed
    spare    hold - held - pending - sending: what a new call may take without asking
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .lease import free_room, is_exact, lease_change, rate_update, target_free
from .plan import Line
from .store import ChargeKind, CounterState, Entry, EntryState

__all__ = ["Account", "Delta"]


@dataclass(slots=True)
class Delta:
    """One counter's part of a settlement batch: self-contained, so a batch can be spooled and
    replayed after the account (or the process) is gone."""

    counter: str
    kind: ChargeKind
    limit: int
    expires_at: datetime
    create: bool
    spend: int = 0
    give_back: int = 0  # spare returned (besides the spend, which leaves the hold too)
    force: int = 0
    drop: bool = False

    def entry(self, want: int = 0) -> Entry:
        return Entry(
            self.counter, self.kind, self.limit, self.expires_at, self.create,
            spend=self.spend, release=self.spend + self.give_back, drop=self.drop,
            force=self.force, want=want,
        )  # fmt: skip


@dataclass(slots=True, eq=False)
class Account:
    line: Line
    strict: bool  # a hard budget or token quota: refuse, rather than admit, without the store
    # The store, as of the last sync.
    known: bool = False
    used: int = 0
    reserved: int = 0
    store_hold: int = 0
    synced_at: float = 0.0  # monotonic seconds
    # This replica.
    held: int = 0
    calls: int = 0  # admitted calls not settled yet
    pending: int = 0
    sending: int = 0
    shrinking: int = 0
    force: int = 0  # coverage the store lost (an expired hold, an underestimate), to restore
    drop: bool = False  # the period or window is over: the hold goes
    typical: int = 0  # the largest recent call
    taken: int = 0  # admitted since the last sync, for the rate
    rate: float = 0.0  # units a second
    last_use: float = 0.0
    last_rate_at: float = 0.0
    exact: bool = True  # near the end (as of the last sync): every call asks the store

    @property
    def counter(self) -> str:
        return self.line.charge.counter

    @property
    def kind(self) -> ChargeKind:
        return self.line.charge.kind

    @property
    def limit(self) -> int:
        return self.line.charge.limit

    @property
    def hold(self) -> int:
        return self.store_hold - self.shrinking

    @property
    def spare(self) -> int:
        return self.hold - self.held - self.pending - self.sending

    def state(self) -> CounterState:
        """The counter as this replica can tell: the store's last word plus what it has not
        sent yet; holds are everyone else's plus this replica's calls in flight."""
        return CounterState(
            self.used + self.pending + self.sending,
            max(0, self.reserved - self.store_hold + self.held),
        )

    # -- calls -----------------------------------------------------------------------------

    def note(self, amount: int, now: float) -> None:
        self.typical = max(amount, self.typical - self.typical // 64)
        self.taken += amount
        self.last_use = now

    def take(self, amount: int) -> bool:
        """Admit ``amount`` against the lease, if it fits there."""
        if not self.known or self.spare < amount:
            return False
        if self.kind == "hold":
            self.held += amount
        else:
            self.pending += amount
        return True

    def untake(self, amount: int) -> None:
        if self.kind == "hold":
            self.held -= amount
        else:
            self.pending -= amount

    def settle(self, kind: ChargeKind, held: int, used: int) -> None:
        """A call ends: its hold (if it had one) gives way to what it used. ``kind`` is the
        one the call was admitted under (a policy may have changed mode since)."""
        self.calls -= 1
        if kind == "hold":
            self.held -= held
        if kind != "count":
            self.pending += used

    def busy(self) -> bool:
        return bool(self.calls or self.held or self.dirty() or self.sending or self.hold > 0)

    # -- syncs -----------------------------------------------------------------------------

    def is_exact(self) -> bool:
        own = max(0, self.spare)
        return is_exact(free_room(self.limit, self.used, self.reserved, own), self.typical)

    def target(self) -> int:
        own = max(0, self.spare)
        return target_free(free_room(self.limit, self.used, self.reserved, own), self.typical,
                           self.rate)  # fmt: skip

    def plan(self, now: float, *, release: bool) -> tuple[int, int]:
        """(give back, ask for) at a sync; ``release`` gives back every spare unit."""
        if not self.known:
            return 0, 0
        if self.kind == "soft":  # no lease; what a hard mode held goes back
            return max(0, self.spare), 0
        self.rate = rate_update(self.rate, self.taken, now - self.last_rate_at)
        self.taken, self.last_rate_at = 0, now
        spare = max(0, self.spare)
        idle = now - self.last_use > 2.0 or release or self.drop
        self.exact = self.is_exact()
        give, ask = lease_change(spare, self.target(), idle=idle, exact=self.exact)
        return give, 0 if release or self.drop else ask

    def freeze(self, give_back: int) -> Delta:
        """This account's part of a new batch: pending use moves to sending."""
        c = self.line.charge
        d = Delta(
            c.counter,
            c.kind,
            c.limit,
            c.expires_at,
            create=self.line.period == "minute",
            spend=self.pending,
            give_back=give_back,
            force=self.force,
            drop=self.drop,
        )
        self.sending += self.pending
        self.shrinking += give_back
        self.pending, self.force, self.drop = 0, 0, False
        return d

    def dirty(self) -> bool:
        return bool(self.pending or self.force or self.drop)

    def synced(self, st: EntryState, now: float) -> None:
        """The store's answer to a sync that named this counter."""
        self.known, self.synced_at = True, now
        self.used, self.reserved, self.store_hold = st.used, st.reserved, st.hold
        self.exact = self.is_exact()

    def check_cover(self) -> None:
        """The hold must cover what this replica admitted. If the store lost part of it (a hold
        expired in a long outage, Redis flushed) or a call cost more than its worst case, the
        difference is restored at the next sync, whatever the limit says: those calls happened."""
        if self.kind != "soft" and self.known:
            self.force = max(self.force, self.held + self.pending + self.sending - self.hold)

    def applied(self, d: Delta) -> None:
        """A batch holding ``d`` reached the store."""
        self.sending -= d.spend
        self.shrinking -= d.give_back
