"""Request and response models of the JSON API (they make the published OpenAPI document).

Every text a client sends goes through ``Text``: no NUL characters and valid UTF-8 (PostgreSQL
refuses NUL in text; SQLite refuses lone surrogates), so bad input is a 422, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from protocol.topics import STATION_ID_PATTERN
from server.models import FacilityKind, OrgKind, Role
from server.orgs import CODE_PATTERN
from server.users import USERNAME_PATTERN

MAX_ID = 2**31 - 1
"""Organisation, user and token ids are 32-bit columns (PostgreSQL refuses larger values)."""
MAX_BIG_ID = 2**63 - 1


def _clean(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text") from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date out of range") from None


Text = Annotated[str, AfterValidator(_clean)]
When = Annotated[datetime, AfterValidator(_utc)]
"""A timestamp; without a zone it is taken as UTC."""
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
PathBigId = Annotated[int, Path(ge=1, le=MAX_BIG_ID)]
OrgIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
StationIdPath = Annotated[str, Path(pattern=f"^{STATION_ID_PATTERN}$")]
TubeCodePath = Annotated[Text, Path(min_length=1, max_length=64)]
PageNo = Annotated[int, Query(ge=1, le=100_000, description="1-based page number.")]
PageSize = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
Locale = Literal["vi", "en"]

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a search."""

    items: list[T]
    total: int = Field(description="Matches in the caller's scope, all pages together.")
    page: int
    page_size: int


class Problem(BaseModel):
    """Every refused request (4xx) has this body."""

    detail: str
    code: str


# --- auth ----------------------------------------------------------------------------------


class LoginIn(_In):
    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=256)]


class GrantOut(_Out):
    role: Role
    organisation_id: int
    organisation_code: str


class MeOut(_Out):
    id: int
    username: str
    display_name: str
    locale: str
    roles: list[GrantOut]
    permissions: list[str]


class LoginOut(BaseModel):
    user: MeOut
    csrf_token: str = Field(description="Echo it in X-CSRF-Token on unsafe requests.")
    expires_at: datetime


class MePatch(_In):
    display_name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    locale: Locale | None = None
    password: Annotated[Text, Field(min_length=10, max_length=256)] | None = None
    current_password: Annotated[Text, Field(max_length=256)] | None = None


class TokenIn(_In):
    name: Annotated[Text, Field(min_length=1, max_length=100)]
    days: int | None = Field(None, ge=1, le=3650, description="Lifetime (default: server's).")


class TokenOut(_Out):
    id: int
    name: str | None
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret: shown once, send as 'Authorization: Bearer'.")


# --- organisations -----------------------------------------------------------------------


class OrganisationIn(_In):
    code: Annotated[str, Field(pattern=CODE_PATTERN)]
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    kind: OrgKind
    parent_id: Id | None = None
    facility_kind: FacilityKind | None = None


class OrganisationPatch(_In):
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    parent_id: Id | None = None
    facility_kind: FacilityKind | None = None
    active: bool | None = Field(None, description="false deactivates (children first).")


class OrganisationOut(_Out):
    id: int
    parent_id: int | None
    kind: OrgKind
    facility_kind: FacilityKind | None
    code: str
    name: str
    path: str
    active: bool
    created_at: datetime
    updated_at: datetime


# --- users ---------------------------------------------------------------------------------


class GrantIn(_In):
    role: Role
    organisation_id: Id


class UserIn(_In):
    username: Annotated[str, Field(pattern=USERNAME_PATTERN)]
    display_name: Annotated[Text, Field(min_length=1, max_length=200)]
    password: Annotated[Text, Field(min_length=10, max_length=256)]
    locale: Locale = "vi"
    roles: Annotated[list[GrantIn], Field(min_length=1, max_length=50)]


class UserPatch(_In):
    display_name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    password: Annotated[Text, Field(min_length=10, max_length=256)] | None = None
    locale: Locale | None = None
    active: bool | None = Field(None, description="false deactivates and revokes sessions.")
    roles: Annotated[list[GrantIn], Field(min_length=1, max_length=50)] | None = Field(
        None, description="Replaces every role of the user."
    )


class UserOut(_Out):
    id: int
    username: str
    display_name: str
    locale: str
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    roles: list[GrantOut]


# --- stations ------------------------------------------------------------------------------


class StationIn(_In):
    station_id: Annotated[str, Field(pattern=f"^{STATION_ID_PATTERN}$")]
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    facility_id: Id | None = Field(
        None, description="Required unless the caller is scoped at a province."
    )


class StationPatch(_In):
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    facility_id: Id | None = None
    active: bool | None = Field(None, description="false deactivates (records still stored).")


class StationOut(_Out):
    station_id: str
    name: str | None
    facility_id: int | None
    active: bool
    state: str
    bd_seq: int
    agent_version: str | None
    last_seen_at: datetime | None
    max_seq: int
    records: int
    outbox_depth: int | None
    last_heartbeat_at: datetime | None


# --- data ----------------------------------------------------------------------------------


class RecordOut(_Out):
    record_id: str
    station_id: str
    seq: int
    kind: str
    code: str | None
    data: dict[str, Any]
    wall_time: float
    clock_synced: bool
    received_at: datetime


class PersonOut(_Out):
    id: int
    key_type: str
    key: str
    name: str | None
    name_reliable: bool
    birth_date: str | None
    sex: str | None
    first_seen_at: datetime
    last_seen_at: datetime


class PersonDetailOut(PersonOut):
    address: str | None
    document_number: str | None
    old_id: str | None
    issue_date: str | None
    pools: list[PoolMemberOut]


class TubeOut(_Out):
    id: int
    code: str
    station_id: str | None
    facility_id: int | None
    lab_id: int | None
    test_kind: str | None
    mode: str | None
    pool_size: int | None
    status: str
    result: str | None
    open_count: int
    opened_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    persons_at_close: int | None


class PoolMemberOut(_Out):
    tube_code: str
    person_id: int
    person_key_type: str
    person_key: str
    person_name: str | None
    position: int
    station_id: str
    seq: int
    retest: bool
    added_at: datetime
    undone_at: datetime | None


class SampleEventOut(_Out):
    id: int
    tube_code: str
    kind: str
    at: datetime
    recorded_at: datetime
    facility_id: int | None
    station_id: str | None
    record_id: str | None
    user_id: int | None
    details: dict[str, Any] | None


class ResultOut(_Out):
    id: int
    value: str
    test_kind: str | None
    source: str
    facility_id: int | None
    station_id: str | None
    reported_at: datetime
    entered_at: datetime
    entered_by: int | None
    supersedes_id: int | None
    superseded_at: datetime | None
    correction_reason: str | None


class TubeDetailOut(TubeOut):
    members: list[PoolMemberOut]
    events: list[SampleEventOut]
    results: list[ResultOut]


class AuditOut(_Out):
    id: int
    at: datetime
    user_id: int | None
    actor: str
    action: str
    object_type: str
    object_id: str
    organisation_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    remote_addr: str | None


PersonDetailOut.model_rebuild()
