"""Server configuration: TOML parsed into typed models. Unknown keys are errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.errors import ConfigError
from server.ops.status import StatusRules, fleet_refresh_s


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name this machine knows (e.g. ``Asia/Ho_Chi_Minh``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = Field(
        "sqlite:///swabline.db",
        description="SQLAlchemy URL: sqlite:///PATH (default) or postgresql+psycopg://...",
    )


class MqttConfig(_Section):
    host: str = Field(
        "127.0.0.1", description="Broker host (the server uses the loopback listener)."
    )
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    username: str = Field("swabline-server", description="The server's MQTT username.")
    password_file: Path | None = Field(None, description="File holding the server's MQTT password.")


class HttpConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the web app listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the web app listens on (0: any).")
    cookie_secure: bool = Field(
        False, description="Send the session cookie over HTTPS only (set when behind TLS)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        max_length=100,
        description="Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names "
        "the client; from any other address the header is ignored.",
    )


class IngestConfig(_Section):
    batch_max_rows: int = Field(
        500, ge=1, le=10_000, description="Commit after this many messages."
    )
    batch_max_ms: int = Field(
        50, ge=1, le=10_000, description="...or after this many milliseconds, whichever first."
    )
    shared_group: str = Field(
        "swabline-ingest",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="MQTT 5 shared-subscription group.",
    )
    workers: int = Field(
        1, ge=0, le=64, description="Ingest worker processes (--ingest-workers overrides)."
    )


class AuthConfig(_Section):
    session_hours: float = Field(
        12, gt=0, le=24 * 30, description="A web session ends this long after login."
    )
    session_idle_minutes: float = Field(
        120, gt=0, le=24 * 60, description="...or after this long without a request."
    )
    api_token_days: int = Field(365, ge=1, le=3650, description="Default lifetime of an API token.")
    login_max_failures: int = Field(
        5, ge=1, le=1000, description="Failed logins per username within the window..."
    )
    login_max_failures_per_addr: int = Field(
        30, ge=1, le=100_000, description="...and per client address, before refusing (429)."
    )
    login_window_s: int = Field(
        900, ge=1, le=86_400, description="The login rate-limit window, seconds."
    )


class OpsConfig(_Section):
    heartbeat_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="The fleet's heartbeat interval: assumed when a station does not say, and "
        "the base of the fleet page's refresh.",
    )
    stale_after_intervals: float = Field(
        1.5, ge=1, le=100, description="A station is stale after this many intervals unheard..."
    )
    offline_after_intervals: float = Field(
        6.0, ge=1, le=1000, description="...and offline after this many (or on its death)."
    )
    timezone: TimeZoneName = Field(
        "Asia/Ho_Chi_Minh", description="Time zone of facility schedules that name none."
    )
    evaluate_s: float = Field(
        5.0, gt=0, le=600, description="How often statuses and alerts are re-evaluated."
    )
    history_step_s: int = Field(
        60, ge=10, le=3600, description="Heartbeat history keeps one sample per this many seconds."
    )
    history_full_hours: int = Field(
        24, ge=1, le=24 * 90, description="Full-resolution history is kept this long..."
    )
    history_coarse_step_s: int = Field(
        900, ge=60, le=86_400, description="...then thinned to one sample per this many seconds."
    )
    history_days: int = Field(
        14, ge=1, le=3650, description="Heartbeat history older than this is deleted."
    )
    command_ttl_s: int = Field(
        3600, ge=10, le=7 * 86_400, description="Default lifetime of a remote command."
    )
    fleet_refresh_s: float | None = Field(
        None,
        ge=0.5,
        le=600,
        description="How often the fleet page fetches fresh data; default: derived from "
        "heartbeat_s so that a status change shows within two heartbeat intervals.",
    )
    metrics_max_stations: int = Field(
        200, ge=0, le=100_000, description="Stations with their own /metrics series (worst first)."
    )
    metrics_max_facilities: int = Field(
        200, ge=0, le=100_000, description="Facilities with their own series; the rest: 'other'."
    )

    def status_rules(self) -> StatusRules:
        return StatusRules(
            heartbeat_s=self.heartbeat_s,
            stale_after_intervals=self.stale_after_intervals,
            offline_after_intervals=self.offline_after_intervals,
        )

    def page_refresh_s(self) -> float:
        """The fleet page's refresh period: ``fleet_refresh_s``, else derived (see
        ``server.ops.status.fleet_refresh_s``)."""
        if self.fleet_refresh_s is not None:
            return self.fleet_refresh_s
        return fleet_refresh_s(self.status_rules())


class EnrollmentConfig(_Section):
    broker_host: str = Field(
        description="Broker address given to enrolling stations (the TLS listener's name)."
    )
    broker_port: int = Field(8883, ge=1, le=65535, description="Broker port for stations.")
    ca_file: Path | None = Field(
        None, description="The province's CA certificate, handed to stations; unset: no TLS."
    )
    broker_type: Literal["mosquitto", "emqx"] = Field(
        "mosquitto",
        description="Where station credentials are kept: Mosquitto's dynamic security plugin, "
        "or an EMQX 5 cluster's built-in database through its REST API.",
    )
    broker_api_url: str | None = Field(
        None,
        pattern=r"^https?://[^/\s]+/?$",
        description="EMQX only: a node's management API, e.g. https://emqx1.example:18083.",
    )
    broker_admin_username: str = Field(
        "swabline-admin",
        description="Mosquitto: the broker user allowed on the dynamic security control topic; "
        "EMQX: the API key.",
    )
    broker_admin_password_file: Path = Field(
        description="File holding the broker admin's password, or the EMQX API key's secret "
        "(mode 0600)."
    )
    max_token_lifetime_s: int = Field(
        7 * 24 * 3600, ge=60, description="Longest lifetime an enrollment token may be given."
    )

    @model_validator(mode="after")
    def _api_url_for_emqx(self) -> EnrollmentConfig:
        if self.broker_type == "emqx" and self.broker_api_url is None:
            raise ValueError("broker_api_url is required when broker_type is 'emqx'")
        if self.broker_type != "emqx" and self.broker_api_url is not None:
            raise ValueError("broker_api_url is only used when broker_type is 'emqx'")
        return self


class PublicConfig(_Section):
    base_url: str | None = Field(
        None,
        pattern=r"^https?://[^/\s]+(/[^\s]*)?$",
        description="The public address of the server (https://...), for QR codes and links in "
        "notifications; default: the address each request came to.",
    )
    secret_file: Path | None = Field(
        None,
        description="File with the key that signs result slips and hashes lookup codes (32+ "
        "characters, mode 0600); default: made once and kept in the database.",
    )
    lookup_per_addr: int = Field(
        10, ge=1, le=10_000, description="Result lookups per address per lookup_addr_window_s."
    )
    lookup_addr_window_s: int = Field(60, ge=1, le=86_400, description="See lookup_per_addr.")
    lookup_per_id: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Lookups of one ID number or slip code per lookup_id_window_s, from anywhere.",
    )
    lookup_id_window_s: int = Field(3600, ge=1, le=604_800, description="See lookup_per_id.")
    lookup_per_id_day: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Lookups of one ID number or slip code per 24 hours, from anywhere.",
    )
    declare_per_addr: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Self-declarations per address per hour (a registration desk makes many).",
    )


class ReportsConfig(_Section):
    timezone: TimeZoneName = Field(
        "Asia/Ho_Chi_Minh", description="Time zone of report days, weeks and months."
    )
    schedule: bool = Field(
        True, description="Make the weekly and monthly report files in the server process."
    )
    check_interval_s: int = Field(
        600, ge=10, le=86_400, description="How often the scheduler looks for missing files."
    )
    language: Literal["vi", "en"] = Field("vi", description="Language of scheduled files.")
    rebuild_days: int = Field(
        7,
        ge=0,
        le=92,
        description="For this many days after a week or month ends, its files are made again "
        "daily, so that late results are in them.",
    )


class LabConfig(_Section):
    import_max_bytes: int = Field(
        5_000_000, ge=1000, le=100_000_000, description="Largest result CSV accepted."
    )


class AlertThresholds(_Section):
    """Alert thresholds. The admin UI can override each one (stored in ``ops_settings``)."""

    offline_after_s: float = Field(
        120, ge=0, le=86_400, description="Alert when stale/offline this long in operating hours."
    )
    backlog_max_age_s: float = Field(
        900, ge=10, description="Alert when the oldest unsent record is older than this."
    )
    backlog_growth_window_s: float = Field(
        900, ge=60, description="Alert when the outbox grew over this window..."
    )
    backlog_growth_min: int = Field(50, ge=1, description="...by at least this many records.")
    disk_free_min_mb: float = Field(500, ge=0, description="Alert when free disk falls below this.")
    cpu_temp_max_c: float = Field(80, ge=30, le=120, description="Alert at this CPU temperature.")
    clock_offset_max_s: float = Field(
        30, gt=0, description="Alert when a station's clock is off by more than this."
    )
    gap_grace_s: float = Field(
        300, ge=0, description="Alert when records are missing from a sequence this long."
    )


class AlertsConfig(_Section):
    thresholds: AlertThresholds = Field(default_factory=AlertThresholds)


class OutboundTarget(_Section):
    """Where one kind of outbound message goes (a webhook), and the key that signs it."""

    webhook_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="URL that receives these messages as JSON POSTs; setting it turns them on.",
    )
    secret_file: Path | None = Field(
        None,
        description="File with the key (32+ characters) for the X-Swabline-Signature HMAC of "
        "each body.",
    )


class ResultsTarget(OutboundTarget):
    sweep_hours: float = Field(
        48.0,
        gt=0,
        le=24 * 60,
        description="Results entered this recently get notifications for persons not yet told.",
    )


class OutboundConfig(_Section):
    """One transport for every outbound message: result notifications and ops alerts share
    the hook, the retry policy, the worker and the delivery log."""

    timeout_s: float = Field(10, gt=0, le=120, description="Timeout of one webhook POST.")
    max_attempts: int = Field(12, ge=1, le=100, description="Attempts before giving up (failed).")
    retry_min_s: float = Field(
        10, gt=0, le=86_400, description="First retry delay; doubles each attempt..."
    )
    retry_max_s: float = Field(3600, gt=0, le=604_800, description="...up to this.")
    poll_s: float = Field(5.0, gt=0, le=3600, description="How often due messages are looked for.")
    results: ResultsTarget = Field(default_factory=ResultsTarget)
    alerts: OutboundTarget = Field(default_factory=OutboundTarget)


MOVED_KEYS = {
    "notify.webhook_url": "outbound.results.webhook_url",
    "notify.secret_file": "outbound.results.secret_file",
    "notify.sweep_hours": "outbound.results.sweep_hours",
    "notify.timeout_s": "outbound.timeout_s",
    "notify.backoff_base_s": "outbound.retry_min_s",
    "notify.backoff_max_s": "outbound.retry_max_s",
    "notify.max_attempts": "outbound.max_attempts",
    "notify.poll_s": "outbound.poll_s",
    "alerts.webhook_url": "outbound.alerts.webhook_url",
    "alerts.webhook_secret_file": "outbound.alerts.secret_file",
}
"""Keys of the separate notification and alert transports, merged into ``[outbound]``."""


def _moved(data: object) -> list[str]:
    if not isinstance(data, dict):
        return []
    found = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            found.append(f"{old} is now {new}")
    if isinstance(data.get("notify"), dict) and not any(
        f"notify.{k}" in MOVED_KEYS for k in data["notify"]
    ):
        found.append("[notify] is now [outbound] and [outbound.results]")
    return found


class MemoryConfig(_Section):
    trim_s: float = Field(
        60,
        ge=0,
        le=86_400,
        description="Every this many seconds each server process hands its free heap back to "
        "the system (glibc malloc_trim); 0: never.",
    )


class ServerConfig(_Section):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    ops: OpsConfig = Field(default_factory=OpsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    enrollment: EnrollmentConfig | None = Field(
        None, description="Station enrollment; without this section the server enrolls no one."
    )
    public: PublicConfig = Field(default_factory=PublicConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    lab: LabConfig = Field(default_factory=LabConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_moved_keys(cls, data: Any) -> Any:
        moved = _moved(data)
        if moved:
            raise ValueError("settings moved (see docs/configuration.md): " + "; ".join(moved))
        return data


def load_config(path: Path) -> ServerConfig:
    """Read and validate a server configuration file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        msg = "; ".join(_error_text(e["loc"], e["msg"]) for e in errs)
        raise ConfigError(f"{path}: {msg}") from None


def _error_text(loc: tuple[int | str, ...], msg: str) -> str:
    where = ".".join(str(p) for p in loc)
    return f"{where}: {msg}" if where else msg.removeprefix("Value error, ")
