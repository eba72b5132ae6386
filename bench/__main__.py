"""Run the Swabline benchmarks and write ``bench/results/*.json``; then ``python -m bench.report``.

    python -m bench                 # everything, full size: about 1 hour on 2 cores
    python -m bench --quick         # everything, small sizes (about 5 minutes): checks the bench
    python -m bench scale rates     # some of them: raw, scale, rates, workers, storm

Full size on 2 cores (2026-12-05): raw under 1 minute, scale 10 minutes, rates 6 minutes,
workers 10-20 minutes, storm (5,000 stations x 200 records) 12 minutes (its drain may take up
to 3 hours). Each benchmark measures
Mosquitto's raw QoS 1 pass-through in the same run, so every throughput is also given as a
ratio to it. Run on a quiet machine: the load average is recorded. The station input and fleet
benchmarks run on their own: ``python -m bench.bench_hardware``, ``python -m bench.bench_fleet``.
"""

from __future__ import annotations

import argparse
import sys

from bench import runs

BENCHES = {
    "raw": runs.bench_raw,
    "scale": runs.bench_scale,
    "rates": runs.bench_rates,
    "workers": runs.bench_workers,
    "storm": runs.bench_storm,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("which", nargs="*", help=f"any of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the bench")
    parser.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="the server's store (default postgres, a fresh database per run)",
    )
    parser.add_argument(
        "--server-source",
        default=None,
        help="run swabline server from this checkout (to compare server versions)",
    )
    args = parser.parse_args(argv)
    if args.server_source:
        runs.SERVER_ARGS[:] = ["--server-source", args.server_source]
    unknown = [w for w in args.which if w not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHES)}")
    for name in args.which or list(BENCHES):
        path = BENCHES[name](quick=args.quick, db=args.db)
        print(f"bench {name}: wrote {path}", file=sys.stderr, flush=True)
    print("now: python -m bench.report", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
