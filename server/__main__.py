"""Wiring of the server: config -> database -> ingest workers + web app."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from server.config import ServerConfig, load_config
from server.db import make_engine, migrate
from server.errors import ServerError
from server.ingest import MqttIngest

log = logging.getLogger("swabline.server")


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ServerError(f"cannot read mqtt.password_file {path}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.check_config:
            print(f"{args.config}: OK")
            return 0
        return _serve(config)
    except ServerError as exc:
        print(f"swabline server: {exc}", file=sys.stderr)
        return 2


def _serve(config: ServerConfig) -> int:
    import uvicorn

    from server.web import create_app

    engine = make_engine(config.database.url)
    migrate(engine)
    stop = threading.Event()
    ingest = MqttIngest(
        engine=engine,
        host=config.mqtt.host,
        port=config.mqtt.port,
        username=config.mqtt.username,
        password=read_secret(config.mqtt.password_file),
        client_id=f"swabline-ingest-{os.getpid()}",
        shared_group=config.ingest.shared_group,
        batch_max_rows=config.ingest.batch_max_rows,
        batch_max_ms=config.ingest.batch_max_ms,
    )
    worker = threading.Thread(target=ingest.run, args=(stop,), name="ingest", daemon=True)
    worker.start()
    log.info("web app on http://%s:%d/", config.http.host, config.http.port)
    try:
        uvicorn.run(
            create_app(engine, ingest_totals=lambda: ingest.totals),
            host=config.http.host,
            port=config.http.port,
            log_level="warning",
        )
    finally:
        stop.set()
        worker.join(timeout=5)
    return 0
