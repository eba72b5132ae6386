"""Outbound webhooks against a real local HTTP server: signed, retried with backoff, logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.models import OutboundDelivery
from server.outbound import OutboundWorker, RetryPolicy, Target, WebhookHook, enqueue


class Hook:
    """A webhook receiver that answers with the next status in ``answers`` (then 200)."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((dict(self.headers), body))
                self.send_response(hook.answers.pop(0) if hook.answers else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(
    sqlite_engine: Engine, hook: Hook
) -> None:
    clock = Clock()
    target = Target("alerts", hook.url, b"s3cret")
    worker = OutboundWorker(
        engine=sqlite_engine,
        hooks={"alerts": WebhookHook(url=hook.url, secret=b"s3cret")},
        policy=RetryPolicy(max_attempts=5, retry_min_s=10, retry_max_s=25),
        clock=clock,
    )
    with Session(sqlite_engine) as s, s.begin():
        enqueue(
            s, target, "alert.opened", {"alert": {"kind": "offline", "text": "Trạm"}}, now=clock.now
        )
    hook.answers = [500, 503, 502]
    assert worker.deliver_due() == 1
    assert worker.deliver_due() == 0  # not due yet: waits 10 s
    delays = []
    for _ in range(3):
        with Session(sqlite_engine) as s:
            d = s.scalars(select(OutboundDelivery)).one()
        delays.append(round((d.next_attempt_at - clock.now).total_seconds()))
        clock.now = d.next_attempt_at
        worker.deliver_due()
    assert delays == [10, 20, 25]  # doubling, capped
    with Session(sqlite_engine) as s:
        d = s.scalars(select(OutboundDelivery)).one()
    assert (d.state, d.attempts, d.last_status, d.last_error) == ("delivered", 4, 200, None)
    assert [h["X-Swabline-Delivery"] for h, _ in hook.received] == [str(d.id)] * 4  # same id
    assert len(hook.received) == 4
    headers, body = hook.received[-1]
    assert json.loads(body) == {
        "event": "alert.opened",
        "delivery_id": d.id,
        "alert": {"kind": "offline", "text": "Trạm"},
    }
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Swabline-Signature"] == expected
    assert headers["X-Swabline-Event"] == "alert.opened"


def test_an_unreachable_webhook_is_given_up_after_max_attempts(sqlite_engine: Engine) -> None:
    clock = Clock()
    target = Target("alerts", "http://127.0.0.1:9/nothing-listens-here")
    worker = OutboundWorker(
        engine=sqlite_engine,
        hooks={"alerts": WebhookHook(url=target.url, timeout_s=2)},
        policy=RetryPolicy(max_attempts=2, retry_min_s=1, retry_max_s=1),
        clock=clock,
    )
    with Session(sqlite_engine) as s, s.begin():
        enqueue(s, target, "alert.resolved", {}, now=clock.now)
    worker.deliver_due()
    clock.now += timedelta(seconds=1)
    worker.deliver_due()
    with Session(sqlite_engine) as s:
        d = s.scalars(select(OutboundDelivery)).one()
    assert (d.state, d.attempts, d.last_status) == ("failed", 2, None)
    assert d.last_error and "refused" in d.last_error.lower()
    clock.now += timedelta(hours=1)
    assert worker.deliver_due() == 0  # failed for good: stays in the log, not retried


def test_deliveries_for_a_target_without_a_hook_wait(sqlite_engine: Engine) -> None:
    clock = Clock()
    worker = OutboundWorker(engine=sqlite_engine, hooks={}, policy=RetryPolicy(), clock=clock)
    with Session(sqlite_engine) as s, s.begin():
        enqueue(s, Target("results", "http://127.0.0.1:9/"), "result.ready", {}, now=clock.now)
    assert worker.deliver_due() == 0
    with Session(sqlite_engine) as s:
        assert s.scalars(select(OutboundDelivery.state)).one() == "pending"
