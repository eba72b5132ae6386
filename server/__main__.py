"""Wiring of the server: config -> database -> ingest workers + web app."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.config import ServerConfig, load_config
from server.db import make_engine, migrate
from server.errors import ConfigError, ServerError

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
        workers = config.ingest.workers
        if getattr(args, "ingest_workers", None) is not None:
            workers = args.ingest_workers
        return _serve(config, workers, getattr(args, "log_level", "INFO"))
    except ServerError as exc:
        print(f"swabline server: {exc}", file=sys.stderr)
        return 2


def _serve(config: ServerConfig, workers: int, log_level: str) -> int:
    import uvicorn

    from server.background import start_background
    from server.ops.runtime import OpsRuntime
    from server.outbound import worker_from_config
    from server.web import create_app
    from server.workers import WorkerPool

    if workers < 0:
        raise ConfigError("--ingest-workers must be 0 or more")
    engine = make_engine(config.database.url)
    migrate(engine)
    outbound = worker_from_config(engine, config.outbound)  # results and alerts: one worker
    enrollment = None
    if config.enrollment is not None:
        from server.enrollment import service_from_config

        enrollment = service_from_config(config)
    password = read_secret(config.mqtt.password_file)
    pool = WorkerPool(config, workers, password=password, log_level=log_level)
    pool.start()
    ops = OpsRuntime(
        engine=engine, config=config, mqtt_password=password, wake_outbound=outbound.wake.set
    )
    ops.start()
    log.info(
        "web app on http://%s:%d/ with %d ingest worker(s)",
        config.http.host,
        config.http.port,
        workers,
    )
    app = create_app(
        engine,
        config=config,
        ingest_counters=pool.counters,
        enrollment=enrollment,
        ops_runtime=ops,
    )
    background = start_background(engine, config, app.state.lab.ctx, outbound=outbound)
    try:
        uvicorn.run(
            app,
            host=config.http.host,
            port=config.http.port,
            log_level="warning",
            proxy_headers=True,
            forwarded_allow_ips=list(config.http.trusted_proxies),
        )
    finally:
        background.close()
        ops.stop()
        pool.stop()
        engine.dispose()
    return 0
