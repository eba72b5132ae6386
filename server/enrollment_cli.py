"""``swabline admin ...``: enrollment tokens and cards, decommissioning, on the server itself."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from protocol.cards import CardError, EnrollmentCard
from server.cards import enrollment_card_html, selftest_card_html
from server.config import load_config
from server.db import make_engine, migrate
from server.enrollment import EnrollmentRefused, create_token, parse_lifetime
from server.enrollment import decommission as _decommission
from server.enrollment_api import broker_admin_from_config
from server.errors import ServerError


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
    return EnrollmentCard(args.server_url, token, args.wifi_ssid, args.wifi_password)


def enroll_token(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        lifetime = parse_lifetime(args.expires_in)
        card = _card(args, "x" * 24) if args.card else None  # check the card's fields first
        engine = make_engine(config.database.url)
        migrate(engine)
        max_s = config.enrollment.max_token_lifetime_s if config.enrollment else 7 * 24 * 3600
        issued = create_token(
            engine,
            facility=args.facility,
            lifetime=lifetime,
            max_lifetime=timedelta(seconds=max_s),
            station_id=args.station,
            created_by=os.environ.get("SUDO_USER") or os.environ.get("USER"),
        )
        if card is not None:
            card = _card(args, issued.token)
            _write(
                args.card,
                enrollment_card_html(card, facility=issued.facility, expires_at=issued.expires_at),
                private=True,
            )
    except EnrollmentRefused as exc:
        print(f"swabline admin enroll-token: {exc.reason}", file=sys.stderr)
        return 1
    except CardError as exc:
        print(f"swabline admin enroll-token: {exc.reason}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"swabline admin enroll-token: {exc}", file=sys.stderr)
        return 2
    what = (
        f"re-provisions station {issued.station_id}"
        if issued.station_id
        else "enrolls a new station"
    )
    print(issued.token)
    print(
        f"# single use, {what} for facility {issued.facility}, "
        f"expires {issued.expires_at:%Y-%m-%d %H:%M %Z}"
        + (f"; card written to {args.card}" if args.card else ""),
        file=sys.stderr,
    )
    return 0


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
    try:
        config = load_config(args.config)
        engine = make_engine(config.database.url)
        migrate(engine)
        _decommission(engine, broker_admin_from_config(config), args.station)
    except EnrollmentRefused as exc:
        print(f"swabline admin decommission: {exc.reason}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"swabline admin decommission: {exc}", file=sys.stderr)
        return 2
    print(f"station {args.station} decommissioned: the broker refuses its credentials")
    return 0
