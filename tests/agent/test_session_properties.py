"""Property tests over generated scan sequences: whatever staff scan, in whatever order, the
session never pairs wrongly, and the stored records always rebuild the live session."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codes import CodeRules, CommandCode, TubeCode, classify
from agent.fakes import FakeClock
from agent.ports import Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from protocol import Record
from tests.agent.people import PERSONS, Driver

TUBES = [f"KG-RG-{n:06d}" for n in range(1, 7)]
CARDS = [
    "SWABLINE:CMD:CLOSE",
    "SWABLINE:CMD:UNDO",
    "SWABLINE:CMD:UNDO",
    "SWABLINE:CMD:POOL:1",
    "SWABLINE:CMD:POOL:2",
    "SWABLINE:CMD:POOL:4",
    "SWABLINE:CMD:MODE:SINGLE",
    "SWABLINE:CMD:MODE:POOL",
    "SWABLINE:CMD:TEST:RAPID_ANTIGEN",
    "SWABLINE:CMD:TEST:RT_PCR",
    "SWABLINE:CMD:RESULT:POSITIVE",
    "SWABLINE:CMD:RESULT:NEGATIVE",
    "SWABLINE:CMD:RESULT:INVALID",
    "SWABLINE:STAFF:nv-01",
    "SWABLINE:STAFF:nv-02:Lê Thị Hoa",
]
WINDOW_S = 3600.0
RULES = CodeRules.build([r"KG-RG-\d{6}"])

Scan_ = tuple[str, bool]
Advance = float
Action = Scan_ | Advance

_tube = st.tuples(st.sampled_from(TUBES), st.just(False))
_person = st.tuples(st.sampled_from(PERSONS), st.booleans())
_card = st.tuples(st.sampled_from(CARDS), st.just(False))
_result = st.tuples(st.sampled_from(CARDS[10:13]), st.just(False))
_undo = st.tuples(st.just("SWABLINE:CMD:UNDO"), st.just(False))
_garbage = st.tuples(st.sampled_from(["garbage", "", "KG-RG-1"]), st.just(False))
# repeated strategies weigh the mix towards what staff scan most
actions = st.lists(
    st.one_of(
        _tube, _tube, _tube, _person, _person, _person, _person, _card, _card,
        _result, _undo, _garbage, st.floats(0, 2 * WINDOW_S),
    ),
    max_size=50,
)  # fmt: skip


@dataclass
class _PTube:
    size: int
    kind: str
    opened_seq: int
    persons: dict[int, str] = field(default_factory=dict)  # seq -> key, in order
    open: bool = True
    result: str | None = None


@dataclass
class Projection:
    """What a server would rebuild from the records, checking every wrong-pairing rule."""

    tubes: dict[str, _PTube] = field(default_factory=dict)
    open_tube: str | None = None
    last: str | None = None

    def apply(self, r: Record) -> None:
        d = r.data
        match r.kind:
            case "tube_opened":
                assert self.open_tube is None, "a tube opened while another was open"
                assert d["tube"] not in self.tubes, "a used tube was opened again"
                self.tubes[d["tube"]] = _PTube(d["pool_size"], d["test_kind"], r.seq)
                self.open_tube = self.last = d["tube"]
            case "person_added":
                assert d["tube"] == self.open_tube, "a person added to a tube that is not open"
                t = self.tubes[d["tube"]]
                key = d["person"]["key"]
                assert key not in t.persons.values(), "a person twice in one pool"
                assert len(t.persons) < t.size, "a pool beyond its size"
                assert d["position"] == len(t.persons) + 1
                t.persons[r.seq] = key
            case "pool_closed":
                assert d["tube"] == self.open_tube
                t = self.tubes[d["tube"]]
                assert d["persons"] == len(t.persons) >= 1
                t.open, self.open_tube = False, None
            case "undo":
                assert d["tube"] == self.last, "undo reached beyond the last tube"
                t = self.tubes[d["tube"]]
                assert t.result is None
                if "person_key" in d:
                    seq, key = list(t.persons.items())[-1]
                    assert (seq, key) == (d["undone_seq"], d["person_key"])
                    del t.persons[seq]
                    t.open, self.open_tube = True, d["tube"]
                else:
                    assert t.open and not t.persons and d["undone_seq"] == t.opened_seq
                    del self.tubes[d["tube"]]
                    self.open_tube = self.last = None
            case "result":
                t = self.tubes[d["tube"]]
                assert t.kind == "rapid_antigen" and t.persons and t.result is None
                assert not t.open, "a result for a tube still open"
                t.result = d["result"]


def _pending_subset(records: list[Record], rng: random.Random) -> list[Record]:
    return [r for r in records if rng.random() < 0.5]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
@given(
    actions,
    st.integers(1, 4),
    st.sampled_from(["pool", "single"]),
    st.sampled_from(["rt_pcr", "rapid_antigen"]),
    st.booleans(),
    st.integers(1, 7),
    st.randoms(use_true_random=False),
)
def test_generated_scan_sequences_keep_every_invariant(
    steps: list[Action],
    pool_size: int,
    mode: str,
    test_kind: str,
    require_staff: bool,
    prune_every: int,
    rng: random.Random,
) -> None:
    clock = FakeClock()
    workflow = SamplingWorkflow(
        WorkflowSettings(
            rules=RULES,
            pool_size=pool_size,
            mode=mode,  # type: ignore[arg-type]
            test_kind=test_kind,  # type: ignore[arg-type]
            retest_window_s=WINDOW_S,
            require_staff=require_staff,
        ),
        now=clock.wall,
    )
    d = Driver(workflow, clock)
    projection = Projection()
    history: dict[int, Record] = {}  # what a station's SessionHistory would hold
    for i, step in enumerate(steps):
        if isinstance(step, float):
            clock.advance(step)
            continue
        text, lossy = step
        before = len(d.records)
        decision = d.scan(text, lossy=lossy)
        new = d.records[before:]
        for record in new:
            projection.apply(record)
        _check_decision(text, lossy, decision.signal, new)
        # the live session, as staff would see it
        view = workflow.session()
        if view.tube is not None:
            assert len(view.tube.persons) <= view.tube.pool_size
            assert len(set(view.tube.persons)) == len(view.tube.persons)
            assert view.tube.tube in view.used_tubes
        # the station's history: remember what the workflow retains, prune now and then
        history.update((r.seq, r) for r in workflow.retain(new))
        if i % prune_every == 0:
            history = {r.seq: r for r in workflow.retain(history.values())}

    live = workflow.session()
    # every person added and not taken back belongs to exactly one tube
    undone = {r.data["undone_seq"] for r in d.records if r.kind == "undo"}
    for r in d.records:
        if r.kind == "person_added" and r.seq not in undone:
            owners = [name for name, t in projection.tubes.items() if r.seq in t.persons]
            assert owners == [r.data["tube"]]
    # the server's projection agrees with the station
    assert set(projection.tubes) == live.used_tubes
    if projection.open_tube is None:
        assert live.tube is None or not live.tube.open
    else:
        assert live.tube is not None and live.tube.open
        assert live.tube.tube == projection.open_tube
        assert live.tube.persons == tuple(projection.tubes[projection.open_tube].persons.values())
    awaiting = {
        name
        for name, t in projection.tubes.items()
        if t.kind == "rapid_antigen" and not t.open and t.persons and t.result is None
    }
    assert live.awaiting_results == awaiting

    # replaying the stored records reproduces the live session...
    assert _restored(workflow, clock, d.records) == live
    # ...and so do the retained records, with any records still waiting in the outbox
    retained = workflow.retain(d.records)
    assert _restored(workflow, clock, retained) == live
    assert _restored(workflow, clock, list(history.values())) == live
    # acknowledgements may have taken any records out of the outbox
    for _ in range(8):
        assert _restored(workflow, clock, retained + _pending_subset(d.records, rng)) == live
        pending = _pending_subset(d.records, rng)
        assert _restored(workflow, clock, [*history.values(), *pending]) == live


def _restored(workflow: SamplingWorkflow, clock: FakeClock, records: list[Record]) -> object:
    again = SamplingWorkflow(workflow.settings, now=clock.wall)
    again.restore(records)
    return again.session()


def _check_decision(text: str, lossy: bool, signal: Signal, new: list[Record]) -> None:
    kinds = [r.kind for r in new]
    code = classify(text, RULES, lossy=lossy)
    if "scan_rejected" in kinds:
        assert kinds == ["scan_rejected"]
        (record,) = new
        assert set(record.data) == {"reason", "signal"}
        assert record.data["signal"] == signal.value
        # a rejected scan never stores a person's data: only tubes and cards keep their text
        if record.code is not None:
            assert isinstance(code, TubeCode | CommandCode)
        assert signal in (Signal.REJECTED, Signal.DUPLICATE, Signal.NO_OPEN_TUBE)
    else:
        assert signal not in (Signal.REJECTED, Signal.DUPLICATE, Signal.NO_OPEN_TUBE)
    if signal in (Signal.POOL_FULL, Signal.RETEST_POOL_FULL):
        assert kinds == ["person_added", "pool_closed"] and new[1].data["reason"] == "full"
        assert new[0].data.get("retest", False) is (signal is Signal.RETEST_POOL_FULL)
    if signal is Signal.UNDONE:
        assert kinds == ["undo"]
    if signal is Signal.CARD_ACCEPTED:
        assert kinds in (["setting"], ["sign_in"])
    if signal is Signal.POOL_CLOSED:
        assert kinds == ["pool_closed"] and new[0].data["reason"] == "card"
    if signal is Signal.WARNING:
        assert kinds[0] == "person_added" and new[0].data["retest"] is True
    if signal is Signal.POOL_OPENED:
        assert kinds in ([], ["tube_opened"], ["pool_closed", "tube_opened"])
    if "person_added" in kinds and lossy and new[0].data["person"]["key_type"] == "cccd":
        assert "name" not in new[0].data["person"]
