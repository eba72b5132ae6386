"""``swabline provision``: a station enrolls and writes its identity, all or nothing.

Two ways in, one way out:

- ``--server URL --token TOKEN``: a technician with a keyboard (or SSH);
- ``--wait-for-card``: no keyboard at all. The station reads its own scanner (as configured in
  the template) until an enrollment card (``SWABLINE:ENROLL:...``) is scanned; other codes are
  refused with the ``REJECTED`` signal, a refused card too (the reason goes to the journal), and
  the station keeps waiting. Joins the Wi-Fi named on the card first, if any.

Then the station posts the token to the server (``protocol.enrollment``), and writes, next to
``--out``: ``mqtt-password`` (0600), ``ca.crt`` and finally ``station.toml`` (0600) = the
template + the station id + the ``[mqtt]`` connection. Every file is written to a temporary name,
flushed, and renamed into place only when all are ready, the configuration last: a failure
leaves the previous state untouched, and ``station.toml`` (what ``swabline-agent.service`` waits
for) appears only once everything it points to is there. Success shows ``CONFIRMED``.

Everything that can be checked before the token is spent is checked first (template, folder,
owner, outbox), because the server consumes the token when it answers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import pwd
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from agent import __version__
from agent.config import StationConfig, parse_config
from agent.errors import AgentError, ConfigError, ProvisionError
from agent.outbox import TinyDbOutbox
from agent.ports import Feedback, Scan, ScanSource, Signal, SourceEvent
from agent.preflight import check_ca_file, check_writable_dir
from protocol.cards import CardError, EnrollmentCard, is_enrollment_card, parse_enrollment_card
from protocol.enrollment import ENROLL_PATH, EnrollRequest, EnrollResponse

log = logging.getLogger("swabline.provision")

PASSWORD_FILE = "mqtt-password"
CA_FILE = "ca.crt"
_PLACEHOLDER_ID = "unprovisioned"
_IDENTITY_KEYS = ("host", "port", "username", "password_file", "ca_file")


# -- talking to the server ---------------------------------------------------------------


class Enroller(Protocol):
    def enroll(self, server_url: str, request: EnrollRequest) -> EnrollResponse: ...


class HttpEnroller:
    """``POST /api/enroll`` over HTTP(S) with the standard library.

    HTTPS is verified with the system's trust store, or ``server_ca`` when given. Plain HTTP
    would show the MQTT password to the network: it is accepted only for loopback addresses
    (development, tests) unless ``allow_http`` is set.
    """

    def __init__(
        self, *, timeout_s: float = 30.0, server_ca: Path | None = None, allow_http: bool = False
    ) -> None:
        self._timeout = timeout_s
        self._context = ssl.create_default_context(cafile=str(server_ca) if server_ca else None)
        self._allow_http = allow_http

    def enroll(self, server_url: str, request: EnrollRequest) -> EnrollResponse:
        url = server_url.rstrip("/") + ENROLL_PATH
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "http" and not (self._allow_http or _is_loopback(parts.hostname)):
            raise ProvisionError(
                f"refusing to send credentials over plain HTTP to {parts.hostname}: use https://"
            )
        req = urllib.request.Request(
            url,
            data=request.model_dump_json().encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._context) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:
            raise ProvisionError(f"the server refused: {_detail(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProvisionError(f"cannot reach the server at {server_url}: {reason}") from None
        try:
            return EnrollResponse.model_validate_json(body)
        except ValidationError as exc:
            raise ProvisionError(f"the server's answer is not an enrollment: {exc}") from None


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else f"HTTP {exc.code}"


# -- Wi-Fi -------------------------------------------------------------------------------


class Wifi(Protocol):
    def join(self, ssid: str, password: str | None) -> None: ...


class NmcliWifi:
    """Joins a Wi-Fi network with NetworkManager's ``nmcli`` (Raspberry Pi OS bookworm and
    later). Needs root or the NetworkManager polkit rights."""

    def __init__(self, *, timeout_s: float = 45.0) -> None:
        self._timeout = timeout_s

    def join(self, ssid: str, password: str | None) -> None:
        cmd = ["nmcli", "--wait", str(int(self._timeout)), "device", "wifi", "connect", ssid]
        if password:
            cmd += ["password", password]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self._timeout + 5, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisionError(f"cannot join Wi-Fi {ssid!r}: {exc}") from None
        if out.returncode != 0:
            raise ProvisionError(f"cannot join Wi-Fi {ssid!r}: {out.stderr.strip()}")


# -- writing the station's files ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom the provisioned files are written."""

    out: Path
    template: dict[str, Any]
    uid: int | None = None
    gid: int | None = None

    @property
    def folder(self) -> Path:
        return self.out.parent


