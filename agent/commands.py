"""Remote commands on the station: identify, set a setting, restart, diagnostics, resync.

``CommandHandler`` runs on the station thread (``Station.handle`` passes it each
``CommandReceived``), so it may use the workflow and the outbox like the loop does. Each
``command_id`` is carried out at most once per run: a repeat (a QoS 1 redelivery, or the server
sending it again after a reconnect) gets the first answer again.

Workflows that have settings (pool size, test kind, mode) implement ``ConfigurableWorkflow``:
an ``apply_setting`` method that returns the ``Decision`` a staff command card would give (the
``setting`` record to store and the signal to show), or raises ``ValueError`` with a reason
when the setting cannot be applied now.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from agent.errors import OutboxError
from agent.ports import Clock, Decision, Entry, Feedback, Signal
from protocol import Command, CommandResult, PayloadError, encode
from protocol.commands import (
    RESTART_EXIT_CODE,
    DiagnosticsArgs,
    IdentifyArgs,
    RestartArgs,
    ResyncArgs,
    SetSettingArgs,
    parse_args,
)
from protocol.events import Setting
from protocol.messages import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)


@runtime_checkable
class ConfigurableWorkflow(Protocol):
    """A workflow whose settings can be changed remotely (optional part of ``Workflow``)."""

    def apply_setting(self, setting: Setting) -> Decision:
        """Apply ``setting`` as a command card would; ``ValueError`` if not possible now."""
        ...


class StationControl(Protocol):
    """What a command may ask of the station (``Station`` implements it)."""

    def record(self, entries: Sequence[Entry]) -> int:
        """Store entries as records and send them; returns how many were stored."""
        ...

    def resend_pending(self) -> int:
        """Send every unacknowledged record again now; returns how many."""
        ...

    def request_exit(self, code: int) -> None:
        """Stop the station loop; the agent exits with ``code``."""
        ...


class CommandHandler:
    """Carries out commands and answers them.

    Args:
        workflow: the station's workflow (``set_setting`` needs ``ConfigurableWorkflow``).
        feedback: LEDs and buzzer (``identify``).
        clock: to refuse expired commands (only when the clock is synchronised) and pace
            ``identify``.
        publish_result: sends a ``CommandResult`` to the server.
        diagnostics: builds the diagnostics bundle for a number of log lines.
        identify_every_s: how often the identify signal repeats.
        remember: how many answered command ids are kept for repeats.
    """

    def __init__(
        self,
        *,
        workflow: object,
        feedback: Feedback,
        clock: Clock,
        publish_result: Callable[[CommandResult], None],
        diagnostics: Callable[[int], dict[str, Any]],
        identify_every_s: float = 3.0,
        remember: int = 200,
    ) -> None:
        self._workflow = workflow
        self._feedback = feedback
        self._clock = clock
        self._publish = publish_result
        self._diagnostics = diagnostics
        self._identify_every_ns = int(identify_every_s * 1e9)
        self._identify_until_ns = 0
        self._identify_next_ns = 0
        self._remember = remember
        self._answered: OrderedDict[str, CommandResult] = OrderedDict()

    def handle(self, command: Command, station: StationControl) -> None:
        """Carry out ``command`` (once) and publish its result."""
        earlier = self._answered.get(command.command_id)
        if earlier is not None:
            log.info("command %s (%s) repeated: answering again", command.command_id, command.name)
            self._publish(earlier)
            return
        exit_code: int | None = None
        try:
            if self._clock.synchronized() and self._clock.wall() > command.expires_at:
                raise ValueError("expired before it arrived")
            args = parse_args(command.name, command.args)
            detail, exit_code = self._run(command.name, args, station)
            result = CommandResult(command_id=command.command_id, ok=True, detail=detail)
        except (ValueError, PayloadError, OutboxError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else str(exc)
            log.warning("command %s (%s) refused: %s", command.command_id, command.name, reason)
            result = CommandResult(
                command_id=command.command_id, ok=False, detail={"error": reason[:500]}
            )
        self._answered[command.command_id] = result
        while len(self._answered) > self._remember:
            self._answered.popitem(last=False)
        log.info("command %s (%s) done: ok=%s", command.command_id, command.name, result.ok)
        self._publish(result)
        if exit_code is not None:
            station.request_exit(exit_code)

    def tick(self) -> None:
        """Repeat the identify signal while it lasts (called about every second)."""
        if not self._identify_until_ns:
            return
        now = self._clock.monotonic_ns()
        if now >= self._identify_until_ns:
            self._identify_until_ns = 0
        elif now >= self._identify_next_ns:
            self._identify_next_ns = now + self._identify_every_ns
            self._feedback.signal(Signal.IDENTIFY)

    def _run(
        self, name: str, args: object, station: StationControl
    ) -> tuple[dict[str, Any], int | None]:
        if isinstance(args, IdentifyArgs):
            now = self._clock.monotonic_ns()
            self._identify_until_ns = now + int(args.duration_s * 1e9)
            self._identify_next_ns = now + self._identify_every_ns
            self._feedback.signal(Signal.IDENTIFY)
            return {"duration_s": args.duration_s}, None
        if isinstance(args, SetSettingArgs):
            return self._set_setting(args, station), None
        if isinstance(args, RestartArgs):
            return {"exit_code": RESTART_EXIT_CODE}, RESTART_EXIT_CODE
        if isinstance(args, DiagnosticsArgs):
            return self._bundle(args.log_lines), None
        if isinstance(args, ResyncArgs):
            return {"resent": station.resend_pending()}, None
        raise ValueError(f"command {name!r} is not supported by this station")

    def _set_setting(self, args: SetSettingArgs, station: StationControl) -> dict[str, Any]:
        if not isinstance(self._workflow, ConfigurableWorkflow):
            raise ValueError("this station's workflow has no settings to change")
        setting = Setting(test_kind=args.test_kind, pool_size=args.pool_size, mode=args.mode)
        decision = self._workflow.apply_setting(setting)
        stored = station.record(decision.entries)
        self._feedback.signal(decision.signal)
        return {"applied": setting.model_dump(exclude_none=True), "records": stored}

    def _bundle(self, log_lines: int) -> dict[str, Any]:
        bundle = self._diagnostics(log_lines)
        logs: list[str] = list(bundle.get("logs", []))
        # Drop the oldest lines until the answer fits in one message.
        while True:
            bundle["logs"] = logs
            size = len(encode(CommandResult(command_id="x" * 64, ok=True, detail=bundle)))
            if size <= MAX_PAYLOAD_BYTES - 1024 or not logs:
                break
            logs = logs[max(1, len(logs) // 10) :]
            bundle["logs_truncated"] = True
        return bundle
