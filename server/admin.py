"""``swabline admin``: bootstrap the first admin, import the organisation tree, list users,
issue API tokens. Works on the database directly (run it on the server), audited as
``cli:<os user>``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import orgs, users
from server.access import system_principal
from server.auth import issue
from server.config import load_config
from server.db import make_engine, migrate
from server.errors import HttpError, ImportRowsError, ServerError
from server.models import Organisation, OrgKind, Role, TokenKind, User, UserRole


class AdminError(ServerError):
    """The admin command cannot do what was asked; the message says why."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AdminError(f"cannot read {args.password_file}: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise AdminError("give --password-file (no terminal to ask on)")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise AdminError("the passwords differ")
    return first


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")


def bootstrap(db: Session, args: argparse.Namespace) -> str:
    admins = db.scalar(
        select(UserRole.id)
        .join(User, User.id == UserRole.user_id)
        .where(UserRole.role == Role.PROVINCIAL_ADMIN.value, User.active.is_(True))
    )
    if admins is not None:
        raise AdminError("a provincial admin exists already: add users in the web app")
    principal = system_principal(_actor())
    roots = list(db.scalars(select(Organisation).where(Organisation.parent_id.is_(None))))
    if args.province_code:
        root = next((o for o in roots if o.code == args.province_code), None)
        if root is None:
            root = orgs.create(
                db,
                principal,
                code=args.province_code,
                name=args.province_name or args.province_code,
                kind=OrgKind.PROVINCE,
                parent=None,
                facility_kind=None,
            )
    elif len(roots) == 1:
        root = roots[0]
    else:
        raise AdminError(
            "give --province-code (and --province-name) for the province to administer"
        )
    user = users.create(
        db,
        principal,
        username=args.username,
        display_name=args.display_name or args.username,
        password=_password(args),
        locale="vi",
        grants=[users.GrantSpec(Role.PROVINCIAL_ADMIN, root.id)],
    )
    out = f"created provincial admin {user.username!r} for {root.code!r} ({root.name})"
    if args.token_file is not None:
        issued = issue(
            db, user.id, TokenKind.API, lifetime=timedelta(days=args.days), name="bootstrap"
        )
        _write_secret(args.token_file, issued.secret)
        out += f"; API token written to {args.token_file}"
    return out


def import_orgs(db: Session, args: argparse.Namespace) -> str:
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AdminError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AdminError(f"{args.file} is not UTF-8 text") from None
    report = orgs.import_csv(db, system_principal(_actor()), text)
    verb = "would import" if args.dry_run else "imported"
    return (
        f"{verb} {args.file}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged"
    )


def list_users(db: Session, _args: argparse.Namespace) -> str:
    lines = [f"{'username':<24} {'active':<6} {'name':<28} roles"]
    for user in db.scalars(select(User).order_by(User.username)):
        roles = ", ".join(f"{g.role}@{o.code}" for g, o in users.grants_of(db, user.id))
        lines.append(
            f"{user.username:<24} {'yes' if user.active else 'no':<6} "
            f"{user.display_name[:28]:<28} {roles}"
        )
    return "\n".join(lines)


def create_token(db: Session, args: argparse.Namespace) -> str:
    user = db.scalar(select(User).where(User.username == args.username.lower()))
    if user is None or not user.active:
        raise AdminError(f"no active user {args.username!r}")
    issued = issue(db, user.id, TokenKind.API, lifetime=timedelta(days=args.days), name=args.name)
    if args.token_file is not None:
        _write_secret(args.token_file, issued.secret)
        return f"API token {args.name!r} for {user.username!r} written to {args.token_file}"
    return issued.secret


ACTIONS = {
    "bootstrap": bootstrap,
    "import-orgs": import_orgs,
    "list-users": list_users,
    "create-token": create_token,
}


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        engine = make_engine(config.database.url)
        try:
            migrate(engine)
            with Session(engine) as db:
                out = ACTIONS[args.action](db, args)
                if getattr(args, "dry_run", False):
                    db.rollback()
                else:
                    db.commit()
        finally:
            engine.dispose()
    except ImportRowsError as exc:
        print(f"swabline admin: {args.file} refused, nothing imported:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    except HttpError as exc:
        print(f"swabline admin: {exc.message}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"swabline admin: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, AdminError) else 2
    print(out)
    return 0
