"""The analysis-ready joins on hand-made raw rows: timings, history, merges, names."""

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gladly_pipeline import tables
from gladly_pipeline.privacy import Pseudonymizer
from gladly_pipeline.records import (
    contact_row,
    conversation_row,
    deleted_contact_row,
    merged_contact_row,
    message_row,
)
from gladly_pipeline.resources import DataRoot
from gladly_pipeline.schemas import (
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
    RAW_REFERENCE,
)
from gladly_pipeline.storage import TableStore
from gladly_pipeline.tables import SCHEMAS, RebuildLimits, rebuild

UTC = UTC
FETCHED = datetime(2026, 3, 9, tzinfo=UTC)
NAMES = {"agents": {"ag1": "Grace Agent"}, "inboxes": {"in1": "Support"},
         "topics": {"t1": "Billing"}}


def item(item_id, minute, sender_type, kind="CHAT_MESSAGE", conversation="c1",
         customer="p1", sender_id=None):
    record = {
        "id": item_id, "customerId": customer, "conversationId": conversation,
        "timestamp": f"2026-03-08T10:{minute:02d}:00.000Z",
        "initiator": {"id": sender_id or ("ag1" if sender_type == "AGENT" else customer),
                      "type": sender_type},
        "content": {"type": kind, "content": f"text {item_id}", "body": f"note {item_id}"},
    }
    return message_row(record, json.dumps(record), "job")


def conversation(conversation_id="c1", created_minute=0, closed_minute=None, customer="p1"):
    record = {"id": conversation_id, "customerId": customer, "inboxId": "in1",
              "agentId": "ag1", "status": "CLOSED" if closed_minute else "OPEN",
              "createdAt": f"2026-03-08T10:{created_minute:02d}:00.000Z", "topicIds": ["t1"]}
    if closed_minute:
        record["closedAt"] = f"2026-03-08T10:{closed_minute:02d}:00.000Z"
    return conversation_row(record, FETCHED)


def reference_rows(names: dict) -> list:
    return [{"id": key, "name": name, "fetched_at": FETCHED, "raw_json": "{}"}
            for key, name in names.items()]


def rebuild_tables(root: Path, items, conversations, profiles, day="2026-03-08",
                   limits=None, hasher=None) -> dict:
    """Writes the raw rows as one day's partitions, rebuilds, and reads the three tables."""
    store = TableStore(root)
    for name, rows, schema in [("messages", items, RAW_MESSAGES),
                               ("conversations", conversations, RAW_CONVERSATIONS),
                               ("contacts", profiles, RAW_CONTACTS)]:
        if rows is not None:
            store.write(store.raw_partition(name, day), pa.Table.from_pylist(rows, schema=schema))
    for name, names in NAMES.items():
        store.write(store.reference(name),
                    pa.Table.from_pylist(reference_rows(names), schema=RAW_REFERENCE))
    limits = limits or RebuildLimits()
    written = {table.name: table.rows for table in rebuild(store, limits, hasher)}
    tables = {name: pq.read_table(store.analytics(name)).to_pandas() for name in written}
    assert {name: len(frame) for name, frame in tables.items()} == written
    return tables


def build(items, conversations, profiles=None):
    with tempfile.TemporaryDirectory() as root:
        tables = rebuild_tables(
            Path(root), items, conversations,
            profiles or [contact_row({"id": "p1", "name": "Ada"}, FETCHED)],
        )
    return tables["messages"], tables["conversations"].set_index("conversation_id")


def test_first_response_waits_for_an_agent_not_a_bot():
    items = [
        item("m1", 0, "CUSTOMER"),
        item("m2", 1, "SYSTEM", sender_id="SIDEKICK_V2"),
        item("m3", 7, "AGENT"),
    ]
    msgs, convs = build(items, [conversation()])
    assert convs.loc["c1", "first_response_seconds"] == 7 * 60
    assert msgs.set_index("message_id").loc["m2", "sender_name"] == "Gladly AI"
    assert "Grace Agent (outbound, chat)" in convs.loc["c1", "transcript"]


def test_conversation_begun_before_the_extracted_days_leaves_its_start_unknown():
    # Created at 10:00, but the extracted items begin at 10:30: who started it is unknown.
    items = [item("m1", 30, "AGENT"), item("m2", 40, "CUSTOMER")]
    _, convs = build(items, [conversation()])
    row = convs.loc["c1"]
    assert not row["history_complete"]
    assert row["initiator_type"] is None or row["initiator_type"] != row["initiator_type"]
    assert row["first_response_seconds"] != row["first_response_seconds"]  # NaN
    assert row["message_count"] == 2


def test_last_activity_is_never_before_the_close():
    items = [item("m1", 0, "CUSTOMER"), item("m2", 5, "AGENT")]
    _, convs = build(items, [conversation(closed_minute=50)])
    row = convs.loc["c1"]
    assert row["updated_at"] == row["closed_at"]
    assert row["resolution_seconds"] == 50 * 60


