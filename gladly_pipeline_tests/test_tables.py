"""The analysis-ready joins on hand-made raw rows: timings, history, merges, names."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gladly_pipeline.records import (
    contact_row,
    conversation_row,
    deleted_contact_row,
    merged_contact_row,
    message_row,
)
from gladly_pipeline.privacy import Pseudonymizer
from gladly_pipeline.schemas import (
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
    RAW_REFERENCE,
)
from gladly_pipeline.storage import TableStore
from gladly_pipeline.tables import RebuildLimits, rebuild

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
                   limits=RebuildLimits(), hasher=None) -> dict:
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
