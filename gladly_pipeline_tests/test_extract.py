"""Extraction of one day from export files: malformed lines, garbage, duplicates, safety."""

import json

import pyarrow.parquet as pq
import pytest

from gladly_pipeline.client import GladlyDataError, GladlyNotFound, ProfileLookup
from gladly_pipeline.extract import (
    ExportNotAvailable,
    extract_messages,
    fetch_contacts,
    fetch_conversations,
)
from gladly_pipeline.schemas import RAW_MESSAGES
from gladly_pipeline.storage import TableStore
from gladly_pipeline.windows import window_for_day

DAY = "2026-03-08"


class ExportFiles:
    """Stands in for the client: daily jobs whose item files hold the given lines."""

    def __init__(self, files: dict):
        self.files = files

    def export_jobs(self, status=None):
        return [
            {
                "id": job_id,
                "status": "COMPLETED",
                "updatedAt": f"2026-03-09T0{n}:00:00.000Z",
                "parameters": {"startAt": "2026-03-08T00:00:00Z", "endAt": "2026-03-09T00:00:00Z"},
                "files": ["conversation_items.jsonl"],
            }
            for n, job_id in enumerate(self.files, start=1)
        ]

    def export_file_lines(self, job_id, filename):
        yield from self.files[job_id]


def line(item_id, timestamp="2026-03-08T10:00:00.000Z", text="hello"):
    record = {"id": item_id, "customerId": "c1", "conversationId": "v1",
              "timestamp": timestamp, "content": {"type": "SMS", "content": text}}
    return json.dumps(record).encode()


def run(tmp_path, files):
    store = TableStore(tmp_path)
    path = store.raw_partition("messages", DAY)
    stats = extract_messages(ExportFiles(files), window_for_day(DAY), store, path)
    return stats, pq.read_table(path)


def test_malformed_lines_are_skipped_counted_and_located_by_position(tmp_path):
    lines = [line(f"i{n}") for n in range(30)]
    lines[4] = b'{"id": "cut-off", "timest'
    lines[9] = b"<html>oops</html>"
    stats, table = run(tmp_path, {"job-1": lines})
    assert stats.malformed == 2
    assert stats.malformed_positions == ["job-1:5", "job-1:10"]
    assert table.num_rows == 28


def test_blank_lines_are_not_malformed(tmp_path):
    stats, table = run(tmp_path, {"job-1": [line("a"), b"", b"  ", line("b")]})
    assert stats.malformed == 0
    assert table.num_rows == 2


def test_mostly_garbage_file_fails_and_keeps_the_previous_partition(tmp_path):
    _, before = run(tmp_path, {"job-1": [line(f"i{n}") for n in range(25)]})
    garbage = [b"not json"] * 20 + [line(f"j{n}") for n in range(10)]
    with pytest.raises(GladlyDataError, match="20 malformed lines out of 30"):
        run(tmp_path, {"job-1": garbage})
    path = TableStore(tmp_path).raw_partition("messages", DAY)
    assert pq.read_table(path).equals(before)
    assert [p.name for p in path.parent.iterdir()] == ["part-0.parquet"]


def test_item_in_two_jobs_is_written_once_from_the_newest_job(tmp_path):
    files = {
        "old-job": [line("a", text="before redaction"), line("b")],
        "new-job": [line("a", text="")],
    }
    stats, table = run(tmp_path, files)
    assert stats.duplicates == 1
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["a"]["text"] == "" and rows["a"]["source_job_id"] == "new-job"


def test_items_outside_the_day_are_left_for_their_own_partition(tmp_path):
    files = {"job-1": [line("a"), line("late", timestamp="2026-03-09T00:00:00.000Z")]}
    stats, table = run(tmp_path, files)
    assert stats.outside_window == 1
    assert table.column("id").to_pylist() == ["a"]
    assert table.schema.equals(RAW_MESSAGES)


def test_completed_job_without_an_items_file_is_not_taken_as_an_empty_day(tmp_path):
    client = ExportFiles({"job-1": [line("a")]})
    jobs = client.export_jobs()
    jobs[0]["files"] = ["agents.jsonl", "customers.jsonl", "topics.jsonl"]
    store = TableStore(tmp_path)
    path = store.raw_partition("messages", DAY)
    with pytest.raises(ExportNotAvailable, match="not listed"):
        extract_messages(client, window_for_day(DAY), store, path, jobs=jobs)
    assert not path.exists()


class Lookups:
    """Answers GET conversation for some ids and 404 for the rest."""

    def __init__(self, known):
        self.known = set(known)

    def conversation(self, conversation_id):
        if conversation_id not in self.known:
            raise GladlyNotFound("gone", status=404, path="/x")
        return {"id": conversation_id, "customerId": "p", "inboxId": "i",
                "status": "OPEN", "createdAt": "2026-03-08T10:00:00Z"}


def test_a_few_404s_are_merges_but_many_fail_the_day():
    ids = [f"c{n}" for n in range(40)]
    table, stats = fetch_conversations(Lookups(ids[:-2]), ids, workers=1)
    assert table.num_rows == 38 and len(stats.not_found) == 2
    with pytest.raises(GladlyDataError, match="10 of 40 conversations answered 404"):
        fetch_conversations(Lookups(ids[:30]), ids, workers=1)


class Profiles:
    """GET customer-profiles: p1 exists, old was merged into p1, gone answers 404."""

    def customer_profile(self, customer_id):
        if customer_id == "p1":
            return ProfileLookup("p1", {"id": "p1", "name": "Ada"})
        if customer_id == "old":
            return ProfileLookup("old", None, merged_into="p1")
        raise GladlyNotFound("gone", status=404, path="/x")


def test_contacts_keep_merged_and_deleted_profiles_as_rows():
    ids = ["old", "gone"] + [f"p{n}" for n in range(1, 2)]
    table, stats = fetch_contacts(Profiles(), ids, workers=1)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["old"]["merged_into"] == "p1" and not rows["old"]["deleted"]
    assert rows["gone"]["deleted"] is True
    assert rows["p1"]["name"] == "Ada" and rows["p1"]["deleted"] is False
    assert stats.merged == 1 and stats.not_found == ["gone"]
