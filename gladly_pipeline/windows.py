"""Daily UTC partitions and the Gladly time window each one stands for."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import DailyPartitionsDefinition

from .timeutil import UTC, format_timestamp

# Gladly keeps export jobs for 14 days; older days cannot be extracted from exports.
EXPORT_RETENTION = timedelta(days=14)

# The first selectable day. Days older than the export retention fail with a message
# saying so; deeper history needs Gladly's Reports API (not built yet).
FIRST_DAY = "2025-01-01"

# end_offset=1 makes today a partition: it is refreshed from the Events API until its
# export job lands.
daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    @property
    def day(self) -> str:
        return self.start.strftime("%Y-%m-%d")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def overlaps(self, other: "Window") -> bool:
        return self.start < other.end and other.start < self.end

    def describe(self) -> str:
        return f"[{format_timestamp(self.start)}, {format_timestamp(self.end)})"


def window_for_day(day: str) -> Window:
    """The UTC window of a partition key such as `2026-12-01`; rejects malformed keys."""
    if not daily_partitions.has_partition_key(day):
        # Checked against the definition: time_window_for_partition_key accepts "2024-1-5".
        raise ValueError(
            f"{day!r} is not a daily partition key: expected YYYY-MM-DD on or after {FIRST_DAY}"
        )
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return Window(start, start + timedelta(days=1))
