"""Export item lines to raw `messages` rows: a block of lines at a time, or line by line.

The fast path hands a block of lines (bounded by bytes) to pyarrow.json with a schema built
from records.ITEM_FIELDS and computes each column with pyarrow.compute. It takes only what it
can prove the per-line path (json.loads + message_row) would turn into the same row. Anything
else goes to the per-line path: a block pyarrow.json rejects (a malformed line, a type it was
not told about) is halved until the bad lines are found, and a row whose value needs Python's
judgement (no id, a timestamp in an unusual form, a null inside a list) is redone alone.
So the rows written, their order, the counts and the malformed positions are the per-line
path's; MessageStats.lines_read_alone says how many lines took the per-line path.

Known gaps:
- Speed: about 0.2-0.35x of pyarrow.json alone on 2 shared cores (issue 5 asks for 0.5x).
  Per line, pyarrow.json's parse is about 2.5 us of CPU, the Parquet write of the staged day
  (dictionary encoding and zstd, set by storage.TableStore.writer) 1.4-2.5 us, and the rest
  (joining lines, renaming `to`, raw_json, columns, de-duplication) about 1.5 us. Blocks are
  built on a read-ahead thread and written on another, so the run is CPU-bound on 2 cores.

A line nested deeper than MAX_DEPTH is malformed on both paths: json.loads would raise
RecursionError somewhere near Python's recursion limit (which depends on the caller's stack),
so parse_item checks the depth itself, and the columnar path sends every line that could be
that deep (long, with that many brackets) to the per-line path.
"""

import contextlib
import json
import logging
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, islice
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..records import CONVERTERS, ITEM_FIELDS, message_row
from ..schemas import RAW_MESSAGES, TS
from ..timeutil import parse_timestamp
from ..windows import Window
from .staging import MessageStats

log = logging.getLogger(__name__)

# Lines are gathered into blocks of about this many bytes (the last line may pass it): the
# memory a block needs (its lines, pyarrow's table, the columns) depends on this, not on the
# size of the file.
BLOCK_BYTES = 2 << 20
# Lines are taken from the stream this many at a time (a block may pass BLOCK_BYTES by
# that many lines).
LINES_PER_STEP = 256
# pyarrow.json parses a block in chunks of this size, on its thread pool.
READ_CHUNK_BYTES = 512 << 10
# A piece of a block that pyarrow.json rejects is halved until it is this small, then read
# line by line: one bad line costs a few re-reads of its block, not the block's speed.
MIN_SPLIT_LINES = 32
# A line nested deeper than this (objects and lists) is malformed. Gladly's items are a few
# levels deep; the limit stays well below Python's recursion limit (1,000 by default), which
# json.loads would otherwise hit at a depth that depends on the caller's stack.
MAX_DEPTH = 512

# Fields Gladly sends as a string in some items and as another type in others (`to`: a
# string for SMS and calls, a list for emails). pyarrow.json takes one type per field, so
# before parsing, `"to":"` becomes `"tO":"` (the key's last letter's case swapped, so the
# block's length and line offsets do not change) and the string is read from "tO". JSON
# allows whitespace around the colon (`"to" : "`), so that spelling is renamed too.
# The renaming cannot change a string value: a `"` inside a string is escaped, so in `"to"`
# the quote after `o` ends a string, and one followed by `:` ends a key. The key is `to`, or
# (first quote escaped) a key ending in `\"to`, which no schema field reads before or after.
# A key that comes twice is rejected by pyarrow.json (the piece is split), except `to` once
# as a string and once as null: "tO" and "to" are two fields to it, so _strings_of redoes a
# row whose line spells the key twice.
# The Arrow cast from string to timestamp accepts a subset of what parse_timestamp
# (datetime.fromisoformat) does, and reads it the same way (see test_itemlines); a column
# with any other form is parsed by parse_timestamp, value by value.
_NANOS = pa.timestamp("ns", tz="UTC")


def _json_type(kind: str) -> pa.DataType:
    if kind == "str_list":
        return pa.list_(pa.string())
    if kind == "int":
        return pa.int64()
    if kind == "count":
        # Attachments are objects; only their number is kept, so none of their fields.
        return pa.list_(pa.struct([]))
    return pa.string()


def string_key(key: str) -> str:
    """The key a varying field's string value is moved to: "to" -> "tO"."""
    return key[:-1] + key[-1].swapcase()


