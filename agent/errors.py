"""Errors raised by the station agent.

AgentError
├── ConfigError (ValueError)        the station configuration is invalid
├── ScannerError (OSError)          a scanner cannot be opened or read
├── OutboxError (OSError)           the outbox cannot store a record durably
│   ├── OutboxFullError             capacity reached or disk full; the scan was not saved
│   └── OutboxNotReadyError         a new outbox does not know its seq floor yet
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
    """The outbox is at capacity or the disk is full: the scan was refused, not saved."""


class OutboxNotReadyError(OutboxError):
    """A new outbox has not learnt from the server where the station's seq stopped."""


class UplinkError(AgentError, ConnectionError):
    """The broker cannot be reached, or refused the station's credentials."""
