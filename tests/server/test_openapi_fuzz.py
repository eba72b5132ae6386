"""schemathesis against the published OpenAPI document: no input makes the server fail (5xx),
and every operation is really exercised, as a provincial admin and as a facility manager.

- Every generated request carries a token issued for it alone, for a user whose account and
  role are put back before each request: an operation that revokes tokens, logs out or
  deactivates users cannot lock the fuzzer out of the operations after it. So no request may be
  refused as unauthenticated (401), except a login with generated credentials and an
  enrollment with a generated token.
- About half of the examples have their path ids, the login and the enrollment token replaced
  by ones that exist in the caller's scope (a facility, a user, a station, a person, a tube, an
  open alert, a command, enrollment tokens, an enrolled station), so requests get past "not
  found" into the handlers.
- Per operation, at least one answer is neither 401 nor 403: the handler ran. As the facility
  manager, the operations the role may not use must never succeed (and are exempt from that).
- Enrollment runs against a real Mosquitto (dynamic security).

schemathesis's own pytest plugin does not run under pytest 9, so the operations are driven
through its Python API with Hypothesis directly.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import enrollment
from server.auth import authenticate, issue
from server.enrollment import BrokerEndpoint, EnrollmentService
from server.lab import receive_tube
from server.models import Alert, Organisation, Person, Role, TokenKind, User, UserRole
from server.ops import commands as ops_commands
from swabline.broker import SERVER_USER, Broker
from tests.server.conftest import PASSWORD, USERS, Env, build_env

EXAMPLES = 20

FORBIDDEN_TO_A_FACILITY_MANAGER = {
    "POST /api/organisations",
    "PATCH /api/organisations/{org_id}",
    "POST /api/lab/results",
    "POST /api/lab/results/import",
    "POST /api/ops/alerts/{alert_id}/acknowledge",
    "POST /api/ops/alerts/{alert_id}/resolve",
    "POST /api/ops/stations/{station_id}/commands",
    "PUT /api/ops/thresholds",
    "GET /api/ops/deliveries",
}
"""Province-level or other roles' operations: a facility manager is refused every time."""

MAY_BE_UNAUTHENTICATED = {"POST /api/auth/login", "POST /api/enroll"}
"""Operations that authenticate what the request itself carries (generated credentials)."""


@pytest.fixture
def fuzz_env(db_url: str, tmp_path: Path) -> Iterator[tuple[Env, Broker]]:
    with Broker(tmp_path / "broker", users={SERVER_USER: secrets.token_urlsafe(12)}) as broker:
        env = build_env(db_url)
        env.app.state.enrollment = EnrollmentService(
            broker_admin=broker.admin,
            endpoint=BrokerEndpoint("127.0.0.1", broker.tls_port, broker.ca_file.read_text()),
            max_token_lifetime=timedelta(days=7),
        )
        yield env, broker
        env.engine.dispose()


