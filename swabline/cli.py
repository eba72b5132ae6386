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
        "issue API tokens. Runs against the server's database.",
    )
    p.add_argument("--config", type=Path, required=True, help="server TOML file")
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

    p = sub.add_parser(
        "demo",
        help="run broker, server and simulated stations on this machine",
        description="Start Mosquitto, the server and simulated stations that keep scanning; "
        "Ctrl-C stops everything.",
    )
    p.add_argument("--stations", type=int, default=3, help="how many stations (default 3)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard port (default 8080)")
    p.add_argument(
        "--mqtt-port", type=int, default=18830, help="broker port (default 18830; 0: any free)"
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep state here (default: temp)")
    p.add_argument("--scans-per-minute", type=float, default=30.0, help="per station (default 30)")
    p.set_defaults(run=_lazy("swabline.demo:run"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runner: Runner = args.run
    return runner(args)
