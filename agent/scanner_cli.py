"""``swabline scanner``: tools for technicians to see what a scanner produces.

``replay FILE`` decodes an ``evtest`` capture as the station would; ``listen`` shows live what the
configured scanner produces. Both print one JSON object per line: a scan
(``{"accepted": true, "text": ...}`` or ``{"accepted": false, "reason": ..., "text": ...}``) or,
for ``listen``, a scanner appearing or disappearing (``{"scanner": ..., "present": ...}``).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading

from agent.config import load_config
from agent.errors import AgentError
from agent.evtest import EvtestReplaySource
from agent.ports import Condition, Feedback, Scan, ScannerState, Signal, SourceEvent


def scan_json(scan: Scan) -> str:
    """One scan as a JSON line."""
    out: dict[str, object] = {"accepted": scan.rejected is None}
    if scan.rejected is not None:
        out["reason"] = scan.rejected
    out["text"] = scan.text
    out["source"] = scan.source
    if scan.lossy:
        out["lossy"] = True
    return json.dumps(out, ensure_ascii=False)


def event_json(event: SourceEvent) -> str:
    if isinstance(event, Scan):
        return scan_json(event)
    return json.dumps(
        {"scanner": event.source, "present": event.present, "detail": event.detail},
        ensure_ascii=False,
    )


def replay(args: argparse.Namespace) -> int:
    source = EvtestReplaySource(
        args.file,
        terminator=args.terminator,
        gap_ms=args.gap_ms,
        incomplete_ms=args.incomplete_ms,
        max_length=args.max_length,
    )
    try:
        for scan in source.scans():
            print(scan_json(scan), flush=True)
    except OSError as exc:
        print(f"swabline scanner replay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"swabline scanner replay: {args.file}: {exc}", file=sys.stderr)
        return 2
    return 0


def listen(args: argparse.Namespace) -> int:
    from agent.__main__ import build_feedback, build_sources

    try:
        config = load_config(args.config)
        sources = build_sources(config)
        feedback: Feedback | None = build_feedback(config) if args.signals else None
    except AgentError as exc:
        print(f"swabline scanner listen: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    events: queue.Queue[SourceEvent] = queue.Queue()
    for source in sources:
        threading.Thread(
            target=source.run, args=(events.put, stop), name=f"source-{source.name}", daemon=True
        ).start()
    names = ", ".join(s.name for s in sources)
    print(f"listening to {names} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while not stop.is_set():
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            print(event_json(event), flush=True)
            if feedback is not None and isinstance(event, Scan):
                feedback.signal(Signal.REJECTED if event.rejected else Signal.SAVED)
            elif feedback is not None and isinstance(event, ScannerState):
                feedback.set_condition(Condition.SCANNER_MISSING, not event.present)
    finally:
        stop.set()
        if feedback is not None:
            feedback.close()
    return 0
