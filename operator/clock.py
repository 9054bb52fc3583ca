"""Time, in one place. Every timestamp trainbench writes is UTC, ISO 8601 with whole seconds and a `Z`
(`2026-02-07T02:00:00Z`); every timestamp it reads becomes a time-zone-aware datetime (a string without a zone
is taken as UTC), so any two of them compare."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | str | float | int | None) -> str | None:
    """datetime / epoch seconds / ISO string -> ISO 8601 UTC string (a string is kept as it is)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 string -> an aware datetime (no zone: UTC); None for nothing or a string that is not a time."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def timestamp(value: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 string, None when there is none."""
    t = parse_time(value)
    return t.timestamp() if t else None


def duration(start: str | None, end: str | None) -> float | None:
    """Seconds from `start` to `end` (rounded to ms), None unless both are known."""
    a, b = parse_time(start), parse_time(end)
    return round((b - a).total_seconds(), 3) if a and b else None


def human(value: str | None) -> str:
    """`2026-02-07 02:00 UTC` for a report; `unknown` when there is no time."""
    t = parse_time(value)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t else "unknown"
