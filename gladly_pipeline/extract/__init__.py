"""Extraction of one UTC day from Gladly; nothing here knows about Dagster.

The export path (`export.py`) reads the export jobs covering a day; the intraday path
(`events.py`) serves days not exported yet from the Events API; `rest.py` gets the
conversations and profiles behind the items (stored, exported or by GET); `coverage.py`
decides which jobs cover a day.
"""

from ..timeutil import format_timestamp
from ..windows import Window
from .coverage import ExportNotAvailable, covered_days, job_window, jobs_for_window
from .events import EVENTS_REACH, events_reach, extract_messages_from_events
from .export import ITEMS_FILE, ExportFileGone, extract_messages
from .rest import (
    CUSTOMERS_FILE,
    ExportedContacts,
    FetchStats,
    check_not_found,
    fetch_contacts,
    fetch_conversations,
    read_exported_contacts,
    recent_contacts,
    reusable_conversations,
)
from .staging import BATCH_ROWS, MessageStats


def window_metadata(window: Window) -> dict:
    return {
        "window_start": format_timestamp(window.start),
        "window_end": format_timestamp(window.end),
    }


__all__ = [
    "BATCH_ROWS",
    "CUSTOMERS_FILE",
    "EVENTS_REACH",
    "ITEMS_FILE",
    "ExportFileGone",
    "ExportedContacts",
    "ExportNotAvailable",
    "FetchStats",
    "MessageStats",
    "check_not_found",
    "covered_days",
    "events_reach",
    "extract_messages",
    "extract_messages_from_events",
    "fetch_contacts",
    "fetch_conversations",
    "job_window",
    "jobs_for_window",
    "read_exported_contacts",
    "recent_contacts",
    "reusable_conversations",
    "window_metadata",
]
