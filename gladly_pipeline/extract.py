"""Extraction of one window: export jobs -> messages, then REST for conversations and contacts.

Nothing here knows about Dagster; the assets call these functions with a client, a
window and a place to write.
"""

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .client import GladlyClient, GladlyDataError, GladlyNotFound
from .records import (
    contact_row,
    conversation_row,
    deleted_contact_row,
    merged_contact_row,
    message_row,
)
from .schemas import RAW_CONTACTS, RAW_CONVERSATIONS, RAW_MESSAGES
from .storage import TableStore
from .timeutil import UTC, format_timestamp, parse_timestamp
from .windows import Window

log = logging.getLogger(__name__)

ITEMS_FILE = "conversation_items.jsonl"
BATCH_ROWS = 5_000

# A file with more malformed lines than this share (once it has a few lines) is not
# trusted: the run fails rather than writing a table with holes in it.
MAX_MALFORMED_SHARE = 0.10
MIN_LINES_FOR_SHARE = 20


class ExportNotAvailable(Exception):
    """The export jobs Gladly lists do not cover the window (not yet, or expired)."""


@dataclass
class MessageStats:
    source: str = "export"
    jobs: list = field(default_factory=list)
    skipped_jobs: list = field(default_factory=list)
    events: int = 0
    conversations_touched: int = 0
    capped_conversations: list = field(default_factory=list)
    first_activity: dict = field(default_factory=dict)
    deferred_conversations: int = 0
    deferred_items: int = 0
    lines: int = 0
    written: int = 0
    duplicates: int = 0
    outside_window: int = 0
    malformed: int = 0
    malformed_positions: list = field(default_factory=list)


@dataclass
class FetchStats:
    requested: int = 0
    written: int = 0
    not_found: list = field(default_factory=list)
    merged: int = 0


def job_window(job: dict) -> Optional[Window]:
    params = job.get("parameters") or {}
    start = parse_timestamp(params.get("startAt"))
    end = parse_timestamp(params.get("endAt"))
    if start is None or end is None or end <= start:
        return None
    return Window(start, end)


def jobs_for_window(jobs: Iterable[dict], window: Window) -> list:
    """The completed jobs overlapping `window`, newest first; raises if they leave gaps."""
    spans, chosen = [], []
    for job in jobs:
        span = job_window(job)
        if job.get("status") != "COMPLETED" or span is None:
            continue
        spans.append(span)
        if span.overlaps(window):
            chosen.append((span, job))
    gaps = _gaps(window, [span for span, _ in chosen])
    if gaps:
        raise ExportNotAvailable(_coverage_message(window, gaps, spans))
    # Newest first: when an item appears in two jobs, the later export's copy wins.
    chosen.sort(key=lambda pair: (pair[1].get("updatedAt") or "", pair[1]["id"]), reverse=True)
    return [job for _, job in chosen]


