"""Station enrollment: single-use, expiring tokens traded for a station id and MQTT credentials.

A token is made for a **sampling facility** of the organisation tree (an ``organisations`` row
of kind ``facility`` whose ``facility_kind`` is ``sampling`` or ``both``), by a caller whose
``station.write`` scope covers it (``create_token``). It is shown once and stored only as its
SHA-256 (a token carries 144 random bits, so an unsalted hash cannot be reversed). A station
presents it to ``POST /api/enroll`` (``enroll``): the server claims the token (single use, in
the same transaction), allocates the station id ``<prefix>-<NN>`` (``station_prefix``), puts the
station in the registry (``stations``: facility, name, active), makes a random MQTT password,
registers it with the broker (Mosquitto's dynamic security plugin, or an EMQX cluster's
built-in database: ``enrollment.broker_type``) and answers with the credentials. A
token made for an existing station re-provisions it: the station keeps its id, the broker gets
a new password and closes any session using the old one. ``decommission`` deletes a station's
broker credentials (its session is closed at once), marks it inactive and cancels its unused
tokens.

Access follows ``server.access``: a role without ``station.write`` is refused (403); a
facility, station or token outside the caller's scope does not exist for them (404). Every
write is audited in its own transaction; an enrollment's actor is the token
(``enrollment-token:<id>``), since no user is logged in on the station.

The broker is changed inside the database transaction of ``enroll``: if the broker cannot be
reached the transaction rolls back and the token stays usable; if the commit fails after the
broker was changed, a new station's credentials are removed again.
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
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from protocol.topics import STATION_ID_PATTERN
from server.access import Permission, Principal, Scope
from server.audit import audit, snapshot
from server.broker_admin import RESERVED_PREFIX, DynsecBrokerAdmin
from server.config import EnrollmentConfig, ServerConfig
from server.errors import (
    BadRequestError,
    BrokerAdminError,
    ConfigError,
    ConflictError,
    EnrollmentRefused,
    NotFoundError,
)
from server.models import (
    EnrollmentTokenRow,
    FacilityKind,
    Organisation,
    OrgKind,
    StationEnrollmentRow,
    StationRow,
)

__all__ = [
    "EnrollmentRefused",
    "EnrollmentTokenRow",
    "StationEnrollmentRow",
]

log = logging.getLogger(__name__)

_STATION_ID = re.compile(STATION_ID_PATTERN)
TOKEN_BYTES = 18  # 144 bits; 24 characters of base64url
SAMPLING_KINDS = (FacilityKind.SAMPLING.value, FacilityKind.BOTH.value)
RESERVED_SUBSTITUTE = "st-"
"""Put before a prefix that would begin with the broker's reserved ``swabline-``."""


class StationCredentials(Protocol):
    """What enrollment needs from the broker: ``DynsecBrokerAdmin`` (Mosquitto) or
    ``EmqxBrokerAdmin`` (EMQX), chosen by ``enrollment.broker_type``."""

    def put_station(self, station_id: str, password: str) -> None: ...

    def remove_station(self, station_id: str) -> None: ...


BrokerAdminFactory = Callable[[], AbstractContextManager[StationCredentials]]


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where enrolled stations connect, and the CA they must trust."""

    host: str
    port: int
    ca_pem: str | None


@dataclass(frozen=True, slots=True)
class EnrollmentService:
    """What the web app needs to enroll and decommission stations (``app.state.enrollment``)."""

    broker_admin: BrokerAdminFactory
    endpoint: BrokerEndpoint
    max_token_lifetime: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    """The token's text: shown once, never stored."""
    id: int
    facility_id: int
    facility_code: str
    facility_name: str
    expires_at: datetime
    station_id: str | None
    station_name: str | None


