"""What a station says about itself in each heartbeat, beyond the basics ``Station`` fills in.

``HeartbeatReporter`` watches the station's events (scans, scanners coming and going,
reconnections, the server's clock in acks and commands) and adds the machine's readings from a
``HealthProbe``. Pure bookkeeping: it never does I/O itself except through its collaborators.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from agent.health import HealthProbe
from agent.ports import Acked, Clock, Connected, Outbox, Scan, ScannerState
from protocol import Record


class HeartbeatReporter:
    """Counts and readings for the heartbeat.

    Args:
        clock: the station's clock.
        outbox: read for the age of the oldest unacknowledged record.
        probe: machine readings (temperature, disk, power...).
        agent_version: reported as is.
        boot_id: this boot; the oldest record's age uses the monotonic clock when it was made
            during this boot (the wall clock may have jumped since).
        heartbeat_s: the interval the station heartbeats at (the server uses it for staleness).
        scanners_expected: how many scanners are configured.
        timezone: where "today" starts for ``scans_today`` (the station's local midnight).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        outbox: Outbox,
        probe: HealthProbe,
        agent_version: str,
        boot_id: str,
        heartbeat_s: float,
        scanners_expected: int,
        timezone: str = "Asia/Ho_Chi_Minh",
    ) -> None:
        self._clock = clock
        self._outbox = outbox
        self._probe = probe
        self._version = agent_version
        self._boot_id = boot_id
        self._heartbeat_s = heartbeat_s
        self._expected = scanners_expected
        self._tz = ZoneInfo(timezone)
        self._missing: set[str] = set()
        self._connections = 0
        self._day: str | None = None
        self.scans_today = 0
        self.last_scan_at: float | None = None
        self.clock_offset_s: float | None = None

    @property
    def mqtt_reconnects(self) -> int:
        return max(0, self._connections - 1)

    def observe(self, event: object) -> None:
        """Account for one station event (called for every event, on the station thread)."""
        match event:
            case Scan(rejected=None):
                now = self._clock.wall()
                day = self._today(now)
                if day != self._day:
                    self._day, self.scans_today = day, 0
                self.scans_today += 1
                self.last_scan_at = now
            case ScannerState(source=source, present=present):
                (self._missing.discard if present else self._missing.add)(source)
            case Connected():
                self._connections += 1
            case Acked(server_time=float() as server_time):
                self.server_time_seen(server_time)

    def server_time_seen(self, server_time: float | None) -> None:
        """Update the clock offset estimate from a server timestamp just received."""
        if server_time is not None:
            self.clock_offset_s = round(self._clock.wall() - server_time, 3)

    def fields(self) -> dict[str, object]:
        """The optional ``Heartbeat`` fields, ``None`` readings left out."""
        now = self._clock.wall()
        if self._day is not None and self._today(now) != self._day:
            self._day, self.scans_today = self._today(now), 0
        fields: dict[str, object | None] = {
            "agent_version": self._version,
            "boot_id": self._boot_id,
            "heartbeat_s": self._heartbeat_s,
            "clock_synced": self._clock.synchronized(),
            "clock_offset_s": self.clock_offset_s,
            "oldest_pending_age_s": self._oldest_age(now),
            "scans_today": self.scans_today,
            "last_scan_at": self.last_scan_at,
            "scanners_connected": max(0, self._expected - len(self._missing)),
            "scanners_expected": self._expected,
            "mqtt_reconnects": self.mqtt_reconnects,
        }
        fields.update(self._probe.read().heartbeat_fields())
        return {k: v for k, v in fields.items() if v is not None}

    def _today(self, wall: float) -> str:
        return datetime.fromtimestamp(wall, self._tz).date().isoformat()

    def _oldest_age(self, now: float) -> float | None:
        oldest: list[Record] = self._outbox.pending(limit=1)
        if not oldest:
            return None
        record = oldest[0]
        if record.boot_id == self._boot_id:
            age = (self._clock.monotonic_ns() - record.mono_ns) / 1e9
        else:
            age = now - record.wall_time
        return round(max(0.0, age), 3)
