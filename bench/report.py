"""Regenerate the tables of ``BENCHMARKS.md`` and the plots in ``bench/results/`` from the JSON.

    python -m bench.report            # full-size results where present, else the quick ones
    python -m bench.report --quick    # only the quick (development) results

Every table row carries the command that produced it; every section names the machine, the
date, the load average at the start and, for the end-to-end runs, Mosquitto's raw pass-through
measured in the same run.

What it reads from ``bench/results/``:

- ``scale``, ``rates``, ``workers``, ``storm`` (``python -m bench``; ``-quick`` when no full
  size result exists);
- ``hardware.json`` (``python -m bench.bench_hardware``);
- the longest ``fleet-*.json`` (``python -m bench.bench_fleet``);
- every other JSON holding one ``swabline simulate`` summary (``simulate --json FILE``, e.g.
  ``storm-5000x200.json`` or ``stations-10000.json``, bare or wrapped as ``{"summary": ...}``):
  one row each in the single-runs table, and a plot of each.
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
SECTIONS = (*NAMES, "singles", "hardware", "fleet")


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    data["_file"] = path.name
    return data


def load(name: str, quick_only: bool, results: Path = RESULTS) -> dict[str, Any] | None:
    """``NAME.json``, else ``NAME-quick.json`` (only the latter with ``quick_only``)."""
    for candidate in ([] if quick_only else [name]) + [f"{name}-quick"]:
        path = results / f"{candidate}.json"
        if path.exists():
            return _read(path)
    return None


def _simulate_summary(data: dict[str, Any]) -> dict[str, Any] | None:
    """The ``swabline simulate`` summary a JSON holds: bare, or under ``summary``."""
    inner = data.get("summary", data)
    if isinstance(inner, dict) and {"sent", "latency_s", "command"} <= inner.keys():
        return inner
    return None


def load_singles(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every JSON holding a single ``swabline simulate`` run, by file name; each as
    ``{"_file", "summary", "note", "machine"}``."""
    taken = {f"{n}{q}.json" for n in NAMES for q in ("", "-quick")}
    out = []
    for path in sorted(results.glob("*.json")):
        if path.name in taken:
            continue
        try:
            data = _read(path)
        except (OSError, ValueError):
            continue
        summary = _simulate_summary(data)
        if summary is not None:
            out.append(
                {
                    "_file": path.name,
                    "summary": summary,
                    "note": data.get("note"),
                    "machine": data.get("machine"),
                }
            )
    return out


def load_fleet(results: Path = RESULTS) -> dict[str, Any] | None:
    """The ``fleet-*.json`` of the longest run (the latest of equally long ones)."""
    runs = []
    for path in results.glob("fleet-*.json"):
        data = _read(path)
        if "pages" in data:
            runs.append(data)
    if not runs:
        return None
    return max(runs, key=lambda d: (d.get("duration_s", 0), d.get("date", "")))


def _ms(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:,.0f}"


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def machine_lines(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    raw = data["raw"]
    # Results written before the machine was taken at the start carry the load average of the
    # end; the first run's own reading is the start's.
    first: dict[str, Any] = next((r["summary"] for r in data["runs"] if r.get("summary")), {})
    load = ", ".join(f"{x:.2f}" for x in first.get("load_average_before", m["load_average"]))
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
            f"in the database {_num(db.get('stored'))} (lost: {db.get('lost', '-')}, displaced "
            f"by another record: {db.get('seq_taken', '-')}, refused: {db.get('refused', '-')}).",
            f"- Time to drain: {_num(s['drain_s'], 1)} s; all stations connected after "
            f"{_num(s['connect_all_s'], 1)} s; resent {s['resends']:,}, acknowledged again "
            f"{s['repeat_acks']:,}.",
            f"- Memory (RSS, max / at the end): broker {_rss(res, 'broker')} MB, server "
            f"{_rss(res, 'server')} MB.",
            "",
            "![reconnect storm: progress and memory](bench/results/storm.png)",
            "",
        ]
    return out


def _machine(m: dict[str, Any] | None) -> str:
    if not m:
        return "not recorded"
    loads = m.get("load_average")
    load = ", ".join(f"{x:.2f}" for x in loads) if loads else "not recorded"
    return f"{m['cpu']}, {m['cores']} cores, {m.get('memory_gb')} GB RAM; load at start {load}"


