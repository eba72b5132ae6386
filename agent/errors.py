"""Errors raised by the station agent.

AgentError
├── ConfigError (ValueError)        the station configuration is invalid
├── ScannerError (OSError)          a scanner cannot be opened or read
├── CaptureFormatError (ValueError) an evtest capture file cannot be parsed
├── FeedbackError (OSError)         the LEDs or buzzer cannot be driven
├── OutboxError (OSError)           the outbox cannot store a record durably
│   ├── OutboxFullError             capacity reached or disk full; the scan was not saved
│   └── OutboxNotReadyError         a new outbox does not know its seq floor yet
├── UplinkError (ConnectionError)   the broker cannot be reached or refused us
└── ProvisionError (RuntimeError)   enrollment was refused or could not be completed
"""


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """The station configuration is invalid; the message names the failing key."""


class ScannerError(AgentError, OSError):
    """A scanner cannot be opened or read."""


class CaptureFormatError(AgentError, ValueError):
    """An ``evtest`` capture has a line that is not an event; the message names the line."""


class FeedbackError(AgentError, OSError):
    """The LEDs or buzzer cannot be set up (pins in use, no GPIO access)."""


class OutboxError(AgentError, OSError):
    """The outbox cannot store a record durably."""


class OutboxFullError(OutboxError):
    """The outbox is at capacity or the disk is full: the scan was refused, not saved."""


class OutboxNotReadyError(OutboxError):
    """A new outbox has not learnt from the server where the station's seq stopped."""


class UplinkError(AgentError, ConnectionError):
    """The broker cannot be reached, or refused the station's credentials."""


class ProvisionError(AgentError, RuntimeError):
    """Enrollment was refused (the reason says why) or its files could not be written."""
