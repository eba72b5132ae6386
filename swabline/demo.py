"""``swabline demo``: broker, server and simulated stations on one machine.

Everything it makes lives in one folder (``--workdir``, else a temporary folder removed at the
end): configuration, the database, the broker's files and every password. A second run on the
same folder reuses the passwords it finds there, so the broker's users, the server and the
stations keep agreeing, and the records of earlier runs stay in the database.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from swabline.broker import SERVER_USER, Broker, BrokerError, free_port

MANUAL_STATION = "manual-1"
DEFAULT_HTTP_PORT = 8080
DEFAULT_MQTT_PORT = 18830


def station_toml(station_id: str, broker: Broker, workdir: Path, password_file: Path) -> str:
    return (
        f'station_id = "{station_id}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'password_file = "{password_file}"\n\n'
        '[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{workdir / station_id / "outbox"}"\n\n'
        '[feedback]\ntype = "log"\n\n'
        "[workflow]\ntube_patterns = ['DEMO-\\d{2}-\\d{6}']\npool_size = 5\n"
    )


def server_toml(broker: Broker, db: Path, password_file: Path, http_port: int) -> str:
    return (
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'username = "{SERVER_USER}"\npassword_file = "{password_file}"\n\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
    )


def manual_env(broker: Broker, password: str) -> str:
    """Shell variables for acting as ``manual-1`` by hand (docs/protocol.md)."""
    return (
        "# Written by `swabline demo`: source it (. FILE) to act as station manual-1 by hand.\n"
        f"MQTT_HOST={broker.host}\nMQTT_PORT={broker.port}\n"
        f"STATION={MANUAL_STATION}\nMQTT_PASSWORD={shlex.quote(password)}\n"
    )


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value)
    path.chmod(0o600)
    return path


def kept_secret(path: Path) -> str:
    """The password in ``path`` if an earlier run left one there, else a new one written there."""
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    new = secrets.token_urlsafe(16)
    write_secret(path, new)
    return new


def choose_port(asked: int | None, default: int) -> int:
    """``asked`` as given (0: any free port); without it ``default``, or a free port when
    something already listens there."""
    if asked == 0:
        return free_port()
    if asked is not None:
        return asked
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", default))
        except OSError:
            return free_port()
    return default


_SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi"]
_GIVEN = ["An", "Bình", "Cường", "Dũng", "Hà", "Hùng", "Lan", "Mai", "Thảo", "Tâm"]


def synthetic_codes(rng: random.Random, station_no: int) -> list[str]:
    """A tube and a few people, as staff would scan them (synthetic CCCD identities whose
    numbers agree with their birth year and sex, as real ones do)."""
    tube = f"DEMO-{station_no:02d}-{rng.randrange(10**6):06d}"
    people = []
    for _ in range(rng.randint(1, 5)):
        province = rng.choice(["001", "031", "048", "079", "092"])
        year, female = rng.randint(1940, 2015), rng.random() < 0.5
        digit = (year // 100 - 19) * 2 + female
        number = f"{province}{digit}{year % 100:02d}{rng.randrange(10**6):06d}"
        dob = f"{rng.randint(1, 28):02d}{rng.randint(1, 12):02d}{year}"
        name = f"{rng.choice(_SURNAMES)} {'Thị' if female else 'Văn'} {rng.choice(_GIVEN)}"
        sex = "Nữ" if female else "Nam"
        people.append(f"{number}||{name}|{dob}|{sex}|Phường Demo, Hà Nội|01012022")
    return [tube, *people]


def _feed(stdin: IO[str], station_no: int, per_minute: float, stop: threading.Event) -> None:
    rng = random.Random(station_no)
    while not stop.is_set():
        for code in synthetic_codes(rng, station_no):
            if stop.wait(rng.expovariate(per_minute / 60)):
                return
            try:
                stdin.write(code + "\n")
                stdin.flush()
            except (BrokenPipeError, ValueError):
                return


def _wait_for_http(
    url: str, procs: list[subprocess.Popen[str]], stop: threading.Event, timeout_s: float
) -> bool:
    """True once ``url`` answers at all; False if a process exits, ``stop`` is set or time runs
    out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered (a login redirect or page is fine)
        except OSError:
            stop.wait(0.3)
    return False


