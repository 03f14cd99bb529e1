"""A loopback TCP forwarder that can cut or freeze the line: a store outage on demand.

The proxy under test reaches PostgreSQL or Redis through it:

- ``cut()`` drops every open connection and refuses new ones (what a stopped server looks like
  from the client side);
- ``freeze()`` keeps every connection open and accepts new ones, but forwards no byte either way
  (a server that hangs: SIGSTOP, a full disk, a network partition without resets);
- ``restore()`` brings the line back from either: a frozen line forwards what it held back.

The machine's shared PostgreSQL and Redis themselves keep running for the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from typing import Any


def _free_port_below_ephemeral() -> int:
    # Below Linux's ephemeral range (32768+): while the line is cut, the kernel cannot hand
    # this port to some outgoing connection, so restore() can always listen on it again.
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class TcpCut:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port_below_ephemeral()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None  # made on the line's own loop
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TcpCut:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._close_all(stop_listening=True))

    def freeze(self) -> None:
        self._call(self._set_flowing(False))

    def restore(self) -> None:
        self._call(self._listen())
        self._call(self._set_flowing(True))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _shutdown(self) -> None:
        await self._close_all(stop_listening=True)
        # Let the pipes end here rather than be destroyed pending when the loop closes.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_all(self, *, stop_listening: bool) -> None:
        if stop_listening and self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        flowing = self._flowing
        self._writers.add(writer)
        try:
            await flowing.wait()  # a frozen line accepts the connection, then says nothing
        except asyncio.CancelledError:
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await flowing.wait()  # frozen: hold the bytes until restore()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        # Ends normally even when the line shuts down: a handler task that ends cancelled makes
        # asyncio log a traceback per connection.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
