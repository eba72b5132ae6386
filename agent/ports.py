"""The seams of the station: what the loop in ``station.py`` needs from the world.

Real implementations are named ``<Tech><Role>`` (``EvdevScanSource``, ``GpioFeedback``,
``TinyDbOutbox``, ``MqttUplink``); test doubles in ``agent.fakes`` are ``Fake<Role>`` or
``Recording<Role>``. Every collaborator is passed to ``Station`` as a keyword argument.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocol import Command, Heartbeat, Record


@dataclass(frozen=True, slots=True)
class Scan:
    """One code read by a scanner, or a read the input layer refused.

    ``rejected`` holds the reason when the scanner produced something that must not be used
    (events lost to ``SYN_DROPPED``, a key with no mapping, invalid UTF-8, too long); ``text``
    then holds what was read so far, for diagnostics only. ``lossy`` is True when the source
    cannot carry non-ASCII text (a keyboard-mode scanner): names in it may be mangled.
    """

    text: str
    source: str
    rejected: str | None = None
    lossy: bool = False


@dataclass(frozen=True, slots=True)
class ScannerState:
    """A scanner appeared or disappeared (unplugged, reopened)."""

    source: str
    present: bool
    detail: str = ""


SourceEvent = Scan | ScannerState
SourceSink = Callable[[SourceEvent], None]


class ScanSource(Protocol):
    """Something that produces scans: a USB scanner, a serial scanner, a camera, a pipe."""

    name: str

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        """Read until ``stop`` is set (or the input ends), passing each event to ``sink``.

        Runs in its own thread. Handles unplugging itself: reports ``ScannerState(present=False)``
        and keeps trying to reopen until ``stop`` is set.
        """
        ...


class Signal(enum.Enum):
    """A one-shot outcome shown to staff through LEDs and buzzer (see ``docs/signals.md``)."""

    SAVED = "saved"
    """The record is durable on the station."""
    CONFIRMED = "confirmed"
    """The server acknowledged it."""
    REJECTED = "rejected"
    """Unknown or malformed code, or an action that is not allowed now."""
    DUPLICATE = "duplicate"
    """This person is already in the open pool, or the tube was already used."""
    WARNING = "warning"
    """Recorded, but look: e.g. the same person again within the retest window."""
    POOL_OPENED = "pool_opened"
    POOL_CLOSED = "pool_closed"
    POOL_FULL = "pool_full"
    RETEST_POOL_FULL = "retest_pool_full"
    """A person sampled here recently (``WARNING``) filled the pool, which closed itself
    (``POOL_FULL``): both outcomes in one pattern."""
    UNDONE = "undone"
    """The undo card took the last scan back (stored as an undo record)."""
    CARD_ACCEPTED = "card_accepted"
    """A setting card (test kind, pool size, mode) or a staff badge was read and stored; also
    played when ops change a setting remotely."""
    NO_OPEN_TUBE = "no_open_tube"
    IDENTIFY = "identify"
    SELF_TEST = "self_test"
    STORAGE_FULL = "storage_full"
    """The station could not save the scan (disk or outbox full): nothing was stored."""


class Condition(enum.Enum):
    """A lasting state shown until it clears, underneath the one-shot signals."""

    OFFLINE = "offline"
    """No broker connection; the station keeps saving."""
    SCANNER_MISSING = "scanner_missing"
    OUTBOX_NEARLY_FULL = "outbox_nearly_full"
    """Unacknowledged records passed the warning threshold: get the station online."""
    AWAITING_SERVER = "awaiting_server"
    """A new outbox (first start, reinstall) waits for the server to say where the station's
    sequence stopped; scans are refused until the station has reached the server once."""


class Feedback(Protocol):
    """LEDs and buzzer. Never blocks the caller: patterns play in the background."""

    def signal(self, signal: Signal) -> None:
        """Play the pattern of ``signal``, replacing any one-shot pattern still playing."""
        ...

    def set_condition(self, condition: Condition, active: bool) -> None:
        """Show or clear a lasting condition."""
        ...

    def close(self) -> None: ...


class Clock(Protocol):
    """Time, as the station sees it. Only the clock sleeps."""

    def wall(self) -> float:
        """Seconds since the epoch (may be wrong until NTP syncs)."""
        ...

    def monotonic_ns(self) -> int:
        """Nanoseconds since boot; never goes backwards."""
        ...

    def synchronized(self) -> bool:
        """Whether the wall clock is NTP-synchronised."""
        ...

    def sleep(self, seconds: float) -> None: ...


class Outbox(Protocol):
    """Durable store of records not yet acknowledged by the server."""

    def append(self, record: Record) -> None:
        """Store ``record``; when this returns it survives a power cut."""
        ...

    def append_many(self, records: Sequence[Record]) -> None:
        """Store ``records`` all together or not at all; when this returns they are durable."""
        ...

    @property
    def ready(self) -> bool:
        """Whether records can be stored: the seq floor is known (see ``learn_seq_floor``)."""
        ...

    @property
    def nearly_full(self) -> bool:
        """Unacknowledged records passed the warning threshold."""
        ...

    @property
    def capacity(self) -> int: ...

    def pending(self, limit: int | None = None, *, after_seq: int = 0) -> list[Record]:
        """Unacknowledged records with a seq above ``after_seq``, in sequence order."""
        ...

    def acknowledge(self, record_ids: Iterable[str]) -> list[str]:
        """Mark these records delivered; returns the ids of those that were pending."""
        ...

    def last_seq(self) -> int:
        """The highest sequence number ever stored (0 for a new station)."""
        ...

    def next_counter(self, name: str) -> int:
        """Durably increment and return a named counter (e.g. the birth/death sequence)."""
        ...

    def learn_seq_floor(self, max_seq: int) -> bool:
        """Take in the highest seq the server holds; returns True if anything changed."""
        ...

    def purge(self, acked_before: float) -> int:
        """Delete records acknowledged before this wall time; returns how many."""
        ...

    def oldest_pending_time(self) -> float | None:
        """Wall time of the oldest unacknowledged record, if any."""
        ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Connected:
    """The uplink (re)connected; pending records should be (re)sent."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Acked:
    record_ids: Sequence[str] = field(default_factory=tuple)
    server_time: float | None = None
    """The server's clock when it sent the acknowledgement (for the clock offset estimate)."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True, slots=True)
class Synced:
    """The server told the highest seq it holds for this station (after each birth)."""

    max_seq: int


UplinkEvent = Connected | Disconnected | Acked | CommandReceived | Synced
UplinkSink = Callable[[UplinkEvent], None]


class Uplink(Protocol):
    """The connection to the central server (MQTT)."""

    def start(self, sink: UplinkSink) -> None:
        """Connect in the background and keep reconnecting; events go to ``sink``."""
        ...

    def publish_record(self, record: Record) -> None:
        """Send ``record`` (QoS 1). Delivery is confirmed only by an ``Acked`` event."""
        ...

    def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Send a heartbeat (QoS 0: a lost one is replaced by the next)."""
        ...

    @property
    def connected(self) -> bool: ...

    def close(self) -> None:
        """Announce a clean shutdown and disconnect."""
        ...