def _gaps(window: Window, spans: list) -> list:
    gaps, cursor = [], window.start
    for span in sorted(spans, key=lambda s: s.start):
        if span.start > cursor:
            gaps.append(Window(cursor, min(span.start, window.end)))
        cursor = max(cursor, span.end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        gaps.append(Window(cursor, window.end))
    return gaps


def _coverage_message(window: Window, gaps: list, spans: list) -> str:
    """Says why the day cannot be extracted, judged from the jobs Gladly still lists.

    Gladly's own job list is the clock here: the machine's time may differ from the
    account's, and the list is what decides what can be read.
    """
    missing = ", ".join(gap.describe() for gap in gaps)
    if spans and window.end <= min(s.start for s in spans):
        return (
            f"Day {window.day} is older than every export job Gladly still keeps (exports "
            f"are deleted after 14 days), so it cannot be extracted (missing {missing}). "
            "History beyond 14 days needs Gladly's Reports API, not used by this pipeline yet."
        )
    if not spans or window.end > max(s.end for s in spans):
        return (
            f"Gladly has no completed export job covering {missing} of day {window.day} "
            "yet. Daily exports are published a few hours after the day ends (UTC); "
            "materialize this day again later."
        )
    return (
        f"Gladly lists no completed export job covering {missing} of day {window.day}, "
        "although later days have one: the job failed or was deleted. Gladly Support can "
        "regenerate it."
    )


def extract_messages(
    client: GladlyClient,
    window: Window,
    store: TableStore,
    path: Path,
    *,
    jobs: Optional[list] = None,
    admit: Optional[Callable[[dict], set]] = None,
) -> MessageStats:
    """Writes every conversation item of `window` from the export jobs covering it.

    `admit` receives {conversation_id: first activity in the window} and returns the
    conversation ids to leave out (the volume budget); their items are not written.
    """
    if jobs is None:
        jobs = client.export_jobs(status="COMPLETED")
    skipped: list = []
    while True:
        try:
            covering = jobs_for_window([j for j in jobs if j["id"] not in skipped], window)
        except ExportNotAvailable as gap:
            if not skipped:
                raise
            gone = ", ".join(skipped)
            raise ExportNotAvailable(
                f"{gap} Export jobs {gone} were skipped: listed as COMPLETED, but their "
                f"{ITEMS_FILE} files are gone (expired or deleted) or not listed."
            ) from None
        try:
            stats = _extract_from_jobs(client, covering, window, store, path, admit)
        except ExportFileGone as gone:
            # Listed as COMPLETED but its files expired or were deleted: report it and
            # try without it; if the other jobs do not cover the day, that says so.
            log.warning("%s; extracting %s without it", gone, window.day)
            skipped.append(gone.job_id)
            continue
        stats.skipped_jobs = skipped
        return stats


class ExportFileGone(Exception):
    """A COMPLETED job whose items file cannot be read: expired, deleted or never listed."""

    def __init__(self, job_id: str, why: str = "is gone (expired or deleted)"):
        super().__init__(f"Export job {job_id} is listed as COMPLETED but its {ITEMS_FILE} {why}")
        self.job_id = job_id


def _extract_from_jobs(client, jobs, window, store, path, admit) -> MessageStats:
    stats = MessageStats(jobs=[job["id"] for job in jobs])
    seen: set = set()
    stage = store.staging(path)
    try:
        with store.writer(stage, RAW_MESSAGES) as writer:
            sink = _RowSink(writer, stats)
            for job in jobs:
                for row in _job_items(client, job, window, seen, stats):
                    sink.add(row)
            sink.flush()
        _publish(store, stage, path, stats, admit)
    finally:
        stage.unlink(missing_ok=True)
    return stats


class _RowSink:
    """Batches rows into a Parquet writer and notes each conversation's first activity."""

    def __init__(self, writer, stats: MessageStats):
        self.writer = writer
        self.stats = stats
        self.batch: list = []

    def add(self, row: dict) -> None:
        conversation_id = row["conversation_id"]
        if conversation_id is not None:
            first = self.stats.first_activity.get(conversation_id)
            if first is None or row["timestamp"] < first:
                self.stats.first_activity[conversation_id] = row["timestamp"]
        self.batch.append(row)
        if len(self.batch) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.batch, schema=RAW_MESSAGES))
        self.stats.written += len(self.batch)
        self.batch = []


def _publish(store: TableStore, stage: Path, path: Path, stats: MessageStats, admit) -> None:
    """Moves the staged day into place, leaving out conversations the budget defers."""
    deferred = admit(dict(stats.first_activity)) if admit else set()
    if not deferred:
        store.replace(stage, path)
        return
    stats.deferred_conversations = len(deferred)
    kept = 0
    leave_out = pa.array(sorted(deferred), pa.string())
    with store.writer(path, RAW_MESSAGES) as writer:
        for batch in pq.ParquetFile(stage).iter_batches(batch_size=BATCH_ROWS):
            table = pa.Table.from_batches([batch], schema=RAW_MESSAGES)
            mask = pc.invert(pc.fill_null(pc.is_in(table["conversation_id"], leave_out), False))
            table = table.filter(mask)
            kept += table.num_rows
            writer.write_table(table)
    stats.deferred_items = stats.written - kept
    stats.written = kept


