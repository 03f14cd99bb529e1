"""Per-tenant quotas: USD budgets, token quotas, RPM/TPM limits and allowed models (docs/quotas.md).

policy.py        periods, windows, reset times, thresholds: pure arithmetic
estimate.py      a call's worst case (prompt, maximum output, cost) before it goes upstream
plan.py          policies -> store charges; counter states -> headers, refusals, statuses
lease.py         how much of a counter a replica keeps for itself: pure arithmetic
account.py       one counter as this replica sees it: its lease, calls in flight, unsent use
store.py         the QuotaStore protocol: one ``sync`` operation and its rules
store_memory.py  ... in process (SQLite, one process)
store_sql.py     ... on SQLAlchemy (PostgreSQL shared by replicas; also SQLite)
store_redis.py   ... on Redis, Lua scripts (shared by replicas)
syncer.py        the one task that talks to the store: batched, numbered, retried syncs
pending.py       settlement batches the store has not confirmed, kept on disk
seed.py          counters from the ledger: seeding missing ones, ``quotas rebuild``
manage.py        policies in the database: set, list, delete, load; ledger totals
service.py       QuotaService: admit, settle, status
"""

from .manage import QuotaPolicyError, delete_policy, get_policies, set_policy
from .policy import LimitStatus, Policy
from .service import Admission, QuotaHooks, QuotaService

__all__ = [
    "Admission",
    "LimitStatus",
    "Policy",
    "QuotaHooks",
    "QuotaPolicyError",
    "QuotaService",
    "delete_policy",
    "get_policies",
    "set_policy",
]
