"""Station enrollment: single-use, expiring tokens traded for a station id and MQTT credentials.

An admin creates a token for a facility (``create_token``): it is shown once and stored only as
its SHA-256 (a token carries 144 random bits, so an unsalted hash cannot be reversed). A station
presents it to ``POST /api/enroll`` (``enroll``): the server claims the token (single use, in
the same transaction), allocates the station id ``<facility>-<NN>``, makes a random MQTT
password, registers it with the broker's dynamic security plugin and answers with the
credentials. A token made for an existing station re-provisions it: the station keeps its id,
the broker gets a new password and closes any session using the old one. ``decommission``
deletes a station's broker credentials (its session is closed at once) and cancels its unused
tokens.

The broker is changed inside the database transaction: if the broker cannot be reached the
transaction rolls back and the token stays usable; if the commit fails after the broker was
changed, a new station's credentials are removed again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import DateTime, Engine, Integer, String, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from protocol.topics import STATION_ID_PATTERN
from server.broker_admin import RESERVED_PREFIX
from server.errors import BrokerAdminError, ServerError
from server.models import Base, StationRow

log = logging.getLogger(__name__)

FACILITY_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?"
_FACILITY = re.compile(FACILITY_PATTERN)
_STATION_ID = re.compile(STATION_ID_PATTERN)
TOKEN_BYTES = 18  # 144 bits; 24 characters of base64url


class EnrollmentTokenRow(Base):
    """An enrollment token, by the SHA-256 of its text (the text itself is never stored)."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    facility: Mapped[str] = mapped_column(String(40), index=True)
    station_id: Mapped[str | None] = mapped_column(String(63))
    """Set for a re-provisioning token: the station that gets new credentials."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(100))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_by_station: Mapped[str | None] = mapped_column(String(63))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StationEnrollmentRow(Base):
    """A station that was enrolled: its facility and the state of its credentials."""

    __tablename__ = "station_enrollments"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    facility: Mapped[str] = mapped_column(String(40), index=True)
    number: Mapped[int] = mapped_column(Integer)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    credentials_issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    credentials_generation: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(253))
    decommissioned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EnrollmentRefused(ServerError):
    """A token, card or request was refused; ``status`` is the HTTP status, ``reason`` the text
    shown to the technician."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class StationCredentials(Protocol):
    """What enrollment needs from the broker (``DynsecBrokerAdmin``)."""

    def put_station(self, station_id: str, password: str) -> None: ...

    def remove_station(self, station_id: str) -> None: ...


BrokerAdminFactory = Callable[[], AbstractContextManager[StationCredentials]]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    facility: str
    expires_at: datetime
    station_id: str | None


@dataclass(frozen=True, slots=True)
class Enrolled:
    station_id: str
    facility: str
    mqtt_password: str
    seq_floor: int
    reprovisioned: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%d %H:%M UTC")


def check_facility(facility: str) -> str:
    if not _FACILITY.fullmatch(facility) or facility.startswith(RESERVED_PREFIX):
        raise EnrollmentRefused(
            400,
            f"invalid facility code {facility!r}: 1-40 lower-case letters, digits and '-', "
            f"not starting with {RESERVED_PREFIX!r}",
        )
    return facility