def _job_items(client, job: dict, window: Window, seen: set, stats: MessageStats):
    job_id = job["id"]
    files = job.get("files") or []
    if ITEMS_FILE not in files:
        # An empty day and a broken export look alike here; never take it as empty.
        raise ExportFileGone(job_id, f"is not among its files {sorted(files)}")
    lines = malformed = 0
    try:
        stream = enumerate(client.export_file_lines(job_id, ITEMS_FILE), start=1)
        for position, raw in stream:
            if not raw.strip():
                continue
            lines += 1
            item = _parse_item(raw)
            if item is None:
                malformed += 1
                stats.malformed_positions.append(f"{job_id}:{position}")
                log.warning("Skipping malformed line %d of %s in job %s",
                            position, ITEMS_FILE, job_id)
                continue
            row = _row_in_window(item, raw, job_id, window, seen, stats)
            if row is not None:
                yield row
    except GladlyNotFound:
        if lines:
            raise
        raise ExportFileGone(job_id) from None
    stats.lines += lines
    stats.malformed += malformed
    _check_malformed(job_id, lines, malformed)


def _parse_item(raw: bytes) -> Optional[dict]:
    try:
        item = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if parse_timestamp(item.get("timestamp")) is None:
        return None
    return item


def _row_in_window(item, raw, job_id, window, seen, stats) -> Optional[dict]:
    if item["id"] in seen:
        stats.duplicates += 1
        return None
    timestamp = parse_timestamp(item["timestamp"])
    if not window.contains(timestamp):
        stats.outside_window += 1
        return None
    seen.add(item["id"])
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return message_row(item, text, job_id)


def _check_malformed(job_id: str, lines: int, malformed: int) -> None:
    if lines >= MIN_LINES_FOR_SHARE and malformed > lines * MAX_MALFORMED_SHARE:
        raise GladlyDataError(
            f"{ITEMS_FILE} of export job {job_id} has {malformed} malformed lines out of "
            f"{lines}: the file is not trustworthy, so nothing was written"
        )


# Intraday path: the Events API says which conversations moved; REST gives their items.

EVENT_ENTITIES = ("CONTACT", "CONVERSATION", "CUSTOMER_PROFILE", "CUSTOMER")
EVENTS_REACH = timedelta(hours=24)
# Asking for exactly 24 hours back races Gladly's clock; stay a little inside the limit.
EVENTS_MARGIN = timedelta(minutes=2)
# Content types Gladly's export files carry. The intraday path keeps to them so that the
# export rebuild of the same day gives the same rows (TWITTER, VOICE_AI_MESSAGE are not
# exported).
EXPORTED_TYPES = frozenset({
    "CHAT_MESSAGE", "CONVERSATION_STATUS_CHANGE", "CUSTOMER_ACTIVITY", "EMAIL",
    "FACEBOOK_MESSAGE", "CONVERSATION_NOTE", "PHONE_CALL", "SMS", "TOPIC_CHANGE",
    "VOICEMAIL", "INSTAGRAM_DIRECT", "WHATSAPP",
})


def events_reach(window: Window, now: datetime) -> Optional[Window]:
    """The part of `window` the Events API can still answer for, or None."""
    start = max(window.start, now - EVENTS_REACH + EVENTS_MARGIN)
    end = min(window.end, now)
    return Window(start, end) if start < end else None