def _item_schema() -> pa.Schema:
    """The pyarrow.json schema of an export line: the fields ITEM_FIELDS reads, and no more."""
    tree: dict = {"id": pa.string()}
    for item_field in ITEM_FIELDS:
        for path in item_field.paths:
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            keys = [path[-1]] + ([string_key(path[-1])] if item_field.varies else [])
            assert not set(keys) & set(node), f"{keys} read twice"
            node[path[-1]] = _json_type(item_field.kind)
            if item_field.varies:
                node[keys[1]] = pa.string()

    def struct(node: dict) -> list:
        return [
            pa.field(key, pa.struct(struct(value)) if isinstance(value, dict) else value)
            for key, value in node.items()
        ]

    return pa.schema(struct(tree))


def _renamed_keys() -> list:
    """(`"key":"`, `"kEY":"`) for each varying field, as the bytes to replace."""
    varying = {f.paths[0][-1] for f in ITEM_FIELDS if f.varies}
    others = {path[-1] for f in ITEM_FIELDS for path in f.paths} - varying
    # The renaming applies to the key at any depth: it must not touch a field read as is.
    assert not {string_key(k) for k in varying} & others
    assert all(key[-1].isalpha() and key.isascii() for key in varying)
    return [(f'"{key}":"'.encode(), f'"{string_key(key)}":"'.encode()) for key in sorted(varying)]


def _spaced_renames() -> list:
    """A pattern and its replacement for each varying key followed by a string value, with
    JSON whitespace (space, tab, CR, LF) on either side of the colon."""
    varying = sorted({f.paths[0][-1] for f in ITEM_FIELDS if f.varies})
    # Each pattern starts with its key's literal text, which re finds quickly; the whitespace
    # is kept as it was, so the length does not change.
    return [(re.compile(f'"{key}"([ \\t\\r]*:[ \\t\\r]*")'.encode()),
             f'"{string_key(key)}"'.encode() + rb"\1") for key in varying]


ITEM_SCHEMA = _item_schema()
_RENAMES = _renamed_keys()
_SPACED_RENAMES = _spaced_renames()
# A JSON string, escapes included: what cannot hold a bracket that nests.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_PARSE_OPTIONS = pj.ParseOptions(
    explicit_schema=ITEM_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False
)
_READ_OPTIONS = pj.ReadOptions(use_threads=True, block_size=READ_CHUNK_BYTES)
_BRACE = ord("{")


class LineBlock:
    """Non-blank lines of an export file, joined for pyarrow.json, and where each one was.

    `first` is the 1-based position in the file of the block's first line. Blank lines are
    skipped, as the per-line path skips them, but still count in the positions.
    """

    def __init__(self, lines: list, first: int):
        self.first = first
        self.positions: Optional[list] = None  # set only when blank lines were skipped
        self._lay_out(lines)
        blank = self._blank_lines()
        if blank:
            kept = [i for i in range(len(lines)) if i not in blank]
            self.positions = [first + i for i in kept]
            self._lay_out([lines[i] for i in kept])
        renamed = self.text
        # The compact spelling first (most files; bytes.replace is fast), then any spacing.
        for old, new in _RENAMES:
            renamed = renamed.replace(old, new)
        for pattern, new in _SPACED_RENAMES:
            renamed = pattern.sub(new, renamed)
        self.parse_text = pa.py_buffer(renamed)
        del self.text  # only the renamed copy is parsed
        # Built here, on the read-ahead thread; None if some line is not UTF-8.
        self._raw_json = _strings(self.lines, self.lengths)

    def _lay_out(self, lines: list) -> None:
        self.lines = lines
        self.lengths = _lengths(lines)
        self.text = b"\n".join(lines)
        # starts[i]: where line i begins in `text`; starts[-1] is len(text) + 1.
        self.starts = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum(self.lengths + 1, out=self.starts[1:])

    def _blank_lines(self) -> set:
        # Lines that do not start with "{" are few (empty ones included): check only those.
        odd = self.lengths == 0
        present = np.flatnonzero(~odd)
        first_bytes = np.frombuffer(self.text, dtype=np.uint8)[self.starts[present]]
        odd[present] = first_bytes != _BRACE
        return {int(i) for i in np.flatnonzero(odd) if not self.lines[int(i)].strip()}

    def position(self, index: int) -> int:
        """The 1-based position in the file of non-blank line `index`."""
        if self.positions is None:
            return self.first + index
        return self.positions[index]

    def parse_buffer(self, start: int, stop: int) -> pa.Buffer:
        """Lines [start, stop) as pyarrow.json reads them (varying keys renamed)."""
        offset = int(self.starts[start])
        return self.parse_text.slice(offset, int(self.starts[stop]) - 1 - offset)

    def raw_json(self, start: int, stop: int) -> Optional[pa.Array]:
        """Lines [start, stop) as text, exactly as sent; None if one is not UTF-8."""
        if self._raw_json is not None:
            return self._raw_json.slice(start, stop - start)
        # Some line of the block is not UTF-8 (json.loads rejects it): check this piece.
        return _strings(self.lines[start:stop], self.lengths[start:stop])