def parse_lifetime(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> a ``timedelta``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not match:
        raise EnrollmentRefused(400, f"invalid lifetime {text!r}: use e.g. 30m, 2h or 1d")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


def create_token(
    engine: Engine,
    *,
    facility: str,
    lifetime: timedelta,
    max_lifetime: timedelta = timedelta(days=7),
    station_id: str | None = None,
    created_by: str | None = None,
    now: datetime | None = None,
) -> IssuedToken:
    """Make a single-use enrollment token; with ``station_id``, one that re-provisions it."""
    check_facility(facility)
    if lifetime <= timedelta(0) or lifetime > max_lifetime:
        raise EnrollmentRefused(
            400, f"a token lives between 1 second and {max_lifetime} (asked: {lifetime})"
        )
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with Session(engine) as s, s.begin():
        if station_id is not None:
            station = s.get(StationEnrollmentRow, station_id)
            if station is None:
                raise EnrollmentRefused(404, f"station {station_id!r} was never enrolled here")
            if station.decommissioned_at is not None:
                raise EnrollmentRefused(
                    410,
                    f"station {station_id} was decommissioned on "
                    f"{_when(station.decommissioned_at)}: enroll a new station instead",
                )
            if station.facility != facility:
                raise EnrollmentRefused(
                    400, f"station {station_id} belongs to facility {station.facility}"
                )
        s.add(
            EnrollmentTokenRow(
                token_sha256=hash_token(token),
                facility=facility,
                station_id=station_id,
                created_at=now,
                expires_at=now + lifetime,
                created_by=created_by,
            )
        )
    return IssuedToken(token, facility, now + lifetime, station_id)


def enroll(
    engine: Engine,
    broker: BrokerAdminFactory,
    *,
    token: str,
    hostname: str | None = None,
    now: datetime | None = None,
) -> Enrolled:
    """Trade ``token`` for a station id and fresh MQTT credentials, registered on the broker."""
    now = now or datetime.now(UTC)
    password = secrets.token_urlsafe(32)
    result: Enrolled | None = None
    try:
        with Session(engine) as s, s.begin():
            row = s.scalar(
                select(EnrollmentTokenRow).where(
                    EnrollmentTokenRow.token_sha256 == hash_token(token)
                )
            )
            row = _check_usable(row, now)
            station = _station_for(s, row, now, hostname)
            claimed = s.execute(
                update(EnrollmentTokenRow)
                .where(
                    EnrollmentTokenRow.id == row.id,
                    EnrollmentTokenRow.used_at.is_(None),
                    EnrollmentTokenRow.cancelled_at.is_(None),
                )
                .values(used_at=now, used_by_station=station.station_id)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise EnrollmentRefused(409, "this enrollment token was just used")
            s.flush()
            seq_floor = s.scalar(
                select(StationRow.max_seq).where(StationRow.station_id == station.station_id)
            )
            try:
                with broker() as admin:
                    admin.put_station(station.station_id, password)
            except BrokerAdminError as exc:
                raise EnrollmentRefused(
                    503, f"the broker could not register the station ({exc}); try again"
                ) from exc
            result = Enrolled(
                station_id=station.station_id,
                facility=station.facility,
                mqtt_password=password,
                seq_floor=int(seq_floor or 0),
                reprovisioned=row.station_id is not None,
            )
    except (IntegrityError, OperationalError) as exc:
        # Two enrollments raced for the same token or the same new station number.
        _undo_broker(broker, result)
        raise EnrollmentRefused(
            409, "another enrollment happened at the same moment: try again"
        ) from exc
    except SQLAlchemyError:
        _undo_broker(broker, result)
        raise
    log.info(
        "station %s %s (facility %s)",
        result.station_id,
        "re-provisioned" if result.reprovisioned else "enrolled",
        result.facility,
    )
    return result


def _undo_broker(broker: BrokerAdminFactory, result: Enrolled | None) -> None:
    """The commit failed after the broker was changed: take a new station's credentials back
    (a re-provisioned station keeps its new password; its token is still usable)."""
    if result is not None and not result.reprovisioned:
        try:
            with broker() as admin:
                admin.remove_station(result.station_id)
        except BrokerAdminError:
            log.exception("could not remove the broker credentials of %s", result.station_id)


def _check_usable(row: EnrollmentTokenRow | None, now: datetime) -> EnrollmentTokenRow:
    if row is None:
        raise EnrollmentRefused(
            401, "unknown enrollment token: mistyped, forged, or made by another server"
        )
    if row.cancelled_at is not None:
        raise EnrollmentRefused(
            410, f"this enrollment token was cancelled on {_when(row.cancelled_at)}"
        )
    if row.used_at is not None:
        raise EnrollmentRefused(
            409,
            f"this enrollment token was already used on {_when(row.used_at)} by station "
            f"{row.used_by_station}: ask for a new one",
        )
    if _utc(row.expires_at) <= now:
        raise EnrollmentRefused(
            410, f"this enrollment token expired on {_when(row.expires_at)}: ask for a new one"
        )
    return row


def _station_for(
    s: Session, row: EnrollmentTokenRow, now: datetime, hostname: str | None
) -> StationEnrollmentRow:
    if row.station_id is not None:
        station = s.get(StationEnrollmentRow, row.station_id)
        if station is None or station.decommissioned_at is not None:
            raise EnrollmentRefused(410, f"station {row.station_id} was decommissioned")
        station.credentials_issued_at = now
        station.credentials_generation += 1
        station.hostname = hostname or station.hostname
        return station
    number = 1 + int(
        s.scalar(
            select(func.max(StationEnrollmentRow.number)).where(
                StationEnrollmentRow.facility == row.facility
            )
        )
        or 0
    )
    station_id = f"{row.facility}-{number:02d}"
    if not _STATION_ID.fullmatch(station_id):
        raise EnrollmentRefused(400, f"station id {station_id!r} would be invalid")
    station = StationEnrollmentRow(
        station_id=station_id,
        facility=row.facility,
        number=number,
        enrolled_at=now,
        credentials_issued_at=now,
        credentials_generation=1,
        hostname=hostname,
    )
    s.add(station)
    return station


def decommission(
    engine: Engine, broker: BrokerAdminFactory, station_id: str, *, now: datetime | None = None
) -> None:
    """Revoke a station: the broker deletes its credentials and closes its session at once."""
    now = now or datetime.now(UTC)
    with Session(engine) as s, s.begin():
        station = s.get(StationEnrollmentRow, station_id)
        if station is None:
            raise EnrollmentRefused(404, f"station {station_id!r} was never enrolled here")
        try:
            with broker() as admin:
                admin.remove_station(station_id)
        except BrokerAdminError as exc:
            raise EnrollmentRefused(
                503, f"the broker could not revoke {station_id} ({exc}); nothing changed"
            ) from exc
        if station.decommissioned_at is None:
            station.decommissioned_at = now
        s.execute(
            update(EnrollmentTokenRow)
            .where(
                EnrollmentTokenRow.station_id == station_id,
                EnrollmentTokenRow.used_at.is_(None),
                EnrollmentTokenRow.cancelled_at.is_(None),
            )
            .values(cancelled_at=now)
        )
    log.info("station %s decommissioned", station_id)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed to admins: never its text."""

    id: int
    facility: str
    station_id: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_station: str | None
    cancelled_at: datetime | None


def list_tokens(engine: Engine, *, limit: int = 200) -> list[TokenInfo]:
    with Session(engine) as s:
        rows = s.scalars(
            select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.id.desc()).limit(limit)
        )
        return [
            TokenInfo(
                r.id,
                r.facility,
                r.station_id,
                _utc(r.created_at),
                _utc(r.expires_at),
                _utc(r.used_at) if r.used_at else None,
                r.used_by_station,
                _utc(r.cancelled_at) if r.cancelled_at else None,
            )
            for r in rows
        ]