def known_values(env: Env, who: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Things that exist in the facility HN-BD-TYT (in both callers' scopes) or belong to
    ``who``: values for path parameters by name, and per operation overrides (path parameters
    and body fields)."""
    facility = env.org["HN-BD-TYT"]
    now = datetime.now(UTC)
    service = env.app.state.enrollment
    with Session(env.engine) as db:
        admin = authenticate(db, env.token["admin"], TokenKind.API, env.config.auth)
        org = db.get(Organisation, facility)
        made = [
            enrollment.create_token(db, admin, facility=org, lifetime=timedelta(hours=1))
            for _ in range(3)
        ]
        db.commit()
        enrolled = enrollment.enroll(env.engine, service.broker_admin, token=made[2].token)
        receive_tube(db, tube_code="T-BD-1", lab_id=env.org["HN-LAB"])
        alert = Alert(
            station_id="st-1",
            facility_id=facility,
            kind="disk_low",
            severity="critical",
            state="open",
            active_key="st-1/disk_low",
            detail={"disk_free_mb": 100},
            opened_at=now,
            last_seen_at=now,
        )
        db.add(alert)
        command = ops_commands.create(
            db, admin, station_id="st-1", name="identify", args={}, ttl_s=3600, now=now
        )
        person = db.scalars(select(Person.id).order_by(Person.id)).first()
        db.commit()
        by_name = {
            "org_id": facility,
            "facility_id": facility,
            "user_id": env.user_id["staff-bd"],
            "station_id": "st-1",
            "person_id": person,
            "code": "T-BD-1",
            "alert_id": alert.id,
            "command_id": command.command_id,
        }
        spare = issue(db, env.user_id[who], TokenKind.API, lifetime=timedelta(days=1)).token.id
        db.commit()
    per_operation: dict[str, dict[str, Any]] = {
        "DELETE /api/auth/tokens/{token_id}": {"token_id": spare},
        "POST /api/enrollment-tokens/{token_id}/cancel": {"token_id": made[1].id},
        "POST /api/stations/{station_id}/decommission": {"station_id": enrolled.station_id},
        "POST /api/enroll": {"body.token": made[0].token},
        "POST /api/lab/results": {"body.tube": "T-BD-1"},
    }
    return by_name, per_operation


def restorer(env: Env, who: str) -> Callable[[], str]:
    """Puts ``who`` back as built (active, with their role) and issues a fresh API token."""
    role, at = USERS[who]
    user_id, org_id = env.user_id[who], env.org[at]

    def credential() -> str:
        with Session(env.engine) as db:
            user = db.get(User, user_id)
            assert user is not None
            user.active = True
            org = db.get(Organisation, org_id)
            assert org is not None
            org.active = True
            held = db.scalars(
                select(UserRole).where(
                    UserRole.user_id == user_id,
                    UserRole.role == role.value,
                    UserRole.organisation_id == org_id,
                )
            ).first()
            if held is None:
                db.add(UserRole(user_id=user_id, role=role.value, organisation_id=org_id))
            secret = issue(db, user_id, TokenKind.API, lifetime=timedelta(hours=1)).secret
            db.commit()
        return secret

    return credential


def fuzzer(
    strategy: Any,
    with_known: Callable[[schemathesis.Case], Any],
    credential: Callable[[], str],
    seen: Counter[int],
) -> Callable[[], None]:
    """Hypothesis over the operation's cases (half of them with known values); each answer's
    status is counted in ``seen`` and checked: never a server error."""

    @given(case=st.one_of(strategy, strategy.map(with_known)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        headers = {"Authorization": f"Bearer {credential()}"}
        response = case.call(headers=headers)
        seen[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    return run  # type: ignore[no-any-return]


@pytest.mark.parametrize("who", ["admin", "mgr-bd"])
def test_no_input_makes_the_server_fail_and_every_operation_runs(
    fuzz_env: tuple[Env, Broker], who: str
) -> None:
    env, _broker = fuzz_env
    assert USERS["mgr-bd"] == (Role.FACILITY_MANAGER, "HN-BD-TYT")
    by_name, per_operation = known_values(env, who)
    credential = restorer(env, who)
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 50
    labels = {op.label for op in operations}
    assert set(per_operation) | FORBIDDEN_TO_A_FACILITY_MANAGER | MAY_BE_UNAUTHENTICATED <= labels
    failures: list[str] = []
    answers: dict[str, Counter[int]] = {}
    for operation in operations:
        label = operation.label
        seen = answers[label] = Counter()
        overrides = dict(by_name)
        overrides.update(per_operation.get(label, {}))

        def with_known(case: schemathesis.Case, overrides: dict[str, Any] = overrides) -> Any:
            for name in list(case.path_parameters or {}):
                if name in overrides:
                    case.path_parameters[name] = overrides[name]
            if isinstance(case.body, dict):
                for key, value in overrides.items():
                    if key.startswith("body."):
                        case.body[key[5:]] = value
            if case.operation.label == "POST /api/auth/login":
                case.body = {"username": who, "password": PASSWORD}
            return case

        run = fuzzer(operation.as_strategy(), with_known, credential, seen)
        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            causes = getattr(exc, "exceptions", [exc])
            failures.append(f"{label}: {'; '.join(repr(c) for c in causes)}")
    for label, seen in answers.items():
        statuses = dict(sorted(seen.items()))
        if seen[401] and label not in MAY_BE_UNAUTHENTICATED:
            failures.append(f"{label}: refused as unauthenticated with a valid token {statuses}")
        if who == "mgr-bd" and label in FORBIDDEN_TO_A_FACILITY_MANAGER:
            if any(200 <= s < 300 for s in seen):
                failures.append(f"{label}: a facility manager succeeded {statuses}")
        elif not any(s not in (401, 403) for s in seen):
            failures.append(f"{label}: never got past authentication {statuses}")
    assert failures == []
