"""The enrollment exchange: a station trades a single-use token for its identity.

``POST /api/enroll`` with an ``EnrollRequest`` (JSON) answers ``200`` with an
``EnrollResponse``, or an error status with ``{"detail": "<reason for the technician>"}``:
401 unknown token (mistyped, forged or from another server), 409 already used, 410 expired,
cancelled or the station was decommissioned, 503 the broker could not be reached (try again;
the token was not used).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import StationId

ENROLL_PATH = "/api/enroll"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrollRequest(_Model):
    token: str = Field(min_length=16, max_length=128)
    hostname: str | None = Field(default=None, max_length=253)
    agent_version: str | None = Field(default=None, max_length=32)


class BrokerCredentials(_Model):
    host: str
    port: int = Field(ge=1, le=65535)
    username: str
    password: str = Field(min_length=16)
    ca_pem: str | None = Field(
        default=None, description="The province's CA certificate; present means TLS."
    )


class EnrollResponse(_Model):
    station_id: StationId
    facility: str
    mqtt: BrokerCredentials
    seq_floor: int = Field(
        ge=0,
        description="Highest record seq the server holds for this station id: a re-provisioned "
        "station continues after it, so its new records are not taken for duplicates.",
    )
    server_time: float = Field(description="The server's clock, seconds since the epoch.")
