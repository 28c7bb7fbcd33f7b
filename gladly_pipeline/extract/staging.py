"""A day's rows staged in a hidden file, then published whole, less what the budget defers."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..client import GladlyDataError
from ..schemas import RAW_MESSAGES
from ..storage import TableStore

BATCH_ROWS = 5_000

# A stream with more malformed lines than this share (once it has a few lines) is not
# trusted: the run fails rather than writing a table with holes in it.
MAX_MALFORMED_SHARE = 0.10
MIN_LINES_FOR_SHARE = 20

# Receives {conversation_id: first activity in the day}; returns the ids to leave out.
Admit = Optional[Callable[[dict], set]]


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


class RowSink:
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


def publish(store: TableStore, stage: Path, path: Path, stats: MessageStats, admit) -> None:
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


def check_malformed(what: str, lines: int, malformed: int) -> None:
    if lines >= MIN_LINES_FOR_SHARE and malformed > lines * MAX_MALFORMED_SHARE:
        raise GladlyDataError(
            f"{what} has {malformed} malformed lines out of {lines}: it is not "
            "trustworthy, so nothing was written"
        )


def write_day(store: TableStore, path: Path, rows, stats: MessageStats, admit: Admit) -> None:
    """Stages `rows` in a hidden file, then publishes it as the day (less any deferrals)."""
    stage = store.staging(path)
    try:
        with store.writer(stage, RAW_MESSAGES) as writer:
            sink = RowSink(writer, stats)
            for row in rows:
                sink.add(row)
            sink.flush()
        publish(store, stage, path, stats, admit)
    finally:
        stage.unlink(missing_ok=True)