def load_template(path: Path) -> dict[str, Any]:
    """The station settings without identity; ``ConfigError`` naming the key if invalid."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the template {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in ("station_id",):
        if key in data:
            raise ConfigError(f"{path}: {key} is set by enrollment, remove it from the template")
    for key in _IDENTITY_KEYS:
        if key in data.get("mqtt", {}):
            raise ConfigError(f"{path}: mqtt.{key} is set by enrollment, remove it")
    template_config(data, source=str(path))
    return data


def template_config(data: dict[str, Any], *, source: str) -> StationConfig:
    """The template as a configuration, with a placeholder identity (for scanner, feedback...)."""
    return parse_config(_toml({**data, "station_id": _PLACEHOLDER_ID}), source=source)


def resolve_owner(owner: str | None) -> tuple[int | None, int | None]:
    if owner is None:
        return None, None
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ConfigError(f"--owner: no user {owner!r} on this machine") from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise ConfigError(f"--owner {owner}: only root can give files to another user")
    return entry.pw_uid, entry.pw_gid


def preflight(target: Target) -> None:
    """What can fail before the token is spent."""
    if not target.folder.is_dir():
        raise ConfigError(f"--out: {target.folder} is not a folder")
    if not os.access(target.folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write in {target.folder}")
    config = template_config(target.template, source="template")
    check_writable_dir(config.outbox.path, "outbox.path")


def station_files(target: Target, answer: EnrollResponse) -> dict[str, bytes]:
    """The files to write, the configuration last (the order of the dict is the order of the
    renames)."""
    files: dict[str, bytes] = {PASSWORD_FILE: answer.mqtt.password.encode() + b"\n"}
    mqtt: dict[str, Any] = dict(target.template.get("mqtt", {}))
    mqtt.update(
        host=answer.mqtt.host,
        port=answer.mqtt.port,
        password_file=str(target.folder / PASSWORD_FILE),
    )
    if answer.mqtt.username != answer.station_id:
        mqtt["username"] = answer.mqtt.username
    if answer.mqtt.ca_pem:
        files[CA_FILE] = answer.mqtt.ca_pem.encode()
        mqtt["ca_file"] = str(target.folder / CA_FILE)
    settings = {"station_id": answer.station_id, **target.template, "mqtt": mqtt}
    text = (
        "# Written by `swabline provision` at enrollment: station "
        f"{answer.station_id}, facility {answer.facility}.\n"
        "# Change settings in the template and provision again, or edit with care and run\n"
        "# `swabline agent --check-config` afterwards.\n" + _toml(settings)
    )
    parse_config(text, source="the new station.toml")  # never write what the agent refuses
    files[target.out.name] = text.encode()
    return files


def install_files(target: Target, files: dict[str, bytes]) -> None:
    """Write every file under a temporary name, then rename them into place in order.

    A failure while renaming puts back what was there before (kept as hard links meanwhile).
    """
    folder = target.folder
    temps: list[tuple[Path, Path]] = []
    backups: dict[Path, Path] = {}
    done: list[Path] = []
    try:
        for name, data in files.items():
            final, tmp = folder / name, folder / f".{name}.provisioning"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            temps.append((tmp, final))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if name == CA_FILE:
                os.chmod(tmp, 0o644)  # public
            if target.uid is not None:
                os.chown(tmp, target.uid, -1 if target.gid is None else target.gid)
        for _, final in temps:
            if final.is_file():
                backup = folder / f".{final.name}.previous"
                backup.unlink(missing_ok=True)
                os.link(final, backup)
                backups[final] = backup
        for tmp, final in temps:
            os.replace(tmp, final)
            done.append(final)
        _fsync_dir(folder)
    except OSError as exc:
        for final in reversed(done):
            if final in backups:
                os.replace(backups.pop(final), final)
            else:
                final.unlink(missing_ok=True)
        raise ProvisionError(f"cannot write the station's files in {folder}: {exc}") from exc
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for backup in backups.values():
            backup.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_outbox(target: Target, answer: EnrollResponse) -> str | None:
    """Continue the record numbering after what the server holds; set aside records of another
    station id (they stay on disk). Returns what was set aside, for the technician."""
    config = template_config(target.template, source="template")
    path = config.outbox.path
    path.parent.mkdir(parents=True, exist_ok=True)
    moved = None
    if path.exists():
        with TinyDbOutbox(path, capacity=config.outbox.capacity) as outbox:
            others = outbox.station_ids() - {answer.station_id}
            pending = len(outbox)
        if others:
            aside = path.with_name(f"{path.name}.{'+'.join(sorted(others))}.undelivered")
            os.replace(path, aside)
            moved = f"{pending} undelivered records of {', '.join(sorted(others))} kept in {aside}"
    with TinyDbOutbox(path, capacity=config.outbox.capacity) as outbox:
        outbox.ensure_seq_floor(answer.seq_floor)
    if target.uid is not None:
        for p in (path.parent, path):
            os.chown(p, target.uid, -1 if target.gid is None else target.gid)
    return moved


def provision(
    *,
    server_url: str,
    token: str,
    target: Target,
    enroller: Enroller,
    wifi: tuple[Wifi, str, str | None] | None = None,
) -> EnrollResponse:
    """Enroll and write the station's files; ``ProvisionError``/``ConfigError`` with a reason."""
    preflight(target)
    if wifi is not None:
        joiner, ssid, password = wifi
        joiner.join(ssid, password)
    answer = enroller.enroll(
        server_url,
        EnrollRequest(token=token, hostname=socket.gethostname(), agent_version=__version__),
    )
    files = station_files(target, answer)
    if answer.mqtt.ca_pem:  # a CA the agent could not load would stop it at start
        probe = target.folder / f".{CA_FILE}.check"
        try:
            probe.write_text(answer.mqtt.ca_pem)
            check_ca_file(probe, "the server's CA")
        finally:
            probe.unlink(missing_ok=True)
    moved = prepare_outbox(target, answer)
    install_files(target, files)
    log.info(
        "enrolled as station %s (facility %s); configuration in %s%s",
        answer.station_id,
        answer.facility,
        target.out,
        f"; {moved}" if moved else "",
    )
    if abs(answer.server_time - time.time()) > 120:
        log.warning(
            "this station's clock is %.0f s off the server's: check NTP",
            time.time() - answer.server_time,
        )
    return answer


