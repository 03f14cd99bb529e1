"""The test line itself: a cut drops connections, a freeze holds bytes, restore resumes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.fakes.tcpcut import TcpCut


@pytest.fixture
def echo_port() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(100):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def silent(sock: socket.socket, seconds: float = 0.3) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(10)
    except TimeoutError:
        return True
    return False


def test_freeze_holds_bytes_and_restore_delivers_them(echo_port: int) -> None:
    with TcpCut("127.0.0.1", echo_port) as line:
        before = socket.create_connection(("127.0.0.1", line.port), timeout=2)
        before.sendall(b"a")
        assert before.recv(10) == b"a"

        line.freeze()
        before.sendall(b"b")
        assert silent(before), "a frozen line answered"
        during = socket.create_connection(("127.0.0.1", line.port), timeout=2)  # accepted
        during.sendall(b"c")
        assert silent(during), "a connection opened while frozen answered"

        line.restore()
        before.settimeout(2)
        during.settimeout(2)
        assert before.recv(10) == b"b"
        assert during.recv(10) == b"c"

        line.cut()
        assert before.recv(10) == b""  # closed by the cut
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", line.port), timeout=2)
        before.close()
        during.close()
