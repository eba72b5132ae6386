"""sd_notify: READY=1, WATCHDOG=1 and STATUS= really reach systemd's socket."""

from __future__ import annotations

import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.systemd import SystemdNotifier
from swabline.broker import Broker
from tests.integration.harness import start_agent, wait_for


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A unix datagram socket standing in for systemd's (short path: sun_path is 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    try:
        yield str(path), sock
    finally:
        sock.close()
        path.unlink()
        folder.rmdir()


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_once_then_watchdog_paced_by_the_watchdog_period(
    notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    clock = Ticks()
    notifier = SystemdNotifier(
        notify_socket=path, watchdog_usec="2000000", status=lambda: "online", monotonic=clock
    )
    try:
        assert notifier.interval_s == 0.5
        notifier()
        assert drain(sock) == ["READY=1\nWATCHDOG=1\nSTATUS=online"]
        clock.now += 0.2
        notifier()  # too soon: nothing
        assert drain(sock) == []
        clock.now += 0.4
        notifier()
        assert drain(sock) == ["WATCHDOG=1\nSTATUS=online"]
        notifier.stopping()
        assert drain(sock) == ["STOPPING=1"]
    finally:
        notifier.close()
        notifier.close()  # safe twice


def test_without_notify_socket_nothing_is_sent_or_opened(
    notify_socket: tuple[str, socket.socket],
) -> None:
    _, sock = notify_socket
    notifier = SystemdNotifier(notify_socket=None, watchdog_usec="2000000")
    notifier()
    notifier.stopping()
    notifier.close()
    assert not notifier.active
    assert drain(sock) == []


@pytest.mark.integration
def test_the_agent_process_notifies_ready_watchdog_status_and_stopping(
    tmp_path: Path, broker: Broker, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    agent = start_agent(
        tmp_path,
        broker,
        "st-1",
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"},
        wait_ready=False,  # no server here to give the seq floor: READY=1 must not wait for one
    )
    seen: list[str] = []
    try:

        def got(what: str) -> bool:
            seen.extend(drain(sock))
            return any(what in m for m in seen)

        wait_for(lambda: got("READY=1"), 20, "READY=1")
        wait_for(lambda: got("STATUS=online"), 20, "STATUS=online once connected")
        count = sum("WATCHDOG=1" in m for m in seen)
        wait_for(lambda: got("") and sum("WATCHDOG=1" in m for m in seen) > count, 10, "pings")
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.log.read_text()
    seen.extend(drain(sock))
    assert sum("READY=1" in m for m in seen) == 1
    assert seen[-1] == "STOPPING=1"