# -- waiting for an enrollment card -----------------------------------------------------


def wait_for_card(
    *,
    sources: Sequence[ScanSource],
    feedback: Feedback,
    stop: threading.Event,
    attempt: Callable[[EnrollmentCard], EnrollResponse],
) -> EnrollResponse | None:
    """Read scans until a card enrolls this station (or ``stop``): returns the answer."""
    events: queue.Queue[SourceEvent] = queue.Queue()
    for source in sources:
        threading.Thread(
            target=source.run, args=(events.put, stop), name=f"source-{source.name}", daemon=True
        ).start()
    log.info("waiting for an enrollment card on %s", ", ".join(s.name for s in sources))
    while not stop.is_set():
        try:
            event = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if not isinstance(event, Scan):
            continue
        if event.rejected or not is_enrollment_card(event.text):
            log.warning("not an enrollment card: %r", event.text[:40])
            feedback.signal(Signal.REJECTED)
            continue
        try:
            card = parse_enrollment_card(event.text)
            answer = attempt(card)
        except CardError as exc:
            log.warning("enrollment card refused: %s", exc.reason)
            feedback.signal(Signal.REJECTED)
            continue
        except (ProvisionError, ConfigError) as exc:
            log.warning("enrollment failed: %s", exc)
            feedback.signal(Signal.REJECTED)
            continue
        feedback.signal(Signal.CONFIRMED)
        return answer
    return None


# -- the command -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        template = load_template(args.template)
        uid, gid = resolve_owner(args.owner)
        target = Target(out=args.out, template=template, uid=uid, gid=gid)
        preflight(target)
    except AgentError as exc:
        print(f"swabline provision: {exc}", file=sys.stderr)
        return 2
    enroller = HttpEnroller(timeout_s=args.timeout, server_ca=args.server_ca)
    if not args.wait_for_card:
        if not args.server:
            print("swabline provision: --token needs --server URL", file=sys.stderr)
            return 2
        try:
            answer = provision(
                server_url=args.server, token=args.token, target=target, enroller=enroller
            )
        except AgentError as exc:
            print(f"swabline provision: {exc}", file=sys.stderr)
            return 1
        print(f"enrolled as station {answer.station_id}; configuration in {args.out}")
        return 0
    return _wait_for_card(target, enroller)


def _wait_for_card(target: Target, enroller: Enroller) -> int:
    from agent.__main__ import build_feedback, build_sources

    config = template_config(target.template, source="template")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feedback = build_feedback(config)
    wifi = NmcliWifi() if shutil.which("nmcli") else None

    def attempt(card: EnrollmentCard) -> EnrollResponse:
        joining = None
        if card.wifi_ssid is not None:
            if wifi is None:
                raise ProvisionError("the card names a Wi-Fi network but nmcli is missing")
            joining = (wifi, card.wifi_ssid, card.wifi_password)
        return provision(
            server_url=card.server_url,
            token=card.token,
            target=target,
            enroller=enroller,
            wifi=joining,
        )

    try:
        answer = wait_for_card(
            sources=build_sources(config), feedback=feedback, stop=stop, attempt=attempt
        )
        if answer is None:
            return 1
        print(f"enrolled as station {answer.station_id}; configuration in {target.out}")
        time.sleep(1.5)  # let the confirmation pattern play before the agent takes the LEDs
        return 0
    finally:
        feedback.close()


def _toml(data: dict[str, Any]) -> str:
    """A TOML document for plain settings: scalars at the top, then one table per section."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, section in data.items():
        if isinstance(section, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v), ensure_ascii=False)  # JSON string escapes are TOML's
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")