class LineBlocks:
    """Groups a stream of lines into LineBlocks of about `block_bytes` each."""

    def __init__(self, lines: Iterable[bytes], block_bytes: Optional[int] = None):
        self.source = lines
        self.block_bytes = block_bytes or BLOCK_BYTES
        self.lines = 0  # non-blank lines in the blocks handed out
        self._pending: list = []

    def lines_read(self) -> int:
        """Non-blank lines read so far, including those not yet in a block."""
        return self.lines + sum(1 for raw in self._pending if raw.strip())

    def __iter__(self) -> Iterator[LineBlock]:
        source = iter(self.source)
        lines = self._pending
        size, first = 0, 1
        while True:
            # A few hundred lines at a time, without a Python step per line; extend keeps
            # the lines read before an error (lines_read counts them).
            count = len(lines)
            lines.extend(islice(source, LINES_PER_STEP))
            if len(lines) == count:
                break
            size += sum(map(len, lines[count:])) + len(lines) - count
            if size >= self.block_bytes:
                yield self._block(lines, first)
                first += len(lines)
                lines = self._pending = []
                size = 0
        if lines:
            yield self._block(lines, first)

    def _block(self, lines: list, first: int) -> LineBlock:
        block = LineBlock(lines, first)
        self.lines += len(block.lines)
        self._pending = []
        return block