def extract_messages_from_events(
    client: GladlyClient,
    window: Window,
    store: TableStore,
    path: Path,
    *,
    now: datetime,
    workers: int = 4,
    admit: Optional[Callable[[dict], set]] = None,
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
    rows = []
    for conversation_id, items in _fan_out(client.conversation_items, sorted(touched), workers):
        if items is None:
            continue
        if items.limited:
            stats.capped_conversations.append(conversation_id)
        rows.extend(_event_path_rows(items, window, stats))
    kept = _unchanged_rows(store, path, touched)
    stage = store.staging(path)
    try:
        with store.writer(stage, RAW_MESSAGES) as writer:
            sink = _RowSink(writer, stats)
            for row in kept + rows:
                sink.add(row)
            sink.flush()
        _publish(store, stage, path, stats, admit)
    finally:
        stage.unlink(missing_ok=True)
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
        except (ValueError, AttributeError):
            stats.malformed += 1
            stats.malformed_positions.append(f"events:{position}")
            continue
        stats.events += 1
        for key in ("conversationId", "sourceConversationId", "destinationConversationId"):
            if isinstance(content.get(key), str):
                touched.add(content[key])
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
        if content.get("type") not in EXPORTED_TYPES or timestamp is None:
            continue
        if not window.contains(timestamp):
            continue
        rows.append(message_row(item, _dumps_item(item), None))
    return rows


def _unchanged_rows(store: TableStore, path: Path, touched: set) -> list:
    """Rows of the current partition whose conversation the events did not touch."""
    if not path.exists():
        return []
    table = store.read(path, RAW_MESSAGES)
    moved = pa.array(sorted(touched), pa.string())
    keep = pc.invert(pc.fill_null(pc.is_in(table["conversation_id"], moved), False))
    return table.filter(keep).to_pylist()


def _dumps_item(item: dict) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def fetch_conversations(
    client: GladlyClient, ids: list, *, workers: int = 4, now: Optional[datetime] = None
) -> tuple:
    """GET each conversation (current status, inbox, assignee, topics)."""
    fetched_at = now or datetime.now(UTC)
    stats = FetchStats(requested=len(ids))
    rows = []
    for conversation_id, answer in _fan_out(client.conversation, ids, workers):
        if answer is None:
            stats.not_found.append(conversation_id)
        else:
            rows.append(conversation_row(answer, fetched_at))
    check_not_found("conversations", stats)
    stats.written = len(rows)
    return pa.Table.from_pylist(rows, schema=RAW_CONVERSATIONS), stats


def fetch_contacts(
    client: GladlyClient, ids: list, *, workers: int = 4, now: Optional[datetime] = None
) -> tuple:
    """GET each customer profile; a merged id is recorded and its survivor fetched too."""
    fetched_at = now or datetime.now(UTC)
    stats = FetchStats(requested=len(ids))
    rows, done = [], set()
    pending = sorted(set(ids))
    # Merges can chain (A -> B -> C); each round fetches the survivors of the last.
    while pending:
        done.update(pending)
        survivors = []
        for customer_id, lookup in _fan_out(client.customer_profile, pending, workers):
            if lookup is None:
                # Kept as a row, so the contact shows as deleted rather than vanishing.
                stats.not_found.append(customer_id)
                rows.append(deleted_contact_row(customer_id, fetched_at))
            elif lookup.merged_into:
                stats.merged += 1
                rows.append(merged_contact_row(customer_id, lookup.merged_into, fetched_at))
                survivors.append(lookup.merged_into)
            else:
                rows.append(contact_row(lookup.profile, fetched_at))
        pending = sorted(set(survivors) - done)
    check_not_found("customer profiles", stats)
    stats.written = len(rows)
    return pa.Table.from_pylist(rows, schema=RAW_CONTACTS), stats


# Gladly answers 404 for a conversation deleted by a merge, or a profile deleted for
# privacy; a few are normal. Many mean something else is wrong (a wrong host, an outage
# page), and writing the day without them would silently shrink it.
MAX_NOT_FOUND_SHARE = 0.10
MIN_NOT_FOUND_TO_FAIL = 3


def check_not_found(kind: str, stats: FetchStats) -> None:
    missing = len(stats.not_found)
    if missing >= MIN_NOT_FOUND_TO_FAIL and missing > stats.requested * MAX_NOT_FOUND_SHARE:
        raise GladlyDataError(
            f"{missing} of {stats.requested} {kind} answered 404: too many to be merges or "
            "deletions, so the day was not written (the previous version is kept)"
        )


def _fan_out(fetch: Callable, ids: list, workers: int):
    """Yields (id, answer or None when Gladly says 404), in the order of `ids`.

    The client's shared limiter keeps the pace; threads only hide network latency.
    """
    def one(key):
        try:
            return key, fetch(key)
        except GladlyNotFound:
            return key, None

    if workers <= 1 or len(ids) <= 1:
        yield from map(one, ids)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gladly") as pool:
        yield from pool.map(one, ids)


def window_metadata(window: Window) -> dict:
    return {
        "window_start": format_timestamp(window.start),
        "window_end": format_timestamp(window.end),
    }


def covered_days(jobs: Iterable[dict]) -> list:
    """UTC days (YYYY-MM-DD) fully covered by the completed jobs, oldest first."""
    spans = [job_window(j) for j in jobs if j.get("status") == "COMPLETED"]
    spans = [s for s in spans if s is not None]
    if not spans:
        return []
    first = min(s.start for s in spans).replace(hour=0, minute=0, second=0, microsecond=0)
    last = max(s.end for s in spans)
    days, day = [], first
    while day < last:
        window = Window(day, day + timedelta(days=1))
        if not _gaps(window, [s for s in spans if s.overlaps(window)]):
            days.append(window.day)
        day = window.end
    return days
