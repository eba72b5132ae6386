"""The ``swabline`` command. Each subcommand's module is imported only when it runs, so a
station without the server's dependencies can still run ``swabline agent``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Runner = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Runner:
    module, func = target.split(":")

    def run(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module(module), func)(args)
        return result

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swabline",
        description="Swabline: electronic sample collection for mass-testing sites.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SWABLINE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (env SWABLINE_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("agent", help="run a scanner station", description="Run a scanner station.")
    p.add_argument("--config", type=Path, required=True, help="station TOML file")
    p.add_argument("--check-config", action="store_true", help="validate the file and exit")
    p.set_defaults(run=_lazy("agent.__main__:run"))

    p = sub.add_parser(
        "server", help="run the central server", description="Run MQTT ingest and the web app."
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
    p.add_argument("--check-config", action="store_true", help="validate the file and exit")
    p.add_argument(
        "--ingest-workers",
        type=int,
        default=None,
        metavar="N",
        help="ingest worker processes (default: ingest.workers in the file; 0: web only)",
    )
    p.set_defaults(run=_lazy("server.__main__:run"))

    p = sub.add_parser(
        "admin",
        help="administer the central server's accounts and organisations",
        description="Bootstrap the first admin, import the organisation tree, list users, "
        "issue API tokens; enrollment tokens and cards, decommissioning, broker setup. Runs on "
        "the central server.",
    )
    p.add_argument(
        "--config", type=Path, help="server TOML file (required by the account commands)"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser(
        "bootstrap",
        help="create the first provincial admin (and the province)",
        description="Create the first provincial admin, and the province if it does not exist. "
        "Refused once an active provincial admin exists.",
    )
    b.add_argument("--username", required=True, help="login name (lower-case)")
    b.add_argument("--display-name", help="full name (default: the username)")
    b.add_argument("--password-file", type=Path, help="file holding the password (else asked)")
    b.add_argument("--province-code", help="code of the province to administer (created if new)")
    b.add_argument("--province-name", help="name of the province, if it is created")
    b.add_argument("--token-file", type=Path, help="also issue an API token, written here (0600)")
    b.add_argument("--days", type=int, default=365, help="lifetime of that token (default 365)")
    i = actions.add_parser(
        "import-orgs",
        help="import the organisation tree from CSV (all or nothing)",
        description="Columns: code,name,kind,parent_code,facility_kind. kind is province, "
        "district or facility; facility_kind (facilities only) is sampling, lab or both. Every "
        "bad row is reported and nothing is imported unless every row is valid.",
    )
    i.add_argument("file", type=Path, help="CSV file (UTF-8, BOM allowed)")
    i.add_argument("--dry-run", action="store_true", help="check and report, change nothing")
    actions.add_parser("list-users", help="list every user with their roles")
    t = actions.add_parser(
        "create-token",
        help="issue an API token for a user (for scripts)",
        description="Issue a bearer API token; printed, or written to --token-file (0600).",
    )
    t.add_argument("--username", required=True)
    t.add_argument("--name", required=True, help="what the token is for")
    t.add_argument("--days", type=int, default=365, help="lifetime in days (default 365)")
    t.add_argument("--token-file", type=Path, help="write the token here instead of printing it")
    p.set_defaults(run=_lazy("server.admin:run"))
    _add_admin_commands(actions)

    p = sub.add_parser(
        "reports",
        help="make the health department's report files",
        description="Make the weekly and monthly report files (XLSX and CSV) of every province "
        "and district and keep them in the database for download. Without --period/--date: the "
        "files due today (last week's, last month's) that are missing, as the server's scheduler "
        "does. Files that exist are kept.",
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = actions.add_parser("generate", help="make missing report files (backfill with --date)")
    g.add_argument("--period", choices=["day", "week", "month"], help="one period kind only")
    g.add_argument("--date", help="a day inside the period to make (YYYY-MM-DD, local)")
    p.set_defaults(run=_lazy("server.report_files:cli"))

    p = sub.add_parser(
        "demo",
        help="run broker, server and simulated stations on this machine",
        description="Start Mosquitto, the server and simulated stations that keep scanning; "
        "Ctrl-C stops everything.",
    )
    p.add_argument("--stations", type=int, default=3, help="how many stations (default 3)")
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="dashboard port (default 8080, or a free one if 8080 is taken; 0: any free)",
    )
    p.add_argument(
        "--mqtt-port",
        type=int,
        default=None,
        help="broker port (default 18830, or a free one if 18830 is taken; 0: any free)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep state here (default: temp)")
    p.add_argument("--scans-per-minute", type=float, default=30.0, help="per station (default 30)")
    p.set_defaults(run=_lazy("swabline.demo:run"))

    p = sub.add_parser(
        "simulate",
        help="load a broker and server with many simulated stations",
        description="Run N simulated stations (1 to 10,000+) from this process: bursts of "
        "scans as queues arrive, pools, undos, disconnections and reconnect storms; each "
        "station keeps its records until the server acknowledges them and resends after a "
        "reconnect, as a real station does. Ends with sent, acknowledged, lost, duplicated "
        "and scan-to-ack latency percentiles. See docs/sizing.md and BENCHMARKS.md.",
    )
    from swabline.sim.args import add_arguments

    add_arguments(p)
    p.set_defaults(run=_lazy("swabline.sim.cli:run"))

    p = sub.add_parser(
        "emqx-users",
        help="write station credentials as an EMQX user import file",
        description="Hash 'username password' lines for EMQX's built-in database "
        "(broker/emqx/emqx.conf; docs/broker-cluster.md), and write each station's "
        "authorization rules for it.",
    )
    p.add_argument("--credentials", type=Path, required=True, help="'username password' lines")
    p.add_argument("--out", type=Path, default=None, help="CSV file (mode 0600; default stdout)")
    p.add_argument(
        "--rules-out",
        type=Path,
        default=None,
        help="also write every station's authorization rules here, as the JSON body of "
        "POST /api/v5/authorization/sources/built_in_database/rules/users",
    )
    p.set_defaults(run=_lazy("swabline.emqx:run"))

    p = sub.add_parser(
        "scanner",
        help="see what a scanner produces (replay a capture, listen live)",
        description="Tools for technicians: decode an evtest capture, or watch the configured "
        "scanner live. Output: one JSON object per line.",
    )
    scanner = p.add_subparsers(dest="scanner_command", required=True, metavar="ACTION")
    p = scanner.add_parser(
        "replay",
        help="decode an evtest capture as the station would",
        description="Decode the output of `evtest` (record with: sudo evtest --grab "
        "/dev/input/by-id/...-event-kbd > capture.txt) and print one JSON object per scan: "
        '{"accepted": true, "text": ...} or {"accepted": false, "reason": ...}.',
    )
    p.add_argument("file", type=Path, help="the evtest capture")
    p.add_argument(
        "--terminator",
        choices=["enter", "tab", "none"],
        default="enter",
        help="key that ends each code (default enter)",
    )
    p.add_argument(
        "--gap-ms", type=float, default=100.0, help="with --terminator none: silence ending a code"
    )
    p.add_argument(
        "--incomplete-ms",
        type=float,
        default=1000.0,
        help="a code without its terminator this long is rejected (default 1000)",
    )
    p.add_argument("--max-length", type=int, default=512, help="longest code (default 512)")
    p.set_defaults(run=_lazy("agent.scanner_cli:replay"))
    p = scanner.add_parser(
        "listen",
        help="show live what the configured scanner produces",
        description="Open the scanner of a station configuration and print every scan and "
        "every plug/unplug as a JSON line until Ctrl-C. Stop the station's agent first: it "
        "holds the scanner.",
    )
    p.add_argument("--config", type=Path, required=True, help="station TOML file")
    p.add_argument(
        "--signals",
        action="store_true",
        help="also show saved/rejected on the configured LEDs and buzzer",
    )
    p.set_defaults(run=_lazy("agent.scanner_cli:listen"))

    p = sub.add_parser(
        "inspect-code",
        help="show how a station classifies a code",
        description="Print how a station classifies TEXT (person QR, tube, command card, or "
        "rejected with a reason) as one JSON object. Exit status 0 when the code is accepted, "
        "1 when it is rejected, 2 when the configuration cannot be used.",
    )
    p.add_argument("text", help="the code as scanned; '-' reads it from standard input")
    p.add_argument(
        "--config", type=Path, help="station TOML: use its [workflow] tube patterns and formats"
    )
    p.add_argument(
        "--tube-pattern",
        action="append",
        default=[],
        metavar="REGEX",
        help="a tube barcode pattern (repeatable), added to those of --config",
    )
    p.add_argument(
        "--lossy", action="store_true", help="as read by a keyboard-mode scanner (no diacritics)"
    )
    p.set_defaults(run=_lazy("swabline.inspect_code:run"))

    p = sub.add_parser(
        "cards",
        help="make the printable sheet of command cards and staff badges",
        description="Write the command cards (close pool, undo, test kind, mode, pool sizes, "
        "rapid antigen results) and staff badges as a printable HTML page, or as a PDF when "
        "--out ends in .pdf (needs Chromium). Labels in Vietnamese, then English.",
    )
    p.add_argument("--out", type=Path, required=True, help="output file: .html or .pdf")
    p.add_argument(
        "--pool-sizes", default="5,10,20", help="pool-size cards, comma-separated (default 5,10,20)"
    )
    p.add_argument(
        "--staff",
        action="append",
        default=[],
        metavar="ID[:NAME]",
        help="a staff badge (repeatable); the name is printed, only the id goes in the QR",
    )
    p.add_argument("--staff-csv", type=Path, help="staff badges from a UTF-8 CSV: staff_id,name")
    p.add_argument("--no-commands", action="store_true", help="only staff badges")
    p.add_argument("--title", default="Swabline", help="heading printed on the sheet")
    p.add_argument("--chromium", help="Chromium executable for PDF output (default: from PATH)")
    p.set_defaults(run=_lazy("swabline.cards:run"))

    _add_field_commands(sub)
    return parser


def _add_field_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ingest",
        help="run one ingest worker (no web app)",
        description="Consume station records into the database, sharing the load with the "
        "other workers (MQTT 5 shared subscription). 'swabline server' migrates the schema.",
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
    p.add_argument("--worker", default="1", help="worker name, part of its MQTT client id")
    p.add_argument("--check-config", action="store_true", help="validate the file and exit")
    p.set_defaults(run=_lazy("server.ingest_cli:run_ingest"))

    p = sub.add_parser(
        "provision",
        help="enroll this station with the server (token or enrollment card)",
        description="Enroll this station: get its station id and MQTT credentials from the "
        "server and write its configuration and secrets (mode 0600, all or nothing). Either "
        "give --server and --token, or --wait-for-card to read an enrollment card with the "
        "station's own scanner.",
    )
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--token", help="enrollment token (with --server)")
    how.add_argument(
        "--wait-for-card",
        action="store_true",
        help="wait for an enrollment card (SWABLINE:ENROLL:...) on the scanner",
    )
    p.add_argument("--server", help="server URL, e.g. https://swabline.example.org")
    p.add_argument(
        "--template",
        type=Path,
        default=Path("/etc/swabline/station.template.toml"),
        help="station settings without identity: scanner, feedback, outbox "
        "(default /etc/swabline/station.template.toml)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("/etc/swabline/station.toml"),
        help="station configuration to write; secrets go next to it "
        "(default /etc/swabline/station.toml)",
    )
    p.add_argument("--owner", help="user who must read the secrets (the agent's, e.g. swabline)")
    p.add_argument(
        "--server-ca", type=Path, help="CA to trust for the server's HTTPS (default: system's)"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)"
    )
    p.set_defaults(run=_lazy("agent.provision:run"))

    p = sub.add_parser(
        "selftest",
        help="check a station: LEDs, buzzer, scanner, broker, server, clock, disk, outbox",
        description="Run the station's checks, print a pass/fail checklist and show the result "
        "on the LEDs. Stop the agent first (sudo systemctl stop swabline-agent). Exits 1 when "
        "a check fails.",
    )
    p.add_argument("--config", type=Path, required=True, help="station TOML file")
    p.add_argument(
        "--card-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the test card (default 60; 0 skips the scanner step)",
    )
    p.add_argument(
        "--timeout", type=float, default=15.0, help="seconds for each network step (default 15)"
    )
    p.set_defaults(run=_lazy("agent.selftest:run"))


def _add_admin_commands(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Enrollment tokens and cards, decommissioning, broker setup (under ``swabline admin``)."""

    p = asub.add_parser(
        "enroll-token",
        help="create a single-use, expiring enrollment token for a facility",
        description="Create an enrollment token for a sampling facility. It is shown once and "
        "stored only hashed. With --station, the token re-provisions that station: its old "
        "credentials are revoked when the token is used. Audited as cli:<your user>.",
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
    p.add_argument(
        "--facility",
        help="code of a sampling facility of the organisation tree, e.g. HN-CG-TYT (station "
        "ids are made from it: hn-cg-tyt-01, ...); not needed with --station",
    )
    p.add_argument("--expires-in", default="2h", help="lifetime: 30m, 2h, 1d (default 2h)")
    p.add_argument("--station", help="re-provision this existing station id")
    p.add_argument("--name", help="name of the station in the registry (default: facility + NN)")
    p.add_argument("--card", type=Path, help="also write a printable enrollment card (HTML)")
    p.add_argument("--server-url", help="server URL printed on the card (https://...)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network the station joins (on the card)")
    p.add_argument("--wifi-password", help="its password (on the card)")
    p.set_defaults(run=_lazy("server.enrollment_cli:enroll_token"))

    p = asub.add_parser(
        "enroll-card",
        help="print an enrollment card (HTML with a QR code) for a token",
        description="Write a printable enrollment card: a QR code that an unprovisioned "
        "station's scanner reads (server URL, token, optional Wi-Fi settings).",
    )
    p.add_argument("--server-url", required=True, help="server URL (https://...)")
    p.add_argument("--token", required=True, help="the enrollment token")
    p.add_argument("--wifi-ssid", help="Wi-Fi network the station joins")
    p.add_argument("--wifi-password", help="its password")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.set_defaults(run=_lazy("server.enrollment_cli:enroll_card"))

    p = asub.add_parser(
        "test-card",
        help="print the self-test card (HTML with a QR code)",
        description="Write the card that 'swabline selftest' asks staff to scan.",
    )
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.set_defaults(run=_lazy("server.enrollment_cli:test_card"))

    p = asub.add_parser(
        "decommission",
        help="revoke a station: the broker refuses its credentials at once",
        description="Decommission a station: its broker credentials are deleted (a connected "
        "session is closed), it becomes inactive and its unused enrollment tokens are "
        "cancelled. Audited as cli:<your user>.",
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
    p.add_argument("--station", required=True, help="station id")
    p.set_defaults(run=_lazy("server.enrollment_cli:decommission"))

    p = asub.add_parser(
        "broker-setup",
        help="write the production Mosquitto configuration and its first users",
        description="Write mosquitto.conf (TLS listener for stations, loopback listener for "
        "the server, dynamic security plugin) and, if absent, the dynamic security file with "
        "the server's and the broker admin's users, whose passwords go to 0600 files.",
    )
    p.add_argument(
        "--conf-dir", type=Path, default=Path("/etc/swabline/broker"), help="configuration folder"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/swabline-broker"),
        help="dynamic security file and persistence (writable by the broker)",
    )
    p.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path("/etc/swabline"),
        help="where the server's and the admin's MQTT passwords are written",
    )
    p.add_argument("--cert", type=Path, required=True, help="the broker's TLS certificate (PEM)")
    p.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    p.add_argument("--tls-port", type=int, default=8883, help="stations' TLS port (8883)")
    p.add_argument("--tls-host", default="0.0.0.0", help="address of the TLS listener")
    p.add_argument("--local-port", type=int, default=1883, help="server's loopback port (1883)")
    p.add_argument("--plugin", help="path of mosquitto_dynamic_security.so (default: found)")
    p.set_defaults(run=_lazy("swabline.broker_setup:run"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runner: Runner = args.run
    return runner(args)
