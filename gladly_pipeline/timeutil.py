"""Timestamps: Gladly's RFC 3339 strings in, tz-aware UTC datetimes out."""

from datetime import UTC, datetime
from typing import Optional

UTC = UTC


def parse_timestamp(value) -> Optional[datetime]:
    """Parses Gladly's timestamps (0 to 9 fraction digits, `Z` or an offset) to UTC.

    Fractions past microseconds are truncated. Returns None for absent or unparseable
    values; the raw JSON column keeps the original text.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """Formats a datetime as Gladly does: UTC, milliseconds, `Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
