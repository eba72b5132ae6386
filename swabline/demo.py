"""``swabline demo``: broker, server and simulated stations on one machine."""

from __future__ import annotations

import argparse
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

from swabline.broker import SERVER_USER, Broker, BrokerError

MANUAL_STATION = "manual-1"


def station_toml(station_id: str, broker: Broker, workdir: Path, password_file: Path) -> str:
    return (
        f'station_id = "{station_id}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'password_file = "{password_file}"\n\n'
        '[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{workdir / station_id / "outbox.json"}"\n\n'
        '[feedback]\ntype = "log"\n'
    )


def server_toml(broker: Broker, db: Path, password_file: Path, http_port: int) -> str:
    return (
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'username = "{SERVER_USER}"\npassword_file = "{password_file}"\n\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
    )


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value)
    path.chmod(0o600)
    return path


def synthetic_codes(rng: random.Random, station_no: int) -> list[str]:
    """A tube and a few people, as staff would scan them (synthetic identities)."""
    tube = f"DEMO-{station_no:02d}-{rng.randrange(10**6):06d}"
    people = []
    for _ in range(rng.randint(1, 5)):
        province, sex = rng.randint(1, 96), rng.randint(0, 3)
        number = f"0{province:02d}{sex}{rng.randint(0, 99):02d}{rng.randrange(10**6):06d}"
        dob = f"{rng.randint(1, 28):02d}{rng.randint(1, 12):02d}{rng.randint(1940, 2015)}"
        people.append(f"{number}||NGUYEN VAN DEMO|{dob}|Nam|Ha Noi|01012022")
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


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="swabline-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ids = [f"demo-{i}" for i in range(1, args.stations + 1)]
    # 'manual-1' is run by nobody: a person can act as it with mosquitto_pub (docs/protocol.md).
    passwords = {u: secrets.token_urlsafe(16) for u in [SERVER_USER, *ids, MANUAL_STATION]}
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        broker = Broker(workdir / "broker", users=passwords, port=args.mqtt_port or None).start()
    except BrokerError as exc:
        print(f"swabline demo: {exc}", file=sys.stderr)
        return 1
    try:
        server_conf = workdir / "server.toml"
        server_conf.write_text(
            server_toml(
                broker,
                workdir / "swabline.db",
                write_secret(workdir / "server.secret", passwords[SERVER_USER]),
                args.http_port,
            )
        )
        write_secret(workdir / f"{MANUAL_STATION}.secret", passwords[MANUAL_STATION])
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
            (workdir / sid).mkdir(exist_ok=True)
            conf = workdir / sid / "station.toml"
            conf.write_text(
                station_toml(
                    sid,
                    broker,
                    workdir,
                    write_secret(workdir / sid / "mqtt.secret", passwords[sid]),
                )
            )
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
        print(
            f"\nSwabline demo running: broker on {broker.host}:{broker.port}, "
            f"{len(ids)} stations scanning.\n"
            f"Dashboard: http://127.0.0.1:{args.http_port}/ "
            f"(log in as admin / {admin_password})\n"
            f"Act as station {MANUAL_STATION} by hand: password in "
            f"{workdir / (MANUAL_STATION + '.secret')} (see docs/protocol.md).\n"
            f"State in {workdir}. Press Ctrl-C to stop.\n",
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
        broker.stop()
        print("swabline demo: stopped", file=sys.stderr)
    return 0