class Prefetch:
    """Iterates `items` on a thread of its own, at most `depth` items ahead of the caller.

    Building a block (joining lines, renaming keys) holds the GIL; pyarrow.json and the
    Parquet writer release it. On a thread of its own, the next block is built while the
    current one is parsed. An error of the iteration is raised to the caller in its place.
    """

    def __init__(self, items: Iterable, depth: int = 1):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, args=(items,),
                                       name="export-lines", daemon=True)
        self.thread.start()

    def _run(self, items: Iterable) -> None:
        try:
            for item in items:
                if self.stopping:
                    return
                self.queue.put((True, item))
        except BaseException as exc:  # raised again in the caller's thread
            self.queue.put((False, exc))
        else:
            self.queue.put((False, None))

    def __iter__(self) -> Iterator:
        try:
            while True:
                more, item = self.queue.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stops the thread (after the item it is reading), dropping what it read ahead."""
        self.stopping = True
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.05)
        self.thread.join()


def _lengths(lines: list) -> np.ndarray:
    return np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))


@dataclass
class ItemReader:
    """Turns one export job's line blocks into tables of `messages` rows for the day.

    `seen` holds the ids already written for the day (earlier jobs are newer: their copy
    wins); an item outside `window` is left for its own day.
    """

    job_id: str
    window: Window
    seen: set
    stats: MessageStats
    malformed: int = 0

    def tables(self, block: LineBlock) -> Iterator[pa.Table]:
        yield from self._piece(block, 0, len(block.lines))

    def _piece(self, block: LineBlock, start: int, stop: int) -> Iterator[pa.Table]:
        if stop - start < MIN_SPLIT_LINES:
            table = self._per_line(block, start, stop)
        else:
            try:
                parsed = self._columnar(block, start, stop)
            except pa.ArrowInvalid:
                parsed = None
            if parsed is None:
                # Some line pyarrow.json rejects: read each half alone, in order.
                middle = (start + stop) // 2
                yield from self._piece(block, start, middle)
                yield from self._piece(block, middle, stop)
                return
            # Only now, with the piece read, are ids marked seen and rows counted.
            table, redo = parsed
            if redo is None:
                table = self._keep_new_in_window(table)
            else:
                table = self._with_redone_rows(table, redo, block, start)
        if table.num_rows:
            yield table

    # ------------------------------------------------------------ line by line

    def _per_line(self, block: LineBlock, start: int, stop: int) -> pa.Table:
        self.stats.lines_read_alone += stop - start
        rows = []
        for index in range(start, stop):
            raw = block.lines[index]
            item = parse_item(raw)
            if item is None:
                self._malformed(block.position(index))
                continue
            row = self._row_in_window(item, raw)
            if row is not None:
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=RAW_MESSAGES)

    def _malformed(self, position: int) -> None:
        self.malformed += 1
        self.stats.malformed_positions.append(f"{self.job_id}:{position}")
        log.warning("Skipping malformed line %d of the items file in job %s",
                    position, self.job_id)

    def _row_in_window(self, item: dict, raw: bytes) -> Optional[dict]:
        if item["id"] in self.seen:
            self.stats.duplicates += 1
            return None
        if not self.window.contains(parse_timestamp(item["timestamp"])):
            self.stats.outside_window += 1
            return None
        self.seen.add(item["id"])
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return message_row(item, text, self.job_id)

    # ------------------------------------------------------------ columnar

    def _columnar(self, block: LineBlock, start: int, stop: int) -> Optional[tuple]:
        """The piece as a table and the rows to redo line by line (see _columns), or None
        where pyarrow.json cannot read it as the per-line path would (then it is split).
        Changes no state: a piece that fails is read again in halves."""
        parsed = pj.read_json(pa.BufferReader(block.parse_buffer(start, stop)),
                              read_options=_READ_OPTIONS, parse_options=_PARSE_OPTIONS)
        raw_json = block.raw_json(start, stop)
        if parsed.num_rows != stop - start or raw_json is None:
            return None  # two objects on one line, or a line that is not UTF-8
        columns, redo = _columns(parsed.combine_chunks(), block.lines[start:stop])
        columns["source_job_id"] = pa.array([self.job_id] * parsed.num_rows, pa.string())
        columns["raw_json"] = raw_json
        table = pa.Table.from_arrays([columns[f.name] for f in RAW_MESSAGES],
                                     schema=RAW_MESSAGES)
        return table, redo

    def _in_window(self, table: pa.Table) -> pa.Array:
        timestamps = table.column("timestamp")
        return pc.and_(
            pc.greater_equal(timestamps, pa.scalar(self.window.start, TS)),
            pc.less(timestamps, pa.scalar(self.window.end, TS)),
        )

    def _keep_new_in_window(self, table: pa.Table) -> pa.Table:
        ids = table.column("id").to_pylist()
        inside = self._in_window(table)
        unique = set(ids)
        if len(unique) == len(ids) and self.seen.isdisjoint(unique):
            # The usual case: no id seen before, none twice in the piece.
            if pc.all(inside).as_py():
                self.seen |= unique
                return table
            kept = pc.sum(inside).as_py() or 0
            self.seen.update(compress(ids, inside.to_pylist()))
            self.stats.outside_window += len(ids) - kept
            return table.filter(inside)
        keep = [self._first_in_window(item_id, within)
                for item_id, within in zip(ids, inside.to_pylist(), strict=True)]
        return table.filter(pa.array(keep))

    def _first_in_window(self, item_id: str, inside: bool) -> bool:
        """The per-line path's order of checks: seen before, then the window."""
        if item_id in self.seen:
            self.stats.duplicates += 1
            return False
        if not inside:
            self.stats.outside_window += 1
            return False
        self.seen.add(item_id)
        return True

    def _with_redone_rows(self, table, redo: list, block: LineBlock, start: int) -> pa.Table:
        """The piece's rows with those in `redo` taken through the per-line path, in order."""
        ids = table.column("id").to_pylist()
        inside = self._in_window(table).to_pylist()
        redo_set = set(redo)
        self.stats.lines_read_alone += len(redo)
        keep, redone, order = [], [], []
        for index, (item_id, within) in enumerate(zip(ids, inside, strict=True)):
            if index not in redo_set:
                if self._first_in_window(item_id, within):
                    keep.append(index)
                    order.append(len(keep) - 1)
                continue
            raw = block.lines[start + index]
            item = parse_item(raw)
            if item is None:
                self._malformed(block.position(start + index))
                continue
            row = self._row_in_window(item, raw)
            if row is not None:
                redone.append(row)
                order.append(-len(redone))
        fast = table.take(pa.array(keep, pa.int64()))
        slow = pa.Table.from_pylist(redone, schema=RAW_MESSAGES)
        # Fast rows first, then the redone ones; `order` puts each back in its line's place.
        positions = [i if i >= 0 else len(keep) - i - 1 for i in order]
        return pa.concat_tables([fast, slow]).take(pa.array(positions, pa.int64()))


