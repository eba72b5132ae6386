"""The EMQX deployment files stay equivalent to the Mosquitto ones the tests run against."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from server.broker_admin import server_acls, station_acls
from swabline.cli import main
from swabline.emqx import password_hash, users_csv

BROKER = Path(__file__).resolve().parents[2] / "broker"


def mosquitto_rules() -> set[tuple[str, str, str]]:
    """(who, action, topic) as the Mosquitto dynamic-security roles grant them
    (``server.broker_admin``); a station's own id becomes EMQX's ${username}."""
    rules: set[tuple[str, str, str]] = set()
    actions = {
        "publishClientSend": "publish",
        "subscribeLiteral": "subscribe",
        "subscribePattern": "subscribe",
    }
    for acl in server_acls():
        if acl["acltype"] in actions and not acl["topic"].startswith("$share/"):
            rules.add(("swabline-server", actions[acl["acltype"]], acl["topic"]))
    for acl in station_acls("st-1"):
        if acl["acltype"] in actions:
            topic = acl["topic"].replace("/st-1/", "/${username}/")
            rules.add(("all", actions[acl["acltype"]], topic))
    return rules


def emqx_rules() -> set[tuple[str, str, str]]:
    rules: set[tuple[str, str, str]] = set()
    text = (BROKER / "emqx" / "acl.conf").read_text()
    for m in re.finditer(r'\{allow, (all|\{username, "([^"]+)"\}), (\w+), \[([^\]]*)\]\}\.', text):
        who = m.group(2) or "all"
        actions = ["publish", "subscribe"] if m.group(3) == "all" else [m.group(3)]
        for topic in re.findall(r'"([^"]+)"', m.group(4)):
            if topic.startswith("$share/"):
                continue  # EMQX-only spelling of the server's shared subscription
            for action in actions:
                rules.add((who, action, topic))
    assert "{deny, all}." in text
    return rules


def test_emqx_acl_allows_exactly_what_the_mosquitto_acl_allows() -> None:
    assert emqx_rules() == mosquitto_rules()
    assert ("all", "publish", "swabline/v1/stations/${username}/records") in emqx_rules()


def test_users_csv_hashes_each_password_as_emqx_config_says(tmp_path: Path) -> None:
    conf = (BROKER / "emqx" / "emqx.conf").read_text()
    assert re.search(r"name = pbkdf2\s+mac_fun = sha512\s+iterations = 4096\s+dk_length = 64", conf)
    creds = tmp_path / "stations.txt"
    creds.write_text("# province KG\nst-1 secret-one\n\nst-2 secret-two\n")
    out = tmp_path / "users.csv"
    assert main(["emqx-users", "--credentials", str(creds), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["user_id"] for r in rows] == ["st-1", "st-2"]
    assert rows[0]["password_hash"] == password_hash("secret-one", rows[0]["salt"])
    assert rows[0]["password_hash"] != password_hash("secret-two", rows[0]["salt"])
    assert rows[0]["salt"] != rows[1]["salt"]
    assert {r["is_superuser"] for r in rows} == {"false"}
    assert out.stat().st_mode & 0o077 == 0


def test_users_csv_marks_superusers() -> None:
    rows = list(csv.DictReader(io.StringIO(users_csv([("ops", "pw")], superusers=["ops"]))))
    assert rows[0]["is_superuser"] == "true"
