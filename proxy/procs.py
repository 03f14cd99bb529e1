"""Whether a process of this host is still alive: who may replay a dead writer's files."""

from __future__ import annotations

import os

__all__ = ["alive"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
