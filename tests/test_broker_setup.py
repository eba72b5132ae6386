"""`swabline admin broker-setup` writes a configuration a real Mosquitto runs with."""

from __future__ import annotations

import getpass
import json
import stat
import subprocess
from pathlib import Path

from server.broker_admin import hashed_password, station_acls
from swabline.broker import free_port, mosquitto_binary
from swabline.broker_setup import ADMIN_SECRET, DYNSEC_FILE, SERVER_SECRET, setup
from swabline.tls import issue_server_cert, make_ca
from tests.integration.harness import mqtt_connack, wait_for


def test_production_setup_runs_with_tls_and_the_users_it_made(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    cert = issue_server_cert(ca, tmp_path / "tls", names=["localhost", "127.0.0.1"])
    tls_port, local_port = free_port(), free_port()
    kwargs = dict(
        conf_dir=tmp_path / "etc",
        state_dir=tmp_path / "state",
        secrets_dir=tmp_path / "secrets",
        cert=cert.cert,
        key=cert.key,
        tls_port=tls_port,
        tls_host="127.0.0.1",
        local_port=local_port,
    )
    setup(**kwargs)  # type: ignore[arg-type]
    secrets = tmp_path / "secrets"
    for name in (SERVER_SECRET, ADMIN_SECRET):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    server_pw = (secrets / SERVER_SECRET).read_text().strip()
    dynsec = tmp_path / "state" / DYNSEC_FILE
    assert server_pw not in dynsec.read_text()  # hashed
    # A station enrolled before credentials were bound to a client id (any client id went).
    data = json.loads(dynsec.read_text())
    data["clients"].append(
        {
            "username": "st-old",
            **hashed_password("old-pw"),
            "roles": [{"rolename": "station-st-old"}],
        }
    )
    data["roles"].append({"rolename": "station-st-old", "acls": station_acls("st-old")})
    dynsec.write_text(json.dumps(data))
    assert setup(**kwargs) == [dynsec, tmp_path / "etc" / "mosquitto.conf"]  # type: ignore[arg-type]
    assert stat.S_IMODE(dynsec.stat().st_mode) == 0o600
    before = dynsec.read_text()
    setup(**kwargs)  # type: ignore[arg-type]  # again: enrolled stations are never wiped
    assert dynsec.read_text() == before
    assert (secrets / SERVER_SECRET).read_text().strip() == server_pw

    conf = tmp_path / "etc" / "mosquitto.conf"
    # Started as root for the test, Mosquitto must not switch to the 'mosquitto' user.
    conf.write_text(f"user {getpass.getuser()}\n" + conf.read_text())
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def up() -> bool:
            try:
                answer = mqtt_connack("127.0.0.1", local_port, "swabline-server", server_pw)
            except ConnectionRefusedError:
                return False
            return answer == "Success"

        wait_for(up, 10, "the loopback listener", interval=0.3)
        assert (
            mqtt_connack("127.0.0.1", tls_port, "swabline-server", server_pw, ca_file=str(ca.cert))
            == "Success"
        )
        assert mqtt_connack("127.0.0.1", local_port, "swabline-server", "wrong") == "Not authorized"
        # The old station kept its password and is now bound to its own client id.
        assert mqtt_connack("127.0.0.1", local_port, "st-old", "old-pw") == "Success"
        assert (
            mqtt_connack("127.0.0.1", local_port, "st-old", "old-pw", client_id="st-2")
            == "Not authorized"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    assert json.loads(dynsec.read_text())["defaultACLAccess"]["publishClientSend"] is False