def parse_item(raw: bytes) -> Optional[dict]:
    """An export line as an item, or None if it is not a JSON object with an id and a
    valid timestamp (a malformed line)."""
    if maybe_too_deep(raw) and nesting_depth(raw) > MAX_DEPTH:
        return None
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        # RecursionError: only if the caller's stack is already deep (MAX_DEPTH is checked).
        return None
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if parse_timestamp(item.get("timestamp")) is None:
        return None
    return item


def maybe_too_deep(raw) -> bool:
    """Whether the line has enough bytes and brackets to be nested deeper than MAX_DEPTH (a
    cheap test: each level takes an opening and a closing byte)."""
    if len(raw) <= 2 * MAX_DEPTH:
        return False
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    return raw.count(b"{") + raw.count(b"[") > MAX_DEPTH


def nesting_depth(raw) -> int:
    """The deepest nesting of objects and lists in a line, brackets in strings left out
    (a line that is not JSON gets some number; json.loads then rejects it anyway)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    text = _STRING.sub(b"", raw)
    steps = np.frombuffer(text, dtype=np.uint8)
    change = np.zeros(len(steps), dtype=np.int64)
    change[(steps == ord("{")) | (steps == ord("["))] = 1
    change[(steps == ord("}")) | (steps == ord("]"))] = -1
    return int(np.cumsum(change).max(initial=0))


def _strings(lines: list, lengths: np.ndarray) -> Optional[pa.Array]:
    """The lines as a string array, exactly as sent; None if one is not UTF-8."""
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(b"".join(lines))
    if offsets[-1] < 2**31:
        array = pa.Array.from_buffers(pa.string(), len(lines),
                                      [None, pa.py_buffer(offsets.astype(np.int32)), data])
    else:
        array = pa.Array.from_buffers(pa.large_string(), len(lines),
                                      [None, pa.py_buffer(offsets), data])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return array.cast(pa.string())


def _columns(parsed: pa.Table, lines: list) -> tuple:
    """The typed columns of RAW_MESSAGES from pyarrow.json's table, and the indices of the
    rows (of `lines`, the piece's lines) to redo line by line (None if there are none)."""
    item_ids = _path(parsed, ("id",))
    columns = {"id": item_ids}
    # No id, or no timestamp the fast path could read: malformed, or an unusual form.
    unsure = [pc.is_null(item_ids)]
    for item_field in ITEM_FIELDS:
        values, doubtful = _KINDS[item_field.kind](parsed, item_field, lines)
        columns[item_field.column] = values
        if doubtful is not None:
            unsure.append(doubtful)
    unsure.append(pc.is_null(columns["timestamp"]))
    deep = _maybe_too_deep(lines)
    if deep is not None:
        unsure.append(deep)
    redo = unsure[0]
    for more in unsure[1:]:
        redo = pc.or_(redo, more)
    if not pc.any(redo).as_py():
        return columns, None
    return columns, np.flatnonzero(redo.to_numpy(zero_copy_only=False)).tolist()


def _maybe_too_deep(lines: list):
    """The rows that may be nested deeper than MAX_DEPTH (pyarrow.json reads them; the
    per-line path decides), or None: only long lines are looked at."""
    long_lines = np.flatnonzero(_lengths(lines) > 2 * MAX_DEPTH)
    if not len(long_lines):
        return None
    deep = np.zeros(len(lines), dtype=bool)
    for row in long_lines.tolist():
        deep[row] = maybe_too_deep(lines[row])
    return pa.array(deep) if deep.any() else None


def _path(parsed: pa.Table, path: tuple) -> pa.Array:
    """The values at `path`; null where any object on the way is null."""
    values = parsed.column(path[0]).chunk(0)
    for key in path[1:]:
        values = pc.struct_field(values, key)
    return values


def _strings_of(parsed: pa.Table, path: tuple, lines: list) -> tuple:
    """A varying field's string values (moved to its string_key) and the rows where that
    may not be the field's value: their line spells the string_key itself, literally or
    with a \\u escape, or spells the key twice, `"to":"a","to":null` for one (json.loads
    keeps the last; pyarrow.json read the null as a missing "to"). Rare, and then the
    per-line path decides; a value "to" elsewhere in the line costs only that row's speed."""
    key = string_key(path[-1])
    values = _path(parsed, path[:-1] + (key,))
    if values.null_count == len(values):
        return values, None
    spelled = f'"{key}"'.encode()
    original = f'"{path[-1]}"'.encode()
    rows = np.flatnonzero(pc.is_valid(values).to_numpy(zero_copy_only=False)).tolist()
    doubtful = np.zeros(len(values), dtype=bool)
    for row in rows:
        line = lines[row]
        if spelled in line or b"\\u" in line or line.count(original) > 1:
            doubtful[row] = True
    return values, pa.array(doubtful)


def _python_values(values: pa.Array, convert, type_: pa.DataType) -> pa.Array:
    """`convert` (records' own converter) applied to each non-null value, nulls kept."""
    return pa.array([None if v is None else convert(v) for v in values.to_pylist()], type_)


def _str_column(parsed, item_field, lines) -> tuple:
    return _path(parsed, item_field.paths[0]), None


def _text_column(parsed, item_field, lines) -> tuple:
    return pc.coalesce(*[_path(parsed, path) for path in item_field.paths]), None


def _timestamp_column(parsed, item_field, lines) -> tuple:
    return to_timestamps(_path(parsed, item_field.paths[0])), None


def to_timestamps(texts: pa.Array) -> pa.Array:
    """Gladly's RFC 3339 strings as UTC microseconds, exactly as parse_timestamp reads them
    (null where it gives None)."""
    if texts.null_count == len(texts):
        return pa.nulls(len(texts), TS)
    try:
        nanos = pc.cast(texts, _NANOS).cast(pa.int64())
    except pa.ArrowInvalid:
        # A form the cast does not take (no offset, a date that does not exist): Python's.
        return _python_values(texts, parse_timestamp, TS)
    # Digits past microseconds are cut off, as datetime.fromisoformat does: a floor, also
    # before 1970.
    micros = np.floor_divide(pc.fill_null(nanos, 0).to_numpy(), 1000)
    missing = pc.is_null(nanos).to_numpy(zero_copy_only=False)
    return pa.array(micros, pa.int64(), mask=missing).cast(TS)


def _str_list_column(parsed, item_field, lines) -> tuple:
    path = item_field.paths[0]
    lists = _path(parsed, path)
    unsure = None
    flat = pc.list_flatten(lists)
    if flat.null_count:
        # Nulls inside a list are dropped by the per-line path: let it do those rows.
        parents = pc.filter(pc.list_parent_indices(lists), pc.is_null(flat))
        unsure = pc.is_in(pa.array(np.arange(len(lists))), parents)
    if not item_field.varies:
        return lists, unsure
    single, doubtful = _strings_of(parsed, path, lines)
    if doubtful is None:
        return lists, unsure
    # Both a list and a string: the key came twice, and json.loads keeps the last one.
    both = pc.and_(pc.is_valid(lists), pc.is_valid(single))
    unsure = _either(unsure, pc.or_(doubtful, both))
    offsets = pa.array(np.arange(len(single) + 1, dtype=np.int32))
    as_lists = pa.ListArray.from_arrays(offsets, single)
    return pc.if_else(pc.is_valid(single), as_lists, lists), unsure


def _int_column(parsed, item_field, lines) -> tuple:
    path = item_field.paths[0]
    numbers = _path(parsed, path)
    if not item_field.varies:
        return numbers, None
    texts, doubtful = _strings_of(parsed, path, lines)
    if doubtful is None:
        return numbers, None
    # Both a number and a string: the key came twice, and json.loads keeps the last one.
    unsure = pc.or_(doubtful, pc.and_(pc.is_valid(texts), pc.is_valid(numbers)))
    return pc.coalesce(numbers, _python_values(texts, CONVERTERS["int"], pa.int64())), unsure


def _either(first, second):
    return second if first is None else pc.or_(first, second)


def _count_column(parsed, item_field, lines) -> tuple:
    return pc.list_value_length(_path(parsed, item_field.paths[0])), None


_KINDS = {
    "str": _str_column,
    "text": _text_column,
    "timestamp": _timestamp_column,
    "str_list": _str_list_column,
    "int": _int_column,
    "count": _count_column,
}
