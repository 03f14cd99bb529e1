"""Run an ASGI app under uvicorn on a real loopback port, for clients that need a URL.

``serve(app)`` runs it on a background thread with its own event loop, so both sync clients
(the google-genai and openai SDKs) and async ones can call it; several can run at once (fake
upstream + proxy). ``serve_async(app)`` runs it on the caller's loop instead: cheaper, but only
async clients may call it (a blocking call would stall the server it waits for).

    with serve(FakeGemini()) as upstream_url, serve(create_app(settings)) as proxy_url:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Never take over the test runner's SIGINT / SIGTERM handlers.
        yield

    async def serve_guarded(self, sock: socket.socket) -> None:
        # uvicorn reports a failed lifespan startup with sys.exit(); as a task on the test's
        # loop that SystemExit would escape run_until_complete, so turn it into an error.
        try:
            await self.serve(sockets=[sock])
        except SystemExit as exc:
            raise RuntimeError(f"ASGI app failed to start (exit code {exc.code})") from exc


def _setup(
    app: Any, host: str, port: int, options: dict[str, Any]
) -> tuple[_Server, socket.socket]:
    settings: dict[str, Any] = {
        "lifespan": "on",  # the app's startup and shutdown must run, and fail loudly
        "log_config": None,  # leave logging config alone; records propagate to pytest's caplog
        "log_level": "warning",
        "access_log": False,
        "ws": "none",  # importing websockets would only add deprecation noise
        "loop": "asyncio",
        "timeout_graceful_shutdown": 2,  # a hung request must not stall the test run
        # Longer than any pause in a test: an idle keep-alive connection closed by the server
        # just as a client reuses it is a client-side race, not what a test means to check.
        "timeout_keep_alive": 30,
    }
    config = uvicorn.Config(app, host=host, port=port, **(settings | options))
    # Bind here so the chosen port is known before the server thread starts.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return _Server(config), sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """uvicorn on a daemon thread; ``start()`` returns the base URL once it accepts connections."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0,
        **uvicorn_options: Any,
    ) -> None:  # fmt: skip
        self.server, self._sock = _setup(app, host, port, uvicorn_options)
        self.base_url = _url(host, self._sock)
        self.timeout = timeout
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn {self.base_url}")
        self._thread.daemon = True

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
                runner.run(self.server.serve_guarded(self._sock))
        except BaseException as exc:  # reported to the starting thread, not to threading.excepthook
            self.error = exc

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server at {self.base_url} did not start") from self.error
            time.sleep(0.005)
        return self.base_url

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self.timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(self.timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"server at {self.base_url} did not stop")

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields the base URL (``http://127.0.0.1:PORT``)."""
    with ServerThread(app, host, port, **options) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_async(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0, **options: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on the running loop; async clients only."""
    server, sock = _setup(app, host, port, options)
    task = asyncio.create_task(server.serve_guarded(sock))
    try:
        async with asyncio.timeout(timeout):
            while not server.started:
                if task.done():
                    await task  # raises the startup error
                    raise RuntimeError("server exited during startup")
                await asyncio.sleep(0.005)
        yield _url(host, sock)
    finally:
        server.should_exit = True
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                server.force_exit = True
                await task
        sock.close()
