"""One process at a time on a station's outbox: the agent, or ``swabline selftest``."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from agent.errors import AgentError


class StationBusyError(AgentError, RuntimeError):
    """Another process (the agent, a self-test) holds the station's outbox."""


@contextlib.contextmanager
def outbox_lock(outbox: Path) -> Iterator[None]:
    """Hold an exclusive lock next to ``outbox`` (``<outbox>.lock``) for the ``with`` block.

    TinyDB does not lock its file; two processes writing one outbox would corrupt it. The lock
    is released by the kernel if the process dies.
    """
    outbox.parent.mkdir(parents=True, exist_ok=True)
    path = outbox.with_name(outbox.name + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StationBusyError(
                f"{outbox} is in use by another process (the agent? stop it first: "
                "sudo systemctl stop swabline-agent)"
            ) from None
        yield
    finally:
        os.close(fd)