def test_internal_items_are_counted_apart_from_messages():
    items = [
        item("m1", 0, "CUSTOMER"),
        item("n1", 1, "AGENT", kind="CONVERSATION_NOTE"),
        item("m2", 2, "AGENT"),
    ]
    _, convs = build(items, [conversation()])
    row = convs.loc["c1"]
    assert (row["message_count"], row["internal_items"]) == (2, 1)
    assert (row["inbound_messages"], row["outbound_messages"]) == (1, 1)
    assert row["chat_messages"] == 2


def test_merged_contact_resolves_to_the_survivor_everywhere():
    profiles = [
        merged_contact_row("old", "p1", FETCHED),
        contact_row({"id": "p1", "name": "Ada", "emails": [{"original": "ada@x.com"}]}, FETCHED),
    ]
    items = [item("m1", 0, "CUSTOMER", customer="old")]
    msgs, convs = build(items, [conversation(customer="old")], profiles)
    assert msgs.loc[0, "contact_id"] == "p1" and msgs.loc[0, "original_customer_id"] == "old"
    assert convs.loc["c1", "contact_id"] == "p1"
    assert convs.loc["c1", "contact_email"] == "ada@x.com"
    assert convs.loc["c1", "inbox_name"] == "Support"
    assert list(convs.loc["c1", "topic_names"]) == ["Billing"]


def test_deleted_profile_is_kept_as_inactive_not_active():
    profiles = [
        contact_row({"id": "p1", "name": "Ada"}, FETCHED),
        deleted_contact_row("p2", FETCHED),
    ]
    with tempfile.TemporaryDirectory() as root:
        tables = rebuild_tables(Path(root), [], [], profiles)
    people = tables["contacts"].set_index("contact_id")
    assert people.loc["p1", "active"] and not people.loc["p1", "deleted"]
    assert not people.loc["p2", "active"] and people.loc["p2", "deleted"]


def test_no_raw_data_yet_writes_three_empty_tables_with_their_schemas(tmp_path):
    store = TableStore(tmp_path)
    written = {table.name: table.rows for table in rebuild(store, RebuildLimits())}
    assert written == {"conversations": 0, "messages": 0, "contacts": 0}
    for name, schema in SCHEMAS.items():
        assert pq.read_schema(store.analytics(name)).equals(schema), name


def test_later_partition_and_latest_fetch_win_and_merge_chains_resolve(tmp_path):
    store = TableStore(tmp_path)
    earlier, later = FETCHED - timedelta(days=1), FETCHED
    first_copy = item("m1", 0, "CUSTOMER", customer="old")
    second_copy = item("m1", 0, "CUSTOMER", customer="old")
    first_copy["text"], second_copy["text"] = "first copy", "second copy"
    raw = {
        ("messages", "2026-03-07"): [first_copy],
        ("messages", "2026-03-08"): [second_copy, item("m2", 3, "AGENT", customer="old")],
        ("conversations", "2026-03-07"): [conversation(customer="old")],
        ("conversations", "2026-03-08"): [conversation(closed_minute=9, customer="old")],
        ("contacts", "2026-03-07"): [merged_contact_row("old", "mid", earlier),
                                     contact_row({"id": "p1", "name": "Old Ada"}, earlier)],
        ("contacts", "2026-03-08"): [merged_contact_row("mid", "p1", later),
                                     contact_row({"id": "p1", "name": "Ada"}, later)],
    }
    # The conversation's older fetch sits in the later partition: fetched_at decides.
    raw["conversations", "2026-03-08"][0]["fetched_at"] = later
    raw["conversations", "2026-03-07"][0]["fetched_at"] = earlier
    schemas = {"messages": RAW_MESSAGES, "conversations": RAW_CONVERSATIONS,
               "contacts": RAW_CONTACTS}
    for (name, day), rows in raw.items():
        store.write(store.raw_partition(name, day),
                    pa.Table.from_pylist(rows, schema=schemas[name]))
    list(rebuild(store, RebuildLimits()))
    msgs = pq.read_table(store.analytics("messages")).to_pandas().set_index("message_id")
    convs = pq.read_table(store.analytics("conversations")).to_pandas()
    people = pq.read_table(store.analytics("contacts")).to_pandas().set_index("contact_id")

    assert list(msgs.index) == ["m1", "m2"]
    assert msgs.loc["m1", "content"] == "second copy"
    assert (msgs.loc["m1", "contact_id"], msgs.loc["m1", "sender_name"]) == ("p1", "Ada")
    assert len(convs) == 1 and convs.loc[0, "status"] == "CLOSED"
    assert convs.loc[0, "contact_id"] == "p1" and convs.loc[0, "resolution_seconds"] == 9 * 60
    assert list(people.loc["p1", "merged_ids"]) == ["mid", "old"]
    assert people.loc["old", "merged_into"] == "p1" and not people.loc["old", "active"]
    assert (people.loc["p1", "conversation_count"], people.loc["old", "conversation_count"]) \
        == (1, 0)


