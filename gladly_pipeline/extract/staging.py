"""A day's rows staged in a hidden file, then published whole, less what the budget defers."""

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..client import GladlyDataError
from ..schemas import RAW_MESSAGES
from ..storage import StorePath, TableStore
from ..timeutil import UTC

# Dict rows are turned into a table this many at a time.
BATCH_ROWS = 5_000
# Tables are written in row groups of about this many rows (or bytes, for long lines):
# larger groups encode faster (a third less time per row at 10,000 than at 2,000 rows).
ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 16 << 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
    # Lines the export path read one by one rather than a block at a time (see itemlines).
    lines_read_alone: int = 0


class RowSink:
    """Writes tables of rows in batches and notes each conversation's first activity.

    Tables are gathered up to ROW_GROUP_ROWS rows (or bytes) before a write, so a
    stream of small ones does not make a file of tiny row groups; dict rows are gathered
    into tables first. First activities are kept in microseconds until `close`.
    """

    def __init__(self, writer, stats: MessageStats):
        self.writer = writer
        self.stats = stats
        self.rows: list = []
        self.tables: list = []
        self.pending = 0
        self.first: dict = {}

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self._add_rows()

    def add_table(self, table: pa.Table) -> None:
        self._add_rows()
        self._note_first_activity(table)
        self.tables.append(table)
        self.pending += table.num_rows
        if (self.pending >= ROW_GROUP_ROWS
                or sum(t.nbytes for t in self.tables) >= ROW_GROUP_BYTES):
            self.flush()

    def flush(self) -> None:
        self._add_rows()
        if self.tables:
            self.writer.write_table(pa.concat_tables(self.tables))
        self.stats.written += self.pending
        self.tables, self.pending = [], 0

    def close(self) -> None:
        """Writes what is pending and hands the first activities to the stats."""
        self.flush()
        self.stats.first_activity = {
            conversation_id: EPOCH + timedelta(microseconds=micros)
            for conversation_id, micros in self.first.items()
        }

    def _add_rows(self) -> None:
        if self.rows:
            rows, self.rows = self.rows, []
            self.add_table(pa.Table.from_pylist(rows, schema=RAW_MESSAGES))

    def _note_first_activity(self, table: pa.Table) -> None:
        ids = table.column("conversation_id").combine_chunks()
        micros = table.column("timestamp").combine_chunks().cast(pa.int64())
        if ids.null_count or micros.null_count:
            known = pc.and_(pc.is_valid(ids), pc.is_valid(micros))
            ids, micros = ids.filter(known), micros.filter(known)
        # The earliest timestamp of each conversation in the table, then against the day's.
        encoded = ids.dictionary_encode()
        earliest = np.full(len(encoded.dictionary), np.iinfo(np.int64).max)
        np.minimum.at(earliest, encoded.indices.to_numpy(), micros.to_numpy())
        first = self.first
        for conversation_id, moment in zip(
            encoded.dictionary.to_pylist(), earliest.tolist(), strict=True
        ):
            if moment < first.get(conversation_id, moment + 1):
                first[conversation_id] = moment


class BackgroundWriter:
    """Runs a Parquet writer's write_table on a thread of its own, one table behind.

    Encoding and compressing a batch (pyarrow releases the GIL meanwhile) then overlaps
    with reading the next one. At most one table waits: memory stays a few batches.
    """

    def __init__(self, writer):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self.thread.start()

    def write_table(self, table: pa.Table) -> None:
        self._raise_if_failed()
        self.queue.put(table)

    def finish(self) -> None:
        """Waits for the tables handed over to be written; raises the writer's error."""
        self.stop()
        self._raise_if_failed()

    def stop(self) -> None:
        """Waits for the thread to end (the caller is failing: its error is the one to see)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _run(self) -> None:
        while (table := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_table(table)
                except BaseException as exc:  # handed to the caller by _raise_if_failed
                    self.error = exc

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


def publish(
    store: TableStore, stage: StorePath, path: StorePath, stats: MessageStats, admit
) -> None:
    """Moves the staged day into place, leaving out conversations the budget defers."""
    deferred = admit(dict(stats.first_activity)) if admit else set()
    if not deferred:
        store.replace(stage, path)
        return
    stats.deferred_conversations = len(deferred)
    kept = 0
    leave_out = pa.array(sorted(deferred), pa.string())
    with store.writer(path, RAW_MESSAGES) as writer:
        for batch in store.iter_batches(stage, BATCH_ROWS):
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


def write_day(
    store: TableStore, path: StorePath, rows, stats: MessageStats, admit: Admit
) -> None:
    """Stages dict `rows` in a hidden file, then publishes it as the day (less deferrals)."""
    _stage_and_publish(store, path, stats, admit, lambda sink: _add_each(sink.add, rows))


def write_day_tables(store: TableStore, path: StorePath, tables, stats: MessageStats,
                     admit: Admit) -> None:
    """As write_day, for an iterable of RAW_MESSAGES tables."""
    _stage_and_publish(store, path, stats, admit, lambda sink: _add_each(sink.add_table, tables))


def write_day_with(store: TableStore, path: StorePath, fill, stats: MessageStats,
                   admit: Admit) -> None:
    """As write_day, with `fill(sink)` handing the RowSink its rows and tables."""
    _stage_and_publish(store, path, stats, admit, fill)


def _add_each(add, things) -> None:
    for thing in things:
        add(thing)


def _stage_and_publish(store: TableStore, path: StorePath, stats, admit, fill) -> None:
    stage = store.staging(path)
    try:
        with store.writer(stage, RAW_MESSAGES) as writer:
            background = BackgroundWriter(writer)
            try:
                sink = RowSink(background, stats)
                fill(sink)
                sink.close()
            except BaseException:
                # The thread must be done before the file is closed and removed.
                background.stop()
                raise
            background.finish()
        publish(store, stage, path, stats, admit)
    finally:
        store.delete(stage)
