"""Errors raised by the server.

ServerError
├── ConfigError (ValueError)        the server configuration is invalid
├── DatabaseError (RuntimeError)    the database cannot be reached or migrated
├── BrokerAdminError (ConnectionError)  station credentials cannot be changed on the broker
├── ImportRowsError (ValueError)    a CSV import was refused; ``errors`` lists every bad row
└── HttpError                       an HTTP request is refused; rendered by one handler
    ├── BadRequestError             400 the request is well-formed but makes no sense
    ├── NotAuthenticatedError       401 no session or token, or an expired/unknown one
    ├── ForbiddenError              403 authenticated, but the role does not allow it
    ├── NotFoundError               404 no such object in the caller's scope
    ├── ConflictError               409 the object exists already / is in use
    ├── TooManyRequestsError        429 rate-limited (login)
    └── EnrollmentRefused           401/409/410/503 an enrollment token or station is refused
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the server raises on purpose."""


class ConfigError(ServerError, ValueError):
    """The server configuration is invalid; the message names the failing key."""


class DatabaseError(ServerError, RuntimeError):
    """The database cannot be reached or migrated."""


class BrokerAdminError(ServerError, ConnectionError):
    """The broker cannot be reached as admin, or refused a change of station credentials."""


class ImportRowsError(ServerError, ValueError):
    """A CSV import was refused: nothing was applied. ``errors`` holds one line per bad row."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class HttpError(ServerError):
    """An HTTP request is refused. ``status`` and ``code`` go to the client with the message.

    ``message`` is English (the API's ``detail``, logs). ``text`` names the interface text a
    page shows instead (``server.web.i18n``, Vietnamese first), filled in with ``values``;
    without one, a page shows a general text for the status and the message as detail.
    """

    status = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        text: str | None = None,
        values: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.values = values or {}
        if headers is not None:
            self.headers = headers


class BadRequestError(HttpError):
    status, code = 400, "bad_request"


class NotAuthenticatedError(HttpError):
    status, code = 401, "not_authenticated"


class ForbiddenError(HttpError):
    status, code = 403, "forbidden"


class NotFoundError(HttpError):
    status, code = 404, "not_found"


class ConflictError(HttpError):
    status, code = 409, "conflict"


class TooManyRequestsError(HttpError):
    status, code = 429, "too_many_requests"


class EnrollmentRefused(HttpError):
    """An enrollment token, card or station was refused. ``status`` is per refusal (401 unknown
    token, 409 used, 410 expired/cancelled/decommissioned, 503 broker unreachable, ...);
    ``reason`` is the text the technician reads."""

    code = "enrollment_refused"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