@dataclass(frozen=True, slots=True)
class Enrolled:
    station_id: str
    facility: str
    """The facility's code."""
    mqtt_password: str
    seq_floor: int
    reprovisioned: bool


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed to technicians and admins: never its text."""

    id: int
    facility_id: int
    facility_code: str
    facility_name: str
    station_id: str | None
    station_name: str | None
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None
    used_by_station: str | None
    cancelled_at: datetime | None
    state: str
    """``outstanding``, ``used``, ``cancelled`` or ``expired``."""


@dataclass(frozen=True, slots=True)
class FacilityInfo:
    """A sampling facility a caller may enroll stations into."""

    id: int
    code: str
    name: str
    parent_name: str | None
    prefix: str
    stations: int
    """Enrolled stations that are not decommissioned."""
    outstanding_tokens: int


@dataclass(frozen=True, slots=True)
class EnrolledStation:
    station_id: str
    name: str | None
    facility_id: int | None
    facility_code: str | None
    facility_name: str | None
    active: bool
    state: str
    last_seen_at: datetime | None
    enrolled_at: datetime
    credentials_issued_at: datetime
    credentials_generation: int
    hostname: str | None
    decommissioned_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def station_prefix(code: str) -> str:
    """The station-id prefix of a facility, derived from its organisation code.

    Lower case; every run of characters other than ``a-z`` and ``0-9`` becomes one ``-``;
    leading and trailing ``-`` are dropped (``HN-CG.TYT_2`` -> ``hn-cg-tyt-2``). A prefix that
    would begin with the broker's reserved ``swabline-`` gets ``st-`` in front.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", code.lower()).strip("-")[:36].strip("-")
    if not slug:
        raise BadRequestError(
            f"facility code {code!r} has no letter or digit to make station ids from"
        )
    if f"{slug}-".startswith(RESERVED_PREFIX):
        slug = RESERVED_SUBSTITUTE + slug
    return slug


