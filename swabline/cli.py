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
    p.set_defaults(run=_lazy("server.__main__:run"))

    p = sub.add_parser(
        "demo",
        help="run broker, server and simulated stations on this machine",
        description="Start Mosquitto, the server and simulated stations that keep scanning; "
        "Ctrl-C stops everything.",
    )
    p.add_argument("--stations", type=int, default=3, help="how many stations (default 3)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard port (default 8080)")
    p.add_argument("--workdir", type=Path, default=None, help="keep state here (default: temp)")
    p.add_argument("--scans-per-minute", type=float, default=30.0, help="per station (default 30)")
    p.set_defaults(run=_lazy("swabline.demo:run"))

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
