"""Everything a station needs from its disk, checked before anything starts.

``swabline agent`` (and ``--check-config``) call ``prepare`` right after parsing the TOML, so a
missing password file, an unreadable or malformed CA certificate, an outbox folder the agent
cannot write, a missing named pipe or a station without a workflow is reported with the key that
names it, and the agent never starts half-configured.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.config import StationConfig
from agent.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Prepared:
    """What ``prepare`` read: the secrets the agent must not read again later."""

    mqtt_password: str | None


def read_secret(path: Path, key: str) -> str:
    """The content of a secret file, stripped; ``ConfigError`` naming ``key`` if unusable."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{key}: {path} is empty")
    return value


def check_ca_file(path: Path, key: str) -> None:
    """``path`` must be a readable PEM file holding at least one CA certificate."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not a PEM certificate") from None
    try:
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{key}: {path} is not a PEM certificate ({exc})") from None


def check_writable_dir(path: Path, key: str) -> None:
    """The folder of ``path`` exists (or can be made) and can be written."""
    folder = path.parent
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write in {probe}")


def check_workflow(config: StationConfig) -> None:
    """A station samples ([workflow]) or receives at a lab ([lab]); storing raw scans without
    any pairing check is for development only, and must be asked for by name."""
    if config.workflow is None and config.lab is None and not config.development_raw_scans:
        raise ConfigError(
            "workflow: missing: a sampling station needs a [workflow] section (tube_patterns, "
            "docs/workflow.md), a lab station a [lab] section; without either every scan would "
            "be stored raw, without pairing checks, which only development allows "
            "(development_raw_scans = true)"
        )


def prepare(config: StationConfig) -> Prepared:
    """Check and read what the configuration points to; raise ``ConfigError`` naming the key."""
    check_workflow(config)
    mqtt = config.mqtt
    password = read_secret(mqtt.password_file, "mqtt.password_file") if mqtt.password_file else None
    if mqtt.ca_file is not None:
        check_ca_file(mqtt.ca_file, "mqtt.ca_file")
    check_writable_dir(config.outbox.path, "outbox.path")
    check_scanner_path(config)
    return Prepared(mqtt_password=password)


def check_scanner_path(config: StationConfig) -> None:
    """The named pipe of a ``stdin`` scanner exists and can be read (a reader thread that dies
    at once would leave the station running without a scanner)."""
    scanner = config.scanner
    if scanner.type != "stdin" or scanner.path == "-":
        return
    path = Path(scanner.path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"scanner.path: {path} does not exist (make the named pipe with: mkfifo {path})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"scanner.path: cannot reach {path}: {exc.strerror}") from None
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        raise ConfigError(f"scanner.path: {path} is neither a named pipe nor a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"scanner.path: cannot read {path}")
