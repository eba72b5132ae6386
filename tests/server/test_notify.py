"""Result notifications through the outbound webhook: a real HTTP server on 127.0.0.1 that
fails, then accepts; retries with backoff; every attempt in the delivery log; the server's
threads sweep results and deliver them. (``test_outbound.py`` covers the transport that alerts
share.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.fakes import RecordingHook
from server.models import Notification, NotificationDelivery
from server.notify import enqueue
from server.outbound import RESULTS, OutboundWorker, RetryPolicy, WebhookHook, signature


class Gateway:
    """An SMS gateway stand-in: answers 503 to the first ``fail_first`` requests, then 200."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers.items()), body))
                failing = len(outer.requests) <= outer.fail_first
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"busy" if failing else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway(fail_first=2)
    yield gw
    gw.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_webhook_that_fails_first_is_retried_with_backoff_until_it_accepts(
    engine: Engine, gateway: Gateway
) -> None:
    clock = Clock()
    payload = {"event": "result", "value": "negative", "message": {"vi": "Âm tính"}}
    with Session(engine) as s, s.begin():
        enqueue(s, event="result", dedup_key="result:1:1", payload=payload, now=clock.now)
        enqueue(s, event="result", dedup_key="result:1:1", payload=payload, now=clock.now)
    hook = WebhookHook(url=gateway.url, secret=b"gateway-secret", timeout_s=5)
    worker = OutboundWorker(
        engine=engine,
        hooks={RESULTS: hook},
        policy=RetryPolicy(retry_min_s=30, retry_max_s=600, max_attempts=5),
        clock=clock,
    )
    assert worker.deliver_due() == 1  # fails (503)
    assert worker.deliver_due() == 0  # not due before the backoff
    clock.now += timedelta(seconds=30)
    assert worker.deliver_due() == 1  # fails again
    clock.now += timedelta(seconds=59)
    assert worker.deliver_due() == 0  # second backoff is 60 s
    clock.now += timedelta(seconds=1)
    assert worker.deliver_due() == 1  # accepted
    clock.now += timedelta(days=1)
    assert worker.deliver_due() == 0  # sent: never again
    hook.close()

    assert len(gateway.requests) == 3
    headers, body = gateway.requests[-1]
    assert json.loads(body) == {**payload, "delivery_id": headers["X-Swabline-Delivery"]}
    assert headers["X-Swabline-Event"] == "result"
    assert headers["X-Swabline-Signature"] == signature(b"gateway-secret", body)
    # The same delivery id on every retry, so the gateway can drop duplicates.
    assert {h["X-Swabline-Delivery"] for h, _ in gateway.requests} == {
        headers["X-Swabline-Delivery"]
    }
    with Session(engine) as s:
        note = s.scalars(select(Notification)).one()
        assert (note.status, note.attempts, note.last_error) == ("sent", 3, None)
        log = s.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)).all()
    assert [(d.attempt, d.ok, d.status_code, d.hook) for d in log] == [
        (1, False, 503, "webhook"),
        (2, False, 503, "webhook"),
        (3, True, 200, "webhook"),
    ]
    assert log[0].error == "HTTP 503: busy"


def test_an_unreachable_gateway_gives_up_after_max_attempts(engine: Engine) -> None:
    clock = Clock()
    with Session(engine) as s, s.begin():
        enqueue(s, event="result", dedup_key="k", payload={"x": 1}, now=clock.now)
    # A port nobody listens on: connection refused.
    probe = Gateway(fail_first=0)
    url = probe.url
    probe.close()
    hook = WebhookHook(url=url, timeout_s=2)
    worker = OutboundWorker(
        engine=engine,
        hooks={RESULTS: hook},
        policy=RetryPolicy(retry_min_s=1, max_attempts=3),
        clock=clock,
    )
    for _ in range(3):
        assert worker.deliver_due() == 1
        clock.now += timedelta(seconds=10)
    assert worker.deliver_due() == 0
    hook.close()
    with Session(engine) as s:
        note = s.scalars(select(Notification)).one()
        assert (note.status, note.attempts) == ("failed", 3)
        assert note.last_error is not None and note.last_error.startswith("ConnectError")


def test_the_worker_thread_delivers_in_the_background(engine: Engine) -> None:
    hook = RecordingHook(fail_first=1)
    with Session(engine) as s, s.begin():
        enqueue(s, event="result", dedup_key="a", payload={"tube": "T-1"})
    worker = OutboundWorker(
        engine=engine, hooks={RESULTS: hook}, policy=RetryPolicy(retry_min_s=0.05), poll_s=0.02
    )
    stop = threading.Event()

    def before() -> None:
        if hook.deliveries:
            stop.set()

    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"before": before})
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert hook.attempts == 2
    delivery = hook.deliveries[0][1]
    assert hook.deliveries == [
        ("result", delivery, {"event": "result", "delivery_id": delivery, "tube": "T-1"})
    ]


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(retry_min_s=30, retry_max_s=300)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5, 6)] == [30, 60, 120, 240, 300, 300]


def test_a_result_reaches_the_gateway_for_every_person_through_the_server_threads(
    db_url: str, gateway: Gateway
) -> None:
    """Result entered -> the sweep queues one message per person -> the dispatcher thread
    posts them, retrying those the gateway refused."""
    from zoneinfo import ZoneInfo

    from server.background import start_background
    from server.config import ServerConfig
    from server.lab import receive_tube
    from server.results import ResultsContext, enter_result
    from server.signing import SlipSigner
    from tests.server.world import PEOPLE, build_world

    engine = make_engine(db_url)
    migrate(engine)
    world = build_world(engine)
    world.sample("st-1", "KG-RG-000777", PEOPLE[:2])
    ctx = ResultsContext(
        signer=SlipSigner(b"s" * 32), tz=ZoneInfo("Asia/Ho_Chi_Minh"), base_url="https://kq.vn"
    )
    with Session(engine) as s, s.begin():
        receive_tube(s, tube_code="KG-RG-000777", lab_id=world.lab)
        enter_result(s, world.lab_staff, ctx, tube_code="KG-RG-000777", value="negative")
    config = ServerConfig.model_validate(
        {
            "outbound": {
                "retry_min_s": 0.05,
                "poll_s": 0.05,
                "results": {"webhook_url": gateway.url},
            },
            "reports": {"schedule": False},
        }
    )
    background = start_background(engine, config, ctx)
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while datetime.now(UTC) < deadline:
            with Session(engine) as s:
                statuses = s.scalars(select(Notification.status)).all()
            if statuses and set(statuses) == {"sent"}:
                break
            background.stop.wait(0.05)
    finally:
        background.close()
        engine.dispose()
    assert sorted(statuses) == ["sent", "sent"]
    bodies = [json.loads(body) for _, body in gateway.requests]
    assert len(bodies) == 4  # the gateway refuses its first two requests: both are retried
    names = sorted({b["person"]["name"] for b in bodies})
    assert names == ["Nguyễn Thị Bình", "Trần Văn An"]
    assert {b["message"]["en"].split(":")[-1].strip() for b in bodies} == {"NEGATIVE."}
