"""Which tenant owns which upstream resource: every tenant shares one upstream project, so this
is what makes a file, cache, batch or operation visible to its tenant only (docs/resources.md).

Another tenant's resource is reported as missing (404), never as forbidden: it must not even
learn that the name exists. Every database wait is bounded (503 past it); ownership never
changes once recorded, so answers are cached and a resource used in many calls (a file in a
chat) costs one lookup per process.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..caller import Caller
from ..db import resources as sql
from ..db.tables import Resource
from ..errors import BadRequest, ServiceUnavailable

__all__ = ["Owners", "Page"]

T = TypeVar("T")
CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Resource]
    next_token: str | None


class Owners:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        timeout: float = 1.0,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._timeout = timeout
        self._cache_size = cache_size
        self._owner: OrderedDict[str, int] = OrderedDict()  # name -> tenant id
        self._billing = asyncio.Lock()

    async def _run(self, job: Callable[[AsyncSession], Awaitable[T]], *, write: bool) -> T:
        try:
            async with asyncio.timeout(self._timeout), self._sessionmaker() as session:
                result = await job(session)
                if write:
                    await session.commit()
                return result
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable(
                "The proxy's database did not answer; retry shortly.",
                headers={"Retry-After": "1"},
            ) from exc

    def _remember(self, name: str, tenant_id: int) -> None:
        self._owner[name] = tenant_id
        self._owner.move_to_end(name)
        if len(self._owner) > self._cache_size:
            self._owner.popitem(last=False)

    async def add(
        self, name: str, kind: str, caller: Caller, *, model: str | None = None, **fields: Any
    ) -> None:
        """Record a resource the caller just made upstream (before its name reaches them)."""

        async def job(session: AsyncSession) -> None:
            await sql.add_resource(session, name, kind, caller, model=model, **fields)

        await self._run(job, write=True)
        self._remember(name, caller.tenant_id)

    async def adopt(self, names: list[str], kind: str, caller: Caller, **fields: Any) -> None:
        """Record resources Google made for the caller (a batch's results file, a video's
        file) as its tenant's, unless already recorded: idempotent, for every poll."""
        todo = [n for n in names if n not in self._owner]
        if not todo:
            return

        async def job(session: AsyncSession) -> None:
            for name in todo:
                await sql.adopt_resource(session, name, kind, caller, **fields)

        await self._run(job, write=True)

    async def get(self, name: str, caller: Caller, kind: str | None = None) -> Resource | None:
        """The caller's tenant's resource, or None (another tenant's, deleted, or unknown)."""

        async def job(session: AsyncSession) -> Resource | None:
            return await sql.owned_resource(session, name, caller.tenant_id, kind)

        row = await self._run(job, write=False)
        if row is not None:
            self._remember(name, row.tenant_id)
        return row

    async def find(self, name: str, kind: str) -> Resource | None:
        """A live resource of ``kind`` whoever owns it: only for names that are themselves a
        credential (an upload session's), never to answer a tenant about someone else's."""

        async def job(session: AsyncSession) -> Resource | None:
            return await sql.find_resource(session, name, kind)

        return await self._run(job, write=False)

    async def owns(self, name: str, caller: Caller) -> bool:
        """Whether the caller's tenant made ``name``: cached, for references inside calls."""
        owner = self._owner.get(name)
        if owner is not None:
            return owner == caller.tenant_id
        return await self.get(name, caller) is not None

    async def page(self, caller: Caller, kind: str, size: int, token: str | None) -> Page:
        """One page of the tenant's resources of a kind, and the token of the next one."""
        after = _read_token(token) if token else None

        async def job(session: AsyncSession) -> list[Resource]:
            return await sql.list_resources(
                session, caller.tenant_id, kind, limit=size + 1, after=after
            )

        rows = await self._run(job, write=False)
        more = len(rows) > size
        rows = rows[:size]
        return Page(rows, _token(rows[-1]) if more and rows else None)

    async def update(self, name: str, **fields: Any) -> None:
        async def job(session: AsyncSession) -> None:
            await sql.update_resource(session, name, **fields)

        await self._run(job, write=True)

    async def bill_storage(
        self, name: str, until: datetime, *, delete: bool = False
    ) -> sql.StorageMove | None:
        """Move a cache's billing to ``until`` (see :func:`proxy.db.resources.bill_storage`);
        one at a time in this process (SQLite has no row locks)."""

        async def job(session: AsyncSession) -> sql.StorageMove | None:
            return await sql.bill_storage(session, name, until, delete=delete)

        async with self._billing:
            moved = await self._run(job, write=True)
        if delete:
            self._owner.pop(name, None)
        return moved

    async def delete(self, name: str) -> None:
        async def job(session: AsyncSession) -> None:
            await sql.delete_resource(session, name)

        await self._run(job, write=True)
        self._owner.pop(name, None)


def _token(row: Resource) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.name]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, name = json.loads(raw)
        return datetime.fromisoformat(at), str(name)
    except (ValueError, TypeError) as exc:
        raise BadRequest("Invalid pageToken.") from exc
