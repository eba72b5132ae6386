"""``swabline ingest``: an ingest worker without the web app, for ``swabline-ingest@.service``.

Several workers (and the ingest inside ``swabline server``) share the stations' records through
the MQTT 5 shared subscription named by ``ingest.shared_group``. Workers never migrate the
database: ``swabline server`` does; a worker started first waits for it, so systemd restarts it
until the schema is there.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from server.__main__ import read_secret
from server.config import load_config
from server.db import alembic_config, make_engine
from server.errors import DatabaseError, ServerError
from server.ingest import MqttIngest

log = logging.getLogger("swabline.ingest")


def check_schema(engine: Engine) -> None:
    """Raise ``DatabaseError`` unless the database is at the newest migration."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        raise DatabaseError(
            f"the database is at {sorted(current) or 'no revision'}, not {sorted(heads)}: "
            "start 'swabline server' first, it migrates the schema"
        )


def run_ingest(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.check_config:
            print(f"{args.config}: OK")
            return 0
        engine = make_engine(config.database.url)
        check_schema(engine)
        password = read_secret(config.mqtt.password_file)
    except ServerError as exc:
        print(f"swabline ingest: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ingest = MqttIngest(
        engine=engine,
        host=config.mqtt.host,
        port=config.mqtt.port,
        username=config.mqtt.username,
        password=password,
        client_id=f"swabline-ingest-{args.worker}-{os.getpid()}",
        shared_group=config.ingest.shared_group,
        batch_max_rows=config.ingest.batch_max_rows,
        batch_max_ms=config.ingest.batch_max_ms,
    )
    log.info("ingest worker %s starting", args.worker)
    ingest.run(stop)
    log.info(
        "ingest worker %s stopped: %d stored, %d duplicates, %d rejected",
        args.worker,
        ingest.totals.inserted,
        ingest.totals.duplicates,
        ingest.totals.rejected,
    )
    return 0