def section_singles(singles: list[dict[str, Any]]) -> list[str]:
    if not singles:
        return ["No single runs kept.", ""]
    out = [
        "Single runs, one `swabline simulate` each, kept as their JSON and not regenerated by "
        "`python -m bench` (no raw Mosquitto figure was measured with them):",
        "",
        "| file | date | stations | offered | throughput rec/s | p99 ms | all acked after s "
        "| resent | broker RSS MB | server RSS MB | lost | displaced | machine | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- | --- |",
    ]
    notes = []
    for single in singles:
        s = single["summary"]
        res = s.get("resources", {})
        db = s.get("database", {})
        offered = (
            f"backlog {s['backlog_per_station']}/station"
            if s.get("backlog_per_station")
            else f"{_num(s.get('offered_rate_rps'))}/s for {_num(s.get('duration_s'))} s"
        )
        cells = [
            f"`{single['_file']}`",
            s["date"][:16].replace("T", " "),
            f"{s['stations']:,}",
            offered,
            _num(s["throughput_rps"]),
            _ms(s["latency_s"]["p99"]),
            _num(s["drain_s"], 1),
            f"{s['resends']:,}",
            _num(res.get("broker", {}).get("rss_max_mb")),
            _num(res.get("server", {}).get("rss_max_mb")),
            str(db.get("lost", "-")),
            str(db.get("seq_taken", "-")),
            _machine(single.get("machine")),
            f"`{s['command']}`",
        ]
        out.append("| " + " | ".join(cells) + " |")
        stem = single["_file"].removesuffix(".json")
        note = f": {single['note']}" if single.get("note") else ""
        if s.get("series"):
            notes.append(f"- `{single['_file']}`{note} ([plot](bench/results/{stem}.png))")
        elif note:
            notes.append(f"- `{single['_file']}`{note}")
    return [*out, "", *notes, ""]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def section_hardware(data: dict[str, Any] | None) -> list[str]:
    if data is None:
        return [
            "No results yet: run `python -m bench.bench_hardware` then `python -m bench.report`.",
            "",
        ]
    m = data["machine"]
    d = data["decode"]
    lat = data["terminator_to_feedback"]
    quick = " **Quick (development) sizes.**" if data["_file"].endswith("-quick.json") else ""
    out = [
        f"Run {data['date']} from `{data['_file']}` (`{data['command']}`).{quick}",
        f"Machine: {_machine(m)}; {m['os']}, Python {m['python']}.",
        "",
        "| measurement | result | goal |",
        "| --- | --- | --- |",
        f"| decode {d['scans']:,} scans × {d['chars_per_scan']} characters from raw key events "
        f"({d['events']:,} events) | {d['events_per_s'] / 1e6:.2f} M events/s "
        f"({d['scans_per_s']:,.0f} scans/s) | |",
        f"| Enter event → `feedback.signal` call, {lat['scans']:,} scans through "
        f"{lat['workflow']} (storage excluded): p50 | {lat['p50_ms']:.3f} ms | |",
        f"| the same, p99 (max) | {lat['p99_ms']:.3f} ms ({lat['max_ms']:.3f} ms) "
        f"| p99 < {lat['goal_p99_ms']:g} ms: {_verdict(lat['p99_ms'] < lat['goal_p99_ms'])} |",
    ]
    cases = data["camera_640x480"]
    for label in ("qrcode+code128", "all symbologies"):
        mine = {k.split(" / ", 1)[1]: v for k, v in cases.items() if k.startswith(label + " /")}
        if not mine:
            continue
        names = " / ".join(mine)
        means = " / ".join(f"{v['mean_ms']:.1f}" for v in mine.values())
        p99s = " / ".join(f"{v['p99_ms']:.1f}" for v in mine.values())
        out.append(
            f"| zbar on a 640×480 frame, {label}: {names} | mean {means} ms; p99 {p99s} ms | |"
        )
    return [*out, ""]


