"""Facility operating hours: when a station is expected to be online.

A schedule is a time zone and a list of windows, each a set of ISO weekdays (Monday = 1) and a
start and end time of day. A window whose end is at or before its start runs past midnight and
belongs to the day it starts on (``{"days": [5], "start": "22:00", "end": "06:00"}`` is Friday
night until Saturday 06:00). A facility without a schedule is treated as always operating:
alerts about its stations are never held back.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[int] = Field(min_length=1, max_length=7)
    start: str = Field(description="HH:MM, local time")
    end: str = Field(description="HH:MM, local time; at or before start: the next day")

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in value):
            raise ValueError("days are ISO weekdays, 1 (Monday) to 7 (Sunday)")
        return sorted(set(value))

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day HH:MM")
        return value

    def _times(self) -> tuple[time, time]:
        return time.fromisoformat(self.start), time.fromisoformat(self.end)

    def contains(self, local: datetime) -> bool:
        start, end = self._times()
        t, day = local.time().replace(tzinfo=None), local.isoweekday()
        if start < end:
            return day in self.days and start <= t < end
        yesterday = (local - timedelta(days=1)).isoweekday()
        return (day in self.days and t >= start) or (yesterday in self.days and t < end)


class Schedule(BaseModel):
    """A facility's operating hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = DEFAULT_TIMEZONE
    windows: list[Window] = Field(default_factory=list, max_length=50)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _some_window(self) -> Schedule:
        if not self.windows:
            raise ValueError("a schedule needs at least one window (delete it instead)")
        return self

    def is_open(self, now: datetime) -> bool:
        """Whether ``now`` (timezone-aware) falls in one of the windows."""
        local = now.astimezone(ZoneInfo(self.timezone))
        return any(w.contains(local) for w in self.windows)


def in_operating_hours(schedule: Schedule | None, now: datetime) -> bool:
    """``True`` inside the schedule's windows, and always when there is no schedule."""
    return True if schedule is None else schedule.is_open(now)
