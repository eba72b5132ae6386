"""The ops hooks of a station: heartbeat telemetry and remote commands.

``Station`` takes an optional ``ops=`` object with the ``StationOps`` shape and calls it for
every event, every tick, every heartbeat and every command; ``OpsHooks`` is the real one. A
station built without it still runs (basic heartbeats, commands logged and ignored).
"""

from __future__ import annotations

from typing import Protocol

from agent.commands import CommandHandler, StationControl
from agent.telemetry import HeartbeatReporter
from protocol import Command


class StationOps(Protocol):
    def observe(self, event: object) -> None:
        """See every station event, before the station handles it."""
        ...

    def heartbeat_fields(self) -> dict[str, object]:
        """Optional ``Heartbeat`` fields to add to the next heartbeat."""
        ...

    def on_command(self, command: Command, station: StationControl) -> None:
        """Carry out a command from the server and answer it."""
        ...

    def tick(self) -> None:
        """Periodic work (about every second)."""
        ...


class OpsHooks:
    """``StationOps`` made of a ``HeartbeatReporter`` and a ``CommandHandler``."""

    def __init__(self, *, reporter: HeartbeatReporter, commands: CommandHandler) -> None:
        self.reporter = reporter
        self.commands = commands

    def observe(self, event: object) -> None:
        self.reporter.observe(event)

    def heartbeat_fields(self) -> dict[str, object]:
        return self.reporter.fields()

    def on_command(self, command: Command, station: StationControl) -> None:
        self.reporter.server_time_seen(command.server_time)
        self.commands.handle(command, station)

    def tick(self) -> None:
        self.commands.tick()
