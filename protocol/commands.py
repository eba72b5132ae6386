"""Remote commands: the names a ``Command`` may carry and the schema of each one's ``args``.

Both sides validate against these models: the server before queueing a command, the station
before carrying it out. ``CommandResult.detail`` is free-form, but each command documents what it
returns (see ``docs/protocol.md``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.events import Mode, TestKind
from protocol.messages import PayloadError


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifyArgs(_Args):
    """Blink and beep so that someone on site can find the box."""

    duration_s: float = Field(30.0, ge=1, le=600, description="How long to keep signalling.")


class SetSettingArgs(_Args):
    """Change the station's sampling settings, as a staff command card would."""

    test_kind: TestKind | None = None
    pool_size: int | None = Field(None, ge=1, le=50)
    mode: Mode | None = None

    @model_validator(mode="after")
    def _something_to_set(self) -> SetSettingArgs:
        if self.test_kind is None and self.pool_size is None and self.mode is None:
            raise ValueError("name at least one of test_kind, pool_size, mode")
        return self


class RestartArgs(_Args):
    """Exit the agent with ``RESTART_EXIT_CODE`` after answering; systemd starts it again."""


class DiagnosticsArgs(_Args):
    """Send a diagnostics bundle: configuration without secrets, recent logs, outbox statistics."""

    log_lines: int = Field(200, ge=0, le=2000, description="Most recent log lines to include.")


class ResyncArgs(_Args):
    """Send every record still in the outbox again, now."""


COMMAND_ARGS: dict[str, type[_Args]] = {
    "identify": IdentifyArgs,
    "set_setting": SetSettingArgs,
    "restart": RestartArgs,
    "diagnostics": DiagnosticsArgs,
    "resync": ResyncArgs,
}

RESTART_EXIT_CODE = 75
"""``EX_TEMPFAIL``: the agent exits with this code when told to restart (systemd restarts it)."""


def parse_args(name: str, args: dict[str, Any]) -> _Args:
    """Validate ``args`` of command ``name``; ``PayloadError`` names the problem."""
    model = COMMAND_ARGS.get(name)
    if model is None:
        raise PayloadError(f"unknown command {name!r}")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "args"
        raise PayloadError(f"{name}: {where}: {err['msg']}") from None
