"""Every transition of the sampling session, as staff at a station would meet it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.codes import CodeRules
from agent.fakes import FakeClock
from agent.ports import Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from tests.agent.people import PERSONS, Driver, cccd, health_qr

P1, P2, P3, P4, P5, *_ = PERSONS
CLOSE = "SWABLINE:CMD:CLOSE"
UNDO = "SWABLINE:CMD:UNDO"
SINGLE = "SWABLINE:CMD:MODE:SINGLE"
POOLED = "SWABLINE:CMD:MODE:POOL"
RAPID = "SWABLINE:CMD:TEST:RAPID_ANTIGEN"
PCR = "SWABLINE:CMD:TEST:RT_PCR"
POSITIVE = "SWABLINE:CMD:RESULT:POSITIVE"
NEGATIVE = "SWABLINE:CMD:RESULT:NEGATIVE"
STAFF = "SWABLINE:STAFF:nv-01:Nguyễn Văn Tâm"


def tube(n: int) -> str:
    return f"KG-RG-{n:06d}"


def make(**overrides: Any) -> Driver:
    settings = WorkflowSettings(
        rules=CodeRules.build([r"KG-RG-\d{6}"]), pool_size=3, retest_window_s=3600
    )
    clock = FakeClock()
    workflow = SamplingWorkflow(dataclasses.replace(settings, **overrides), now=clock.wall)
    return Driver(workflow, clock)


def data(d: Driver, index: int = -1) -> dict[str, Any]:
    return dict(d.records[index].data)


@pytest.fixture
def d() -> Driver:
    return make()


def assert_restores(d: Driver) -> None:
    """A fresh workflow rebuilt from the stored records sees the same session."""
    again = SamplingWorkflow(d.workflow.settings, now=d.clock.wall)
    again.restore(d.records)
    assert again.session() == d.workflow.session()
    kept = SamplingWorkflow(d.workflow.settings, now=d.clock.wall)
    kept.restore(d.workflow.retain(d.records))
    assert kept.session() == d.workflow.session()


# --- tubes ---------------------------------------------------------------------------------


def test_a_tube_opens_a_pool_with_the_configured_size(d: Driver) -> None:
    decision = d.scan(tube(1))
    assert decision.signal is Signal.POOL_OPENED
    assert d.kinds(decision) == ["tube_opened"]
    assert d.records[0].code == tube(1)
    assert data(d) == {"tube": tube(1), "mode": "pool", "pool_size": 3, "test_kind": "rt_pcr"}
    view = d.workflow.session().tube
    assert view is not None and view.open and view.persons == ()
    assert_restores(d)


def test_single_mode_from_the_config() -> None:
    d = make(mode="single")
    d.scan(tube(1))
    assert data(d)["mode"] == "single" and data(d)["pool_size"] == 1


def test_a_tube_already_used_is_refused(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(P2)
    for _ in range(2):
        decision = d.scan(tube(1))
        assert decision.signal is Signal.DUPLICATE
        assert d.kinds(decision) == ["scan_rejected"]
        assert data(d) == {"reason": "tube already used", "signal": "duplicate"}
        assert d.records[-1].code == tube(1)
    assert d.workflow.session().tube.tube == tube(2)  # type: ignore[union-attr]
    assert_restores(d)


DAY = 86_400.0


def test_a_tube_used_longer_ago_than_the_window_is_forgotten() -> None:
    d = make(used_tube_window_s=7 * DAY)
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(P2)
    d.clock.advance(3 * DAY)
    d.scan(tube(3))
    d.scan(P3)
    d.clock.advance(4 * DAY + 1)  # tubes 1 and 2 are now a second older than the window
    d.scan(tube(4))
    d.scan(P4)
    assert d.workflow.session().used_tubes == {tube(3), tube(4)}
    # The history keeps no opening of a forgotten tube...
    openings = [r.data["tube"] for r in d.workflow.retain(d.records) if r.kind == "tube_opened"]
    assert openings == [tube(3), tube(4)]
    assert_restores(d)
    # ...and staff may open the label again (the server counts the reuse and flags it).
    assert d.scan(tube(3)).signal is Signal.DUPLICATE
    assert d.scan(tube(1)).signal is Signal.POOL_OPENED


def test_the_last_tube_and_a_tube_awaiting_its_result_are_kept_whatever_their_age() -> None:
    d = make(used_tube_window_s=DAY, mode="single", test_kind="rapid_antigen")
    d.scan(tube(1))
    d.scan(P1)  # closed, awaiting its rapid antigen result
    d.scan(PCR)
    d.scan(tube(2))
    d.scan(P2)  # the last tube
    d.clock.advance(10 * DAY)
    view = d.workflow.session()
    assert view.used_tubes == {tube(1), tube(2)}
    assert view.awaiting_results == {tube(1)}
    assert_restores(d)
    assert d.scan(tube(2)).signal is Signal.DUPLICATE
    assert d.scan(tube(1)).signal is Signal.POOL_OPENED  # selected for its result
    assert d.scan(NEGATIVE).signal is Signal.SAVED
    assert d.workflow.session().used_tubes == {tube(2)}  # result in: tube 1 may go now


def test_scanning_the_open_tube_again_changes_nothing(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    decision = d.scan(tube(1))
    assert decision.signal is Signal.DUPLICATE
    assert data(d)["reason"] == "tube already open"
    view = d.workflow.session().tube
    assert view is not None and view.open and view.persons == (person_key(P1),)


def test_two_tubes_with_no_person_between_them_refuses_the_second(d: Driver) -> None:
    d.scan(tube(1))
    decision = d.scan(tube(2))
    assert decision.signal is Signal.REJECTED
    assert d.kinds(decision) == ["scan_rejected"]
    assert "no person yet" in data(d)["reason"]
    # the first tube stays open and the second is still fresh
    assert d.workflow.session().tube.tube == tube(1)  # type: ignore[union-attr]
    d.scan(P1)
    assert d.scan(tube(2)).signal is Signal.POOL_OPENED


def test_the_next_tube_closes_the_previous_pool(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(P2)
    decision = d.scan(tube(2))
    assert decision.signal is Signal.POOL_OPENED
    assert d.kinds(decision) == ["pool_closed", "tube_opened"]
    assert data(d, -2) == {"tube": tube(1), "persons": 2, "reason": "next_tube"}
    assert data(d, -1)["tube"] == tube(2)
    assert_restores(d)


# --- persons -------------------------------------------------------------------------------


def person_key(text: str) -> str:
    """The key a person QR is known by: the CCCD number, or the health QR's QID."""
    fields = text.split("|")
    return fields[0] if fields[0].isdigit() else fields[4]


