"""What the lab, public and report pages share, built once per app: the slip signer, the keyed
hash for lookups, rate limits and the report time zone."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Request
from jinja2 import pass_context
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.access import Permission, Principal, Scope
from server.config import ServerConfig
from server.models import Organisation, User
from server.public import Limits
from server.results import ResultsContext
from server.signing import KeyedHash, SlipSigner, load_secret
from server.web.templating import TEMPLATES

PUBLIC_SECRET = "public"


@dataclass(frozen=True)
class LabServices:
    config: ServerConfig
    ctx: ResultsContext
    keyed: KeyedHash
    lookup_limits: Limits
    declare_limits: Limits
    tz: ZoneInfo


def build_services(engine: Engine, config: ServerConfig) -> LabServices:
    """Read (or make, once) the public secret and derive one key per purpose from it."""
    key = load_secret(engine, PUBLIC_SECRET, config.public.secret_file)

    def derive(purpose: str) -> bytes:
        return hmac.new(key, purpose.encode(), hashlib.sha256).digest()

    tz = ZoneInfo(config.reports.timezone)
    p = config.public
    return LabServices(
        config=config,
        ctx=ResultsContext(
            signer=SlipSigner(derive("slip")),
            tz=tz,
            base_url=p.base_url.rstrip("/") if p.base_url else None,
        ),
        keyed=KeyedHash(derive("lookup")),
        lookup_limits=Limits(
            per_addr=p.lookup_per_addr,
            per_addr_window_s=p.lookup_addr_window_s,
            per_key=p.lookup_per_id,
            per_key_window_s=p.lookup_id_window_s,
            per_key_day=p.lookup_per_id_day,
        ),
        declare_limits=Limits(
            per_addr=p.declare_per_addr,
            per_addr_window_s=3600,
            per_key=10**9,
            per_key_window_s=1,
        ),
        tz=tz,
    )


def install(app: FastAPI, engine: Engine, config: ServerConfig) -> None:
    app.state.lab = build_services(engine, config)
    TEMPLATES.env.filters["local"] = local_time


@pass_context
def local_time(context: Any, value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Template filter: a UTC timestamp in the server's report time zone (``reports.timezone``)."""
    if value is None:
        return ""
    request = context.get("request")
    state = getattr(getattr(request, "app", None), "state", None)
    services = getattr(state, "lab", None)
    tz = services.tz if isinstance(services, LabServices) else UTC
    return value.astimezone(tz).strftime(fmt)


def get_services(request: Request) -> LabServices:
    services: LabServices = request.app.state.lab
    return services


Services = Annotated[LabServices, Depends(get_services)]


def base_url(request: Request, services: LabServices) -> str:
    """The public address for links and QR codes: configured, else this request's."""
    return services.ctx.base_url or str(request.base_url).rstrip("/")


def use_locale(request: Request, db: Session, principal: Principal | None) -> None:
    """Let the logged-in user's language apply when no ``?lang`` or cookie says otherwise."""
    if principal is not None and principal.user_id is not None:
        request.state.locale = db.scalar(select(User.locale).where(User.id == principal.user_id))


def facilities(db: Session, scope: Scope, kinds: tuple[str, ...]) -> list[Organisation]:
    """Active facilities of these kinds in ``scope``, by name."""
    return list(
        db.scalars(
            select(Organisation)
            .where(
                Organisation.kind == "facility",
                Organisation.facility_kind.in_(kinds),
                Organisation.active.is_(True),
                Organisation.id.in_(scope.org_ids()),
            )
            .order_by(Organisation.name)
        )
    )


def lab_scope(principal: Principal) -> Scope:
    return principal.require(Permission.LAB_WRITE)
