"""The sampling session at a station: tubes, pools, persons, and the checks that stop wrong pairing.

Pure: no I/O. ``SamplingWorkflow.decide`` classifies a scan (``agent.codes``) and answers with
the records to store and the signal to show, without touching the session; ``stored`` then applies
the records that were really stored. The session is a function of stored records and nothing
else, so ``restore`` rebuilds exactly the live session from them after a restart or a power cut,
and ``retain`` names the few records that must outlive their acknowledgement for that
(``docs/workflow.md`` describes the rules, the signals and this design).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from agent.codes import CodeRules, CommandCode, PersonCode, RejectedCode, TubeCode, classify
from agent.config import WorkflowConfig
from agent.ports import Decision, Entry, Scan, Signal
from protocol import Record
from protocol.events import (
    DATA_MODELS,
    Mode,
    OnSiteResult,
    Person,
    PersonAdded,
    PoolClosed,
    ResultValue,
    ScanRejected,
    Setting,
    SignIn,
    TestKind,
    TubeOpened,
    Undo,
)

_MAX_REASON = 200
_PRUNE_EVERY = 512


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """How a station samples, from ``[workflow]`` in its config.

    ``mode``, ``pool_size`` and ``test_kind`` are the defaults for new tubes until staff scan a
    card that changes them (the card's choice then survives restarts).
    """

    rules: CodeRules
    mode: Mode = "pool"
    pool_size: int = 10
    test_kind: TestKind = "rt_pcr"
    retest_window_s: float = 86_400.0
    require_staff: bool = False
    used_tube_window_s: float = 7 * 86_400.0
    """A tube opened longer ago than this is forgotten: its label may be opened again here
    (the server still flags the reuse), and the session history stops keeping its opening."""

    @classmethod
    def from_config(cls, config: WorkflowConfig) -> WorkflowSettings:
        return cls(
            rules=CodeRules.build(
                config.tube_patterns,
                config.person_formats,
                cccd_strict_province=config.cccd_strict_province,
            ),
            mode=config.mode,
            pool_size=config.pool_size,
            test_kind=config.test_kind,
            retest_window_s=config.retest_window_s,
            require_staff=config.require_staff,
            used_tube_window_s=config.used_tube_window_s,
        )


@dataclass(frozen=True, slots=True)
class TubeView:
    """The last tube opened at the station (open, or closed until the next one opens)."""

    tube: str
    open: bool
    mode: Mode
    pool_size: int
    test_kind: TestKind
    staff_id: str | None
    persons: tuple[str, ...]
    """Person keys, in the order they were added."""
    result: ResultValue | None


@dataclass(frozen=True, slots=True)
class SessionView:
    """A read-only picture of a station's session (tests, diagnostics)."""

    mode: Mode
    pool_size: int
    test_kind: TestKind
    staff_id: str | None
    staff_name: str | None
    tube: TubeView | None
    used_tubes: frozenset[str]
    """Tubes refused if scanned again: opened within the used-tube window, the last tube, and
    rapid antigen tubes awaiting their result."""
    recent_persons: frozenset[str]
    """Persons sampled here within the retest window."""
    awaiting_results: frozenset[str]
    """Rapid antigen tubes closed with persons and no result yet."""


@dataclass
class _Tube:
    tube: str
    seq: int
    mode: Mode
    pool_size: int
    test_kind: TestKind
    staff_id: str | None
    persons: list[tuple[int, str]] = field(default_factory=list)  # (seq, person key)
    closed: bool = False
    result: ResultValue | None = None


@dataclass(frozen=True, slots=True)
class _Used:
    seq: int
    """Of its ``tube_opened``."""
    wall: float
    """When it was opened (station wall clock)."""
    kind: TestKind


@dataclass
class _Session:
    mode: Mode
    pool_size: int
    test_kind: TestKind
    setting_seqs: dict[str, int] = field(default_factory=dict)
    staff_id: str | None = None
    staff_name: str | None = None
    staff_seq: int | None = None
    tube: _Tube | None = None
    used: dict[str, _Used] = field(default_factory=dict)  # tube -> its tube_opened
    recent: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> (seq, wall)
    awaiting: dict[str, int] = field(default_factory=dict)  # tube -> seq of its pool_closed


def _entry(kind: str, code: str | None, data: BaseModel) -> Entry:
    return Entry(kind=kind, code=code, data=data.model_dump(mode="json", exclude_none=True))


class SamplingWorkflow:
    """Pairs tubes with persons, pooled or single, and refuses what would pair them wrongly.

    Args:
        settings: the station's workflow settings.
        now: the station's wall clock (seconds since the epoch), the same clock that stamps
            records; used only for the retest window, which can only warn, never refuse.

    Rules (each outcome has its signal):

    - A tube opens a pool (``POOL_OPENED``); the previous pool, if it has persons, closes
      (reason ``next_tube``). A tube already used here (within ``used_tube_window_s``; the
      last tube and rapid tubes awaiting a result whatever their age) is refused
      (``DUPLICATE``), and so is a second tube while the open one has no person yet
      (``REJECTED``: two tubes with no person between them is a wrong pairing; undo the empty
      tube or add its person).
    - A person joins the open pool (``SAVED``; ``WARNING`` if sampled here within the retest
      window, still recorded). No open tube: ``NO_OPEN_TUBE``. Already in this pool:
      ``DUPLICATE``. The pool closes itself when full (``POOL_FULL``, or ``RETEST_POOL_FULL``
      when that last person is a retest; a single-sample tube closes after its person with
      ``SAVED``).
    - Cards: close (``POOL_CLOSED``; an empty pool is refused), undo (``UNDONE``: the last
      person of the last tube, reopening it if needed; or an empty tube's opening), test kind,
      pool size, mode and staff badge (``CARD_ACCEPTED``; settings apply from the next tube),
      rapid antigen results (``SAVED``).
    - A rapid antigen tube awaiting its result, scanned again, is selected (``POOL_OPENED``,
      nothing stored) so that the next scan, a result card, records its result.
    """

    def __init__(self, settings: WorkflowSettings, *, now: Callable[[], float]) -> None:
        self.settings = settings
        self._now = now
        self._s = self._fresh()
        self._selected: str | None = None
        self._pending_selected: str | None = None
        self._adds = 0
        self._opened_since_prune = 0
        self.skipped = 0
        """Records ``restore``/``stored`` could not use (data not valid under the contract)."""

    # --- Workflow protocol ------------------------------------------------------------------

    def decide(self, scan: Scan) -> Decision:
        self._pending_selected = None
        if scan.rejected:
            return self._reject(scan.rejected, Signal.REJECTED)
        code = classify(scan.text, self.settings.rules, lossy=scan.lossy)
        match code:
            case RejectedCode(reason=reason):
                return self._reject(reason, Signal.REJECTED)
            case TubeCode():
                return self._on_tube(code)
            case PersonCode():
                return self._on_person(code, scan.text)
            case CommandCode():
                return self._on_command(code, scan.text)
        raise TypeError(f"unexpected code {code!r}")  # pragma: no cover

    def apply_setting(self, setting: Setting) -> Decision:
        """A setting sent by ops (``set_setting`` command): the same ``setting`` record a
        staff command card makes, applied from the next tube as the cards are."""
        if setting.pool_size is None and setting.test_kind is None and setting.mode is None:
            raise ValueError("nothing to set")
        return Decision((_entry("setting", None, setting),), Signal.CARD_ACCEPTED)

    def stored(self, records: Sequence[Record]) -> None:
        for record in records:
            self._apply(record)
        self._selected, self._pending_selected = self._pending_selected, None
        if self._opened_since_prune >= _PRUNE_EVERY:
            self._forget_old_tubes()

    def restore(self, records: Iterable[Record]) -> None:
        self._s = self._fresh()
        self._selected = self._pending_selected = None
        for record in sorted({r.seq: r for r in records}.values(), key=lambda r: r.seq):
            self._apply(record)
        self._forget_old_tubes()  # not during the replay: a tube's close may follow

    def retain(self, records: Iterable[Record]) -> list[Record]:
        s, tube = self._s, self._s.tube
        out = []
        for record in records:
            data = self._data(record)
            if data is None:
                continue
            current = (
                tube is not None
                and getattr(data, "tube", None) == tube.tube
                and record.seq >= tube.seq
            )
            match data:
                case SignIn():
                    keep = record.seq == s.staff_seq
                case Setting():
                    keep = record.seq in s.setting_seqs.values()
                case TubeOpened():
                    used = s.used.get(data.tube)
                    keep = (
                        used is not None and used.seq == record.seq and self._remembers(data.tube)
                    )
                case PersonAdded():
                    keep = current or any(
                        seq == record.seq and self._within(wall)
                        for seq, wall in s.recent.get(data.person.key, ())
                    )
                case PoolClosed():
                    keep = current or s.awaiting.get(data.tube) == record.seq
                case Undo():
                    # An undone tube opening is kept for good and an undone person for the
                    # retest window, so that the record they took back, if still waiting in
                    # the outbox, is not brought back to life by a restore.
                    keep = current or data.person_key is None or self._within(record.wall_time)
                case OnSiteResult():
                    keep = True  # small; stops a restore reviving a tube's "awaiting" state
                case _:
                    keep = False
            if keep:
                out.append(_reduced(record, data))
        return out

    # --- reading the session ----------------------------------------------------------------

    def session(self) -> SessionView:
        s, t = self._s, self._s.tube
        return SessionView(
            mode=s.mode,
            pool_size=s.pool_size,
            test_kind=s.test_kind,
            staff_id=s.staff_id,
            staff_name=s.staff_name,
            tube=None
            if t is None
            else TubeView(
                tube=t.tube,
                open=not t.closed,
                mode=t.mode,
                pool_size=t.pool_size,
                test_kind=t.test_kind,
                staff_id=t.staff_id,
                persons=tuple(key for _, key in t.persons),
                result=t.result,
            ),
            used_tubes=frozenset(t for t in s.used if self._remembers(t)),
            recent_persons=frozenset(k for k, seen in s.recent.items() if self._recently(seen)),
            awaiting_results=frozenset(s.awaiting),
        )

    # --- decisions --------------------------------------------------------------------------

    def _reject(self, reason: str, signal: Signal, code: str | None = None) -> Decision:
        data = ScanRejected(reason=reason[:_MAX_REASON] or "rejected", signal=signal.value)
        return Decision(entries=(_entry("scan_rejected", code, data),), signal=signal)

    def _open_tube(self) -> _Tube | None:
        tube = self._s.tube
        return tube if tube is not None and not tube.closed else None

    def _on_tube(self, code: TubeCode) -> Decision:
        s, name = self._s, code.tube
        if self.settings.require_staff and s.staff_id is None:
            return self._reject("scan a staff badge first", Signal.REJECTED, name)
        tube = self._open_tube()
        if tube is not None and tube.tube == name:
            return self._reject("tube already open", Signal.DUPLICATE, name)
        if name in s.awaiting:
            self._pending_selected = name
            return Decision(entries=(), signal=Signal.POOL_OPENED)
        if name in s.used and self._remembers(name):
            return self._reject("tube already used", Signal.DUPLICATE, name)
        if tube is not None and not tube.persons:
            return self._reject(
                "the open tube has no person yet (two tubes in a row)", Signal.REJECTED, name
            )
        entries = []
        if tube is not None:
            closed = PoolClosed(tube=tube.tube, persons=len(tube.persons), reason="next_tube")
            entries.append(_entry("pool_closed", None, closed))
        opened = TubeOpened(
            tube=name,
            mode=s.mode,
            pool_size=s.pool_size if s.mode == "pool" else 1,
            test_kind=s.test_kind,
            staff_id=s.staff_id,
        )
        entries.append(_entry("tube_opened", name, opened))
        return Decision(entries=tuple(entries), signal=Signal.POOL_OPENED)

    def _on_person(self, code: PersonCode, text: str) -> Decision:
        if self.settings.require_staff and self._s.staff_id is None:
            return self._reject("scan a staff badge first", Signal.REJECTED)
        tube = self._open_tube()
        if tube is None:
            return self._reject("no open tube", Signal.NO_OPEN_TUBE)
        key = code.person.key
        if any(k == key for _, k in tube.persons):
            return self._reject("person already in this tube", Signal.DUPLICATE)
        retest = self._recently(self._s.recent.get(key, ()))
        position = len(tube.persons) + 1
        added = PersonAdded(
            tube=tube.tube,
            person=code.person,
            position=position,
            retest=retest,
            staff_id=self._s.staff_id,
        )
        entries = [_entry("person_added", text, added)]
        signal = Signal.WARNING if retest else Signal.SAVED
        if position >= tube.pool_size:
            reason = "single" if tube.mode == "single" else "full"
            closed = PoolClosed(tube=tube.tube, persons=position, reason=reason)
            entries.append(_entry("pool_closed", None, closed))
            if reason == "full":
                signal = Signal.RETEST_POOL_FULL if retest else Signal.POOL_FULL
        return Decision(entries=tuple(entries), signal=signal)

    def _on_command(self, card: CommandCode, text: str) -> Decision:
        match card.command:
            case "close":
                tube = self._open_tube()
                if tube is None:
                    return self._reject("no open tube", Signal.NO_OPEN_TUBE, text)
                if not tube.persons:
                    return self._reject("cannot close a tube with no person", Signal.REJECTED, text)
                closed = PoolClosed(tube=tube.tube, persons=len(tube.persons), reason="card")
                return Decision((_entry("pool_closed", text, closed),), Signal.POOL_CLOSED)
            case "undo":
                return self._undo(text)
            case "test_kind" | "mode" | "pool_size":
                setting = Setting(
                    test_kind=card.test_kind,
                    pool_size=card.pool_size,
                    mode="pool" if card.command == "pool_size" else card.mode,
                )
                return Decision((_entry("setting", text, setting),), Signal.CARD_ACCEPTED)
            case "sign_in":
                assert card.staff_id is not None
                sign_in = SignIn(staff_id=card.staff_id, staff_name=card.staff_name)
                return Decision((_entry("sign_in", text, sign_in),), Signal.CARD_ACCEPTED)
            case "result":
                assert card.result is not None
                return self._result(card.result, text)
        raise TypeError(f"unexpected command {card.command!r}")  # pragma: no cover

    def _undo(self, text: str) -> Decision:
        tube = self._s.tube
        if tube is None or (tube.closed and not tube.persons):
            return self._reject("nothing to undo", Signal.REJECTED, text)
        if tube.result is not None:
            return self._reject("the tube already has a result", Signal.REJECTED, text)
        if tube.persons:
            seq, key = tube.persons[-1]
            undo = Undo(tube=tube.tube, undone_seq=seq, person_key=key)
        else:
            undo = Undo(tube=tube.tube, undone_seq=tube.seq)
        return Decision((_entry("undo", text, undo),), Signal.UNDONE)

    def _result(self, value: ResultValue, text: str) -> Decision:
        s, tube = self._s, self._s.tube
        if self._selected is not None and self._selected in s.awaiting:
            target = self._selected
        elif (
            tube is not None
            and tube.test_kind == "rapid_antigen"
            and tube.persons
            and tube.result is None
        ):
            target = tube.tube
        elif tube is not None and tube.result is not None:
            return self._reject("the tube already has a result", Signal.DUPLICATE, text)
        else:
            return self._reject("no rapid antigen tube awaiting a result", Signal.REJECTED, text)
        entries = []
        if tube is not None and tube.tube == target and not tube.closed:
            closed = PoolClosed(tube=target, persons=len(tube.persons), reason="card")
            entries.append(_entry("pool_closed", None, closed))
        result = OnSiteResult(tube=target, result=value, staff_id=s.staff_id)
        entries.append(_entry("result", text, result))
        return Decision(tuple(entries), Signal.SAVED)

    # --- applying stored records ------------------------------------------------------------

    def _fresh(self) -> _Session:
        st = self.settings
        return _Session(mode=st.mode, pool_size=st.pool_size, test_kind=st.test_kind)

    def _data(self, record: Record) -> BaseModel | None:
        model = DATA_MODELS.get(record.kind)
        if model is None:
            return None
        try:
            return model.model_validate(record.data)
        except ValidationError:
            self.skipped += 1
            return None

    def _apply(self, record: Record) -> None:
        data = self._data(record)
        s, tube = self._s, self._s.tube
        match data:
            case SignIn():
                s.staff_id, s.staff_name, s.staff_seq = data.staff_id, data.staff_name, record.seq
            case Setting():
                if data.test_kind is not None:
                    s.test_kind = data.test_kind
                    s.setting_seqs["test_kind"] = record.seq
                if data.pool_size is not None:
                    s.pool_size = data.pool_size
                    s.setting_seqs["pool_size"] = record.seq
                if data.mode is not None:
                    s.mode = data.mode
                    s.setting_seqs["mode"] = record.seq
            case TubeOpened():
                s.tube = _Tube(
                    tube=data.tube,
                    seq=record.seq,
                    mode=data.mode,
                    pool_size=data.pool_size,
                    test_kind=data.test_kind,
                    staff_id=data.staff_id,
                )
                s.used[data.tube] = _Used(record.seq, record.wall_time, data.test_kind)
                self._opened_since_prune += 1
            case PersonAdded():
                key = data.person.key
                s.recent.setdefault(key, []).append((record.seq, record.wall_time))
                if tube is not None and tube.tube == data.tube and not tube.closed:
                    tube.persons.append((record.seq, key))
                self._adds += 1
                if self._adds % _PRUNE_EVERY == 0:
                    self._forget_old_persons()
            case PoolClosed():
                has_result = False
                if tube is not None and tube.tube == data.tube:
                    tube.closed = True
                    has_result = tube.result is not None
                used = s.used.get(data.tube)
                if used is not None and used.kind == "rapid_antigen" and not has_result:
                    s.awaiting[data.tube] = record.seq
            case Undo():
                s.awaiting.pop(data.tube, None)
                if data.person_key is None:
                    # The undone tube was the last one opened; when its opening is no longer
                    # among the records replayed, the tube before it must not come back.
                    s.tube = None
                    s.used.pop(data.tube, None)
                    return
                if tube is not None and tube.tube == data.tube:
                    tube.persons = [p for p in tube.persons if p[0] != data.undone_seq]
                    tube.closed = False
                seen = [p for p in s.recent.get(data.person_key, ()) if p[0] != data.undone_seq]
                if seen:
                    s.recent[data.person_key] = seen
                else:
                    s.recent.pop(data.person_key, None)
            case OnSiteResult():
                if tube is not None and tube.tube == data.tube:
                    tube.result = data.result
                s.awaiting.pop(data.tube, None)

    # --- the retest window ------------------------------------------------------------------

    def _within(self, wall: float) -> bool:
        window = self.settings.retest_window_s
        return window > 0 and self._now() - wall <= window

    def _recently(self, seen: Iterable[tuple[int, float]]) -> bool:
        return any(self._within(wall) for _, wall in seen)

    # --- the used-tube window ---------------------------------------------------------------

    def _remembers(self, tube: str) -> bool:
        """Whether ``tube`` still counts as used here: opened within the used-tube window, or
        the last tube, or a rapid antigen tube awaiting its result (whatever its age)."""
        s, used = self._s, self._s.used.get(tube)
        if used is None:
            return False
        if (s.tube is not None and s.tube.tube == tube) or tube in s.awaiting:
            return True
        return self._now() - used.wall <= self.settings.used_tube_window_s

    def _forget_old_tubes(self) -> None:
        s = self._s
        for tube in [t for t in s.used if not self._remembers(t)]:
            del s.used[tube]
        self._opened_since_prune = 0

    def _forget_old_persons(self) -> None:
        s = self._s
        for key in [k for k, seen in s.recent.items() if not self._recently(seen)]:
            del s.recent[key]


def _reduced(record: Record, data: BaseModel) -> Record:
    """``record`` without personal data beyond the person's key."""
    if not isinstance(data, PersonAdded):
        return record
    person = Person(key_type=data.person.key_type, key=data.person.key)
    slim = data.model_copy(update={"person": person})
    return record.model_copy(
        update={"code": None, "data": slim.model_dump(mode="json", exclude_none=True)}
    )
