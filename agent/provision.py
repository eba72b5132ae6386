"""``swabline provision``: a station enrolls and writes its identity, all or nothing.

Two ways in, one way out:

- ``--server URL --token TOKEN``: a technician with a keyboard (or SSH);
- ``--wait-for-card``: no keyboard at all. The station reads its own scanner (as configured in
  the template) until an enrollment card (``SWABLINE:ENROLL:...``) is scanned; other codes are
  refused with the ``REJECTED`` signal, a refused card too (the reason goes to the journal), and
  the station keeps waiting. Joins the Wi-Fi named on the card first, if any.

Either way the server must be one the image allows: ``[enrollment] servers`` in the template
(the province's server URLs), so a forged card pointing elsewhere is refused before its token is
sent anywhere; ``[enrollment] server_ca`` (or ``--server-ca``) pins the CA the server's HTTPS
certificate must chain to. Waiting for a card needs ``servers``; with ``--server`` typed by a
technician it is checked when set.

Then the station posts the token to the server (``protocol.enrollment``), and writes, next to
``--out``: ``mqtt-password`` (0600), ``ca.crt`` and finally ``station.toml`` (0600) = the
template + the station id + the ``[mqtt]`` connection. Every file is written to a temporary name,
flushed, and renamed into place only when all are ready, the configuration last: a failure
leaves the previous state untouched, and ``station.toml`` (what ``swabline-agent.service`` waits
for) appears only once everything it points to is there. Success shows ``CONFIRMED``, a refusal
``REJECTED``, on the template's LEDs and buzzer, both ways in.

With ``--server``/``--token`` on a station whose ``swabline-provision.service`` is waiting for a
card, that service is stopped first (it holds the scanner and the LEDs); after success
``swabline-agent.service`` is started, after a failure the waiting service again.

An outbox left by another identity of this Pi (another station id in the previous
``station.toml``, or records of another station) is set aside whole, counters included, so the
new station's numbering starts from what the server holds for it.

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
from agent.preflight import check_ca_file, check_workflow, check_writable_dir
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


def server_allowed(url: str, servers: Sequence[str]) -> bool:
    """Whether ``url`` is one of ``servers``: same scheme, host and port, and a path at or under
    the allowed one (``https://a.example`` does not allow ``https://a.example.evil.org``)."""
    card = urllib.parse.urlsplit(url)
    for allowed in servers:
        pin = urllib.parse.urlsplit(allowed)
        if (
            card.scheme == pin.scheme
            and card.hostname is not None
            and card.hostname == pin.hostname
            and _port(card) == _port(pin)
            and (card.path.rstrip("/") + "/").startswith(pin.path.rstrip("/") + "/")
        ):
            return True
    return False


def _port(parts: urllib.parse.SplitResult) -> int | None:
    try:
        return parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None


def check_server(url: str, servers: Sequence[str] | None) -> None:
    """``ProvisionError`` unless ``url`` is allowed (``servers`` None: any server)."""
    if servers is not None and not server_allowed(url, servers):
        raise ProvisionError(
            f"refused: {url} is not a server this station may enroll with "
            f"(enrollment.servers in the template: {', '.join(servers) or 'none'})"
        )


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
    check_workflow(config)  # never write a configuration the agent would refuse to run
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


def previous_station_id(target: Target) -> str | None:
    """The station id in the configuration this Pi has now, if any."""
    try:
        data = tomllib.loads(target.out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    station_id = data.get("station_id")
    return station_id if isinstance(station_id, str) else None


def prepare_outbox(target: Target, answer: EnrollResponse) -> str | None:
    """Continue the record numbering after what the server holds; set aside an outbox that
    belongs to another identity (its records stay on disk). Returns what was set aside, for the
    technician.

    The outbox is the new station's own only when the previous configuration names the same
    station id, or, without one, when every record waiting is the new station's. Otherwise it is
    set aside whole, even with nothing waiting: its sequence counter is another station's.
    """
    config = template_config(target.template, source="template")
    path = config.outbox.path
    path.parent.mkdir(parents=True, exist_ok=True)
    moved = None
    if path.exists():
        with TinyDbOutbox(path, capacity=config.outbox.capacity) as outbox:
            waiting = outbox.station_ids()
            pending = len(outbox)
            used = pending > 0 or outbox.last_seq() > 0
        previous = previous_station_id(target)
        owners = waiting - {answer.station_id}
        if previous not in (None, answer.station_id):
            owners.add(str(previous))
        if previous is None and used and not waiting:
            owners.add("unknown-station")
        if owners:
            label = "+".join(sorted(owners))
            kind = "undelivered" if pending else "previous"
            aside = _unused(path.with_name(f"{path.name}.{label}.{kind}"))
            os.replace(path, aside)
            moved = (
                f"{pending} undelivered records of {', '.join(sorted(owners))} kept in {aside}"
                if pending
                else f"the outbox of {', '.join(sorted(owners))} set aside in {aside}"
            )
    with TinyDbOutbox(path, capacity=config.outbox.capacity) as outbox:
        outbox.ensure_seq_floor(answer.seq_floor)
    if target.uid is not None:  # the agent's user must own every file the outbox made
        gid = -1 if target.gid is None else target.gid
        os.chown(path.parent, target.uid, gid)
        for folder, _, names in os.walk(path):
            os.chown(folder, target.uid, gid)
            for name in names:
                os.chown(os.path.join(folder, name), target.uid, gid)
    return moved


def _unused(path: Path) -> Path:
    """``path``, or ``path.2``, ``path.3``... whichever does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def provision(
    *,
    server_url: str,
    token: str,
    target: Target,
    enroller: Enroller,
    wifi: tuple[Wifi, str, str | None] | None = None,
    servers: Sequence[str] | None = None,
) -> EnrollResponse:
    """Enroll and write the station's files; ``ProvisionError``/``ConfigError`` with a reason.

    ``servers``: the servers this station may enroll with (None: any); another server is refused
    before anything is sent to it or the Wi-Fi is touched.
    """
    preflight(target)
    check_server(server_url, servers)
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


# -- handing over between the systemd units --------------------------------------------

PROVISION_UNIT = "swabline-provision.service"
AGENT_UNIT = "swabline-agent.service"


class Services(Protocol):
    def installed(self, unit: str) -> bool: ...
    def active(self, unit: str) -> bool: ...
    def start(self, unit: str) -> None: ...
    def stop(self, unit: str) -> None: ...


class SystemctlServices:
    """systemd units through ``systemctl``. Where systemd is not running (a container, a
    developer's shell) no unit counts as installed and nothing is started or stopped."""

    def __init__(self, *, runtime_dir: Path = Path("/run/systemd/system")) -> None:
        self._running = runtime_dir.is_dir() and shutil.which("systemctl") is not None

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["systemctl", *args], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisionError(f"systemctl {' '.join(args)}: {exc}") from None

    def installed(self, unit: str) -> bool:
        if not self._running:
            return False
        out = self._systemctl("list-unit-files", "--no-legend", unit)
        return out.returncode == 0 and bool(out.stdout.strip())

    def active(self, unit: str) -> bool:
        return self._running and self._systemctl("is-active", "--quiet", unit).returncode == 0

    def start(self, unit: str) -> None:
        self._change("start", unit)

    def stop(self, unit: str) -> None:
        self._change("stop", unit)

    def _change(self, verb: str, unit: str) -> None:
        out = self._systemctl(verb, unit)
        if out.returncode != 0:
            raise ProvisionError(
                f"cannot {verb} {unit}: {out.stderr.strip() or out.returncode} (run with sudo)"
            )


def enroll_by_hand(
    *,
    enroll: Callable[[], EnrollResponse],
    make_feedback: Callable[[], Feedback],
    services: Services,
    out: Path,
    say: Callable[[str], None],
    linger: Callable[[], None],
) -> int:
    """The keyboard path around ``enroll``: take the scanner and LEDs from the waiting
    provisioning service, enroll, show the result, then hand over to the agent (or, after a
    failure, back to the waiting service). Returns the exit status."""
    stopped = False
    if services.installed(PROVISION_UNIT) and services.active(PROVISION_UNIT):
        services.stop(PROVISION_UNIT)  # it holds the scanner and the LEDs
        stopped = True
        say(f"stopped {PROVISION_UNIT} (it was waiting for an enrollment card)")
    answer = None
    try:
        feedback = make_feedback()
        try:
            answer = enroll()
        except AgentError as exc:
            feedback.signal(Signal.REJECTED)
            say(f"swabline provision: {exc}")
        else:
            feedback.signal(Signal.CONFIRMED)
            say(f"enrolled as station {answer.station_id}; configuration in {out}")
        linger()  # let the pattern play before another process takes the LEDs
        feedback.close()
    finally:
        if answer is None and stopped:
            services.start(PROVISION_UNIT)
            say(f"started {PROVISION_UNIT} again: the station waits for a card")
    if answer is None:
        return 1
    if services.installed(AGENT_UNIT):
        services.start(AGENT_UNIT)
        say(f"started {AGENT_UNIT}")
    else:
        say(
            f"{AGENT_UNIT} is not installed here (no systemd): start the agent yourself with "
            f"'swabline agent --config {out}'"
        )
    return 0


# -- the command -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        template = load_template(args.template)
        uid, gid = resolve_owner(args.owner)
        target = Target(out=args.out, template=template, uid=uid, gid=gid)
        preflight(target)
        config = template_config(template, source=str(args.template))
        server_ca = args.server_ca or config.enrollment.server_ca
        if server_ca is not None:
            check_ca_file(server_ca, "--server-ca" if args.server_ca else "enrollment.server_ca")
        servers = config.enrollment.servers
        if args.wait_for_card and not servers:
            raise ConfigError(
                f"enrollment.servers: empty in {args.template}: list the province's server "
                "URLs (https://...) so that a card for any other server is refused"
            )
        if not args.wait_for_card and not args.server:
            raise ConfigError("--token needs --server URL")
    except AgentError as exc:
        print(f"swabline provision: {exc}", file=sys.stderr)
        return 2
    enroller = HttpEnroller(timeout_s=args.timeout, server_ca=server_ca)
    if args.wait_for_card:
        return _wait_for_card(target, enroller, servers)
    from agent.__main__ import build_feedback

    try:
        return enroll_by_hand(
            enroll=lambda: provision(
                server_url=args.server,
                token=args.token,
                target=target,
                enroller=enroller,
                servers=servers or None,  # a typed URL: checked when the image pins servers
            ),
            make_feedback=lambda: build_feedback(config),
            services=SystemctlServices(),
            out=target.out,
            say=lambda text: print(text, file=sys.stderr, flush=True),
            linger=lambda: time.sleep(1.5),
        )
    except AgentError as exc:
        print(f"swabline provision: {exc}", file=sys.stderr)
        return 2


def _wait_for_card(target: Target, enroller: Enroller, servers: Sequence[str]) -> int:
    from agent.__main__ import build_feedback, build_sources

    config = template_config(target.template, source="template")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feedback = build_feedback(config)
    wifi = NmcliWifi() if shutil.which("nmcli") else None

    def attempt(card: EnrollmentCard) -> EnrollResponse:
        check_server(card.server_url, servers)  # before joining the card's Wi-Fi
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
            servers=servers,
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
