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
