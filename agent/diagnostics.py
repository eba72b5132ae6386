"""The diagnostics bundle a station sends when ops ask for it, and the log it draws on.

``RingLogHandler`` keeps the most recent log lines in memory (nothing extra written to the SD
card). ``Diagnostics`` puts together the configuration without secrets, those lines, outbox
statistics and a health reading. Person data must not leave the station this way: lines are
scrubbed of scanned codes and identity numbers before they are kept.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from agent.health import HealthProbe
from agent.ports import Clock, Outbox

_SECRET_KEY = re.compile(r"password|secret|token|private", re.IGNORECASE)
_QUOTED = re.compile(r"""(['"])(?:(?!\1).)*\1""")
_LONG_NUMBER = re.compile(r"\d{9,}")
REDACTED = "<redacted>"


def scrub(line: str) -> str:
    """Hide what may identify a person: quoted text (scanned codes) and long digit runs."""
    return _LONG_NUMBER.sub("<number>", _QUOTED.sub("<code>", line))


class RingLogHandler(logging.Handler):
    """Keeps the last ``capacity`` formatted log lines, scrubbed, in memory. Thread-safe."""

    def __init__(self, capacity: int = 2000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=capacity)
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = scrub(self.format(record))
        except Exception:  # a broken log call must not break the station
            self.handleError(record)
            return
        with self._guard:
            self._lines.append(line)

    def lines(self, limit: int | None = None) -> list[str]:
        """The most recent lines, oldest first (at most ``limit``)."""
        with self._guard:
            lines = list(self._lines)
        return lines if limit is None else lines[-limit:] if limit else []


def redact(value: Any, key: str = "") -> Any:
    """A copy of a configuration tree with secret values replaced (paths of secret files kept)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and not key.endswith("_file") and value is not None:
        return REDACTED
    return value


class Diagnostics:
    """Builds the diagnostics bundle.

    Args:
        config: the station's configuration model (dumped, secrets removed).
        outbox: for its statistics.
        logs: the ring buffer of recent log lines.
        probe: a fresh health reading.
        clock: for the oldest record's age.
        agent_version: reported as is.
        extra: more sections to include (e.g. the heartbeat fields), called at build time.
    """

    def __init__(
        self,
        *,
        config: BaseModel,
        outbox: Outbox,
        logs: RingLogHandler,
        probe: HealthProbe,
        clock: Clock,
        agent_version: str,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._logs = logs
        self._probe = probe
        self._clock = clock
        self._version = agent_version
        self._extra = extra

    def bundle(self, log_lines: int) -> dict[str, Any]:
        pending = self._outbox.pending(limit=1)
        outbox: dict[str, Any] = {
            "depth": len(self._outbox),
            "last_seq": self._outbox.last_seq(),
            "capacity": getattr(self._outbox, "capacity", None),
            "oldest_seq": pending[0].seq if pending else None,
            "oldest_wall_time": pending[0].wall_time if pending else None,
        }
        out: dict[str, Any] = {
            "agent_version": self._version,
            "time": self._clock.wall(),
            "clock_synced": self._clock.synchronized(),
            "config": redact(self._config.model_dump(mode="json")),
            "outbox": outbox,
            "health": self._probe.read().heartbeat_fields(),
            "logs": self._logs.lines(log_lines),
        }
        if self._extra is not None:
            out.update(self._extra())
        return out
