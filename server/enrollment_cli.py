"""``swabline admin ...``: enrollment tokens and cards, decommissioning, on the server itself.

These work on the database directly, as a server administrator with every permission
(``cli:<os user>`` in the audit log), like the account commands in ``server.admin``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from protocol.cards import CardError, EnrollmentCard
from server import enrollment
from server.access import system_principal
from server.cards import enrollment_card_html, selftest_card_html
from server.config import ServerConfig, load_config
from server.db import make_engine, migrate
from server.errors import HttpError, ServerError


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _write(path: Path, text: str, *, private: bool) -> None:
    """Write ``text``; a card with a live token is created 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _card(args: argparse.Namespace, token: str) -> EnrollmentCard:
    if not args.server_url:
        raise CardError("--server-url is needed to print a card")
    card = EnrollmentCard(args.server_url, token, args.wifi_ssid, args.wifi_password)
    card.encode()
    return card


def _on_database(
    command: str, args: argparse.Namespace, work: Callable[[ServerConfig, Engine], None]
) -> int:
    """Run ``work`` on the configured database; print the refusal if there is one."""
    try:
        config = load_config(args.config)
        engine = make_engine(config.database.url)
        try:
            migrate(engine)
            work(config, engine)
        finally:
            engine.dispose()
    except HttpError as exc:
        print(f"swabline admin {command}: {exc.message}", file=sys.stderr)
        return 1
    except CardError as exc:
        print(f"swabline admin {command}: {exc.reason}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"swabline admin {command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"swabline admin {command}: {exc}", file=sys.stderr)
        return 2
    return 0


def enroll_token(args: argparse.Namespace) -> int:
    if not args.facility and not args.station:
        print(
            "swabline admin enroll-token: give --facility CODE (or --station ID to re-provision)",
            file=sys.stderr,
        )
        return 2

    def work(config: ServerConfig, engine: Engine) -> None:
        lifetime = enrollment.parse_lifetime(args.expires_in)
        card = _card(args, "x" * 24) if args.card else None  # check the card's fields first
        max_s = config.enrollment.max_token_lifetime_s if config.enrollment else 7 * 24 * 3600
        principal = system_principal(_actor())
        with Session(engine) as db:
            facility = None
            if args.facility:
                facility = enrollment.sampling_facility(db, principal, code=args.facility)
            issued = enrollment.create_token(
                db,
                principal,
                facility=facility,
                lifetime=lifetime,
                max_lifetime=timedelta(seconds=max_s),
                station_id=args.station,
                station_name=args.name,
            )
            if card is not None:
                card = _card(args, issued.token)
                _write(
                    args.card,
                    enrollment_card_html(
                        card,
                        facility=f"{issued.facility_name} ({issued.facility_code})",
                        expires_at=issued.expires_at,
                        station_id=issued.station_id,
                    ),
                    private=True,
                )
            db.commit()
        print(issued.token)
        what = (
            f"re-provisions station {issued.station_id}"
            if issued.station_id
            else f"enrolls a new station (ids {enrollment.station_prefix(issued.facility_code)}-NN)"
        )
        print(
            f"# single use, {what} for facility {issued.facility_code} ({issued.facility_name}), "
            f"expires {issued.expires_at:%Y-%m-%d %H:%M %Z}"
            + (f"; card written to {args.card}" if args.card else ""),
            file=sys.stderr,
        )

    return _on_database("enroll-token", args, work)


def enroll_card(args: argparse.Namespace) -> int:
    try:
        card = _card(args, args.token)
    except CardError as exc:
        print(f"swabline admin enroll-card: {exc.reason}", file=sys.stderr)
        return 2
    _write(args.out, enrollment_card_html(card), private=True)
    print(f"card written to {args.out}", file=sys.stderr)
    return 0


def test_card(args: argparse.Namespace) -> int:
    _write(args.out, selftest_card_html(), private=False)
    print(f"test card written to {args.out}", file=sys.stderr)
    return 0


def decommission(args: argparse.Namespace) -> int:
    def work(config: ServerConfig, engine: Engine) -> None:
        broker = enrollment.broker_admin_from_config(config)
        with Session(engine) as db:
            enrollment.decommission(db, system_principal(_actor()), broker, args.station)
            db.commit()
        print(f"station {args.station} decommissioned: the broker refuses its credentials")

    return _on_database("decommission", args, work)