@dataclass(frozen=True, slots=True)
class Entry:
    """What the workflow wants stored: becomes one ``Record`` with identity added by the station."""

    kind: str
    code: str | None = None
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The workflow's answer to a scan: records to store (in order) and the signal to show."""

    entries: tuple[Entry, ...]
    signal: Signal


class Workflow(Protocol):
    """Pure sampling logic: decides what a scan means. Never does I/O."""

    def decide(self, scan: Scan) -> Decision:
        """Classify ``scan`` against the open session and return what to store and show."""
        ...

    def restore(self, records: Iterable[Record]) -> None:
        """Rebuild the session from records already stored (after a restart)."""
        ...

    def stored(self, records: Sequence[Record]) -> None:
        """The entries of the last decision were stored as ``records``: update the session.

        Called after every ``decide``; when storing failed part-way, ``records`` holds only
        those that were stored (possibly none), so the session never runs ahead of the outbox.
        """
        ...

    def retain(self, records: Iterable[Record]) -> list[Record]:
        """Of these stored records, those ``restore`` needs to rebuild the present session once
        the outbox has forgotten them (acknowledged), reduced to what it needs: no personal data
        beyond a person's key. The station keeps them in its ``SessionHistory``."""
        ...


class SessionHistory(Protocol):
    """Durable copies of the records a workflow needs after a restart, kept apart from the
    outbox because acknowledged records leave the outbox. Records are keyed by ``seq``."""

    def remember(self, records: Iterable[Record]) -> None:
        """Store copies of ``records`` durably (a seq already kept is left as it is)."""
        ...

    def remembered(self) -> list[Record]:
        """Every record kept, in sequence order."""
        ...

    def forget(self, seqs: Iterable[int]) -> None:
        """Drop the records with these sequence numbers."""
        ...