def test_a_person_with_no_open_tube(d: Driver) -> None:
    decision = d.scan(P1)
    assert decision.signal is Signal.NO_OPEN_TUBE
    assert d.kinds(decision) == ["scan_rejected"]
    assert d.records[0].code is None  # never the person's data
    assert data(d) == {"reason": "no open tube", "signal": "no_open_tube"}


def test_persons_join_the_open_pool_in_order(d: Driver) -> None:
    d.scan(tube(1))
    first = d.scan(P1)
    assert first.signal is Signal.SAVED
    assert d.kinds(first) == ["person_added"]
    added = data(d)
    assert added["tube"] == tube(1) and added["position"] == 1 and added["retest"] is False
    assert added["person"]["key"] == person_key(P1)
    assert added["person"]["name"] == "Nguyễn Thị Bình"
    assert d.records[-1].code == P1  # the raw QR, as the contract says
    d.scan(P6 := PERSONS[5])
    assert data(d)["position"] == 2 and data(d)["person"]["key_type"] == "qid"
    view = d.workflow.session().tube
    assert view is not None and view.persons == (person_key(P1), person_key(P6))
    assert_restores(d)


def test_the_same_person_twice_in_one_pool_is_not_added(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    decision = d.scan(P1)
    assert decision.signal is Signal.DUPLICATE
    assert d.kinds(decision) == ["scan_rejected"]
    assert d.records[-1].code is None
    assert "name" not in str(d.records[-1].data)
    assert d.workflow.session().tube.persons == (person_key(P1),)  # type: ignore[union-attr]


def test_the_same_person_by_another_code_with_the_same_key_is_a_duplicate(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(cccd(1))
    lossy = d.scan(cccd(1), lossy=True)  # same card, read by a keyboard-mode scanner
    assert lossy.signal is Signal.DUPLICATE


def test_a_full_pool_closes_itself(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(P2)
    decision = d.scan(P3)
    assert decision.signal is Signal.POOL_FULL
    assert d.kinds(decision) == ["person_added", "pool_closed"]
    assert data(d) == {"tube": tube(1), "persons": 3, "reason": "full"}
    view = d.workflow.session().tube
    assert view is not None and not view.open
    assert d.scan(P4).signal is Signal.NO_OPEN_TUBE
    assert_restores(d)


def test_single_sample_tubes_close_after_their_person() -> None:
    d = make(mode="single")
    d.scan(tube(1))
    decision = d.scan(P1)
    assert decision.signal is Signal.SAVED
    assert d.kinds(decision) == ["person_added", "pool_closed"]
    assert data(d)["reason"] == "single"
    assert d.scan(P2).signal is Signal.NO_OPEN_TUBE
    assert d.scan(tube(2)).signal is Signal.POOL_OPENED
    assert d.kinds(d.decisions[-1]) == ["tube_opened"]  # nothing left open to close


def test_a_retest_within_the_window_warns_but_is_recorded(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.clock.advance(3599)
    decision = d.scan(P1)
    assert decision.signal is Signal.WARNING
    assert d.kinds(decision) == ["person_added"]
    assert data(d)["retest"] is True
    assert_restores(d)
    d.scan(tube(3))
    d.clock.advance(3601)
    again = d.scan(P1)
    assert again.signal is Signal.SAVED and data(d)["retest"] is False


def test_a_retest_that_fills_the_pool_warns_and_says_the_pool_is_full(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(P2)
    d.scan(P3)
    decision = d.scan(P1)
    # both outcomes are heard: "look at this person" and "this tube is closed now"
    assert decision.signal is Signal.RETEST_POOL_FULL
    assert d.kinds(decision) == ["person_added", "pool_closed"]
    assert d.scan(P4).signal is Signal.NO_OPEN_TUBE


def test_the_retest_warning_can_be_turned_off() -> None:
    d = make(retest_window_s=0)
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    assert d.scan(P1).signal is Signal.SAVED


def test_a_keyboard_scanner_cccd_is_added_without_its_mangled_name(d: Driver) -> None:
    d.scan(tube(1))
    mangled = P1.replace("ễ", "?").replace("ị", "?").replace("ì", "?").replace("ữ", "?")
    assert d.scan(mangled, lossy=True).signal is Signal.SAVED
    person = data(d)["person"]
    assert person["key"] == person_key(P1)
    assert "name" not in person and person["name_reliable"] is False
    assert person["birth_date"] == "2003-08-15"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("garbage", "unknown code format"),
        (cccd(1).replace("15082003", "30022003"), "impossible date of birth"),
        ("", "empty scan"),
        ("x" * 5000, "longer than 4096 bytes"),
    ],
)
def test_rejected_codes_are_stored_as_reasons_never_as_persons(
    d: Driver, text: str, reason: str
) -> None:
    d.scan(tube(1))
    decision = d.scan(text)
    assert decision.signal is Signal.REJECTED
    assert d.kinds(decision) == ["scan_rejected"]
    assert reason in data(d)["reason"]
    assert d.records[-1].code is None
    assert d.workflow.session().tube.persons == ()  # type: ignore[union-attr]


def test_a_scan_the_scanner_itself_refused(d: Driver) -> None:
    decision = d.scan("02422", rejected="events lost (SYN_DROPPED)")
    assert decision.signal is Signal.REJECTED
    assert data(d) == {"reason": "events lost (SYN_DROPPED)", "signal": "rejected"}


# --- close and undo ------------------------------------------------------------------------


def test_the_close_card(d: Driver) -> None:
    assert d.scan(CLOSE).signal is Signal.NO_OPEN_TUBE
    d.scan(tube(1))
    refused = d.scan(CLOSE)
    assert refused.signal is Signal.REJECTED
    assert data(d)["reason"] == "cannot close a tube with no person"
    d.scan(P1)
    decision = d.scan(CLOSE)
    assert decision.signal is Signal.POOL_CLOSED
    assert data(d) == {"tube": tube(1), "persons": 1, "reason": "card"}
    assert d.scan(CLOSE).signal is Signal.NO_OPEN_TUBE
    assert d.scan(P2).signal is Signal.NO_OPEN_TUBE
    assert_restores(d)


def test_undo_takes_the_last_person_back_as_an_event(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(P2)
    p2_seq = d.records[-1].seq
    decision = d.scan(UNDO)
    assert decision.signal is Signal.UNDONE
    assert data(d) == {"tube": tube(1), "undone_seq": p2_seq, "person_key": person_key(P2)}
    assert d.workflow.session().tube.persons == (person_key(P1),)  # type: ignore[union-attr]
    # history is never deleted: the person_added record is still there
    assert [r.kind for r in d.records] == ["tube_opened", "person_added", "person_added", "undo"]
    # the person taken back can be added again, and is no retest
    assert d.scan(P2).signal is Signal.SAVED and data(d)["retest"] is False
    assert_restores(d)


def test_undo_after_a_pool_filled_reopens_it(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(P2)
    d.scan(P3)  # full, closed
    d.scan(UNDO)
    view = d.workflow.session().tube
    assert view is not None and view.open and len(view.persons) == 2
    assert d.scan(P4).signal is Signal.POOL_FULL
    assert_restores(d)


def test_undo_in_single_mode_reopens_the_tube_for_the_right_person() -> None:
    d = make(mode="single")
    d.scan(tube(1))
    d.scan(P1)
    d.scan(UNDO)
    assert d.scan(P2).signal is Signal.SAVED
    assert data(d)["reason"] == "single"


def test_undo_of_an_empty_tube_takes_its_opening_back(d: Driver) -> None:
    d.scan(tube(1))
    opened_seq = d.records[-1].seq
    d.scan(UNDO)
    assert data(d) == {"tube": tube(1), "undone_seq": opened_seq}
    assert d.workflow.session().tube is None
    assert_restores(d)
    # nothing was paired with it: the tube can be used after all, or another one
    assert d.scan(tube(2)).signal is Signal.POOL_OPENED
    d.scan(P1)
    assert d.scan(tube(1)).signal is Signal.POOL_OPENED
    assert_restores(d)


def test_undo_with_nothing_to_undo(d: Driver) -> None:
    assert d.scan(UNDO).signal is Signal.REJECTED
    assert data(d)["reason"] == "nothing to undo"
    d.scan(tube(1))
    d.scan(P1)
    d.scan(UNDO)
    d.scan(UNDO)
    assert d.scan(UNDO).signal is Signal.REJECTED
    assert_restores(d)


def test_undo_reaches_only_the_last_tube(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(UNDO)  # takes back tube 2's opening, not tube 1's person
    assert d.scan(UNDO).signal is Signal.REJECTED
    assert d.scan(P2).signal is Signal.NO_OPEN_TUBE


# --- settings and staff --------------------------------------------------------------------


def test_setting_cards_apply_from_the_next_tube(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    decision = d.scan("SWABLINE:CMD:POOL:5")
    assert decision.signal is Signal.CARD_ACCEPTED
    assert data(d) == {"pool_size": 5, "mode": "pool"}
    d.scan(P2)
    d.scan(P3)  # tube 1 keeps its size of 3
    assert d.kinds(d.decisions[-1]) == ["person_added", "pool_closed"]
    d.scan(tube(2))
    assert data(d)["pool_size"] == 5
    d.scan(SINGLE)
    d.scan(RAPID)
    assert data(d) == {"test_kind": "rapid_antigen"}
    d.scan(P4)
    d.scan(tube(3))
    assert data(d) == {
        "tube": tube(3),
        "mode": "single",
        "pool_size": 1,
        "test_kind": "rapid_antigen",
    }
    d.scan(P5)
    d.scan(POOLED)
    d.scan(PCR)
    d.scan(tube(4))
    assert data(d)["mode"] == "pool" and data(d)["pool_size"] == 5
    assert data(d)["test_kind"] == "rt_pcr"
    assert_restores(d)


def test_staff_sign_in_is_recorded_and_carried_by_later_entries(d: Driver) -> None:
    decision = d.scan(STAFF)
    assert decision.signal is Signal.CARD_ACCEPTED
    assert data(d) == {"staff_id": "nv-01", "staff_name": "Nguyễn Văn Tâm"}
    d.scan(tube(1))
    assert data(d)["staff_id"] == "nv-01"
    d.scan(P1)
    assert data(d)["staff_id"] == "nv-01"
    d.scan("SWABLINE:STAFF:nv-02")
    d.scan(P2)
    assert data(d)["staff_id"] == "nv-02"
    assert_restores(d)


def test_stations_can_require_a_staff_badge_first() -> None:
    d = make(require_staff=True)
    refused = d.scan(tube(1))
    assert refused.signal is Signal.REJECTED
    assert data(d)["reason"] == "scan a staff badge first"
    d.scan(STAFF)
    assert d.scan(tube(1)).signal is Signal.POOL_OPENED


# --- rapid antigen results -----------------------------------------------------------------


def rapid(**overrides: Any) -> Driver:
    return make(test_kind="rapid_antigen", mode="single", **overrides)


def test_a_result_card_after_the_tube_and_its_person() -> None:
    d = rapid()
    d.scan(STAFF)
    d.scan(tube(1))
    d.scan(P1)
    decision = d.scan(NEGATIVE)
    assert decision.signal is Signal.SAVED
    assert d.kinds(decision) == ["result"]
    assert data(d) == {"tube": tube(1), "result": "negative", "staff_id": "nv-01"}
    again = d.scan(POSITIVE)
    assert again.signal is Signal.DUPLICATE
    assert data(d)["reason"] == "the tube already has a result"
    assert d.scan(UNDO).signal is Signal.REJECTED  # a resulted tube's person stays
    assert_restores(d)


def test_a_result_needs_a_rapid_antigen_tube_with_a_person() -> None:
    d = rapid()
    assert d.scan(POSITIVE).signal is Signal.REJECTED
    d.scan(tube(1))
    assert d.scan(POSITIVE).signal is Signal.REJECTED  # no person yet
    pcr = make()
    pcr.scan(tube(1))
    pcr.scan(P1)
    refused = pcr.scan(POSITIVE)
    assert refused.signal is Signal.REJECTED
    assert data(pcr)["reason"] == "no rapid antigen tube awaiting a result"


def test_a_result_on_an_open_pooled_rapid_tube_closes_it_first() -> None:
    d = make(test_kind="rapid_antigen")
    d.scan(tube(1))
    d.scan(P1)
    d.scan(P2)
    decision = d.scan(POSITIVE)
    assert d.kinds(decision) == ["pool_closed", "result"]
    assert data(d, -2) == {"tube": tube(1), "persons": 2, "reason": "card"}
    assert d.scan(P3).signal is Signal.NO_OPEN_TUBE


def test_an_earlier_rapid_tube_is_selected_by_scanning_it_again() -> None:
    d = rapid()
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(P2)
    d.scan(tube(3))  # open and empty, waiting for its person
    selected = d.scan(tube(1))
    assert selected.signal is Signal.POOL_OPENED
    assert selected.entries == ()  # selecting stores nothing
    assert d.scan(POSITIVE).signal is Signal.SAVED
    assert data(d) == {"tube": tube(1), "result": "positive"}
    assert d.workflow.session().awaiting_results == {tube(2)}
    # the open tube was not touched
    view = d.workflow.session().tube
    assert view is not None and view.tube == tube(3) and view.open
    assert d.scan(P3).signal is Signal.SAVED
    # a tube with its result is an ordinary used tube again
    assert d.scan(tube(1)).signal is Signal.DUPLICATE
    assert_restores(d)


def test_a_selection_lasts_one_scan() -> None:
    d = rapid()
    d.scan(tube(1))
    d.scan(P1)
    d.scan(tube(2))
    d.scan(P2)
    d.scan(tube(1))  # select tube 1...
    d.scan("garbage")  # ...but the next scan is not a result card
    d.scan(NEGATIVE)  # goes to the last tube, as without a selection
    assert data(d)["tube"] == tube(2)


# --- restore edge cases ----------------------------------------------------------------------


def test_restore_ignores_duplicates_and_order() -> None:
    d = make()
    for text in (STAFF, tube(1), P1, P2, tube(2), P3, UNDO, P4):
        d.scan(text)
    again = SamplingWorkflow(d.workflow.settings, now=d.clock.wall)
    again.restore(list(reversed(d.records)) + d.records[:3])
    assert again.session() == d.workflow.session()


def test_restore_skips_records_that_break_the_contract() -> None:
    d = make()
    d.scan(tube(1))
    d.scan(P1)
    broken = d.records[1].model_copy(update={"data": {"tube": tube(1)}})
    again = SamplingWorkflow(d.workflow.settings, now=d.clock.wall)
    again.restore([d.records[0], broken])
    assert again.skipped == 1
    assert again.session().tube.persons == ()  # type: ignore[union-attr]


def test_retained_history_holds_no_names_or_raw_codes() -> None:
    d = make()
    for text in (tube(1), P1, P2, "garbage", tube(2), P3):
        d.scan(text)
    kept = d.workflow.retain(d.records)
    assert [r.kind for r in kept] == ["tube_opened"] + ["person_added"] * 2 + [
        "tube_opened",
        "person_added",
    ]
    for record in kept:
        if record.kind == "person_added":
            assert record.code is None
            assert set(record.data["person"]) == {"key_type", "key", "name_reliable"}
    assert "scan_rejected" not in {r.kind for r in kept}


def test_health_qr_and_cccd_of_one_person_are_different_keys(d: Driver) -> None:
    """The health QR's document number is masked: a person showing both codes cannot be
    matched at the station (documented limitation)."""
    d.scan(tube(1))
    d.scan(cccd(1))
    assert d.scan(health_qr("QX7K2M9P4T")).signal is Signal.SAVED


# --- what must outlive acknowledgement ------------------------------------------------------


def restored_from(d: Driver, records: list[Any]) -> Any:
    again = SamplingWorkflow(d.workflow.settings, now=d.clock.wall)
    again.restore(records)
    return again.session()


def test_an_undone_tube_opening_does_not_bring_the_previous_tube_back() -> None:
    d = make(pool_size=1)
    d.scan(tube(1))
    d.scan(P1)  # full and closed
    d.scan(tube(2))
    d.scan(UNDO)  # tube 2 had no person: its opening is taken back
    assert d.workflow.session().tube is None
    assert restored_from(d, d.workflow.retain(d.records)) == d.workflow.session()


def test_a_result_outlives_the_tube_so_a_late_pool_closed_does_not_revive_it() -> None:
    d = rapid()
    d.scan(tube(1))
    d.scan(P1)  # single: closed, awaiting its result
    pool_closed = d.records[-1]
    d.scan(NEGATIVE)
    d.scan(tube(2))
    d.scan(P2)
    # acknowledged and gone: everything but tube 1's pool_closed, still in the outbox
    session = restored_from(d, [*d.workflow.retain(d.records), pool_closed])
    assert session == d.workflow.session()
    assert tube(1) not in session.awaiting_results


def test_an_undo_outlives_the_retest_window_of_the_person_it_took_back(d: Driver) -> None:
    d.scan(tube(1))
    d.scan(P1)
    added = d.records[-1]
    d.scan(UNDO)
    d.scan(P2)
    d.scan(tube(2))  # tube 1 is no longer the last tube
    d.clock.advance(60)
    # the person_added is still in the outbox; the undo was acknowledged long ago
    session = restored_from(d, [*d.workflow.retain(d.records), added])
    assert session == d.workflow.session()
    assert person_key(P1) not in session.recent_persons
    assert d.scan(P1).signal is Signal.SAVED  # not a retest: they were taken back


def test_a_setting_from_ops_applies_from_the_next_tube_like_a_card(d: Driver) -> None:
    from protocol.events import Setting

    d.scan(tube(1))
    decision = d.workflow.apply_setting(Setting(pool_size=5, test_kind="rapid_antigen"))
    assert decision.signal is Signal.CARD_ACCEPTED and d.kinds(decision) == ["setting"]
    d.feed(decision)
    assert d.workflow.session().tube.pool_size == 3  # type: ignore[union-attr]  # open tube kept
    d.scan(P1)
    d.scan(tube(2))
    assert data(d, -1) == {
        "tube": tube(2),
        "mode": "pool",
        "pool_size": 5,
        "test_kind": "rapid_antigen",
    }
    assert_restores(d)
    with pytest.raises(ValueError, match="nothing to set"):
        d.workflow.apply_setting(Setting())
