"""Extraction of one day: export files (malformed lines, duplicates, safety), then the
conversations and profiles behind it (reused, listed per customer, exported or fetched)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gladly_pipeline.client import GladlyDataError, GladlyMoved, GladlyNotFound, ProfileLookup
from gladly_pipeline.extract import (
    ExportNotAvailable,
    extract_messages,
    fetch_contacts,
    fetch_conversations,
    read_exported_contacts,
    rest,
    reusable_conversations,
    rowtables,
)
from gladly_pipeline.extract.rest import (
    QUEUED_PER_WORKER,
    REUSE_MARGIN,
    _full_contact_rows,
    fan_out,
)
from gladly_pipeline.records import (
    contact_row,
    conversation_row,
    deleted_contact_row,
    exported_contact_row,
    is_full_contact_row,
    merged_contact_row,
)
from gladly_pipeline.schemas import RAW_CONTACTS, RAW_CONVERSATIONS, RAW_MESSAGES
from gladly_pipeline.storage import TableStore
from gladly_pipeline.windows import window_for_day

from .fakes import ExportFiles

DAY = "2026-03-08"


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


# ---------------------------------------------------------------- newest knowledge wins

EXPORTED_AT = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)


def _exported(customer_id, name, at=EXPORTED_AT):
    line = {"id": customer_id, "name": name, "emailAddresses": [f"{name.lower()}@x.org"]}
    return exported_contact_row(line, json.dumps(line), at)


def _profile(customer_id, name, at):
    return contact_row({
        "id": customer_id, "name": name, "customAttributes": {"tier": "gold"},
        "emails": [{"original": f"{name.lower()}@x.org", "primary": True}],
        "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2026-03-01T00:00:00Z",
    }, at)


class NoProfiles:
    def __init__(self):
        self.asked = []

    def customer_profile(self, customer_id):
        self.asked.append(customer_id)
        return ProfileLookup(customer_id, {"id": customer_id, "name": "Fresh"})


def test_each_customer_gets_the_newest_knowledge_of_export_cache_and_earlier_run():
    hour = timedelta(hours=1)
    exported = {cid: _exported(cid, name) for cid, name in
                [("merged", "Mia"), ("deleted", "Dan"), ("newer_get", "Nora"),
                 ("older_get", "Olga"), ("renamed", "Rita"), ("plain", "Pat"),
                 ("old_mark", "Omar")]}
    cached = {
        "merged": merged_contact_row("merged", "plain", EXPORTED_AT + hour),
        "newer_get": _profile("newer_get", "Nora", EXPORTED_AT + hour),
        "older_get": _profile("older_get", "Olga", EXPORTED_AT - hour),
    }
    earlier = {
        "deleted": deleted_contact_row("deleted", EXPORTED_AT + hour),
        "renamed": _profile("renamed", "Rosa", EXPORTED_AT - 2 * hour),
        # Gladly never revives an id: a mark older than the file still wins.
        "old_mark": deleted_contact_row("old_mark", EXPORTED_AT - hour),
        "elsewhere": _profile("elsewhere", "Eve", EXPORTED_AT + hour),
    }
    client = NoProfiles()
    table, stats = fetch_contacts(client, list(exported) + ["elsewhere"], workers=1,
                                  cached=cached, exported=exported, earlier=earlier)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["merged"] == cached["merged"]
    assert rows["deleted"] == earlier["deleted"] and rows["old_mark"] == earlier["old_mark"]
    assert rows["newer_get"] == cached["newer_get"]
    assert rows["plain"] == exported["plain"]
    # An export newer than the GET speaks for its own columns and keeps GET's others.
    older = rows["older_get"]
    assert older["fetched_at"] == EXPORTED_AT and older["name"] == "Olga"
    assert older["custom_attributes_json"] == cached["older_get"]["custom_attributes_json"]
    assert older["created_at"] == cached["older_get"]["created_at"]
    assert older["updated_at"] == cached["older_get"]["updated_at"]
    # Renamed after the GET: the moment of that edit is unknown, so no updated_at.
    renamed = rows["renamed"]
    assert renamed["name"] == "Rita" and renamed["custom_attributes_json"]
    assert renamed["created_at"] is not None and renamed["updated_at"] is None
    # The earlier run's rows only compete with the file: they never spare a GET.
    assert client.asked == ["elsewhere"] and rows["elsewhere"]["name"] == "Fresh"
    assert stats.exported == 3 and stats.reused == 4


# ---------------------------------------------------------------- fewer requests


class CustomerLists(Lookups):
    """Lookups plus GET customers/{id}/conversations, counting every call."""

    def __init__(self, known, lists, moved=()):
        super().__init__(known)
        self.lists = lists
        self.moved = set(moved)
        self.calls = []

    def conversation(self, conversation_id):
        self.calls.append(("conversation", conversation_id))
        return super().conversation(conversation_id)

    def customer_conversations(self, customer_id):
        self.calls.append(("list", customer_id))
        if customer_id in self.moved:
            raise GladlyMoved("moved", path="/x", new_id="survivor")
        return [{"id": cid, "customerId": customer_id, "inboxId": "i", "status": "CLOSED",
                 "createdAt": "2026-03-08T09:00:00Z"} for cid in self.lists[customer_id]]


def test_customer_with_several_conversations_is_asked_once_and_gaps_are_fetched_alone():
    owners = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "m1": "M", "m2": "M",
              "n1": "N", "n2": "N"}
    # A's list lacks a3 (as when Gladly cuts it at 100); M was merged into "survivor",
    # whose list holds its conversations; N was merged twice over, so its are fetched alone.
    client = CustomerLists(known=owners, moved={"M", "N"},
                           lists={"A": ["a0", "a1", "a2"], "survivor": ["m1", "m2"]})
    original = client.customer_conversations

    def twice_merged(customer_id):
        if customer_id == "survivor" and ("list", "N") in client.calls[-1:]:
            client.calls.append(("list", customer_id))
            raise GladlyMoved("moved", path="/x", new_id="elsewhere")
        return original(customer_id)

    client.customer_conversations = twice_merged
    table, stats = fetch_conversations(client, sorted(owners), workers=1, customers=owners)
    assert sorted(client.calls) == sorted([
        ("list", "A"), ("list", "M"), ("list", "survivor"), ("list", "N"),
        ("list", "survivor"), ("conversation", "a3"), ("conversation", "b1"),
        ("conversation", "n1"), ("conversation", "n2"),
    ])
    assert table.column("id").to_pylist() == sorted(owners)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["a1"]["status"] == "CLOSED" and rows["a3"]["status"] == "OPEN"
    assert rows["m1"]["customer_id"] == "survivor"
    assert (stats.listed, stats.list_requests, stats.written) == (4, 5, 8)


def test_stored_conversations_are_copied_with_their_fetch_time():
    earlier = datetime(2026, 3, 8, 23, 0, tzinfo=UTC)
    kept = conversation_row({"id": "c1", "customerId": "p", "inboxId": "i", "status": "OPEN",
                             "createdAt": "2026-03-08T10:00:00Z"}, earlier)
    client = CustomerLists(known=["c1", "c2"], lists={})
    table, stats = fetch_conversations(client, ["c1", "c2"], workers=1, stored={"c1": kept})
    assert client.calls == [("conversation", "c2")]
    assert table.to_pylist()[0] == kept and stats.reused == 1


def _stored_conversation(store, day, conversation_id, fetched_at):
    row = conversation_row({"id": conversation_id, "customerId": "p", "inboxId": "i",
                            "status": "OPEN", "createdAt": "2026-03-07T10:00:00Z"}, fetched_at)
    store.write(store.raw_partition("conversations", day),
                pa.Table.from_pylist([row], schema=RAW_CONVERSATIONS))


def test_conversation_with_an_item_after_its_last_fetch_is_not_reused(tmp_path):
    store = TableStore(tmp_path)
    fetched = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)
    _stored_conversation(store, "2026-03-07", "quiet", fetched)
    _stored_conversation(store, "2026-03-06", "busy", fetched)
    _stored_conversation(store, "2026-03-05", "edge", fetched)
    activity = {
        "quiet": fetched - timedelta(hours=1),
        "busy": fetched + timedelta(hours=3),
        # Inside the margin for clock skew: not trusted.
        "edge": fetched - REUSE_MARGIN / 2,
        "never": fetched - timedelta(hours=2),
    }
    reusable = reusable_conversations(store, activity)
    assert set(reusable) == {"quiet"}
    assert reusable["quiet"]["fetched_at"] == fetched


def test_newest_stored_fetch_of_a_conversation_is_the_one_judged(tmp_path):
    store = TableStore(tmp_path)
    _stored_conversation(store, "2026-03-07", "c", datetime(2026, 3, 8, 4, 0, tzinfo=UTC))
    _stored_conversation(store, "2026-03-08", "c", datetime(2026, 3, 9, 4, 0, tzinfo=UTC))
    activity = {"c": datetime(2026, 3, 8, 20, 0, tzinfo=UTC)}
    assert reusable_conversations(store, activity)["c"]["fetched_at"].day == 9


class CustomersFile(Profiles):
    """Profiles plus export jobs whose customers.jsonl holds the given lines."""

    def __init__(self, files):
        self.files = files
        self.asked = []

    def export_file_lines(self, job_id, filename):
        assert filename == "customers.jsonl"
        if self.files[job_id] is None:
            raise GladlyNotFound("gone", status=404, path="/x")
        yield from self.files[job_id]

    def customer_profile(self, customer_id):
        self.asked.append(customer_id)
        return super().customer_profile(customer_id)


def _job(job_id, updated, files=("conversation_items.jsonl", "customers.jsonl")):
    return {"id": job_id, "updatedAt": updated, "files": list(files)}


def test_profiles_the_export_lists_are_read_and_the_rest_fetched():
    newer = [json.dumps({"id": "p2", "name": "New", "emailAddresses": ["b@x.com"],
                         "phoneNumbers": []}).encode(), b"", b"{broken"]
    older = [json.dumps({"id": "p2", "name": "Old"}).encode(),
             json.dumps({"id": "p3", "name": "Cy", "phoneNumbers": ["+15550100"]}).encode()]
    client = CustomersFile({"j2": newer, "j1": older, "j0": None})
    jobs = [_job("j2", "2026-03-09T03:00:00Z"), _job("j1", "2026-03-09T02:00:00Z"),
            _job("j0", "2026-03-09T01:00:00Z"), _job("jx", "2026-03-09T00:30:00Z", ())]
    wanted = {"p2", "p3", "old", "gone"}
    exported = read_exported_contacts(client, jobs, wanted)
    assert (exported.jobs, exported.missing_files) == (["j2", "j1"], ["j0", "jx"])
    assert exported.malformed == 1 and exported.lines == 4
    assert exported.rows["p2"]["name"] == "New"
    assert exported.rows["p2"]["fetched_at"] == datetime(2026, 3, 9, 3, tzinfo=UTC)

    table, stats = fetch_contacts(client, sorted(wanted), workers=1, exported=exported.rows)
    rows = {row["id"]: row for row in table.to_pylist()}
    # Only what the file lacks is asked for: the merged id, the deleted one, the survivor.
    assert sorted(client.asked) == ["gone", "old", "p1"]
    assert rows["p3"]["primary_phone"] == "+15550100" and rows["p3"]["created_at"] is None
    assert rows["old"]["merged_into"] == "p1" and rows["gone"]["deleted"] is True
    assert (stats.exported, stats.merged, stats.not_found) == (2, 1, ["gone"])


def test_survivor_listed_in_the_export_is_not_fetched_again():
    client = CustomersFile({"j": [json.dumps({"id": "p1", "name": "Ada"}).encode()]})
    exported = read_exported_contacts(client, [_job("j", "2026-03-09T03:00:00Z")],
                                      {"old", "p1"})
    table, _ = fetch_contacts(client, ["old"], workers=1, exported=exported.rows)
    assert client.asked == ["old"]
    assert sorted(table.column("id").to_pylist()) == ["old", "p1"]


# ---------------------------------------------------------------- rows held as Arrow


def test_row_batches_give_rows_sorted_by_id_as_python_sorts_them(monkeypatch):
    monkeypatch.setattr(rowtables, "ROWS_PER_BATCH", 2)
    ids = ["b", "é", "a", "Z", "ab", "a\u00e0", "\U0001f600", "c"]
    rows = rowtables.RowBatches(RAW_CONVERSATIONS)
    fetched = datetime(2026, 3, 9, tzinfo=UTC)
    for conversation_id in ids[:5]:
        rows.add(conversation_row({"id": conversation_id}, fetched))
    rows.add_table(pa.Table.from_pylist(
        [conversation_row({"id": i}, fetched) for i in ids[5:]], schema=RAW_CONVERSATIONS))
    assert len(rows) == len(ids)
    assert rows.table().column("id").to_pylist() == sorted(ids)


def test_rows_by_id_find_take_and_drop_rows():
    fetched = datetime(2026, 3, 9, tzinfo=UTC)
    table = pa.Table.from_pylist(
        [conversation_row({"id": i, "status": s}, fetched) for i, s in
         [("c1", "OPEN"), ("c2", "CLOSED"), ("c3", "OPEN")]], schema=RAW_CONVERSATIONS)
    rows = rowtables.RowsById(table)
    assert list(rows) == ["c1", "c2", "c3"] and "c2" in rows and "c9" not in rows
    assert rows["c2"]["status"] == "CLOSED" and rows["c2"]["fetched_at"] == fetched
    assert rows.take(["c3", "c1"]).column("id").to_pylist() == ["c3", "c1"]
    assert list(rows.without({"c2", "c9"})) == ["c1", "c3"]
    with pytest.raises(ValueError, match="distinct ids"):
        rowtables.RowsById(pa.concat_tables([table, table]))


def test_full_contact_rows_are_judged_as_records_judges_one_row():
    fetched = datetime(2026, 3, 9, tzinfo=UTC)
    rows = [
        contact_row({"id": "full", "createdAt": "2026-01-01T00:00:00Z"}, fetched),
        exported_contact_row({"id": "reduced"}, "{}", fetched),
        merged_contact_row("old", "new", fetched),
        deleted_contact_row("gone", fetched),
        {**exported_contact_row({"id": "blank"}, "{}", fetched), "merged_into": ""},
        {**exported_contact_row({"id": "unknown"}, "{}", fetched), "deleted": None},
    ]
    table = pa.Table.from_pylist(rows, schema=RAW_CONTACTS)
    judged = _full_contact_rows(table).to_pylist()
    assert judged == [is_full_contact_row(row) for row in rows]
    assert judged == [True, False, True, True, False, False]


def test_fan_out_keeps_the_order_and_queues_a_few_requests_per_worker():
    running, most = [0], [0]
    lock = threading.Lock()

    def fetch(key):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.001)
        with lock:
            running[0] -= 1
        if key % 7 == 0:
            raise GladlyNotFound("gone", status=404, path="/x")
        return key * 2

    ids = list(range(200))
    answers = list(fan_out(fetch, ids, workers=3))
    assert answers == [(k, None if k % 7 == 0 else k * 2) for k in ids]
    assert most[0] <= 3

    submitted = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, *args):
            submitted.append(args[0])
            return super().submit(fn, *args)

    original = rest.ThreadPoolExecutor
    rest.ThreadPoolExecutor = CountingPool
    try:
        first = next(fan_out(lambda key: key, ids, workers=2))
    finally:
        rest.ThreadPoolExecutor = original
    # One answer taken: no more than the queue's depth was ever handed to the pool.
    assert first == (0, 0) and len(submitted) == 2 * QUEUED_PER_WORKER
