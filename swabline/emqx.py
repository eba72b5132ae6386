"""``swabline emqx-users``: station credentials as an EMQX built-in database import file, and
their authorization rules.

Mosquitto's password file cannot be carried over: it holds PBKDF2 hashes whose salts EMQX's
importer would read differently. Provisioning therefore hashes each secret again for EMQX, with
the algorithm ``broker/emqx/emqx.conf`` configures (PBKDF2-HMAC-SHA512, 4096 iterations,
64-byte key, hex), from the same ``station_id password`` lines ``swabline simulate
--credentials`` reads. Each station also needs its rules in the built-in database authorizer
(``--rules-out``): the same rules enrollment writes (``server.emqx_admin.station_rules``).
Superusers (``is_superuser``) are never written: the central server's rights come from
``broker/emqx/acl.conf``. See docs/broker-cluster.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

ITERATIONS = 4096
KEY_BYTES = 64


def password_hash(password: str, salt: str) -> str:
    """The hex PBKDF2-HMAC-SHA512 EMQX compares with (salt used as the bytes of its text)."""
    return hashlib.pbkdf2_hmac(
        "sha512", password.encode(), salt.encode(), ITERATIONS, KEY_BYTES
    ).hex()


def users_csv(credentials: Iterable[tuple[str, str]], *, superusers: Iterable[str] = ()) -> str:
    """CSV for ``POST /api/v5/authentication/password_based:built_in_database/import_users``."""
    supers = set(superusers)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "password_hash", "salt", "is_superuser"])
    for user, password in credentials:
        salt = secrets.token_hex(16)
        writer.writerow([user, password_hash(password, salt), salt, str(user in supers).lower()])
    return out.getvalue()


def rules_json(usernames: Iterable[str]) -> str:
    """Every station's rules, as the body of
    ``POST /api/v5/authorization/sources/built_in_database/rules/users``. The server's and the
    admin's users (``swabline-...``) are left out: their rights are in ``acl.conf``."""
    from server.broker_admin import RESERVED_PREFIX
    from server.emqx_admin import station_rules

    stations = [user for user in usernames if not user.startswith(RESERVED_PREFIX)]
    return json.dumps(
        [{"username": user, "rules": station_rules(user)} for user in stations], indent=1
    )


def read_credentials(path: Path) -> list[tuple[str, str]]:
    """``station_id password`` per line; blank lines and ``#`` comments skipped."""
    creds = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'username password'")
        creds.append((parts[0], parts[1]))
    return creds


def run(args: argparse.Namespace) -> int:
    try:
        creds = read_credentials(args.credentials)
    except (OSError, ValueError) as exc:
        print(f"swabline emqx-users: {exc}", file=sys.stderr)
        return 2
    try:
        rules = rules_json(user for user, _ in creds) if args.rules_out else None
    except ValueError as exc:  # not a station id (the server's user has no rules here)
        print(f"swabline emqx-users: {exc}", file=sys.stderr)
        return 2
    text = users_csv(creds)
    if args.out:
        args.out.write_text(text)
        args.out.chmod(0o600)
    else:
        sys.stdout.write(text)
    if rules is not None:
        args.rules_out.write_text(rules + "\n")
    return 0
