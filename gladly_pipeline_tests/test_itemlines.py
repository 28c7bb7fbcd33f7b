"""The export's columnar path gives the per-line path's rows, counts and positions."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gladly_pipeline.client import GladlyNotFound
from gladly_pipeline.emulator import EmulatorConfig
from gladly_pipeline.emulator.data import generate
from gladly_pipeline.extract import (
    ExportNotAvailable,
    events,
    extract_messages,
    itemlines,
    jobs_for_window,
    rest,
    staging,
)
from gladly_pipeline.extract.itemlines import LineBlock, LineBlocks, to_timestamps
from gladly_pipeline.records import message_row
from gladly_pipeline.storage import TableStore
from gladly_pipeline.timeutil import parse_timestamp
from gladly_pipeline.windows import window_for_day

from .fakes import ExportFiles

DAY = "2026-03-08"
NOW = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)


def extract(tmp_path, files: dict, name: str):
    store = TableStore(tmp_path / name)
    path = store.raw_partition("messages", DAY)
    stats = extract_messages(ExportFiles(files), window_for_day(DAY), store, path)
    return stats, pq.read_table(path)


def both_paths(tmp_path, monkeypatch, files: dict, block_bytes: int = 4096):
    """The day extracted by the columnar path (small blocks, so several of them and some
    halving) and by the per-line path alone; both must agree on everything."""
    monkeypatch.setattr(itemlines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(itemlines, "MIN_SPLIT_LINES", 4)
    fast_stats, fast = extract(tmp_path, files, "fast")
    monkeypatch.setattr(itemlines, "MIN_SPLIT_LINES", 10**9)
    slow_stats, slow = extract(tmp_path, files, "slow")
    assert fast.schema.equals(slow.schema)
    assert fast.to_pylist() == slow.to_pylist()  # same values in the same order
    assert fast.equals(slow)
    assert slow_stats.lines_read_alone == slow_stats.lines
    fast_stats.lines_read_alone = slow_stats.lines_read_alone
    assert vars(fast_stats) == vars(slow_stats)
    return fast_stats, fast


def emulator_lines(**config) -> list:
    cfg = EmulatorConfig(seed=3, now=NOW, days=2, conversations_per_day=120,
                         rate_limit_per_second=None, **config)
    data = generate(cfg)
    job = jobs_for_window(data.visible_jobs(), window_for_day(DAY))[0]
    return [json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
            for item in data.export_items(job)]


def item(item_id, content=None, **fields):
    record = {"id": item_id, "conversationId": "v1", "customerId": "c1",
              "timestamp": "2026-03-08T10:00:00.000Z",
              "initiator": {"id": "c1", "type": "CUSTOMER"},
              "content": content if content is not None else {"type": "SMS", "content": "hi"}}
    record.update(fields)
    return json.dumps(record).encode()


def test_emulator_day_with_every_content_type_reads_the_same_and_all_columnar(
    tmp_path, monkeypatch
):
    lines = emulator_lines(unknown_shapes=True, duplicate_items=5)
    types = {json.loads(line)["content"]["type"] for line in lines}
    assert {"EMAIL", "SMS", "PHONE_CALL", "VOICEMAIL", "CHAT_MESSAGE", "TOPIC_CHANGE",
            "CONVERSATION_NOTE", "CUSTOM_CHANNEL_MESSAGE"} <= types
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    assert stats.outside_window == 5
    assert table.num_rows == len(lines) - 5
    # Clean data never needs the per-line path.
    monkeypatch.setattr(itemlines, "MIN_SPLIT_LINES", 4)
    fast_stats, _ = extract(tmp_path, {"job-1": lines}, "again")
    assert fast_stats.lines_read_alone == 0


def test_duplicates_across_two_jobs_keep_the_newest_copy(tmp_path, monkeypatch):
    lines = emulator_lines()
    newer = [line.replace(b'"content":"', b'"content":"edited: ') for line in lines[::3]]
    stats, table = both_paths(tmp_path, monkeypatch, {"job-old": lines, "job-new": newer})
    assert stats.duplicates == len(newer)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert len(rows) == table.num_rows == len(lines)
    edited = [json.loads(line)["id"] for line in newer]
    assert {rows[i]["source_job_id"] for i in edited} == {"job-new"}


ODD_LINES = [
    item("to-string", {"type": "SMS", "from": "+1555", "to": "+1666", "content": "x"}),
    item("to-list", {"type": "EMAIL", "from": "a@x", "to": ["b@y", "c@z"], "content": "x"}),
    item("to-list-with-null", {"type": "EMAIL", "to": ["b@y", None], "cc": ["d@y", None]}),
    item("to-number", {"type": "SMS", "to": 15550100}),
    item("to-twice", None).replace(b'"content": {"type": "SMS"',
                                   b'"content": {"to": ["l"], "to": "s", "type": "SMS"'),
    item("to-spaced", {"type": "SMS", "to" : "+1777"}).replace(b'"to": "', b'"to" : "'),
    item("tO-spelled", {"type": "SMS", "tO": "+1888"}),
    item("tO-escaped", None).replace(b'"content": {', b'"content": {"t\\u004f": "+1999", '),
    item("to-escaped", None).replace(b'"content": {', b'"content": {"\\u0074o": "+1999", '),
    item("duration-int", {"type": "PHONE_CALL", "recordingDuration": 228}),
    item("duration-text", {"type": "VOICEMAIL", "recordingDuration": "100"}),
    item("duration-padded", {"type": "VOICEMAIL", "recordingDuration": " 100 "}),
    item("duration-word", {"type": "VOICEMAIL", "recordingDuration": "long"}),
    item("duration-float", {"type": "PHONE_CALL", "recordingDuration": 11.0}),
    item("duration-huge", {"type": "PHONE_CALL", "recordingDuration": "99999999999999999999"}),
    item("unknown-fields", {"type": "NEW_TYPE", "payload": {"to": "x", "n": [1, {}]}},
         newField={"nested": True}),
    item("offset", timestamp="2026-03-08T10:11:12.123456789+05:30"),
    item("nanos", timestamp="2026-03-08T23:59:59.999999999Z"),
    item("no-fraction", timestamp="2026-03-08T00:00:00Z"),
    item("naive", timestamp="2026-03-08T10:11:12"),
    item("space", timestamp="2026-03-08 10:11:12Z"),
    item("late", timestamp="2026-03-09T00:00:00Z"),
    item("early-offset", timestamp="2026-03-08T00:30:00+01:00"),
    item("started", {"type": "PHONE_CALL", "startedAt": "2026-03-08T10:00:00.5-04:00",
                     "answeredAt": "not a time", "completedAt": "2026-02-30T10:00:00Z"}),
    item("content-not-object", "just text"),
    item("initiator-null", initiator=None),
    item("text-in-body", {"type": "CONVERSATION_NOTE", "body": "note"}),
    item("content-number", {"type": "CHAT_MESSAGE", "content": 5, "body": "fallback"}),
    item("attachments", {"type": "CHAT_MESSAGE", "attachments": [{"id": "a"}, None, {}]}),
    item("topics", {"type": "TOPIC_CHANGE", "addedTopicIds": [], "removedTopicIds": ["t"]}),
    "{\"id\": \"unicode\", \"timestamp\": \"2026-03-08T10:00:00Z\", \"content\": "
    "{\"type\": \"SMS\", \"content\": \"caf\u00e9 \U0001F600\"}}".encode(),
    b'\xef\xbb\xbf' + item("bom"),
    item("tab-in-key").replace(b'"customerId"', b'"customer\\tId"'),
]
MALFORMED_LINES = [
    b'{"id": "cut-off", "timest',
    b"<html>oops</html>",
    b"[1, 2]",
    b'"a string"',
    b"5",
    b"null",
    item("two-on-a-line") + item("second"),
    item("bad-utf8").replace(b'"hi"', b'"h\xffi"'),
    item("no-id").replace(b'"id": "no-id", ', b""),
    item(7).replace(b'"id": 7', b'"id": 7'),
    item("bad-time", timestamp="yesterday"),
    item("feb-30", timestamp="2026-02-30T10:00:00Z"),
    item("dup-key").replace(b'"customerId": "c1"', b'"customerId": "c1", "customerId": "c2"'),
    item("nan", extra=1).replace(b'"extra": 1', b'"extra": NaN'),
]


def test_odd_shapes_malformed_and_blank_lines_in_a_block_read_as_line_by_line(
    tmp_path, monkeypatch
):
    lines = emulator_lines()[:400]
    assert len(lines) == 400
    for n, odd in enumerate(ODD_LINES + MALFORMED_LINES):
        lines.insert(2 + n * 7, odd)
    lines[10:10] = [b"", b"   ", b"\t"]
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines}, block_bytes=6000)
    ids = set(table.column("id").to_pylist())
    assert {"to-string", "duration-text", "offset", "naive", "unicode", "bom"} <= ids
    assert "late" not in ids and stats.outside_window >= 1
    # "nan" is valid for json.loads (Python reads NaN), and so is a duplicated key.
    assert {"nan", "dup-key", "to-twice"} <= ids
    assert stats.malformed == len(MALFORMED_LINES) - 2
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["to-string"]["to_addresses"] == ["+1666"]
    assert rows["to-list-with-null"]["to_addresses"] == ["b@y"]
    assert rows["tO-spelled"]["to_addresses"] is None
    assert rows["duration-text"]["recording_duration_seconds"] == 100
    assert rows["duration-huge"]["recording_duration_seconds"] is None
    assert rows["offset"]["timestamp"] == datetime(2026, 3, 8, 4, 41, 12, 123456, tzinfo=UTC)
    assert rows["started"]["completed_at"] is None


def test_malformed_positions_count_blank_lines(tmp_path, monkeypatch):
    lines = [item(f"i{n}") for n in range(40)]
    lines[3] = b""
    lines[17] = b"not json"
    lines[30] = b"  "
    lines[31] = b'{"id": "cut'
    stats, _ = both_paths(tmp_path, monkeypatch, {"job-1": lines}, block_bytes=2000)
    assert stats.malformed_positions == ["job-1:18", "job-1:32"]
    assert stats.lines == 38


def test_first_activity_is_each_conversations_earliest_item(tmp_path, monkeypatch):
    lines = emulator_lines()
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    earliest = {}
    for row in table.to_pylist():
        if row["conversation_id"] is not None:
            first = earliest.setdefault(row["conversation_id"], row["timestamp"])
            earliest[row["conversation_id"]] = min(first, row["timestamp"])
    assert stats.first_activity == earliest
    assert all(moment.tzinfo is UTC for moment in stats.first_activity.values())


TIMESTAMPS = [
    "2026-03-08T10:11:12.345Z", "2026-03-08T10:11:12Z", "2026-03-08T10:11:12.1Z",
    "2019-02-21T07:15:18.07272933Z", "2019-02-21T19:50:23.486566336Z",
    "2026-03-08T10:11:12.123456789+05:30", "2026-03-08T10:11:12-08:00",
    "2026-03-08T10:11:12.5+0530", "2026-03-08T10:11:12+05", "2026-03-08 10:11:12Z",
    "1969-12-31T23:59:59.9999999Z", "1900-01-01T00:00:00Z", "2026-03-08T23:59:59.999999999-00:00",
]


def test_columnar_timestamps_equal_parse_timestamp():
    assert to_timestamps(pa.array(TIMESTAMPS)).to_pylist() == [
        parse_timestamp(text) for text in TIMESTAMPS
    ]


@pytest.mark.parametrize("odd", ["2026-03-08T10:11:12", "2026-02-30T10:00:00Z", "soon", ""])
def test_a_form_the_cast_rejects_falls_back_to_parse_timestamp_for_the_column(odd):
    texts = TIMESTAMPS + [odd, None]
    assert to_timestamps(pa.array(texts)).to_pylist() == [
        None if text is None else parse_timestamp(text) for text in texts
    ]


def test_blocks_are_bounded_by_bytes_and_read_lazily():
    pulled = 0

    def lines():
        nonlocal pulled
        for n in range(5000):
            pulled += 1
            yield item(f"i{n}")

    line_bytes = len(item("i1000")) + 1
    blocks = LineBlocks(lines(), block_bytes=20_000)
    limit = 20_000 + itemlines.LINES_PER_STEP * line_bytes
    count = 0
    for block in blocks:
        count += len(block.lines)
        assert block.parse_text.size + 1 <= limit
        # Only the lines of this block (and none further) have been read from the stream.
        assert pulled == count
    assert count == 5000 == blocks.lines


def test_memory_holds_a_few_blocks_whatever_the_file_size(tmp_path, monkeypatch):
    """Lines read but not yet handed to the Parquet writer stay under a few blocks."""
    monkeypatch.setattr(itemlines, "BLOCK_BYTES", 8192)
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 100)
    pulled = written = 0
    most_in_flight = 0

    def lines():
        nonlocal pulled, most_in_flight
        for n in range(20_000):
            pulled += 1
            most_in_flight = max(most_in_flight, pulled - written)
            yield item(f"i{n}")

    class CountingWriter(staging.BackgroundWriter):
        def _run(self):
            nonlocal written
            while (table := self.queue.get()) is not None:
                self.writer.write_table(table)
                written += table.num_rows

    monkeypatch.setattr(staging, "BackgroundWriter", CountingWriter)
    stats, table = extract(tmp_path, {"job-1": lines()}, "big")
    assert table.num_rows == stats.written == 20_000
    per_block = 8192 // len(item("i1000")) + itemlines.LINES_PER_STEP + 1
    # Being read, read ahead, being parsed, queued for the writer, being written, and the
    # sink's pending batch: a fixed number of blocks, not the file.
    assert most_in_flight <= 5 * per_block + staging.ROW_GROUP_ROWS < 20_000 / 4


def test_a_failing_writer_fails_the_run_and_leaves_no_partition(tmp_path, monkeypatch):
    class Broken:
        def write_table(self, table):
            raise OSError("disk full")

    background = staging.BackgroundWriter(Broken())
    background.write_table(pa.table({"a": [1]}))
    with pytest.raises(OSError, match="disk full"):
        background.finish()

    def broken_writer(self, table):
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        extract(tmp_path, {"job-1": [item(f"i{n}") for n in range(50)]}, "broken")
    path = TableStore(tmp_path / "broken").raw_partition("messages", DAY)
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".staging")]


def test_message_row_is_the_one_map_for_rest_items_too():
    record = json.loads(item("r1", {"type": "SMS", "to": "+1666", "content": "x"}))
    row = message_row(record, json.dumps(record), None)
    assert row["to_addresses"] == ["+1666"] and row["text"] == "x"
    assert list(row) == [field.name for field in itemlines.RAW_MESSAGES]


def test_a_404_after_some_lines_is_not_taken_for_an_expired_file(tmp_path):
    def lines(count):
        yield from (item(f"i{n}") for n in range(count))
        raise GladlyNotFound("gone", status=404, path="/x")

    # Lines were read (fewer than a block): the 404 is an error of its own.
    with pytest.raises(GladlyNotFound):
        extract(tmp_path, {"job-1": lines(3)}, "some")
    # Nothing read: the file is gone, and no other job covers the day.
    with pytest.raises(ExportNotAvailable, match="is gone"):
        extract(tmp_path, {"job-1": lines(0)}, "none")


def test_read_ahead_thread_hands_over_items_then_the_error_and_stops_when_left():
    def numbers():
        yield 1
        yield 2
        raise OSError("connection reset")

    seen = []
    with pytest.raises(OSError, match="connection reset"):
        for number in itemlines.Prefetch(numbers()):
            seen.append(number)
    assert seen == [1, 2]

    ahead = itemlines.Prefetch(iter(range(1000)))
    for number in ahead:
        if number == 3:
            break
    ahead.close()
    assert not ahead.thread.is_alive()


def spaced(line: bytes, colon: bytes, comma: bytes = b", ") -> bytes:
    """The line re-written with these separators (json.dumps's own, or odder ones)."""
    text = json.dumps(json.loads(line), ensure_ascii=False).encode()
    return text.replace(b'": ', b'"' + colon).replace(b", ", comma)


@pytest.mark.parametrize("colon", [b": ", b" : ", b"\t:\t", b"\r: ", b" :"])
def test_spaced_separators_read_columnar_as_the_compact_ones(tmp_path, monkeypatch, colon):
    lines = [spaced(line, colon) for line in emulator_lines()[:600]]
    assert sum(b'"to"' + colon + b'"' in line for line in lines) > 20  # SMS and calls
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    assert table.num_rows == len(lines)
    assert any(row is not None and len(row) == 1 for row in
               table.column("to_addresses").to_pylist())
    monkeypatch.setattr(itemlines, "MIN_SPLIT_LINES", 4)
    fast_stats, _ = extract(tmp_path, {"job-1": lines}, "again")
    assert fast_stats.lines_read_alone == 0


# `"to"` and `: "` inside string values, keys and values: only a key `to` whose value is a
# string is renamed; quotes inside strings are escaped, so the pattern cannot start there.
IN_STRINGS = [
    item("in-text", {"type": "SMS", "content": 'say "to": "x" and "to" : "y"', "to": "+1"}),
    item("in-subject", {"type": "EMAIL", "subject": '"to":"a"', "to": ["a@x"]}),
    item("key-ends-to", {"type": "SMS", 'a"to': "z", "to": "+2"}),
    item("value-to", {"type": "SMS", "subject": "to", "to": "+3"}),
    item("duration-in-text", {"type": "VOICEMAIL", "content": '"recordingDuration" : "9"',
                              "recordingDuration": 4}),
]


def test_renaming_touches_only_keys_never_text_inside_strings(tmp_path, monkeypatch):
    block = LineBlock(IN_STRINGS, 1)
    renamed = block.parse_text.to_pybytes().split(b"\n")
    for original, parsed in zip(IN_STRINGS, renamed, strict=True):
        # Only the last letter of a key's name changes: every value reads back the same.
        changed = [i for i in range(len(original)) if original[i] != parsed[i]]
        assert len(parsed) == len(original)
        assert all(original[i:i + 2] == b'o"' and parsed[i] == ord("O") for i in changed)
        content = {(key[:-1] + "o" if key.endswith("tO") else key): value
                   for key, value in json.loads(parsed)["content"].items()}
        assert content == json.loads(original)["content"]
    # The key `to` with a string value, wherever it is and however spaced, and a key ending
    # in `"to` (escaped quote; no field reads it): nothing else.
    assert [len(line) - len(line.replace(b'"tO"', b"")) for line in renamed] == [4, 0, 8, 4, 0]
    lines = emulator_lines()[:100]
    lines[10:10] = IN_STRINGS
    _, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["in-text"]["text"] == 'say "to": "x" and "to" : "y"'
    assert rows["in-text"]["to_addresses"] == ["+1"]
    assert rows["in-subject"]["subject"] == '"to":"a"'
    assert rows["key-ends-to"]["to_addresses"] == ["+2"]
    assert rows["value-to"]["to_addresses"] == ["+3"]
    assert rows["duration-in-text"]["recording_duration_seconds"] == 4


# json.loads keeps a repeated key's last value; pyarrow.json rejects a repeated field, but
# reads `to` (a string) and `to` (anything else) as two fields, "tO" and "to".
REPEATED = {
    "to-then-null": ('"to":"a","to":null', "to_addresses", None),
    "to-spaced-then-null": ('"to" : "a", "to" : null', "to_addresses", None),
    "null-then-to": ('"to":null,"to":"a"', "to_addresses", ["a"]),
    "to-then-number": ('"to":"a","to":5', "to_addresses", ["5"]),
    "to-then-list": ('"to":"a","to":["b"]', "to_addresses", ["b"]),
    "list-then-to": ('"to":["b"],"to":"a"', "to_addresses", ["a"]),
    "to-then-object": ('"to":"a","to":{}', "to_addresses", ["{}"]),
    "to-twice": ('"to":"a","to":"b"', "to_addresses", ["b"]),
    "duration-then-null": ('"recordingDuration":"5","recordingDuration":null',
                           "recording_duration_seconds", None),
    "duration-then-true": ('"recordingDuration":"5","recordingDuration":true',
                           "recording_duration_seconds", None),
    "subject-then-null": ('"subject":"a","subject":null', "subject", None),
    "subject-then-number": ('"subject":"a","subject":7', "subject", "7"),
}


def test_a_repeated_key_reads_its_last_value_on_both_paths(tmp_path, monkeypatch):
    lines = [item(f"i{n}") for n in range(60)]
    for n, (item_id, (content, _, _)) in enumerate(REPEATED.items()):
        lines.insert(3 + n * 4, (
            f'{{"id":"{item_id}","timestamp":"2026-03-08T10:00:00Z",'
            f'"content":{{"type":"SMS",{content}}}}}').encode())
    lines.insert(5, b'{"id":"content-then-null","timestamp":"2026-03-08T10:00:00Z",'
                    b'"content":{"to":"a","subject":"s"},"content":null}')
    lines.insert(9, b'{"id":"id-then-number","timestamp":"2026-03-08T10:00:00Z",'
                    b'"id":"x","id":5}')
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    rows = {row["id"]: row for row in table.to_pylist()}
    for item_id, (_, column, expected) in REPEATED.items():
        assert rows[item_id][column] == expected, item_id
    assert rows["content-then-null"]["to_addresses"] is None
    assert rows["content-then-null"]["subject"] is None
    assert stats.malformed_positions == ["job-1:10"]  # the id is a number in the end


def deep_line(item_id: str, depth: int) -> bytes:
    return (f'{{"id":"{item_id}","timestamp":"2026-03-08T10:00:00Z",'
            f'"content":{{"type":"SMS"}},"x":{"[" * depth}{"]" * depth}}}').encode()


def test_a_line_nested_too_deep_is_malformed_on_both_paths(tmp_path, monkeypatch):
    limit = itemlines.MAX_DEPTH
    lines = [item(f"i{n}") for n in range(60)]
    lines[7] = deep_line("deep", 5000)
    lines[20] = deep_line("very-deep", 200_000)
    lines[33] = deep_line("at-limit", limit - 1)  # the item object adds a level
    lines[40] = deep_line("over-limit", limit)
    # Brackets inside a string do not nest.
    lines[50] = item("brackets-in-text", {"type": "SMS", "content": "[{" * 5000})
    stats, table = both_paths(tmp_path, monkeypatch, {"job-1": lines})
    ids = set(table.column("id").to_pylist())
    assert {"at-limit", "brackets-in-text"} <= ids
    assert not {"deep", "very-deep", "over-limit"} & ids
    assert stats.malformed_positions == ["job-1:8", "job-1:21", "job-1:41"]
    # The limit is the module's, not Python's recursion limit (which moves with the stack).
    assert itemlines.parse_item(deep_line("d", limit - 1)) is not None
    assert itemlines.parse_item(deep_line("d", limit)) is None
    assert itemlines.nesting_depth(deep_line("d", 3)) == 4


class DeepLines:
    """A client whose customers file and events stream hold a line nested too deep."""

    def export_file_lines(self, job_id, filename):
        yield b'{"id":"c1","name":"Ann"}'
        yield b'{"id":"c2","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def event_lines(self, **query):
        yield b'{"type":"CONVERSATION/CLOSED","content":{"conversationId":"v1"}}'
        yield b'{"content":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_a_line_nested_too_deep_in_customers_or_events_is_malformed_not_a_crash():
    job = {"id": "job-1", "files": ["customers.jsonl"], "updatedAt": "2026-03-09T03:00:00Z"}
    found = rest.read_exported_contacts(DeepLines(), [job], {"c1", "c2"})
    assert (set(found.rows), found.lines, found.malformed) == ({"c1"}, 2, 1)
    stats = staging.MessageStats()
    touched = events._touched_conversations(DeepLines(), window_for_day(DAY), stats)
    assert touched == {"v1"}
    assert stats.malformed_positions == ["events:2"]
