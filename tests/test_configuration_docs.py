"""The configuration documentation, the annotated examples and the code stay in step."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import StationConfig, load_config
from server.config import ServerConfig
from server.config import load_config as load_server_config

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "configuration.md").read_text()


def _models(annotation: object) -> list[type[BaseModel]]:
    """Every pydantic model inside an annotation (Optional, Union, Annotated, list...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        subs = _models(field.annotation)
        if subs:
            for sub in subs:
                out |= keys(sub, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def documented(section: str) -> set[str]:
    part = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_.]+)` \|", part, flags=re.M))


@pytest.mark.parametrize(
    ("model", "section"), [(StationConfig, "Station"), (ServerConfig, "Server")]
)
def test_every_setting_is_documented_and_every_documented_setting_exists(
    model: type[BaseModel], section: str
) -> None:
    assert keys(model) == documented(section)


def flatten(data: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in data.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def test_annotated_examples_are_valid_and_use_only_real_keys() -> None:
    station = REPO / "firmware_config" / "station.example.toml"
    load_config(station)
    assert flatten(tomllib.loads(station.read_text())) <= keys(StationConfig)
    server = REPO / "firmware_config" / "server.example.toml"
    load_server_config(server)
    assert flatten(tomllib.loads(server.read_text())) <= keys(ServerConfig)
