"""docs/protocol.md's "Act as a station by hand", run as written: the shell commands are taken
from the page and run with the Mosquitto command-line clients against a real broker and server."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Ack, decode
from swabline.broker import SERVER_USER, Broker
from swabline.demo import MANUAL_STATION, manual_env
from tests.integration.harness import start_server, wait_for, wait_or_kill

pytestmark = pytest.mark.integration

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
SECTION = DOC.split("## Act as a station by hand", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", SECTION, flags=re.M | re.S)


def block(containing: str) -> str:
    (found,) = [body for _, body in BLOCKS if containing in body]
    return found


def shell(command: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in bash after loading the demo's settings, as the page says."""
    return subprocess.run(
        ["bash", "-c", f". {env_file}\n{command}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_documented_commands_get_an_acknowledgement(tmp_path: Path, sqlite_url: str) -> None:
    assert "sudo apt-get install mosquitto-clients" in SECTION
    users = {SERVER_USER: "server-pw", MANUAL_STATION: "it's a 'quoted' pw"}
    with Broker(tmp_path / "broker", users=users) as broker:
        env_file = tmp_path / "manual-1.env"
        env_file.write_text(manual_env(broker, users[MANUAL_STATION]))  # what the demo writes
        server = start_server(tmp_path / "server", broker, sqlite_url)
        try:
            publish = block("mosquitto_rr")
            documented = json.loads(block('"record_ids"'))
            first = shell(publish, env_file)
            assert first.returncode == 0, first.stderr
            ack = json.loads(first.stdout)
            assert ack.keys() == documented.keys()
            assert ack["record_ids"] == documented["record_ids"]
            assert abs(ack["server_time"] - time.time()) < 3600
            decode(Ack, first.stdout.strip().encode())
            # "Publishing the same message again is acknowledged again and stored once."
            again = shell(publish, env_file)
            assert json.loads(again.stdout)["record_ids"] == documented["record_ids"]
            records = server.get(f"/api/records?station_id={MANUAL_STATION}")
            assert [r["record_id"] for r in records] == documented["record_ids"]
            assert_the_watch_command_shows_what_the_server_sends(broker, env_file)
        finally:
            server.stop()


def assert_the_watch_command_shows_what_the_server_sends(broker: Broker, env_file: Path) -> None:
    watch = subprocess.Popen(
        ["bash", "-c", f". {env_file}\nexec {block('mosquitto_sub')}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None and watch.stderr is not None
    out, lines = watch.stdout, []
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True)
    reader.start()
    server = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-server", protocol=mqtt.MQTTv5)
    server.username_pw_set(SERVER_USER, broker.users[SERVER_USER])
    server.connect(broker.host, broker.port)
    server.loop_start()
    try:
        payload = b'{"v":1,"command_id":"c-1","name":"identify","args":{},"expires_at":0}'
        topic = f"swabline/v1/stations/{MANUAL_STATION}/commands"

        def shown() -> bool:
            assert watch.poll() is None, watch.stderr.read()
            server.publish(topic, payload, qos=1)  # until the subscription is in place
            return any(line.startswith(topic + " ") for line in lines)

        wait_for(shown, 20, "the command on mosquitto_sub", interval=0.5)
    finally:
        server.disconnect()
        server.loop_stop()
        stop(watch)
        reader.join(timeout=10)
        for stream in (watch.stdout, watch.stderr):
            assert stream is not None
            stream.close()


def stop(watch: subprocess.Popen[str]) -> None:
    """Ends ``mosquitto_sub`` as a person would (Ctrl-C) and kills it if it has not exited after
    5 s: once, on a loaded CI machine, it was still running 10 s after SIGTERM (its signal handler
    disconnects from inside the handler; the exact cause was not established). Whether the
    watch exits cleanly is the client's business; what the page promises is checked above."""
    watch.send_signal(signal.SIGINT)
    wait_or_kill(watch, 5)
