"""One outbound transport for result notifications and ops alerts, against a real local HTTP
server: signed, retried with backoff, every attempt in one delivery log; the old settings are
refused by name; deliveries of the old alert table survive the migration."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.config import ServerConfig, load_config
from server.db import alembic_config, make_engine, migrate
from server.errors import ConfigError
from server.fakes import RecordingHook
from server.lab import receive_tube
from server.models import Alert, Notification, NotificationDelivery, UtcDateTime
from server.ops import alerts as ops_alerts
from server.ops.monitor import AlertNotifier, OpsMonitor
from server.outbound import (
    ALERTS,
    RESULTS,
    OutboundWorker,
    RetryPolicy,
    WebhookHook,
    enqueue,
    signature,
    worker_from_config,
)
from server.results import ResultsContext, enter_result, sweep_notifications
from server.signing import SlipSigner
from tests.server.world import PEOPLE, build_world

RESULTS_KEY = "results-key-" + "r" * 32
ALERTS_KEY = "alerts-key-" + "a" * 32


class Receiver:
    """A webhook receiver on 127.0.0.1. It answers 503 the first time it sees a delivery id
    when ``fail_first_time`` is set, else with the next status of ``answers`` (then 200)."""

    def __init__(self, *, fail_first_time: bool = False) -> None:
        self.fail_first_time = fail_first_time
        self.answers: list[int] = []
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        seen: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.path, dict(self.headers.items()), body))
                did = self.headers["X-Swabline-Delivery"]
                if outer.fail_first_time:
                    status = 200 if did in seen else 503
                    seen.add(did)
                else:
                    status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"busy")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def log_of(engine: Engine) -> dict[int, list[tuple[int, bool, int | None, str]]]:
    with Session(engine) as s:
        out: dict[int, list[tuple[int, bool, int | None, str]]] = {}
        for d in s.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)):
            out.setdefault(d.notification_id, []).append((d.attempt, d.ok, d.status_code, d.hook))
        return out


def test_an_alert_and_a_result_notification_share_the_webhook_the_retries_and_the_log(
    db_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(fail_first_time=True)
    engine = make_engine(db_url)
    migrate(engine)
    try:
        (tmp_path / "results.key").write_text(RESULTS_KEY)
        (tmp_path / "alerts.key").write_text(ALERTS_KEY)
        config = ServerConfig.model_validate(
            {
                "outbound": {
                    "retry_min_s": 30,
                    "retry_max_s": 600,
                    "results": {
                        "webhook_url": f"{receiver.url}/hook",
                        "secret_file": str(tmp_path / "results.key"),
                    },
                    "alerts": {
                        "webhook_url": f"{receiver.url}/hook",
                        "secret_file": str(tmp_path / "alerts.key"),
                    },
                },
            }
        )
        world = build_world(engine)
        world.sample("st-1", "KG-RG-000777", PEOPLE[:1])
        clock = Clock(datetime.now(UTC) + timedelta(hours=2))
        ctx = ResultsContext(
            signer=SlipSigner(b"s" * 32), tz=ZoneInfo("Asia/Ho_Chi_Minh"), base_url="https://kq.vn"
        )
        with Session(engine) as s, s.begin():
            receive_tube(s, tube_code="KG-RG-000777", lab_id=world.lab)
            enter_result(s, world.lab_staff, ctx, tube_code="KG-RG-000777", value="negative")
            # What the worker's sweep does before each pass:
            assert sweep_notifications(s, ctx, since=datetime.now(UTC) - timedelta(hours=1)) == 1
        notifier = AlertNotifier.from_config(config)
        monitor = OpsMonitor(engine=engine, config=config, notify=notifier, clock=clock)
        # st-1 has been silent since its records: offline, and ops get an alert.
        opened = monitor.evaluate().opened
        alert = next(a for a in opened if a.station_id == "st-1")
        worker = worker_from_config(engine, config.outbound, clock=clock)

        first = worker.deliver_due()
        assert first == 1 + len(opened)  # every one refused once (503)
        assert worker.deliver_due() == 0  # nothing due before the backoff
        clock.now += timedelta(seconds=30)
        assert worker.deliver_due() == first  # accepted at the second attempt
        clock.now += timedelta(days=1)
        assert worker.deliver_due() == 0  # delivered: never again

        with Session(engine) as s:
            messages = {
                (m.target, m.event, m.payload.get("alert", {}).get("id")): m
                for m in s.scalars(select(Notification))
            }
        result_msg = messages[(RESULTS, "result", None)]
        alert_msg = messages[(ALERTS, "alert.opened", alert.id)]
        log = log_of(engine)
        for m in (result_msg, alert_msg):
            assert (m.status, m.attempts, m.last_error) == ("sent", 2, None)
            assert log[m.id] == [(1, False, 503, "webhook"), (2, True, 200, "webhook")]
        # Both went to the same URL, signed with their target's key, with the same delivery id
        # on the retry; the body carries the event and the delivery id.
        by_id: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        for path, headers, body in receiver.received:
            assert path == "/hook"
            by_id.setdefault(headers["X-Swabline-Delivery"], []).append((headers, body))
        result_posts = by_id[f"n-{result_msg.id}"]
        alert_posts = by_id[f"n-{alert_msg.id}"]
        assert len(result_posts) == len(alert_posts) == 2
        headers, body = result_posts[-1]
        assert headers["X-Swabline-Signature"] == signature(RESULTS_KEY.encode(), body)
        sent = json.loads(body)
        assert (sent["event"], sent["delivery_id"], sent["value"]) == (
            "result",
            f"n-{result_msg.id}",
            "negative",
        )
        assert sent["person"]["name"] == PEOPLE[0][1]
        headers, body = alert_posts[-1]
        assert headers["X-Swabline-Signature"] == signature(ALERTS_KEY.encode(), body)
        assert headers["X-Swabline-Event"] == "alert.opened"
        sent = json.loads(body)
        assert (sent["alert"]["kind"], sent["alert"]["state"], sent["station"]["station_id"]) == (
            "offline",
            "open",
            "st-1",
        )

        # Acknowledged, then resolved by hand: each change goes the same way, with retries.
        for change, state in (
            (ops_alerts.acknowledge, "acknowledged"),
            (ops_alerts.resolve, "resolved"),
        ):
            with Session(engine) as s, s.begin():
                change(s, world.admin, alert.id, now=clock.now, note="on it", notify=notifier)
            assert worker.deliver_due() == 1  # refused
            clock.now += timedelta(seconds=30)
            assert worker.deliver_due() == 1  # accepted
            with Session(engine) as s:
                row = s.get(Alert, alert.id)
                assert row is not None and row.state == state
                m = s.scalars(
                    select(Notification).where(Notification.event == f"alert.{state}")
                ).one()
                assert (m.target, m.status, m.attempts) == (ALERTS, "sent", 2)
                assert json.loads(receiver.received[-1][2])["alert"]["state"] == state
        with Session(engine) as s:
            targets = sorted(s.scalars(select(Notification.target)))
        assert targets.count(RESULTS) == 1 and targets.count(ALERTS) == len(opened) + 2
        worker.close()
    finally:
        receiver.close()
        engine.dispose()


def test_backoff_doubles_from_the_first_delay_up_to_the_cap(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(datetime.now(UTC))
    worker = OutboundWorker(
        engine=engine,
        hooks={ALERTS: WebhookHook(url=receiver.url)},
        policy=RetryPolicy(max_attempts=5, retry_min_s=10, retry_max_s=25),
        clock=clock,
    )
    with Session(engine) as s, s.begin():
        enqueue(s, ALERTS, "alert.opened", {"alert": {"kind": "offline"}}, dedup_key="a:1")
    clock.now += timedelta(seconds=1)
    receiver.answers = [500, 503, 502]
    delays = []
    for _ in range(3):
        assert worker.deliver_due() == 1
        with Session(engine) as s:
            m = s.scalars(select(Notification)).one()
        delays.append(round((m.next_attempt_at - clock.now).total_seconds()))
        clock.now = m.next_attempt_at
    assert delays == [10, 20, 25]  # doubling, capped
    assert worker.deliver_due() == 1
    with Session(engine) as s:
        m = s.scalars(select(Notification)).one()
        assert (m.status, m.attempts) == ("sent", 4)
    assert [a[2] for a in log_of(engine)[m.id]] == [500, 503, 502, 200]
    worker.close()


def test_an_unreachable_webhook_is_given_up_after_max_attempts_and_kept_in_the_log(
    engine: Engine,
) -> None:
    probe = Receiver()  # a port nobody listens on any more: connection refused
    url = probe.url
    probe.close()
    clock = Clock(datetime.now(UTC))
    worker = OutboundWorker(
        engine=engine,
        hooks={RESULTS: WebhookHook(url=url, timeout_s=2)},
        policy=RetryPolicy(max_attempts=3, retry_min_s=1, retry_max_s=1),
        clock=clock,
    )
    with Session(engine) as s, s.begin():
        enqueue(s, RESULTS, "result", {"x": 1}, dedup_key="k", now=clock.now)
    for _ in range(3):
        assert worker.deliver_due() == 1
        clock.now += timedelta(seconds=10)
    assert worker.deliver_due() == 0  # failed for good: not retried
    with Session(engine) as s:
        m = s.scalars(select(Notification)).one()
    assert (m.status, m.attempts) == ("failed", 3)
    assert m.last_error is not None and m.last_error.startswith("ConnectError")
    assert [ok for _, ok, _, _ in log_of(engine)[m.id]] == [False, False, False]
    worker.close()


def test_messages_for_a_target_without_a_hook_wait_until_one_is_configured(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(datetime.now(UTC))
    with Session(engine) as s, s.begin():
        enqueue(s, RESULTS, "result", {"x": 1}, dedup_key="r", now=clock.now)
        enqueue(s, ALERTS, "alert.opened", {"x": 2}, dedup_key="a", now=clock.now)
    only_alerts = OutboundWorker(
        engine=engine, hooks={ALERTS: WebhookHook(url=receiver.url)}, policy=RetryPolicy()
    )
    assert only_alerts.deliver_due() == 1
    with Session(engine) as s:
        assert dict(s.execute(select(Notification.target, Notification.status)).all()) == {
            RESULTS: "pending",
            ALERTS: "sent",
        }
    both = OutboundWorker(
        engine=engine,
        hooks={ALERTS: WebhookHook(url=receiver.url), RESULTS: WebhookHook(url=receiver.url)},
        policy=RetryPolicy(),
    )
    assert both.deliver_due() == 1
    only_alerts.close()
    both.close()


OLD_SETTINGS = [
    ("[notify]\nwebhook_url = 'https://gw.example/x'\n", "notify.webhook_url", "outbound.results"),
    ("[notify]\nbackoff_base_s = 30\n", "notify.backoff_base_s", "outbound.retry_min_s"),
    ("[notify]\n", "[notify]", "[outbound]"),
    ("[alerts]\nwebhook_url = 'https://chat.example/x'\n", "alerts.webhook_url", "outbound.alerts"),
    (
        "[alerts]\nwebhook_secret_file = '/etc/k'\n",
        "alerts.webhook_secret_file",
        "outbound.alerts.secret_file",
    ),
]


@pytest.mark.parametrize(("toml", "old", "new"), OLD_SETTINGS)
def test_the_settings_of_the_two_old_transports_are_refused_by_name(
    tmp_path: Path, toml: str, old: str, new: str
) -> None:
    path = tmp_path / "server.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert old in str(exc.value) and new in str(exc.value)
    assert str(exc.value).startswith(f"{path}: settings moved")


def test_a_secret_file_that_cannot_be_read_names_its_key(engine: Engine, tmp_path: Path) -> None:
    config = ServerConfig.model_validate(
        {
            "outbound": {
                "alerts": {
                    "webhook_url": "http://127.0.0.1:9/x",
                    "secret_file": str(tmp_path / "missing"),
                }
            }
        }
    )
    with pytest.raises(ConfigError, match=r"^outbound\.alerts\.secret_file: "):
        worker_from_config(engine, config.outbound)


def test_alert_deliveries_of_the_old_table_are_readable_after_the_migration(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0006")
        at = datetime(2026, 11, 27, 2, 14, tzinfo=UTC)
        # Written as the old model wrote them (its column types).
        old = sa.Table(
            "outbound_deliveries",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            *(sa.Column(c, sa.String) for c in ("target", "url", "event", "state", "last_error")),
            sa.Column("payload", sa.JSON),
            sa.Column("attempts", sa.Integer),
            sa.Column("last_status", sa.Integer),
            *(sa.Column(c, UtcDateTime) for c in ("next_attempt_at", "created_at", "delivered_at")),
        )
        with engine.begin() as conn:
            for state, attempts, status, error, delivered in (
                ("delivered", 2, 200, None, at + timedelta(seconds=5)),
                ("pending", 1, 503, "HTTP 503", None),
                ("failed", 10, None, "ConnectError: refused", None),
            ):
                conn.execute(
                    old.insert().values(
                        target="alerts",
                        url="http://hook",
                        event="alert.opened",
                        payload={"alert": {"kind": "offline", "state": state}},
                        state=state,
                        attempts=attempts,
                        next_attempt_at=at + timedelta(minutes=1),
                        last_status=status,
                        last_error=error,
                        created_at=at,
                        delivered_at=delivered,
                    )
                )
        migrate(engine)
        with Session(engine) as s:
            rows = s.scalars(select(Notification).order_by(Notification.id)).all()
            got = [
                (m.target, m.event, m.status, m.attempts, m.last_error, m.payload["alert"]["state"])
                for m in rows
            ]
            assert [m.dedup_key for m in rows] == ["outbound:1", "outbound:2", "outbound:3"]
            assert rows[0].sent_at == at + timedelta(seconds=5)
        assert got == [
            (ALERTS, "alert.opened", "sent", 2, None, "delivered"),
            (ALERTS, "alert.opened", "pending", 1, "HTTP 503", "pending"),
            (ALERTS, "alert.opened", "failed", 10, "ConnectError: refused", "failed"),
        ]
        log = log_of(engine)
        assert [log[m.id] for m in rows] == [
            [(2, True, 200, "webhook")],
            [(1, False, 503, "webhook")],
            [(10, False, None, "webhook")],
        ]
        # The pending one goes out with everything else.
        with Session(engine) as s:
            pending = s.scalars(select(Notification).where(Notification.status == "pending")).one()
        hook = RecordingHook()
        worker = OutboundWorker(
            engine=engine,
            hooks={ALERTS: hook},
            policy=RetryPolicy(),
            clock=lambda: at + timedelta(hours=1),
        )
        assert worker.deliver_due() == 1
        assert log_of(engine)[pending.id][-1] == (2, True, 200, "recording")
        assert [(e, d, p["alert"]["state"]) for e, d, p in hook.deliveries] == [
            ("alert.opened", f"n-{pending.id}", "pending")
        ]
    finally:
        engine.dispose()
