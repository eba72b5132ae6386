"""``swabline admin broker-setup``: the production broker's configuration and first users.

Writes ``<conf-dir>/mosquitto.conf`` with ``render_config`` (the same function the development
launcher and the tests use): a TLS listener for stations, a loopback listener for the server,
the dynamic security plugin. If the dynamic security file does not exist yet, it is created with
the server's user and the broker admin's user, with random passwords written to
``<secrets-dir>/server-mqtt-password`` and ``<secrets-dir>/broker-admin-password`` (0600). An
existing dynamic security file is never overwritten: it holds every enrolled station. Stations
enrolled before each station's credentials were bound to its own client id are bound then (the
file is rewritten with its owner kept; restart the broker right after, as for any change here).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from agent.errors import ConfigError
from agent.preflight import check_ca_file
from server.broker_admin import bind_station_client_ids, initial_config
from swabline.broker import BrokerError, Listener, dynsec_plugin, render_config
from swabline.tls import CertPair

DYNSEC_FILE = "dynamic-security.json"
SERVER_SECRET = "server-mqtt-password"
ADMIN_SECRET = "broker-admin-password"


def _write_private(path: Path, text: str, *, owner_of: Path | None = None) -> None:
    """Write ``text`` to ``path`` (0600) atomically; owned like ``owner_of`` if given."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
        if owner_of is not None:
            st = owner_of.stat()
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
    os.replace(tmp, path)


def setup(
    *,
    conf_dir: Path,
    state_dir: Path,
    secrets_dir: Path,
    cert: Path,
    key: Path,
    tls_port: int = 8883,
    tls_host: str = "0.0.0.0",
    local_port: int = 1883,
    plugin: str | None = None,
) -> list[Path]:
    """Write the broker's files; returns what was written."""
    check_ca_file(cert, "--cert")  # a PEM certificate the broker can load
    if not key.is_file():
        raise ConfigError(f"--key: {key} does not exist")
    written = []
    for d in (conf_dir, state_dir, secrets_dir):
        d.mkdir(parents=True, exist_ok=True)
    dynsec = state_dir / DYNSEC_FILE
    if not dynsec.exists():
        server_pw, admin_pw = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _write_private(secrets_dir / SERVER_SECRET, server_pw + "\n")
        _write_private(secrets_dir / ADMIN_SECRET, admin_pw + "\n")
        _write_private(
            dynsec,
            json.dumps(
                initial_config(server_password=server_pw, admin_password=admin_pw), indent=1
            ),
        )
        written += [secrets_dir / SERVER_SECRET, secrets_dir / ADMIN_SECRET, dynsec]
    else:
        data = json.loads(dynsec.read_text(encoding="utf-8"))
        if bind_station_client_ids(data):
            _write_private(dynsec, json.dumps(data, indent=1), owner_of=dynsec)
            written.append(dynsec)
    conf = conf_dir / "mosquitto.conf"
    conf.write_text(
        "# Written by `swabline admin broker-setup`; edit broker/mosquitto.conf in Swabline's\n"
        "# sources instead and run it again.\n"
        + render_config(
            listeners=[
                Listener(local_port, "127.0.0.1"),
                Listener(tls_port, tls_host, CertPair(cert, key)),
            ],
            plugin=dynsec_plugin(plugin),
            dynsec_file=dynsec,
            persistence_dir=state_dir,
            log_lines="log_dest syslog\nlog_type error\nlog_type warning\nlog_type notice\n",
        )
    )
    written.append(conf)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        written = setup(
            conf_dir=args.conf_dir,
            state_dir=args.state_dir,
            secrets_dir=args.secrets_dir,
            cert=args.cert,
            key=args.key,
            tls_port=args.tls_port,
            tls_host=args.tls_host,
            local_port=args.local_port,
            plugin=args.plugin,
        )
    except (ConfigError, BrokerError, OSError) as exc:
        print(f"swabline admin broker-setup: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(
        "Give the broker's user (mosquitto) the state folder and read access to the key, then "
        "'systemctl restart swabline-mosquitto' (docs/broker.md)."
    )
    return 0
