"""What a station's records mean: the ``data`` schema of each record ``kind``.

The station's workflow stores everything it decides as a record; the server rebuilds tubes,
pools, persons and on-site results from them. A record's ``code`` is the raw text scanned (when
there was one); ``data`` is validated against the model for its ``kind`` here.

Kinds (``Record.kind``):

- ``scan``: a raw scan with no workflow (development stations). ``code`` only.
- ``sign_in``: staff scanned their badge. ``SignIn``.
- ``setting``: staff changed the test kind, pool size or mode with a command card. ``Setting``.
- ``tube_opened``: a tube was scanned and opened. ``TubeOpened``; ``code`` = tube barcode.
- ``person_added``: a person was added to the open tube. ``PersonAdded``; ``code`` = raw QR.
- ``pool_closed``: the open tube was closed. ``PoolClosed``.
- ``undo``: the last person added was taken out again, or an empty tube's opening was taken
  back (history is never deleted). ``Undo``.
- ``result``: an on-site (rapid antigen) result entered at the station. ``OnSiteResult``.
- ``scan_rejected``: a scan was refused; the reason only, never the person's data.
  ``ScanRejected``.
- ``selftest``: ``swabline selftest`` timed the round trip to the server with it. ``SelfTest``.
- ``tube_received``: a lab station (a station registered at a lab) scanned a tube arriving at
  the lab, maybe inside a transport box it scanned before. ``TubeReceived``; ``code`` = tube
  barcode.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TestKind = Literal["rt_pcr", "rapid_antigen"]
Mode = Literal["pool", "single"]
PersonKeyType = Literal["cccd", "qid", "document"]
ResultValue = Literal["positive", "negative", "invalid"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Data):
    """A person as scanned. ``key_type``/``key`` identify them (CCCD number or QR platform QID)."""

    key_type: PersonKeyType
    key: str = Field(min_length=1, max_length=64)
    name: str | None = Field(None, max_length=200)
    name_reliable: bool = Field(
        True, description="False when the name came through a keyboard-mode scanner (mangled)."
    )
    birth_date: str | None = Field(
        None, max_length=10, description="YYYY-MM-DD; masked parts kept as '**'."
    )
    sex: Literal["male", "female"] | None = None
    address: str | None = Field(None, max_length=300)
    document_number: str | None = Field(
        None, max_length=32, description="As printed; may be masked."
    )
    old_id: str | None = Field(None, max_length=16, description="The old 9-digit CMND, if any.")
    issue_date: str | None = Field(None, max_length=10, description="YYYY-MM-DD.")
    ext: str | None = Field(None, max_length=1000, description="Health QR EXT field, raw.")


class SignIn(_Data):
    staff_id: str = Field(min_length=1, max_length=64)
    staff_name: str | None = Field(None, max_length=200)


class Setting(_Data):
    test_kind: TestKind | None = None
    pool_size: int | None = Field(None, ge=1, le=50)
    mode: Mode | None = None


class TubeOpened(_Data):
    tube: str = Field(min_length=1, max_length=64)
    mode: Mode
    pool_size: int = Field(ge=1, le=50)
    test_kind: TestKind
    staff_id: str | None = None


class PersonAdded(_Data):
    tube: str = Field(min_length=1, max_length=64)
    person: Person
    position: int = Field(ge=1, description="1-based place of the person in the pool.")
    retest: bool = Field(
        False, description="The same person was sampled here within the retest window."
    )
    staff_id: str | None = None


class PoolClosed(_Data):
    tube: str = Field(min_length=1, max_length=64)
    persons: int = Field(ge=1)
    reason: Literal["full", "card", "next_tube", "single"]


class Undo(_Data):
    """The last step at the tube taken back: its last person, or, when it had no person yet, the
    opening of the tube itself (``person_key`` absent; the tube may then be scanned again)."""

    tube: str = Field(min_length=1, max_length=64)
    undone_seq: int = Field(
        ge=1, description="The seq of the person_added (or tube_opened) record taken back."
    )
    person_key: str | None = Field(
        None, min_length=1, max_length=64, description="Absent when the tube opening is undone."
    )


class OnSiteResult(_Data):
    tube: str = Field(min_length=1, max_length=64)
    result: ResultValue
    staff_id: str | None = None


class ScanRejected(_Data):
    reason: str = Field(min_length=1, max_length=200)
    signal: str = Field(min_length=1, max_length=32, description="The signal staff were shown.")


class TubeReceived(_Data):
    tube: str = Field(min_length=1, max_length=64)
    batch: str | None = Field(
        None, min_length=1, max_length=64, description="The transport box label, if scanned."
    )
    staff_id: str | None = None


class Scan(_Data):
    """``scan`` records carry nothing in ``data``."""


class SelfTest(_Data):
    """The checks a self-test passed or failed before it sent this record (name -> passed)."""

    checks: dict[str, bool] = Field(default_factory=dict)


DATA_MODELS: dict[str, type[_Data]] = {
    "scan": Scan,
    "sign_in": SignIn,
    "setting": Setting,
    "tube_opened": TubeOpened,
    "person_added": PersonAdded,
    "pool_closed": PoolClosed,
    "undo": Undo,
    "result": OnSiteResult,
    "scan_rejected": ScanRejected,
    "selftest": SelfTest,
    "tube_received": TubeReceived,
}
