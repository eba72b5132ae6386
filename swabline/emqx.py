"""``swabline emqx-users``: station credentials as an EMQX built-in database import file.

Mosquitto's password file cannot be carried over: it holds PBKDF2 hashes whose salts EMQX's
importer would read differently. Provisioning therefore hashes each secret again for EMQX, with
the algorithm ``broker/emqx/emqx.conf`` configures (PBKDF2-HMAC-SHA512, 4096 iterations,
64-byte key, hex), from the same ``station_id password`` lines ``swabline simulate
--credentials`` reads. See docs/broker-cluster.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
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
    text = users_csv(creds)
    if args.out:
        args.out.write_text(text)
        args.out.chmod(0o600)
    else:
        sys.stdout.write(text)
    return 0
