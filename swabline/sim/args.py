"""Command-line options of ``swabline simulate`` (light: imported when the parser is built)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``swabline simulate`` (kept here, next to the code that reads them)."""
    g = p.add_argument_group("fleet and load")
    g.add_argument("--stations", type=int, default=10, help="simulated stations (default 10)")
    g.add_argument(
        "--rate",
        type=float,
        default=None,
        help="records per second offered by the whole fleet, on average (default: 1 per "
        "station); stations scan in bursts around this mean",
    )
    g.add_argument(
        "--records-per-station",
        type=int,
        default=None,
        help="each station stops after this many records (default 50 unless --duration)",
    )
    g.add_argument("--duration", type=float, default=None, help="stop scanning after SECONDS")
    g.add_argument(
        "--busy-fraction",
        type=float,
        default=0.5,
        help="share of time a station is serving a queue (bursts); idle otherwise (0.5)",
    )
    g.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="each station first stores this many records offline, then all stations "
        "connect at once (a reconnect storm)",
    )
    g.add_argument(
        "--drops-per-hour",
        type=float,
        default=0.0,
        help="random network losses per station per hour (default 0)",
    )
    g.add_argument(
        "--outage", type=float, default=10.0, help="mean length of a random loss, s (10)"
    )
    g.add_argument(
        "--storm-at", type=float, default=None, help="at SECONDS, many stations lose the network"
    )
    g.add_argument("--storm-outage", type=float, default=30.0, help="...for this long, s (30)")
    g.add_argument(
        "--storm-fraction", type=float, default=1.0, help="...this share of the fleet (1.0)"
    )
    g.add_argument("--pool-sizes", default="5,10,20", help="pool sizes stations use (5,10,20)")
    g.add_argument(
        "--single-fraction", type=float, default=0.1, help="share of single-sample stations"
    )
    g.add_argument("--undo-probability", type=float, default=0.02, help="chance of an undo")
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    g = p.add_argument_group("station settings (as in the station's [mqtt] section)")
    for flag, kind, what in (
        ("--heartbeat-s", float, "heartbeat period, s"),
        ("--resend-after-s", float, "resend what is unacknowledged after, s"),
        ("--resend-max-s", float, "cap of a record's resend interval (it backs off), s"),
        ("--max-inflight", int, "QoS 1 messages in flight per connection"),
        ("--drain-per-s", float, "most records a station sends per second (backlog pace)"),
        ("--max-unacked", int, "most records a station has sent and not seen acknowledged"),
        ("--reconnect-min-s", float, "shortest wait before reconnecting, s"),
        ("--reconnect-max-s", float, "longest wait between reconnection attempts, s"),
    ):
        g.add_argument(flag, type=kind, default=None, help=f"{what} (default: as a station)")
    g.add_argument(
        "--connect-concurrency",
        type=int,
        default=256,
        help="handshakes in progress at once across the fleet (256)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=600.0,
        help="after scanning stops, wait this long for every acknowledgement (600)",
    )
    g = p.add_argument_group("target")
    g.add_argument(
        "--spawn",
        action="store_true",
        help="start Mosquitto (broker/ config, one user per station) and swabline server here",
    )
    g.add_argument("--broker", default=None, help="HOST:PORT of an existing broker")
    g.add_argument(
        "--station-prefix", default="sim", help="station ids are PREFIX-00001... (default sim)"
    )
    g.add_argument(
        "--password-file", type=Path, default=None, help="password shared by the station users"
    )
    g.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="file of 'station_id password' lines (instead of --station-prefix)",
    )
    g.add_argument(
        "--database-url",
        default=None,
        help="the server's database: checked at the end (lost/duplicated); with --spawn, the "
        "store (default SQLite in the workdir)",
    )
    g.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="with --spawn: ingest consumers sharing the records (1)",
    )
    g.add_argument(
        "--batch-max-rows", type=int, default=None, help="with --spawn: ingest.batch_max_rows"
    )
    g.add_argument("--workdir", type=Path, default=None, help="with --spawn: keep files here")
    g.add_argument(
        "--server-source",
        type=Path,
        default=None,
        help="with --spawn: run swabline server from this checkout (default: this one)",
    )
    g.add_argument(
        "--watch-pid",
        type=int,
        action="append",
        default=[],
        help="sample the memory of this process too (repeatable)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    g.add_argument("--no-progress", action="store_true", help="no progress display")