def run(args: argparse.Namespace) -> int:
    temporary = args.workdir is None
    workdir: Path = (args.workdir or Path(tempfile.mkdtemp(prefix="swabline-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ids = [f"demo-{i}" for i in range(1, args.stations + 1)]
    for sid in ids:
        (workdir / sid).mkdir(exist_ok=True)
    # 'manual-1' is run by nobody: a person can act as it with mosquitto_rr (docs/protocol.md).
    secret_files = {
        SERVER_USER: workdir / "server.secret",
        MANUAL_STATION: workdir / f"{MANUAL_STATION}.secret",
        **{sid: workdir / sid / "mqtt.secret" for sid in ids},
    }
    passwords = {user: kept_secret(path) for user, path in secret_files.items()}
    http_port = choose_port(args.http_port, DEFAULT_HTTP_PORT)
    mqtt_port = choose_port(args.mqtt_port, DEFAULT_MQTT_PORT)
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        broker = Broker(workdir / "broker", users=passwords, port=mqtt_port).start()
    except BrokerError as exc:
        print(f"swabline demo: {exc}", file=sys.stderr)
        return 1
    try:
        server_conf = workdir / "server.toml"
        server_conf.write_text(
            server_toml(broker, workdir / "swabline.db", secret_files[SERVER_USER], http_port)
        )
        write_secret(
            workdir / f"{MANUAL_STATION}.env", manual_env(broker, passwords[MANUAL_STATION])
        )
        exe = [sys.executable, "-m", "swabline"]
        # The dashboard needs a login: a demo admin with a fresh password.
        admin_password = secrets.token_urlsafe(9)
        if not (workdir / "swabline.db").exists():
            pw_file = write_secret(workdir / "admin.password", admin_password)
            subprocess.run(
                [
                    *exe,
                    "--log-level",
                    "WARNING",
                    "admin",
                    "--config",
                    str(server_conf),
                    "bootstrap",
                    "--username",
                    "admin",
                    "--password-file",
                    str(pw_file),
                    "--province-code",
                    "DEMO",
                    "--province-name",
                    "Demo province",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        else:
            admin_password = (workdir / "admin.password").read_text().strip()
        procs.append(subprocess.Popen([*exe, "server", "--config", str(server_conf)], text=True))
        for no, sid in enumerate(ids, 1):
            conf = workdir / sid / "station.toml"
            conf.write_text(station_toml(sid, broker, workdir, secret_files[sid]))
            p = subprocess.Popen(
                [*exe, "--log-level", "WARNING", "agent", "--config", str(conf)],
                stdin=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            assert p.stdin is not None
            threading.Thread(
                target=_feed, args=(p.stdin, no, args.scans_per_minute, stop), daemon=True
            ).start()
        dashboard = f"http://127.0.0.1:{http_port}/"
        if not _wait_for_http(dashboard, procs, stop, timeout_s=120):
            if stop.is_set():
                return 0
            print("swabline demo: the server did not start; stopping", file=sys.stderr)
            return 1
        print(
            f"\nSwabline demo running: broker on {broker.host}:{broker.port}, "
            f"{len(ids)} stations scanning.\n"
            f"Dashboard: {dashboard} (log in as admin / {admin_password})\n"
            f"Act as station {MANUAL_STATION} by hand: . {workdir / (MANUAL_STATION + '.env')} "
            "(see docs/protocol.md).\n"
            f"State in {workdir}"
            + (" (a temporary folder, removed at the end)" if temporary else "")
            + ". Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop.is_set():
            if any(p.poll() is not None for p in procs):
                print("swabline demo: a process exited; stopping", file=sys.stderr)
                return 1
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        broker.stop()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        print("swabline demo: stopped", file=sys.stderr)
    return 0