def section_fleet(data: dict[str, Any] | None) -> list[str]:
    if data is None:
        return [
            "No results yet: run `python -m bench.bench_fleet --duration-s 1800` then "
            "`python -m bench.report`.",
            "",
        ]
    pages = data["pages"]
    sc = data["status_change"]
    two = sc["two_heartbeat_intervals_s"]
    refresh = sc["fleet_page_refresh_s"]

    def page(path: str) -> str:
        p = pages[path]
        return f"{p['p95_ms']:,.0f} ms (p50 {p['p50_ms']:,.0f}, max {p['max_ms']:,.0f}; n {p['n']})"

    def status(key: str) -> tuple[str, bool]:
        st = sc[key]
        text = (
            f"median {st['median_s']} s, max {st['max_s']} s ({st['n']} probes, "
            f"{st['missed']} missed)"
        )
        return text, st["max_s"] is not None and st["missed"] == 0 and st["max_s"] <= two

    out = [
        f"Run {data['date']} from `{data['_file']}` (`{data['command']}`).",
        f"Machine: {_machine(data.get('machine'))}.",
        f"{data['stations']:,} simulated stations (real MQTT connections, one broker user each) "
        f"heartbeating every {data['heartbeat_s']:g} s and scanning "
        f"({data['scans_per_hour_per_station']:g} scans/h each), {data['duration_s']:,} s "
        f"measured after {data['warmup_s']:g} s of warm-up; {data['database']}, "
        f"{data['ingest_workers']} ingest worker(s). Status changes are timed in the API; the "
        f"fleet page shows them at its next refresh (every {refresh:g} s).",
        "",
        "| measurement | result | goal |",
        "| --- | --- | --- |",
        f"| `/ops` page p95 | {page('/ops')} "
        f"| < 300 ms: {_verdict(pages['/ops']['p95_ms'] < 300)} |",
        f"| `/api/ops/fleet` p95 | {page('/api/ops/fleet')} | |",
    ]
    for key, what in (
        ("death_to_offline", "killed station → offline in the API"),
        ("birth_to_online", "station back → online in the API"),
        ("silence_to_stale", "hung station → stale in the API"),
    ):
        text, ok = status(key)
        out.append(
            f"| {what} | {text} | within two heartbeat intervals ({two:g} s): {_verdict(ok)} |"
        )
    worst = sc["death_to_offline"]["max_s"]
    if worst is not None:
        on_page = worst + refresh
        out.append(
            f"| killed station → offline on an open fleet page, at most | {on_page:.1f} s (the "
            f"API's worst + one refresh) | within {two:g} s: {_verdict(on_page <= two)} |"
        )
    if "stale_on_page_within_s" in sc:
        bound = sc["stale_on_page_within_s"]
        out.append(
            f"| hung station → stale on an open fleet page, at most | {bound:g} s after its "
            f"last heartbeat (the server's rule: stale threshold + snapshot + refresh) "
            f"| within {two:g} s: {_verdict(bound <= two)} |"
        )
    for name, mem in data["memory_mb"].items():
        out.append(
            f"| memory of {name} (RSS) | {mem['first']} → {mem['last']} MB (peak {mem['peak']}); "
            f"{mem['slope_second_half_mb_per_min']:+.2f} MB/min over the second half | stable over "
            f"30 minutes{'' if data['duration_s'] >= 1800 else ': run shorter than 30 minutes'} |"
        )
    trace = data.get("memory_trace")
    if trace:
        out += [
            "",
            f"Where the server process's memory went (`--memory-trace`, `server/memory.py`, a "
            f"sample every {trace[1]['t_s'] - trace[0]['t_s'] if len(trace) > 1 else 0:.0f} s; "
            "times since the server started):",
            "",
            "| at | RSS | glibc heap in use | glibc heap held free | SQLite | Python objects |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        picks = sorted({0, len(trace) // 4, len(trace) // 2, 3 * len(trace) // 4, len(trace) - 1})
        for row_ in (trace[i] for i in picks):
            out.append(
                f"| {row_['t_s'] / 60:.0f} min | {row_['rss_mb']} MB | "
                f"{row_['malloc_in_use_mb']} MB | {row_['malloc_free_mb']} MB | "
                f"{row_['sqlite_mb']} MB | {row_['python_objects']:,} |"
            )
        grew = trace[-1].get("top_growth")
        if grew:
            out += ["", "Source lines whose allocations grew most since the second sample:", ""]
            out += [
                f"- {g['kb']:+,.0f} kB in {g['blocks']:+,} blocks: `{g['where']}`" for g in grew
            ]
    if data.get("_plot"):
        out += ["", f"![server memory over the run](bench/results/{data['_plot']})"]
    return [*out, ""]


def fleet_plot(data: dict[str, Any] | None, out_dir: Path = RESULTS) -> Path | None:
    """``fleet-memory.png``: each process's RSS over the run and, when traced, where the server's
    memory went. Records its name in ``data['_plot']`` for the section."""
    if data is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = data.get("memory_trace")
    fig, axes = plt.subplots(1, 2 if trace else 1, figsize=(12 if trace else 6.5, 4.2))
    a1 = axes[0] if trace else axes
    for name, mem in data["memory_mb"].items():
        pts = mem["samples"]
        a1.plot([p[0] / 60 for p in pts], [p[1] for p in pts], label=name)
    a1.set(xlabel="minutes measured", ylabel="RSS MB", title="RSS of each process", ylim=(0, None))
    if trace:
        a2 = axes[1]
        for key, label in (
            ("rss_mb", "RSS"),
            ("malloc_in_use_mb", "glibc heap in use"),
            ("malloc_free_mb", "glibc heap held free"),
            ("sqlite_mb", "SQLite (all connections)"),
        ):
            pts = [(r["t_s"] / 60, r[key]) for r in trace if r.get(key) is not None]
            a2.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
        a2.set(
            xlabel="minutes since the server started",
            ylabel="MB",
            title="server process: where the memory is",
            ylim=(0, None),
        )
    for a in axes if trace else [axes]:
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    m = data.get("machine") or {}
    fig.suptitle(
        f"fleet: {data['stations']:,} stations, {data['duration_s']:,} s · {data['date'][:10]}"
        + (f" · {m['cpu']} ×{m['cores']}" if m else ""),
        fontsize=9,
    )
    fig.tight_layout()
    path = out_dir / "fleet-memory.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    data["_plot"] = path.name
    return path


def _rss(resources: dict[str, Any], name: str) -> str:
    r = resources.get(name, {})
    return f"{r.get('rss_max_mb', '-')} / {r.get('rss_last_mb', '-')}"


def plots(
    results: dict[str, dict[str, Any] | None],
    singles: list[dict[str, Any]],
    out_dir: Path = RESULTS,
) -> list[Path]:
    """The PNGs of the sections (and one per single run), written to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def finish(fig: Any, name: str, data: dict[str, Any]) -> None:
        m = data.get("machine")
        loads = m.get("load_average") if m else None
        load = f" · load {loads[0]:.1f}" if loads else ""
        where = f" · {m['cpu']} ×{m['cores']}{load}" if m else " · machine not recorded"
        fig.suptitle(
            f"{data['date'][:10]}{where}"
            + (
                f" · raw Mosquitto {data['raw']['throughput_rps']:,.0f} msg/s"
                if "raw" in data
                else ""
            )
            + (" · QUICK SIZES" if data["_file"].endswith("-quick.json") else ""),
            fontsize=9,
        )
        fig.tight_layout()
        path = out_dir / f"{name}.png"
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

    storms: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    storm = results.get("storm")
    if storm:
        storms.append(("storm", storm["runs"][0]["summary"], storm))
    for single in singles:
        s = single["summary"]
        meta = {"_file": single["_file"], "date": s["date"], "machine": single.get("machine")}
        storms.append((single["_file"].removesuffix(".json"), s, meta))
    for png, s, data in storms:
        points = s.get("series")
        if not points:
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        a1.plot([p[0] for p in points], [p[2] for p in points], label="acknowledged")
        if s["backlog_per_station"]:
            a1.plot(
                [p[0] for p in points],
                [p[3] * s["backlog_per_station"] for p in points],
                linestyle=":",
                label="connected stations × backlog",
            )
            title = f"{s['stations']:,} stations × {s['backlog_per_station']} records"
        else:
            title = f"{s['stations']:,} stations, {_num(s.get('offered_rate_rps'))} records/s"
        a1.set(xlabel="seconds since the stations connected", ylabel="records", title=title)
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


def render(
    results: dict[str, dict[str, Any] | None],
    singles: list[dict[str, Any]],
    hardware: dict[str, Any] | None,
    fleet: dict[str, Any] | None,
) -> dict[str, list[str]]:
    """The body of every generated section of BENCHMARKS.md, by marker name."""
    bodies = {name: section(name, results[name]) for name in NAMES}
    bodies["singles"] = section_singles(singles)
    bodies["hardware"] = section_hardware(hardware)
    bodies["fleet"] = section_fleet(fleet)
    return bodies


def update_markdown(bodies: dict[str, list[str]], path: Path = BENCHMARKS) -> None:
    text = path.read_text()
    for name in SECTIONS:
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{path.name} lacks the markers of section {name!r}")
        body = "\n".join(bodies[name])

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        text = pattern.sub(fill, text)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="use only the quick results")
    args = parser.parse_args(argv)
    results = {name: load(name, args.quick) for name in NAMES}
    singles = load_singles()
    hardware = load("hardware", args.quick)
    fleet = load_fleet()
    for path in plots(results, singles):
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    fleet_png = fleet_plot(fleet)
    if fleet_png is not None:
        print(f"wrote {fleet_png.relative_to(REPO)}", file=sys.stderr)
    update_markdown(render(results, singles, hardware, fleet))
    print(f"updated {BENCHMARKS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
