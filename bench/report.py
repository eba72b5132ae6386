"""Regenerate the tables of ``BENCHMARKS.md`` and the plots in ``bench/results/`` from the JSON.

    python -m bench.report            # full-size results where present, else the quick ones
    python -m bench.report --quick    # only the quick (development) results

Every table row carries the command that produced it; every section names the machine, the
date, the load average at the start and Mosquitto's raw pass-through measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS

BENCHMARKS = REPO / "BENCHMARKS.md"
NAMES = ("scale", "rates", "workers", "storm")


def load(name: str, quick_only: bool) -> dict[str, Any] | None:
    for candidate in ([] if quick_only else [name]) + [f"{name}-quick"]:
        path = RESULTS / f"{candidate}.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            data["_file"] = path.name
            return data
    return None


def _ms(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:,.0f}"


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def machine_lines(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    raw = data["raw"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    quick = " **Quick (development) sizes.**" if data["_file"].endswith("-quick.json") else ""
    source = next(
        (r["summary"]["target"].get("server_source") for r in data["runs"] if r.get("summary")),
        None,
    )
    return [
        f"Run {data['date']} from `{data['_file']}`.{quick}",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}, {m['mosquitto']}, {m['postgresql']}, SQLite {m['sqlite']}, "
        f"paho-mqtt {m['paho_mqtt']}. Load average at start: {load}. "
        f"Store: {data.get('db', '-')}. Server: {source or 'this checkout'}.",
        f"Mosquitto raw QoS 1 pass-through in the same run: **{raw['throughput_rps']:,.0f} "
        f"msg/s** ({raw['messages']:,} messages of {raw['payload_bytes']} bytes, "
        f"{raw['publishers']} publishers, {raw['clients']}).",
        "",
    ]


HEADER = (
    "| stations | offered rec/s | throughput rec/s | × raw | p50 ms | p90 ms | p99 ms "
    "| all acked after s | resent | broker RSS MB | server RSS MB | server CPU s | lost "
    "| command |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| --- |"
)


def row(s: dict[str, Any], raw_rps: float) -> str:
    lat = s["latency_s"]
    res = s.get("resources", {})
    db = s.get("database", {})
    offered = s.get("offered_measured_rps")
    offered_text = (
        f"backlog {s['backlog_per_station']}/station"
        if s["backlog_per_station"]
        else (_num(offered))
    )
    cells = [
        str(s["stations"]),
        offered_text,
        _num(s["throughput_rps"]),
        f"{s['throughput_rps'] / raw_rps:.3f}",
        _ms(lat["p50"]),
        _ms(lat["p90"]),
        _ms(lat["p99"]),
        _num(s["drain_s"], 1),
        str(s["resends"]),
        _num(res.get("broker", {}).get("rss_max_mb"), 0),
        _num(res.get("server", {}).get("rss_max_mb"), 0),
        _num(res.get("server", {}).get("cpu_s"), 1),
        str(db.get("lost", "-")),
        f"`{s['command']}`",
    ]
    return "| " + " | ".join(cells) + " |"


def table(data: dict[str, Any], series: str | None = None, extra: str | None = None) -> list[str]:
    raw = data["raw"]["throughput_rps"]
    header = HEADER
    lines = []
    for r in data["runs"]:
        if series is not None and r["series"] != series:
            continue
        line = row(r["summary"], raw)
        if extra:
            line = f"| {r[extra]} " + line
        lines.append(line)
    if extra:
        first, second = header.split("\n")
        header = f"| {extra} {first}\n| ---: {second}"
    return [header, *lines, ""]


def section(name: str, data: dict[str, Any] | None) -> list[str]:
    if data is None:
        return [f"No results yet: run `python -m bench {name}` then `python -m bench.report`.", ""]
    out = machine_lines(data)
    if name == "scale":
        out += [
            f"Same offered load ({data['fixed_rate_rps']} records/s) spread over N stations, "
            f"{data['duration_s']} s:",
            "",
        ]
        out += table(data, "fixed")
        out += [
            f"Saturation: {data['drain_total_records']:,} records waiting, shared among N "
            "stations, all connecting at once (throughput = records / drain time):",
            "",
        ]
        out += table(data, "drain")
        out += ["![throughput and p99 against stations](bench/results/stations.png)", ""]
    elif name == "rates":
        out += [f"{data['stations']} stations, {data['duration_s']} s per offered rate:", ""]
        out += table(data)
        out += ["![throughput and p99 against offered rate](bench/results/rates.png)", ""]
    elif name == "workers":
        out += [
            f"{data['stations']} stations with {data['backlog']} records each waiting, "
            "ingest workers in one shared-subscription group:",
            "",
        ]
        out += table(data, extra="workers")
        out += ["![throughput against ingest workers](bench/results/workers.png)", ""]
    elif name == "storm":
        s = data["runs"][0]["summary"]
        res = s.get("resources", {})
        db = s.get("database", {})
        out += table(data)
        out += [
            f"- Records: {s['sent']:,} made offline; {s['acknowledged']:,} acknowledged; "
            f"in the database {db.get('stored', '-'):,} once each (stored twice: "
            f"{db.get('stored_twice', '-')}, lost: {db.get('lost', '-')}).",
            f"- Time to drain: {_num(s['drain_s'], 1)} s; all stations connected after "
            f"{_num(s['connect_all_s'], 1)} s; resent {s['resends']:,}, acknowledged again "
            f"{s['repeat_acks']:,}.",
            f"- Memory (RSS, max / at the end): broker {_rss(res, 'broker')} MB, server "
            f"{_rss(res, 'server')} MB.",
            "",
            "![reconnect storm: progress and memory](bench/results/storm.png)",
            "",
        ]
        extra = RESULTS / "storm-1000x200.json"
        if extra.exists():
            e = json.loads(extra.read_text())["summary"]
            eres, edb = e.get("resources", {}), e.get("database", {})
            out += [
                f"A larger single run, {e['stations']:,} stations x {e['backlog_per_station']} "
                f"records (`{e['command']}`, {e['date']}): {e['sent']:,} records, "
                f"{edb.get('stored', '-'):,} stored once, lost {edb.get('lost', '-')}; drained in "
                f"{_num(e['drain_s'], 0)} s; resent {e['resends']:,}; broker "
                f"{_rss(eres, 'broker')} MB, server {_rss(eres, 'server')} MB (max / end).",
                "",
                "![1,000 stations x 200 records](bench/results/storm-1000x200.png)",
                "",
            ]
    return out


def _rss(resources: dict[str, Any], name: str) -> str:
    r = resources.get(name, {})
    return f"{r.get('rss_max_mb', '-')} / {r.get('rss_last_mb', '-')}"


def plots(results: dict[str, dict[str, Any] | None]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def finish(fig: Any, name: str, data: dict[str, Any]) -> None:
        m = data["machine"]
        fig.suptitle(
            f"{data['date'][:10]} · {m['cpu']} ×{m['cores']} · load {m['load_average'][0]:.1f}"
            + (
                f" · raw Mosquitto {data['raw']['throughput_rps']:,.0f} msg/s"
                if "raw" in data
                else ""
            )
            + (" · QUICK SIZES" if data["_file"].endswith("-quick.json") else ""),
            fontsize=9,
        )
        fig.tight_layout()
        path = RESULTS / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    data = results.get("scale")
    if data:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for series, label, marker in (
            ("fixed", "same offered load", "o"),
            ("drain", "saturation (backlog drain)", "s"),
        ):
            runs = [r for r in data["runs"] if r["series"] == series]
            xs = [r["stations"] for r in runs]
            a1.plot(xs, [r["summary"]["throughput_rps"] for r in runs], marker=marker, label=label)
            a2.plot(
                xs, [r["summary"]["latency_s"]["p99"] for r in runs], marker=marker, label=label
            )
        a1.set(
            xscale="log", xlabel="stations", ylabel="records acknowledged / s", title="throughput"
        )
        a2.set(
            xscale="log", yscale="log", xlabel="stations", ylabel="seconds", title="scan-to-ack p99"
        )
        ticks = sorted({r["stations"] for r in data["runs"]})
        for a in (a1, a2):
            a.set_xticks(ticks, [f"{t:,}" for t in ticks])
            a.minorticks_off()
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8)
        finish(fig, "stations", data)

    data = results.get("rates")
    if data:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        runs = data["runs"]
        xs = [r["summary"]["offered_measured_rps"] or r["offered_rps"] for r in runs]
        a1.plot(
            xs, [r["summary"]["throughput_rps"] for r in runs], marker="o", label="acknowledged"
        )
        a1.plot(xs, xs, linestyle="--", color="grey", label="offered")
        a2.plot(xs, [r["summary"]["latency_s"]["p99"] for r in runs], marker="o", label="p99")
        a2.plot(xs, [r["summary"]["latency_s"]["p50"] for r in runs], marker=".", label="p50")
        a1.set(
            xlabel="offered records / s",
            ylabel="records acknowledged / s",
            title=f"throughput, {data['stations']} stations",
        )
        a2.set(
            yscale="log",
            xlabel="offered records / s",
            ylabel="seconds",
            title="scan-to-ack latency",
        )
        for a in (a1, a2):
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8)
        finish(fig, "rates", data)

    data = results.get("workers")
    if data:
        fig, a1 = plt.subplots(figsize=(6, 4))
        runs = data["runs"]
        a1.bar([str(r["workers"]) for r in runs], [r["summary"]["throughput_rps"] for r in runs])
        a1.set(
            xlabel="ingest workers",
            ylabel="records acknowledged / s",
            title=f"backlog drain, {data['stations']} stations × {data['backlog']}",
        )
        a1.grid(True, axis="y", alpha=0.3)
        finish(fig, "workers", data)

    storms = []
    if results.get("storm"):
        storms.append(("storm", results["storm"]))
    extra = RESULTS / "storm-1000x200.json"
    if extra.exists():
        single = json.loads(extra.read_text())
        single["_file"] = extra.name
        single["date"] = single["summary"]["date"]
        single["runs"] = [{"summary": single["summary"]}]
        storms.append(("storm-1000x200", single))
    for png, data in storms:
        s = data["runs"][0]["summary"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        series = s["series"]
        a1.plot([p[0] for p in series], [p[2] for p in series], label="acknowledged")
        a1.plot(
            [p[0] for p in series],
            [p[3] * s["backlog_per_station"] for p in series],
            linestyle=":",
            label="connected stations × backlog",
        )
        a1.set(
            xlabel="seconds since reconnect",
            ylabel="records",
            title=f"{s['stations']:,} stations × {s['backlog_per_station']} records",
        )
        for name, res in s.get("resources", {}).items():
            pts = res["rss_mb_series"]
            a2.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        a2.set(
            xlabel="seconds since the run started",
            ylabel="RSS MB",
            title="memory (RSS, process tree)",
        )
        for a in (a1, a2):
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        finish(fig, png, data)
    return written


def update_markdown(results: dict[str, dict[str, Any] | None]) -> None:
    text = BENCHMARKS.read_text()
    for name in NAMES:
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"BENCHMARKS.md lacks the markers of section {name!r}")
        body = "\n".join(section(name, results[name]))
        text = pattern.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
    BENCHMARKS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="use only the quick results")
    args = parser.parse_args(argv)
    results = {name: load(name, args.quick) for name in NAMES}
    for path in plots(results):
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    update_markdown(results)
    print(f"updated {BENCHMARKS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
