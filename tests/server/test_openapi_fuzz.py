"""schemathesis against the published OpenAPI document: no input makes the server fail (5xx).

Every operation is called with generated data (valid and invalid) as a provincial admin; the
number of examples per operation is bounded so the run stays around a minute or two.
(schemathesis's own pytest plugin does not run under pytest 9, so the operations are driven
through its Python API with Hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.server.conftest import Env, build_env

EXAMPLES = 20


@pytest.fixture
def fuzz_env(db_url: str) -> Iterator[Env]:
    env = build_env(db_url)
    yield env
    env.engine.dispose()


def test_no_input_makes_the_server_fail(fuzz_env: Env) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env.app)
    headers = {"Authorization": f"Bearer {fuzz_env.token['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            causes = getattr(exc, "exceptions", [exc])
            failures.append(f"{operation.label}: {'; '.join(repr(c) for c in causes)}")
    assert failures == []
