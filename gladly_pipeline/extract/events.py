"""The intraday path: the Events API says which conversations moved; REST gives their items."""

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..client import GladlyClient
from ..records import message_row
from ..schemas import RAW_MESSAGES
from ..storage import StorePath, TableStore
from ..timeutil import format_timestamp, parse_timestamp
from ..windows import Window
from .coverage import ExportNotAvailable
from .rest import fan_out
from .staging import BATCH_ROWS, Admit, MessageStats, check_malformed, write_day_with

EVENT_ENTITIES = ("CONTACT", "CONVERSATION", "CUSTOMER_PROFILE", "CUSTOMER")
EVENTS_REACH = timedelta(hours=24)
# Asking for exactly 24 hours back races Gladly's clock; stay a little inside the limit.
EVENTS_MARGIN = timedelta(minutes=2)
# Content types Gladly's export files never carry. The intraday path leaves them out so
# that the export rebuild of the same day gives the same rows; any other type, known or
# new, is kept, as the export path keeps it.
REST_ONLY_TYPES = frozenset({"TWITTER", "VOICE_AI_MESSAGE"})


def events_reach(window: Window, now: datetime) -> Optional[Window]:
    """The part of `window` the Events API can still answer for, or None."""
    start = max(window.start, now - EVENTS_REACH + EVENTS_MARGIN)
    end = min(window.end, now)
    return Window(start, end) if start < end else None


def extract_messages_from_events(
    client: GladlyClient,
    window: Window,
    store: TableStore,
    path: StorePath,
    *,
    now: datetime,
    workers: int = 4,
    admit: Admit = None,
) -> MessageStats:
    """Refreshes a day not yet exported: items of the conversations events say moved.

    Rows already in the partition for conversations that did not move are kept, so a
    day is assembled across refreshes even though events reach back only 24 hours.
    """
    reach = events_reach(window, now)
    if reach is None:
        raise ExportNotAvailable(
            f"Day {window.day} is not exported yet and lies beyond the Events API's "
            "24-hour reach; it will be extracted when its export job lands"
        )
    stats = MessageStats(source="events")
    touched = _touched_conversations(client, reach, stats)

    def fill(sink) -> None:
        # The kept rows first, then the moved conversations' items, as they arrive: the
        # day is staged batch by batch, never held whole.
        for table in _unchanged_rows(store, path, touched):
            sink.add_table(table)
        moved = fan_out(client.conversation_items, sorted(touched), workers)
        for conversation_id, items in moved:
            if items is None:
                continue
            if items.limited:
                stats.capped_conversations.append(conversation_id)
            for row in _event_path_rows(items, window, stats):
                sink.add(row)

    write_day_with(store, path, fill, stats, admit)
    return stats


def _touched_conversations(client: GladlyClient, reach: Window, stats: MessageStats) -> set:
    touched = set()
    lines = client.event_lines(
        start_at=format_timestamp(reach.start),
        end_at=format_timestamp(reach.end),
        entities=EVENT_ENTITIES,
    )
    for position, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
            content = event.get("content") or {}
        # RecursionError: a line nested deeper than Python's recursion limit.
        except (ValueError, AttributeError, RecursionError):
            stats.malformed += 1
            stats.malformed_positions.append(f"events:{position}")
            continue
        stats.events += 1
        for key in ("conversationId", "sourceConversationId", "destinationConversationId"):
            if isinstance(content.get(key), str):
                touched.add(content[key])
    check_malformed("The Events API stream", stats.events + stats.malformed, stats.malformed)
    stats.conversations_touched = len(touched)
    return touched


def _event_path_rows(items: list, window: Window, stats: MessageStats) -> list:
    rows = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            stats.malformed += 1
            continue
        content = item.get("content") or {}
        timestamp = parse_timestamp(item.get("timestamp"))
        if content.get("type") in REST_ONLY_TYPES or timestamp is None:
            continue
        if not window.contains(timestamp):
            continue
        rows.append(message_row(item, _dumps_item(item), None))
    return rows


def _unchanged_rows(
    store: TableStore, path: StorePath, touched: set
) -> Iterator[pa.Table]:
    """Rows of the current partition whose conversation the events did not touch, a
    batch at a time (the partition is replaced only after they are staged)."""
    if not store.exists(path):
        return
    moved = pa.array(sorted(touched), pa.string())
    for batch in store.iter_batches(path, BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        if not table.schema.equals(RAW_MESSAGES):
            table = table.cast(RAW_MESSAGES)
        keep = pc.invert(pc.fill_null(pc.is_in(table["conversation_id"], moved), False))
        yield table.filter(keep)


def _dumps_item(item: dict) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)