def parse_lifetime(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> a ``timedelta``."""
    match = re.fullmatch(r"\s*(\d{1,7})\s*([smhd])\s*", text)
    if not match:
        raise BadRequestError(f"invalid lifetime {text!r}: use e.g. 30m, 2h or 1d")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


# --- facilities and stations in scope -----------------------------------------------------


def _check_sampling(org: Organisation) -> Organisation:
    if org.kind != OrgKind.FACILITY.value:
        raise BadRequestError(
            f"{org.code!r} is a {org.kind}, not a facility: stations are enrolled into "
            "sampling facilities"
        )
    if org.facility_kind not in SAMPLING_KINDS:
        raise BadRequestError(f"{org.code!r} is a lab, not a sampling facility")
    if not org.active:
        raise ConflictError(f"facility {org.code!r} is deactivated")
    return org


def sampling_facility(
    db: Session,
    principal: Principal,
    *,
    facility_id: int | None = None,
    code: str | None = None,
) -> Organisation:
    """The sampling facility ``facility_id`` (or with organisation ``code``; an exact match
    first, else the only case-insensitive one) in the caller's ``station.write`` scope."""
    scope = principal.require(Permission.STATION_WRITE)
    org: Organisation | None = None
    if facility_id is not None:
        org = db.get(Organisation, facility_id)
        missing = f"no facility {facility_id}"
    elif code is not None:
        org = db.scalar(select(Organisation).where(Organisation.code == code))
        if org is None:
            alike = db.scalars(
                select(Organisation).where(func.lower(Organisation.code) == code.lower())
            ).all()
            org = alike[0] if len(alike) == 1 else None
        missing = f"no facility with code {code!r}"
    else:
        raise BadRequestError("give a facility")
    if org is None or not scope.covers_path(org.path):
        raise NotFoundError(missing)
    return _check_sampling(org)


def _enrolled_station(
    db: Session, scope: Scope, station_id: str
) -> tuple[StationRow, StationEnrollmentRow, Organisation | None]:
    station = db.get(StationRow, station_id)
    org = None
    if station is not None and station.facility_id is not None:
        org = db.get(Organisation, station.facility_id)
    if station is None or not scope.covers_path(org.path if org else None):
        raise NotFoundError(f"no station {station_id!r}")
    enrollment = db.get(StationEnrollmentRow, station_id)
    if enrollment is None:
        raise NotFoundError(f"station {station_id!r} was never enrolled here")
    return station, enrollment, org


def _station_snapshot(
    station: StationRow, enrollment: StationEnrollmentRow, **extra: Any
) -> dict[str, Any]:
    return {**(snapshot(station) or {}), "enrollment": snapshot(enrollment), **extra}


# --- tokens ------------------------------------------------------------------------------


def create_token(
    db: Session,
    principal: Principal,
    *,
    facility: Organisation | None,
    lifetime: timedelta,
    max_lifetime: timedelta = timedelta(days=7),
    station_id: str | None = None,
    station_name: str | None = None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> IssuedToken:
    """Make a single-use enrollment token for ``facility``; with ``station_id``, one that
    re-provisions that station (its facility is the station's). The caller commits."""
    scope = principal.require(Permission.STATION_WRITE)
    if lifetime <= timedelta(0) or lifetime > max_lifetime:
        raise BadRequestError(
            f"a token lives between 1 second and {max_lifetime} (asked: {lifetime})"
        )
    if station_id is not None:
        _station, enrollment, org = _enrolled_station(db, scope, station_id)
        if enrollment.decommissioned_at is not None:
            raise EnrollmentRefused(
                410,
                f"station {station_id} was decommissioned on "
                f"{_when(enrollment.decommissioned_at)}: enroll a new station instead",
            )
        if org is None:
            raise BadRequestError(f"station {station_id} belongs to no facility")
        if facility is not None and facility.id != org.id:
            raise BadRequestError(f"station {station_id} belongs to facility {org.code}")
        facility = org
    elif facility is None:
        raise BadRequestError("a token needs a facility (or a station to re-provision)")
    if not scope.covers_path(facility.path):
        raise NotFoundError(f"no facility {facility.id}")
    _check_sampling(facility)
    station_prefix(facility.code)  # refuse now a code that cannot make station ids
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = EnrollmentTokenRow(
        token_sha256=hash_token(token),
        facility_id=facility.id,
        station_id=station_id,
        station_name=station_name or None,
        created_at=now,
        expires_at=now + lifetime,
        created_by=principal.actor[:100],
        created_by_user_id=principal.user_id,
    )
    db.add(row)
    db.flush()
    audit(
        db,
        principal,
        "enrollment_token.create",
        object_type="enrollment_token",
        object_id=row.id,
        organisation_id=facility.id,
        before=None,
        after=snapshot(row),
        remote_addr=remote_addr,
    )
    return IssuedToken(
        token=token,
        id=row.id,
        facility_id=facility.id,
        facility_code=facility.code,
        facility_name=facility.name,
        expires_at=row.expires_at,
        station_id=station_id,
        station_name=row.station_name,
    )


def _state(row: EnrollmentTokenRow, now: datetime) -> str:
    if row.used_at is not None:
        return "used"
    if row.cancelled_at is not None:
        return "cancelled"
    return "expired" if row.expires_at <= now else "outstanding"


def _info(row: EnrollmentTokenRow, org: Organisation, now: datetime) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        facility_id=org.id,
        facility_code=org.code,
        facility_name=org.name,
        station_id=row.station_id,
        station_name=row.station_name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        created_by=row.created_by,
        used_at=row.used_at,
        used_by_station=row.used_by_station,
        cancelled_at=row.cancelled_at,
        state=_state(row, now),
    )


def list_tokens(
    db: Session,
    principal: Principal,
    *,
    outstanding: bool = False,
    facility_id: int | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> list[TokenInfo]:
    """Tokens of facilities in the caller's scope, newest first; ``outstanding``: only those
    still usable (not used, cancelled or expired)."""
    scope = principal.require(Permission.STATION_WRITE)
    now = now or datetime.now(UTC)
    stmt = (
        select(EnrollmentTokenRow, Organisation)
        .join(Organisation, Organisation.id == EnrollmentTokenRow.facility_id)
        .where(scope.filter(EnrollmentTokenRow.facility_id))
    )
    if outstanding:
        stmt = stmt.where(
            EnrollmentTokenRow.used_at.is_(None),
            EnrollmentTokenRow.cancelled_at.is_(None),
            EnrollmentTokenRow.expires_at > now,
        )
    if facility_id is not None:
        stmt = stmt.where(EnrollmentTokenRow.facility_id == facility_id)
    rows = db.execute(stmt.order_by(EnrollmentTokenRow.id.desc()).limit(limit)).all()
    return [_info(row, org, now) for row, org in rows]


def check_usable(row: EnrollmentTokenRow | None, now: datetime) -> EnrollmentTokenRow:
    """The token row if it can still enroll a station, else the refusal with its reason."""
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
    if row.expires_at <= now:
        raise EnrollmentRefused(
            410, f"this enrollment token expired on {_when(row.expires_at)}: ask for a new one"
        )
    return row


def usable_token(
    db: Session, principal: Principal, token: str, *, now: datetime | None = None
) -> TokenInfo:
    """A token in the caller's scope that can still be used (to print its card)."""
    scope = principal.require(Permission.STATION_WRITE)
    now = now or datetime.now(UTC)
    row = db.scalar(
        select(EnrollmentTokenRow).where(EnrollmentTokenRow.token_sha256 == hash_token(token))
    )
    org = db.get(Organisation, row.facility_id) if row is not None else None
    if row is None or org is None or not scope.covers_path(org.path):
        raise NotFoundError("unknown enrollment token")
    check_usable(row, now)
    return _info(row, org, now)


def cancel_token(
    db: Session,
    principal: Principal,
    token_id: int,
    *,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> TokenInfo:
    """Cancel an unused token (a lost card). Cancelling twice is harmless. The caller commits."""
    scope = principal.require(Permission.STATION_WRITE)
    now = now or datetime.now(UTC)
    row = db.get(EnrollmentTokenRow, token_id)
    org = db.get(Organisation, row.facility_id) if row is not None else None
    if row is None or org is None or not scope.covers_path(org.path):
        raise NotFoundError(f"no enrollment token {token_id}")
    if row.used_at is not None:
        raise ConflictError(
            f"enrollment token {token_id} was already used by station {row.used_by_station}"
        )
    if row.cancelled_at is None:
        before = snapshot(row)
        row.cancelled_at = now
        db.flush()
        audit(
            db,
            principal,
            "enrollment_token.cancel",
            object_type="enrollment_token",
            object_id=row.id,
            organisation_id=org.id,
            before=before,
            after=snapshot(row),
            remote_addr=remote_addr,
        )
    return _info(row, org, now)


# --- enrolling ---------------------------------------------------------------------------


def token_principal(token_id: int) -> Principal:
    """Who an enrollment is done by: the token (no user is logged in on a station)."""
    return Principal(user_id=None, username=f"enrollment-token:{token_id}", via="enrollment")


def enroll(
    engine: Engine,
    broker: BrokerAdminFactory,
    *,
    token: str,
    hostname: str | None = None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> Enrolled:
    """Trade ``token`` for a station id and fresh MQTT credentials, registered on the broker."""
    now = now or datetime.now(UTC)
    password = secrets.token_urlsafe(32)
    result: Enrolled | None = None
    try:
        with Session(engine) as s, s.begin():
            row = check_usable(
                s.scalar(
                    select(EnrollmentTokenRow).where(
                        EnrollmentTokenRow.token_sha256 == hash_token(token)
                    )
                ),
                now,
            )
            facility = s.get(Organisation, row.facility_id)
            if facility is None or not facility.active:
                raise EnrollmentRefused(
                    410, "the facility of this enrollment token was deactivated"
                )
            station, enrollment, before = _station_for(s, row, facility, now, hostname)
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
                facility=facility.code,
                mqtt_password=password,
                seq_floor=int(seq_floor or 0),
                reprovisioned=before is not None,
            )
            audit(
                s,
                token_principal(row.id),
                "station.reprovision" if result.reprovisioned else "station.enroll",
                object_type="station",
                object_id=station.station_id,
                organisation_id=station.facility_id,
                before=before,
                after=_station_snapshot(station, enrollment, token_id=row.id),
                remote_addr=remote_addr,
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


def _station_for(
    s: Session,
    row: EnrollmentTokenRow,
    facility: Organisation,
    now: datetime,
    hostname: str | None,
) -> tuple[StationRow, StationEnrollmentRow, dict[str, Any] | None]:
    """The station a token enrolls, changed as enrolling changes it, and its earlier state
    (None for a new station)."""
    if row.station_id is not None:
        station = s.get(StationRow, row.station_id)
        enrollment = s.get(StationEnrollmentRow, row.station_id)
        if station is None or enrollment is None or enrollment.decommissioned_at is not None:
            raise EnrollmentRefused(410, f"station {row.station_id} was decommissioned")
        before = _station_snapshot(station, enrollment)
        enrollment.credentials_issued_at = now
        enrollment.credentials_generation += 1
        enrollment.hostname = hostname or enrollment.hostname
        station.active = True
        if row.station_name:
            station.name = row.station_name
        station.updated_at = now
        return station, enrollment, before
    prefix = station_prefix(facility.code)
    number = 1 + int(
        s.scalar(
            select(func.max(StationEnrollmentRow.number)).where(
                StationEnrollmentRow.prefix == prefix
            )
        )
        or 0
    )
    while s.get(StationRow, f"{prefix}-{number:02d}") is not None:
        number += 1  # an id taken by a station registered or heard of without enrollment
    station_id = f"{prefix}-{number:02d}"
    if not _STATION_ID.fullmatch(station_id):
        raise EnrollmentRefused(400, f"station id {station_id!r} would be invalid")
    station = StationRow(
        station_id=station_id,
        state="unknown",
        bd_seq=-1,
        max_seq=0,
        record_count=0,
        facility_id=facility.id,
        name=row.station_name or f"{facility.name[:190]} {number:02d}",
        active=True,
        created_at=now,
        updated_at=now,
    )
    s.add(station)
    s.flush()
    enrollment = StationEnrollmentRow(
        station_id=station_id,
        prefix=prefix,
        number=number,
        enrolled_at=now,
        credentials_issued_at=now,
        credentials_generation=1,
        hostname=hostname,
    )
    s.add(enrollment)
    s.flush()
    return station, enrollment, None


# --- decommissioning ---------------------------------------------------------------------


def decommission(
    db: Session,
    principal: Principal,
    broker: BrokerAdminFactory,
    station_id: str,
    *,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Revoke a station: the broker deletes its credentials and closes its session at once;
    the station is marked decommissioned and inactive, its unused tokens are cancelled.

    The caller commits. The broker is changed first: if the commit then fails the station is
    already refused by the broker and doing it again completes it. Returns whether anything
    changed in the database (doing it twice is harmless).
    """
    scope = principal.require(Permission.STATION_WRITE)
    now = now or datetime.now(UTC)
    station, enrollment, _org = _enrolled_station(db, scope, station_id)
    before = _station_snapshot(station, enrollment)
    try:
        with broker() as admin:
            admin.remove_station(station_id)
    except BrokerAdminError as exc:
        raise EnrollmentRefused(
            503, f"the broker could not revoke {station_id} ({exc}); nothing changed"
        ) from exc
    if enrollment.decommissioned_at is None:
        enrollment.decommissioned_at = now
    if station.active:
        station.active = False
        station.updated_at = now
    cancelled = db.execute(
        update(EnrollmentTokenRow)
        .where(
            EnrollmentTokenRow.station_id == station_id,
            EnrollmentTokenRow.used_at.is_(None),
            EnrollmentTokenRow.cancelled_at.is_(None),
        )
        .values(cancelled_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    db.flush()
    after = _station_snapshot(station, enrollment)
    if before == after and not cancelled:
        return False
    audit(
        db,
        principal,
        "station.decommission",
        object_type="station",
        object_id=station_id,
        organisation_id=station.facility_id,
        before=before,
        after={**after, "tokens_cancelled": cancelled},
        remote_addr=remote_addr,
    )
    log.info("station %s decommissioned by %s", station_id, principal.actor)
    return True


# --- what the enrollment page lists ------------------------------------------------------


def facilities(
    db: Session, principal: Principal, *, now: datetime | None = None
) -> list[FacilityInfo]:
    """The active sampling facilities in the caller's ``station.write`` scope, in tree order."""
    scope = principal.require(Permission.STATION_WRITE)
    now = now or datetime.now(UTC)
    orgs = db.scalars(
        select(Organisation)
        .where(
            Organisation.id.in_(scope.org_ids()),
            Organisation.kind == OrgKind.FACILITY.value,
            Organisation.facility_kind.in_(SAMPLING_KINDS),
            Organisation.active.is_(True),
        )
        .order_by(Organisation.path)
    ).all()
    ids = [o.id for o in orgs]
    parents = dict(
        db.execute(
            select(Organisation.id, Organisation.name).where(
                Organisation.id.in_({o.parent_id for o in orgs if o.parent_id is not None})
            )
        ).all()
    )
    stations = dict(
        db.execute(
            select(StationRow.facility_id, func.count())
            .join(StationEnrollmentRow, StationEnrollmentRow.station_id == StationRow.station_id)
            .where(
                StationRow.facility_id.in_(ids), StationEnrollmentRow.decommissioned_at.is_(None)
            )
            .group_by(StationRow.facility_id)
        ).all()
    )
    tokens = dict(
        db.execute(
            select(EnrollmentTokenRow.facility_id, func.count())
            .where(
                EnrollmentTokenRow.facility_id.in_(ids),
                EnrollmentTokenRow.used_at.is_(None),
                EnrollmentTokenRow.cancelled_at.is_(None),
                EnrollmentTokenRow.expires_at > now,
            )
            .group_by(EnrollmentTokenRow.facility_id)
        ).all()
    )
    out = []
    for o in orgs:
        try:
            prefix = station_prefix(o.code)
        except BadRequestError:
            continue
        out.append(
            FacilityInfo(
                id=o.id,
                code=o.code,
                name=o.name,
                parent_name=parents.get(o.parent_id) if o.parent_id is not None else None,
                prefix=prefix,
                stations=int(stations.get(o.id, 0)),
                outstanding_tokens=int(tokens.get(o.id, 0)),
            )
        )
    return out


def enrolled_stations(
    db: Session,
    principal: Principal,
    *,
    facility_id: int | None = None,
    station_id: str | None = None,
) -> list[EnrolledStation]:
    """Stations that were enrolled, in the caller's ``station.write`` scope (decommissioned
    ones too), by station id."""
    scope = principal.require(Permission.STATION_WRITE)
    stmt = (
        select(StationRow, StationEnrollmentRow, Organisation)
        .join(StationEnrollmentRow, StationEnrollmentRow.station_id == StationRow.station_id)
        .outerjoin(Organisation, Organisation.id == StationRow.facility_id)
        .where(scope.filter(StationRow.facility_id))
    )
    if facility_id is not None:
        stmt = stmt.where(StationRow.facility_id == facility_id)
    if station_id is not None:
        stmt = stmt.where(StationRow.station_id == station_id)
    return [
        EnrolledStation(
            station_id=st.station_id,
            name=st.name,
            facility_id=st.facility_id,
            facility_code=org.code if org else None,
            facility_name=org.name if org else None,
            active=st.active,
            state=st.state,
            last_seen_at=st.last_seen_at,
            enrolled_at=en.enrolled_at,
            credentials_issued_at=en.credentials_issued_at,
            credentials_generation=en.credentials_generation,
            hostname=en.hostname,
            decommissioned_at=en.decommissioned_at,
        )
        for st, en, org in db.execute(stmt.order_by(StationRow.station_id)).all()
    ]


# --- configuration -----------------------------------------------------------------------


def broker_admin_from_config(config: ServerConfig) -> BrokerAdminFactory:
    """Connections as the broker admin: to Mosquitto over the server's own (loopback) broker
    listener, or to an EMQX cluster's REST API (``enrollment.broker_type``)."""
    settings = _settings(config)
    password = _read(settings.broker_admin_password_file, "enrollment.broker_admin_password_file")
    if settings.broker_type == "emqx":
        from server.emqx_admin import EmqxBrokerAdmin

        api_url = settings.broker_api_url
        if api_url is None:  # the configuration's validator requires it
            raise ConfigError("enrollment.broker_api_url: required when broker_type is 'emqx'")
        ca_file = str(settings.ca_file) if settings.ca_file else None

        def connect_emqx() -> EmqxBrokerAdmin:
            return EmqxBrokerAdmin(
                api_url=api_url,
                api_key=settings.broker_admin_username,
                api_secret=password,
                ca_file=ca_file,
            )

        return connect_emqx

    def connect() -> DynsecBrokerAdmin:
        return DynsecBrokerAdmin(
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=settings.broker_admin_username,
            password=password,
        )

    return connect


def service_from_config(config: ServerConfig) -> EnrollmentService:
    """Enrollment as the server's ``[enrollment]`` section describes it."""
    settings = _settings(config)
    ca_pem = _read(settings.ca_file, "enrollment.ca_file") if settings.ca_file else None
    return EnrollmentService(
        broker_admin=broker_admin_from_config(config),
        endpoint=BrokerEndpoint(settings.broker_host, settings.broker_port, ca_pem),
        max_token_lifetime=timedelta(seconds=settings.max_token_lifetime_s),
    )


def _settings(config: ServerConfig) -> EnrollmentConfig:
    if config.enrollment is None:
        raise ConfigError("enrollment: the [enrollment] section is missing")
    return config.enrollment


def _read(path: Path, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text