def test_hashed_tables_hold_the_pseudonymiser_values_of_the_plain_ones(tmp_path):
    hasher = Pseudonymizer("test-salt-0123456789abcdef")
    profiles = [contact_row({"id": "p1", "name": "Ada", "emails": [{"original": "ada@x.com"}],
                             "phones": [{"normalized": "+15550100123"}]}, FETCHED)]
    items = [item("m1", 0, "CUSTOMER"), item("m2", 2, "AGENT")]
    items[0]["text"] = "mail me at ada@x.com or call (555) 010-0123"
    convs = [conversation()]
    plain = rebuild_tables(tmp_path / "plain", items, convs, profiles)
    hashed = rebuild_tables(tmp_path / "hashed", items, convs, profiles, hasher=hasher)

    person, plain_person = hashed["contacts"].iloc[0], plain["contacts"].iloc[0]
    assert person["name"] == hasher.value("Ada") and person["name"].startswith("h:")
    assert list(person["emails"]) == [hasher.value("ada@x.com")]
    assert person["primary_phone"] == hasher.value(plain_person["primary_phone"])
    first = hashed["messages"].set_index("message_id").loc["m1"]
    assert first["content"] == hasher.text(items[0]["text"]) != items[0]["text"]
    assert first["sender_name"] == hasher.value("Ada")
    row, plain_row = hashed["conversations"].iloc[0], plain["conversations"].iloc[0]
    assert row["contact_name"] == hasher.value("Ada")
    assert row["contact_email"] == hasher.value("ada@x.com")
    assert "ada@x.com" not in row["transcript"] and "Ada" not in row["transcript"]
    assert row["transcript"].count("\n") == plain_row["transcript"].count("\n")
    assert row["message_count"] == plain_row["message_count"] == 2


def test_small_memory_limit_buckets_one_thread_and_own_spill_folder_change_nothing(
    tmp_path, monkeypatch
):
    items = [item(f"m{i}", i, "CUSTOMER" if i % 3 else "AGENT",
                  conversation=f"c{i % 4}") for i in range(40)]
    convs = [conversation(f"c{n}", closed_minute=50) for n in range(4)]
    default = rebuild_tables(tmp_path / "a", items, convs, None)
    spill = tmp_path / "spill"
    spill.mkdir()
    # So few bytes per bucket that the 40 items take 7 buckets of conversations.
    monkeypatch.setattr(tables, "BYTES_PER_ITEM", 10**7)
    assert tables.buckets_for(len(items), "64MB") == 7
    tight = rebuild_tables(tmp_path / "b", items, convs, None,
                           limits=RebuildLimits(memory_limit="64MB", threads=1,
                                                temp_directory=str(spill)))
    for name, frame in default.items():
        assert frame.equals(tight[name]), name
    assert default["conversations"]["message_count"].sum() == 40
    assert spill.is_dir(), "a folder the operator gave is left in place"


def test_buckets_grow_with_the_items_and_shrink_with_the_memory_limit():
    assert tables.memory_bytes("512MB") == 512 * 10**6
    assert tables.memory_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert tables.buckets_for(0, "512MB") == 1
    assert tables.buckets_for(900_000, "512MB") > tables.buckets_for(90_000, "512MB") == 1
    assert tables.buckets_for(900_000, "256MB") > tables.buckets_for(900_000, "512MB")
    with pytest.raises(ValueError, match="not a size"):
        tables.memory_bytes("lots")


def test_data_root_turns_its_settings_into_rebuild_limits_and_rejects_a_bad_size():
    limits = DataRoot(rebuild_memory_limit="2GB", rebuild_threads=1).rebuild_limits()
    assert limits == RebuildLimits(memory_limit="2GB", threads=1, temp_directory=None)
    with pytest.raises(ValueError, match="rebuild_memory_limit"):
        DataRoot(rebuild_memory_limit="lots")


def test_too_small_a_memory_limit_fails_naming_the_setting_and_keeps_the_old_tables(tmp_path):
    items = [item(f"m{i}", i, "CUSTOMER") for i in range(5)]
    before = rebuild_tables(tmp_path, items, [conversation()], None)
    with pytest.raises(MemoryError, match="rebuild_memory_limit=1KB"):
        rebuild_tables(tmp_path, items, [conversation()], None,
                       limits=RebuildLimits(memory_limit="1KB"))
    store = TableStore(tmp_path)
    after = pq.read_table(store.analytics("conversations")).to_pandas()
    assert after.equals(before["conversations"])


def test_a_limit_duckdb_refuses_fails_before_writing_and_leaves_no_spill_folder(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(tables.tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    with pytest.raises(duckdb.Error, match="Memory must have a number"):
        list(rebuild(TableStore(tmp_path / "data"), RebuildLimits(memory_limit="a lot")))
    assert list((tmp_path / "temp").iterdir()) == []
    assert not (tmp_path / "data" / "analytics").exists()
