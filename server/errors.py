"""Errors raised by the server.

ServerError
├── ConfigError (ValueError)      the server configuration is invalid
├── DatabaseError (RuntimeError)  the database cannot be reached or migrated
└── BrokerAdminError (ConnectionError)  station credentials cannot be changed on the broker
"""


class ServerError(Exception):
    """Base of every error the server raises on purpose."""


class ConfigError(ServerError, ValueError):
    """The server configuration is invalid; the message names the failing key."""


class DatabaseError(ServerError, RuntimeError):
    """The database cannot be reached or migrated."""


class BrokerAdminError(ServerError, ConnectionError):
    """The broker cannot be reached as admin, or refused a change of station credentials."""
