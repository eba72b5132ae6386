"""The server processes' memory: free heap handed back to the system, and a trace of where the
memory goes, for "is it growing, and what grows".

**Trim.** The server's threads (web requests, the ops monitor, the fleet snapshot) make and drop
many objects; glibc keeps the freed memory in its heaps (one per thread that allocates, up to
8 per core), so the resident size creeps up while the memory in use does not. Every
``memory.trim_s`` seconds (60; 0: never) the server process and each ingest worker call
``malloc_trim(0)``, which returns the free pages of every heap to the system.

**Trace.**
Set ``SWABLINE_MEMORY_TRACE=/path/trace.jsonl`` (and optionally
``SWABLINE_MEMORY_TRACE_INTERVAL_S``, default 60) in the server's environment and it appends one
JSON line per interval with the readings below; each ingest worker process writes its own file
beside it (``trace-ingest-0.jsonl``, ...):

- ``rss_mb``, ``rss_anon_mb``, ``rss_file_mb``: the kernel's view (``/proc/self/status``);
- ``malloc_in_use_mb`` and ``malloc_free_mb``: glibc's heap, in use and held free
  (``mallinfo2``; fragmentation shows as free memory that RSS keeps);
- ``sqlite_mb``: what SQLite's own allocator holds (page caches, prepared statements), across
  every connection in the process (``sqlite3_memory_used``);
- ``python_objects``: objects tracked by the garbage collector;
- when Python was started with tracemalloc (``PYTHONTRACEMALLOC=1``): ``traced_mb``, what
  tracemalloc itself holds (``tracemalloc_own_mb``, part of the RSS) and the ten source lines
  whose allocations grew most since the second sample (``top_growth``; the first interval is
  the process starting).

Readings that the platform does not offer (not Linux, not glibc, SQLite without memory
statistics) are ``null``. The sampling itself costs a few milliseconds per interval;
tracemalloc costs more and is for diagnosis only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_PATH = "SWABLINE_MEMORY_TRACE"
ENV_INTERVAL = "SWABLINE_MEMORY_TRACE_INTERVAL_S"
MB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc_function(name: str, restype: Any, argtypes: list[Any] | None = None) -> Any:
    """``name`` from the C library, typed; None where it has none (not glibc)."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.restype = restype
    if argtypes is not None:
        fn.argtypes = argtypes
    return fn


_TRIM = _libc_function("malloc_trim", ctypes.c_int, [ctypes.c_size_t])


def release_free_heap() -> bool | None:
    """Hand glibc's free heap pages back to the system (``malloc_trim(0)``): whether any was,
    or None where the C library has no ``malloc_trim`` (not glibc)."""
    if _TRIM is None:
        return None
    return bool(_TRIM(0))


def trim_every(interval_s: float, stop: threading.Event) -> None:
    """Release free heap every ``interval_s`` until ``stop`` is set (a thread body)."""
    if _TRIM is None:
        log.info("malloc_trim is not available here: free heap is not handed back")
        return
    while not stop.wait(interval_s):
        _TRIM(0)


def _sqlite_memory_used() -> Any:
    """``sqlite3_memory_used`` from the SQLite library Python's sqlite3 module is linked to."""
    import sqlite3  # noqa: F401 - loads the library into the process

    for name in (ctypes.util.find_library("sqlite3"), "libsqlite3.so.0"):
        if not name:
            continue
        try:
            fn = ctypes.CDLL(name).sqlite3_memory_used
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int64
        return fn
    return None


def _proc_status() -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


class MemoryTrace:
    """Samples the process's memory every ``interval_s`` into a JSON-lines file."""

    def __init__(self, path: Path, interval_s: float = 60.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._mallinfo = _libc_function("mallinfo2", _MallInfo2)
        self._sqlite = _sqlite_memory_used()
        self._baseline: tracemalloc.Snapshot | None = None
        self._samples = 0
        self._started = time.monotonic()

    def sample(self) -> dict[str, Any]:
        status = _proc_status()
        row: dict[str, Any] = {
            "t_s": round(time.monotonic() - self._started, 1),
            "rss_mb": _mb(status.get("VmRSS")),
            "rss_anon_mb": _mb(status.get("RssAnon")),
            "rss_file_mb": _mb(status.get("RssFile")),
            "malloc_in_use_mb": None,
            "malloc_free_mb": None,
            "sqlite_mb": None,
            "python_objects": len(gc.get_objects()),
        }
        if self._mallinfo is not None:
            info = self._mallinfo()
            row["malloc_in_use_mb"] = round((info.uordblks + info.hblkhd) / MB, 2)
            row["malloc_free_mb"] = round(info.fordblks / MB, 2)
        if self._sqlite is not None:
            row["sqlite_mb"] = round(self._sqlite() / MB, 2)
        if tracemalloc.is_tracing():
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / MB, 2)
            row["tracemalloc_own_mb"] = round(tracemalloc.get_tracemalloc_memory() / MB, 2)
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            self._samples += 1
            if self._baseline is None:
                if self._samples >= 2:  # the first interval is start-up: not growth
                    self._baseline = snap
            else:
                row["top_growth"] = [
                    {
                        "where": str(stat.traceback[0]),
                        "kb": round(stat.size_diff / 1024, 1),
                        "blocks": stat.count_diff,
                    }
                    for stat in snap.compare_to(self._baseline, "lineno")[:10]
                ]
        return row

    def run(self, stop: threading.Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            row = self.sample()
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            stop.wait(self.interval_s)


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def from_environment(process: str | None = None) -> MemoryTrace | None:
    """The trace asked for by ``SWABLINE_MEMORY_TRACE``, or None. ``process`` names a process
    other than the server's main one (an ingest worker): its trace goes beside the main one,
    ``trace-ingest-0.jsonl`` for ``trace.jsonl``."""
    path = os.environ.get(ENV_PATH)
    if not path:
        return None
    where = Path(path)
    if process is not None:
        where = where.with_name(f"{where.stem}-{process}{where.suffix}")
    interval = float(os.environ.get(ENV_INTERVAL, "60"))
    log.warning("memory trace every %.0f s into %s", interval, where)
    return MemoryTrace(where, interval)


def threads(
    trim_s: float, stop: threading.Event, process: str | None = None
) -> list[threading.Thread]:
    """The memory threads of one server process, not yet started: the heap trim every
    ``trim_s`` (none when 0) and the trace when the environment asks for it (``process`` as in
    ``from_environment``). Both end when ``stop`` is set."""
    out = []
    if trim_s > 0:
        out.append(
            threading.Thread(target=trim_every, args=(trim_s, stop), name="heap-trim", daemon=True)
        )
    trace = from_environment(process)
    if trace is not None:
        out.append(
            threading.Thread(target=trace.run, args=(stop,), name="memory-trace", daemon=True)
        )
    return out
