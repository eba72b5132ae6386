"""Remote commands on the server: queued, sent when the station is online (again on each birth),
answered through ingest, expired, and audited at every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from protocol import Command, decode
from server.errors import BadRequestError, ForbiddenError, NotFoundError
from server.models import AuditEntry, RejectedMessage, Role, StationCommand
from server.ops import commands
from server.ops.commands import CommandDispatcher
from tests.server.ops_helpers import Tree, add_station, answer, ingest, org_tree, principal, status


class Wire:
    """Stands in for the MQTT link: what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Command]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, decode(Command, payload)))


@pytest.fixture
def tree(engine: Engine) -> Tree:
    t = org_tree(engine)
    add_station(engine, "st-1", t.facility)
    add_station(engine, "st-2", t.other_facility)
    return t


def create(
    engine: Engine, tree: Tree, station: str, name: str, args: dict[str, object], ttl: float = 600
) -> str:
    ops = principal(engine, Role.OPS, tree.province, f"ops-{name}-{station}")
    with Session(engine) as s, s.begin():
        row = commands.create(
            s, ops, station_id=station, name=name, args=args, ttl_s=ttl, now=datetime.now(UTC)
        )
        return row.command_id


def state(engine: Engine, command_id: str) -> StationCommand:
    with Session(engine) as s:
        row = s.get(StationCommand, command_id)
        assert row is not None
        s.expunge(row)
        return row


def test_commands_are_validated_scoped_and_audited(engine: Engine, tree: Tree) -> None:
    ops_q1 = principal(engine, Role.OPS, tree.facility, "ops-q1")
    tech = principal(engine, Role.TECHNICIAN, tree.province, "tech")
    now = datetime.now(UTC)
    with Session(engine) as s:
        with pytest.raises(BadRequestError, match="unknown command"):
            commands.create(
                s, ops_q1, station_id="st-1", name="format_disk", args={}, ttl_s=60, now=now
            )
        with pytest.raises(BadRequestError, match="pool_size"):
            commands.create(
                s,
                ops_q1,
                station_id="st-1",
                name="set_setting",
                args={"pool_size": 0},
                ttl_s=60,
                now=now,
            )
        with pytest.raises(NotFoundError):  # another facility's station
            commands.create(
                s, ops_q1, station_id="st-2", name="identify", args={}, ttl_s=60, now=now
            )
        with pytest.raises(ForbiddenError):  # technicians see stations but do not operate them
            commands.create(s, tech, station_id="st-1", name="identify", args={}, ttl_s=60, now=now)
    with Session(engine) as s, s.begin():
        row = commands.create(
            s, ops_q1, station_id="st-1", name="identify", args={}, ttl_s=60, now=now
        )
        cid = row.command_id
    row = state(engine, cid)
    assert (row.state, row.args, row.actor) == ("queued", {"duration_s": 30.0}, "ops-q1")
    assert row.expires_at == now + timedelta(seconds=60)
    with Session(engine) as s:
        audit = s.scalars(select(AuditEntry)).one()
    assert (audit.action, audit.object_id, audit.actor) == ("command.create", cid, "ops-q1")
    assert audit.organisation_id == tree.facility


def test_a_command_waits_for_an_offline_station_and_goes_out_with_its_birth(
    engine: Engine, tree: Tree
) -> None:
    wire = Wire()
    dispatcher = CommandDispatcher(engine=engine, publish=wire.publish)
    dispatcher.refresh()
    cid = create(engine, tree, "st-1", "identify", {"duration_s": 5})
    dispatcher.flush("st-1")
    assert dispatcher.send_now("st-1", birth=False) == 0  # offline: waits
    assert state(engine, cid).state == "queued"
    ingest(engine, status("st-1", "online", 1))
    assert dispatcher.send_now("st-1", birth=True) == 1
    topic, cmd = wire.sent[0]
    assert topic == "swabline/v1/stations/st-1/commands"
    assert (cmd.command_id, cmd.name, cmd.args) == (cid, "identify", {"duration_s": 5.0})
    assert cmd.server_time is not None and cmd.expires_at > cmd.server_time
    assert state(engine, cid).state == "sent" and state(engine, cid).send_count == 1
    assert dispatcher.send_now("st-1", birth=False) == 0  # already out: not repeated
    assert dispatcher.send_now("st-1", birth=True) == 1  # a new birth: sent again until answered
    ingest(engine, answer("st-1", cid, ok=True, duration_s=5))
    row = state(engine, cid)
    assert (row.state, row.ok, row.result) == ("succeeded", True, {"duration_s": 5})
    assert dispatcher.send_now("st-1", birth=True) == 0


def test_a_command_for_an_online_station_goes_out_at_once(engine: Engine, tree: Tree) -> None:
    wire = Wire()
    dispatcher = CommandDispatcher(engine=engine, publish=wire.publish)
    ingest(engine, status("st-2", "online", 7))
    cid = create(engine, tree, "st-2", "resync", {})
    assert dispatcher.send_now("st-2", birth=False) == 1
    assert [c.command_id for _, c in wire.sent] == [cid]


def test_answers_from_the_wrong_station_or_to_unknown_commands_are_kept_as_rejected(
    engine: Engine, tree: Tree
) -> None:
    cid = create(engine, tree, "st-1", "diagnostics", {})
    ingest(engine, answer("st-2", cid), answer("st-1", "no-such-command"))
    assert state(engine, cid).state == "queued"
    with Session(engine) as s:
        reasons = sorted(s.scalars(select(RejectedMessage.reason)))
    assert reasons == [
        f"answer to unknown command {cid!r}",
        "answer to unknown command 'no-such-command'",
    ]
    ingest(engine, answer("st-1", cid, ok=False, error="disk full"))
    assert (state(engine, cid).state, state(engine, cid).result) == (
        "failed",
        {"error": "disk full"},
    )


def test_unanswered_commands_expire_and_are_never_sent_afterwards(
    engine: Engine, tree: Tree
) -> None:
    wire = Wire()
    dispatcher = CommandDispatcher(engine=engine, publish=wire.publish)
    cid = create(engine, tree, "st-1", "restart", {}, ttl=30)
    later = datetime.now(UTC) + timedelta(seconds=31)
    with Session(engine) as s, s.begin():
        expired = [c.command_id for c in commands.expire(s, now=later)]
    assert expired == [cid]
    ingest(engine, status("st-1", "online", 1))
    assert dispatcher.send_now("st-1", birth=True) == 0
    assert wire.sent == []
    with Session(engine) as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["command.create", "command.expire"]
    ingest(engine, answer("st-1", cid, exit_code=75))  # a late answer is still recorded
    assert state(engine, cid).state == "succeeded"
