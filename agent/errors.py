"""Errors raised by the station agent.

AgentError
├── ConfigError (ValueError)        the station configuration is invalid
├── ScannerError (OSError)          a scanner cannot be opened or read
├── OutboxError (OSError)           the outbox cannot store a record durably
│   └── OutboxFullError             the outbox reached its capacity; the scan was not saved
└── UplinkError (ConnectionError)   the broker cannot be reached or refused us
"""


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """The station configuration is invalid; the message names the failing key."""


class ScannerError(AgentError, OSError):
    """A scanner cannot be opened or read."""


class OutboxError(AgentError, OSError):
    """The outbox cannot store a record durably."""


class OutboxFullError(OutboxError):
    """The outbox is at capacity: the scan was refused, not saved."""


class UplinkError(AgentError, ConnectionError):
    """The broker cannot be reached, or refused the station's credentials."""
