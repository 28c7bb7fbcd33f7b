"""The Dagster assets against the emulator: partitions, reruns, empty days, tables."""

from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.emulator import start_emulator
from gladly_pipeline.extract.rest import REUSE_MARGIN
from gladly_pipeline.records import contact_row
from gladly_pipeline.schemas import (
    ANALYTICS_CONTACTS,
    ANALYTICS_CONVERSATIONS,
    ANALYTICS_MESSAGES,
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
)
from gladly_pipeline.storage import TableStore

from .conftest import make_resources, small_config

RAW_DAILY = [messages, conversations, contacts]
REFERENCE = [agents, inboxes, topics]
DAYS = ["2026-03-05", "2026-03-06", "2026-03-07", "2026-03-08"]


def extract(emu, root, day, assets=RAW_DAILY, **settings):
    result = materialize(assets, partition_key=day, resources=make_resources(emu, root, **settings))
    assert result.success
    return result


@pytest.fixture(scope="module")
def extracted(emulator, tmp_path_factory):
    """Four days extracted and the analysis tables built, once for the module."""
    root = tmp_path_factory.mktemp("data")
    for day in DAYS:
        extract(emulator, root, day)
    result = materialize(REFERENCE + [analytics_tables], resources=make_resources(emulator, root))
    assert result.success
    return root


def test_messages_partition_holds_exactly_the_days_items(emulator, extracted):
    store = TableStore(extracted)
    table = store.read(store.raw_partition("messages", "2026-03-07"), RAW_MESSAGES)
    expected = {
        i["id"] for i in emulator.data.items
        if i["timestamp"].startswith("2026-03-07")
        and i["content"]["type"] not in ("TWITTER", "VOICE_AI_MESSAGE")
    }
    assert set(table.column("id").to_pylist()) == expected
    assert table.schema.equals(RAW_MESSAGES)


def test_conversations_and_contacts_cover_the_days_items(extracted):
    store = TableStore(extracted)
    day = "2026-03-07"
    items = store.read(store.raw_partition("messages", day), RAW_MESSAGES)
    convs = store.read(store.raw_partition("conversations", day), RAW_CONVERSATIONS)
    people = store.read(store.raw_partition("contacts", day), RAW_CONTACTS)
    wanted = set(items.column("conversation_id").drop_null().to_pylist())
    assert set(convs.column("id").to_pylist()) == wanted
    customers = set(items.column("customer_id").to_pylist())
    assert customers <= set(people.column("id").to_pylist())


def test_rerun_of_a_partition_gives_identical_rows(emulator, extracted):
    store = TableStore(extracted)
    path = store.raw_partition("messages", "2026-03-06")
    before = pq.read_table(path)
    extract(emulator, extracted, "2026-03-06")
    after = pq.read_table(path)
    assert after.equals(before)


def test_materialization_reports_rows_window_requests_and_path(emulator, tmp_path):
    result = extract(emulator, tmp_path, "2026-03-08")
    events = result.get_asset_materialization_events()
    by_asset = {e.asset_key.to_user_string(): e.materialization.metadata for e in events}
    meta = by_asset["raw/messages"]
    assert meta["dagster/row_count"].value > 0
    assert meta["window_start"].value == "2026-03-08T00:00:00.000Z"
    assert meta["window_end"].value == "2026-03-09T00:00:00.000Z"
    assert meta["gladly_requests"].value >= 2
    assert meta["path"].value.endswith("date=2026-03-08/part-0.parquet")
    assert by_asset["raw/conversations"]["gladly_requests"].value >= 1


def test_empty_day_writes_the_full_schema(tmp_path):
    with start_emulator(small_config(conversations_per_day=0)) as emu:
        extract(emu, tmp_path, "2026-03-07")
    store = TableStore(tmp_path)
    for name, schema in [("messages", RAW_MESSAGES), ("conversations", RAW_CONVERSATIONS),
                         ("contacts", RAW_CONTACTS)]:
        table = pq.read_table(store.raw_partition(name, "2026-03-07"))
        assert table.num_rows == 0
        assert table.schema.equals(schema)


def test_all_null_column_keeps_its_declared_type(extracted):
    # No item in the emulator's data has a top-level sessionId in exports: the column is
    # all null, yet it must stay a string column so days read back as one dataset.
    store = TableStore(extracted)
    table = pq.read_table(store.raw_partition("messages", "2026-03-05"))
    assert table.schema.field("responder_type").type == RAW_MESSAGES.field("responder_type").type
    assert table.schema.field("recording_duration_seconds").type == "int64"


def test_expired_export_file_is_reported_and_the_day_fails_clearly(tmp_path):
    # The three newest jobs are listed as COMPLETED but their files are gone; 03-06 is
    # beyond the Events API's 24 hours, so nothing can stand in for its export.
    with start_emulator(small_config(missing_file_jobs=3)) as emu:
        result = materialize(
            [messages], partition_key="2026-03-06",
            resources=make_resources(emu, tmp_path), raise_on_error=False,
        )
        gone = [j["id"] for j in emu.data.jobs if j["id"] in emu.data.files_gone]
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "is gone (expired or deleted)" in failure and "Waiting will not help" in failure
    assert any(job_id in failure for job_id in gone)
    assert not TableStore(tmp_path).raw_partition("messages", "2026-03-06").exists()


def test_today_is_extracted_from_events_before_its_export_exists(emulator, tmp_path):
    result = extract(emulator, tmp_path, "2026-03-09")
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}["raw/messages"]
    assert meta["source"].value == "events"
    table = pq.read_table(TableStore(tmp_path).raw_partition("messages", "2026-03-09"))
    expected = {
        i["id"] for i in emulator.data.items
        if i["timestamp"].startswith("2026-03-09") and i.get("conversationId")
        and i["content"]["type"] not in ("TWITTER", "VOICE_AI_MESSAGE")
    }
    assert expected and set(table.column("id").to_pylist()) == expected


def test_raw_days_read_back_as_one_dataset_with_one_schema(extracted):
    for name, schema in [("messages", RAW_MESSAGES), ("conversations", RAW_CONVERSATIONS),
                         ("contacts", RAW_CONTACTS)]:
        dataset = ds.dataset(extracted / "raw" / name, format="parquet", partitioning="hive")
        table = dataset.to_table()
        assert sorted(set(table.column("date").to_pylist())) == DAYS
        assert table.schema.remove(table.schema.get_field_index("date")).equals(schema)


def test_duckdb_reads_raw_and_analytics_tables(extracted):
    con = duckdb.connect()
    raw = con.execute(
        "SELECT count(*), count(DISTINCT date) FROM read_parquet(?, hive_partitioning=true)",
        [str(extracted / "raw" / "messages" / "*" / "*.parquet")],
    ).fetchone()
    assert raw[0] > 0 and raw[1] == len(DAYS)
    for name in ("messages", "conversations", "contacts"):
        path = str(extracted / "analytics" / name / "*.parquet")
        assert con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0] > 0


def test_analytics_tables_have_declared_schemas(extracted):
    store = TableStore(extracted)
    for name, schema in [("messages", ANALYTICS_MESSAGES),
                         ("conversations", ANALYTICS_CONVERSATIONS),
                         ("contacts", ANALYTICS_CONTACTS)]:
        assert pq.read_schema(store.analytics(name)).equals(schema), name


def test_analytics_conversations_are_named_counted_and_transcribed(emulator, extracted):
    table = pq.read_table(TableStore(extracted).analytics("conversations")).to_pandas()
    assert table["conversation_id"].is_unique
    row = table.sort_values("message_count").iloc[-1]
    conv = emulator.data.conversations[row["conversation_id"]]
    assert row["status"] == conv["status"]
    inbox_names = {i["id"]: i["name"] for i in emulator.data.inboxes}
    assert row["inbox_name"] == inbox_names[conv["inboxId"]]
    assert row["message_count"] == (
        row["inbound_messages"] + row["outbound_messages"]
        + _undirected(extracted, row["conversation_id"])
    )
    assert row["transcript"].count("\n") + 1 >= row["inbound_messages"]
    assert table["inbound_messages"].sum() > 0 and table["outbound_messages"].sum() > 0
    answered = table["first_response_seconds"].dropna()
    assert len(answered) > 0 and (answered >= 0).all()


def test_analytics_contacts_mark_merged_profiles_and_resolve_messages(emulator, extracted):
    store = TableStore(extracted)
    people = pq.read_table(store.analytics("contacts")).to_pandas()
    merged = people[people["merged_into"].notna()]
    if merged.empty:
        pytest.skip("this seed's extracted days reference no merged profile")
    assert not merged["active"].any()
    msgs = pq.read_table(store.analytics("messages")).to_pandas()
    old_ids = set(merged["contact_id"])
    assert not set(msgs["contact_id"].dropna()) & old_ids


def _undirected(root, conversation_id):
    msgs = pq.read_table(TableStore(root).analytics("messages")).to_pandas()
    mine = msgs[msgs["conversation_id"] == conversation_id]
    return int(mine["direction"].isna().sum())


def test_profiles_fetched_for_one_day_are_reused_for_the_next(emulator, tmp_path):
    first = extract(emulator, tmp_path, "2026-03-07", full_contact_profiles=True)
    second = extract(emulator, tmp_path, "2026-03-08", full_contact_profiles=True)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in second.get_asset_materialization_events()}["raw/contacts"]
    store = TableStore(tmp_path)
    day7 = set(store.read(store.raw_partition("contacts", "2026-03-07"), RAW_CONTACTS)
               .column("id").to_pylist())
    day8 = store.read(store.raw_partition("contacts", "2026-03-08"), RAW_CONTACTS)
    shared = day7 & set(day8.column("id").to_pylist())
    assert shared, "the emulator's customers come back on later days"
    assert meta["profiles_reused"].value == len(shared)
    assert meta["gladly_requests"].value == day8.num_rows - len(shared)
    assert first.success


def test_profile_cache_can_be_turned_off(emulator, tmp_path):
    extract(emulator, tmp_path, "2026-03-07", full_contact_profiles=True)
    settings = dict(contact_refresh_hours=0, full_contact_profiles=True)
    result = materialize([contacts], partition_key="2026-03-07",
                         resources=make_resources(emulator, tmp_path, **settings))
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["profiles_reused"].value == 0
    assert meta["gladly_requests"].value == meta["dagster/row_count"].value


# ---------------------------------------------------------------- requests per conversation


PROFILE_PATH = "/api/v1/customer-profiles/"
CONVERSATION_PATH = "/api/v1/conversations/"
LIST_PATH = "/api/v1/customers/"


def requests_of(emu, assets, day, root, **settings):
    """The paths one materialization asked the emulator for, and its metadata by asset."""
    before = len(emu.request_log)
    result = extract(emu, root, day, assets, **settings)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    return [path for _, path, _ in emu.request_log[before:]], meta


def read_raw(root, table, day, schema):
    store = TableStore(root)
    return {row["id"]: row for row in store.read(store.raw_partition(table, day), schema)
            .to_pylist()}


def test_exported_day_reads_profiles_from_customers_file_as_get_would_give_them(
    emulator, tmp_path
):
    day = "2026-03-07"
    extract(emulator, tmp_path, day, [messages, conversations])
    paths, meta = requests_of(emulator, [contacts], day, tmp_path)
    rows = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    files = [p for p in paths if p.endswith("/files/customers.jsonl")]
    fetched = [p[len(PROFILE_PATH):] for p in paths if p.startswith(PROFILE_PATH)]
    assert len(files) >= 1 and len(paths) == 1 + len(files) + len(fetched)
    assert meta["raw/contacts"]["profiles_from_export"].value == len(rows) - len(fetched)
    from_file = [row for cid, row in rows.items() if cid not in fetched]
    assert from_file
    for row in from_file:
        expected = contact_row(emulator.data.customers[row["id"]], row["fetched_at"])
        shared = ("name", "address", "emails", "primary_email", "phones", "primary_phone",
                  "external_customer_id", "external_customer_ids_json", "merged_into",
                  "deleted")
        assert {k: row[k] for k in shared} == {k: expected[k] for k in shared}
        assert row["custom_attributes_json"] is row["created_at"] is row["updated_at"] is None
    # Only merges cost requests: the merged-away id the items still name (its conversation
    # names the survivor) and the survivor, which the file does not list.
    merges = emulator.data.merged
    assert all(cid in merges or cid in merges.values() for cid in fetched)
    assert all(row["id"] not in merges for row in from_file)


def test_full_profiles_setting_fetches_every_profile_with_get(emulator, tmp_path):
    day = "2026-03-07"
    extract(emulator, tmp_path, day, [messages, conversations])
    paths, meta = requests_of(emulator, [contacts], day, tmp_path,
                              full_contact_profiles=True, contact_refresh_hours=0)
    rows = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    assert not any("customers.jsonl" in p for p in paths)
    assert len(paths) == len(rows) == meta["raw/contacts"]["gladly_requests"].value
    live = [row for row in rows.values() if not row["merged_into"] and not row["deleted"]]
    assert live and all(row["created_at"] is not None for row in live)
    assert any(row["custom_attributes_json"] for row in live)


def test_customer_merged_after_the_export_lands_as_a_merged_row(tmp_path):
    day = "2026-03-07"
    with start_emulator(small_config()) as emu:
        extract(emu, tmp_path, day, [messages])
        items = TableStore(tmp_path).read(
            TableStore(tmp_path).raw_partition("messages", day), RAW_MESSAGES)
        named = sorted(set(items.column("customer_id").to_pylist()) & set(emu.data.customers))
        old, survivor = named[0], next(c for c in emu.data.customers if c not in named)
        emu.merge_customer(old, survivor)
        paths, meta = requests_of(emu, [conversations, contacts], day, tmp_path)
    rows = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    assert rows[old]["merged_into"] == survivor and rows[old]["deleted"] is False
    assert rows[survivor]["merged_into"] is None and rows[survivor]["name"]
    # The export still lists `old`; its conversation naming `survivor` is what gave it away.
    assert PROFILE_PATH + old in paths
    assert meta["raw/contacts"]["customers_moved_since_export"].value >= 1


def test_conversation_fetched_after_its_last_item_is_reused_and_one_with_later_items_is_not(
    emulator, tmp_path
):
    extract(emulator, tmp_path, "2026-03-07", [messages, conversations])
    extract(emulator, tmp_path, "2026-03-08", [messages])
    store = TableStore(tmp_path)
    items = store.read(store.raw_partition("messages", "2026-03-08"), RAW_MESSAGES).to_pylist()
    last = {}
    for item in items:
        ended = max(t for t in (item["timestamp"], item["completed_at"]) if t is not None)
        last[item["conversation_id"]] = max(last.get(item["conversation_id"], ended), ended)
    earlier = store.raw_partition("conversations", "2026-03-07")
    stored = store.read(earlier, RAW_CONVERSATIONS)
    carried = sorted(set(last) & set(stored.column("id").to_pylist()), key=last.get)
    assert len(carried) >= 2, "the emulator's conversations span days"
    # As if 03-07 had been extracted on 03-08 between the carried conversations' last items.
    fetched = last[carried[0]] + (last[carried[-1]] - last[carried[0]]) / 2
    assert last[carried[-1]] - last[carried[0]] > 2 * REUSE_MARGIN
    column = pa.array([fetched] * stored.num_rows, RAW_CONVERSATIONS.field("fetched_at").type)
    store.write(earlier, stored.set_column(stored.schema.get_field_index("fetched_at"),
                                           "fetched_at", column))
    quiet = {cid for cid in carried if last[cid] < fetched - REUSE_MARGIN}
    assert quiet and quiet != set(carried)

    paths, meta = requests_of(emulator, [conversations], "2026-03-08", tmp_path)
    rows = read_raw(tmp_path, "conversations", "2026-03-08", RAW_CONVERSATIONS)
    assert set(rows) == set(last)
    assert {cid for cid, row in rows.items() if row["fetched_at"] == fetched} == quiet
    assert not any(p == CONVERSATION_PATH + cid for cid in quiet for p in paths)
    # Every other conversation was asked for: alone, or in its customer's list.
    owners = {item["conversation_id"]: item["customer_id"] for item in items}
    asked = {p[len(CONVERSATION_PATH):] for p in paths if p.startswith(CONVERSATION_PATH)}
    listed = {p[len(LIST_PATH):].split("/")[0] for p in paths if p.startswith(LIST_PATH)}
    assert all(cid in asked or owners[cid] in listed for cid in set(last) - quiet)
    assert len(paths) == len(asked) + len(listed) == meta["raw/conversations"][
        "gladly_requests"].value
    assert meta["raw/conversations"]["conversations_reused"].value == len(quiet)


def test_daily_assets_do_not_read_item_texts(emulator, tmp_path, monkeypatch):
    extract(emulator, tmp_path, "2026-03-07", [messages])
    read = []
    original = TableStore.read

    def recording(self, path, schema):
        read.append((path.parent.parent.name, schema.names))
        return original(self, path, schema)

    monkeypatch.setattr(TableStore, "read", recording)
    extract(emulator, tmp_path, "2026-03-07", [conversations, contacts])
    message_reads = [names for table, names in read if table == "messages"]
    assert len(message_reads) == 2
    assert all("raw_json" not in names and "text" not in names for names in message_reads)


def test_day_not_exported_yet_fetches_profiles_and_sees_a_deletion(tmp_path):
    today = "2026-03-09"
    with start_emulator(small_config()) as emu:
        extract(emu, tmp_path, today, [messages, conversations])
        items = TableStore(tmp_path).read(
            TableStore(tmp_path).raw_partition("messages", today), RAW_MESSAGES)
        named = sorted(set(items.column("customer_id").to_pylist()) & set(emu.data.customers))
        emu.delete_customer(named[0])
        paths, meta = requests_of(emu, [contacts], today, tmp_path)
    rows = read_raw(tmp_path, "contacts", today, RAW_CONTACTS)
    assert not any("customers.jsonl" in p for p in paths)
    assert meta["raw/contacts"]["profiles_from_export"].value == 0
    assert rows[named[0]]["deleted"] is True
    assert len([p for p in paths if p.startswith(PROFILE_PATH)]) == len(rows)


# ---------------------------------------------------------------- newest knowledge wins


def _contacts_meta(result):
    return {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}["raw/contacts"]


def test_rerun_from_the_export_keeps_newer_merges_deletions_and_full_profiles(tmp_path):
    """The reviewer's case: a default rerun once put the export's older rows back."""
    day = "2026-03-07"
    with start_emulator(small_config(conversations_per_day=16)) as emu:
        extract(emu, tmp_path, day)
        first = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
        named = sorted(cid for cid, row in first.items()
                       if cid in emu.data.customers and not row["merged_into"])
        merged, deleted = named[0], named[1]
        survivor = next(c for c in emu.data.customers if c not in first)
        emu.merge_customer(merged, survivor)
        emu.delete_customer(deleted)
        extract(emu, tmp_path, day, [contacts], full_contact_profiles=True)
        full = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
        assert full[merged]["merged_into"] == survivor and full[deleted]["deleted"] is True
        attributes = {cid for cid, row in full.items() if row["custom_attributes_json"]}
        assert len(attributes) > 2
        rerun = extract(emu, tmp_path, day, [contacts])
        result = materialize(REFERENCE + [analytics_tables],
                             resources=make_resources(emu, tmp_path))
        assert result.success
    rows = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    # Nothing the full rerun learned was traded for the export's older rows.
    assert rows[merged] == full[merged] and rows[deleted] == full[deleted]
    assert {cid for cid, row in rows.items() if row["custom_attributes_json"]} == attributes
    assert all(row["created_at"] is not None for row in rows.values()
               if not row["merged_into"] and not row["deleted"])
    meta = _contacts_meta(rerun)
    assert meta["profiles_reused"].value >= len(attributes)
    people = pq.read_table(TableStore(tmp_path).analytics("contacts")).to_pandas()
    people = people.set_index("contact_id")
    assert not people.loc[merged, "active"] and people.loc[merged, "merged_into"] == survivor
    assert not people.loc[deleted, "active"] and people.loc[deleted, "deleted"]


def test_profiles_fetched_intraday_keep_their_custom_attributes_when_the_export_rebuilds(
    emulator, tmp_path
):
    day = "2026-03-07"
    extract(emulator, tmp_path, day, [messages, conversations])
    # The intraday path: the day is not exported yet, so every profile came from GET ...
    extract(emulator, tmp_path, day, [contacts], full_contact_profiles=True)
    store = TableStore(tmp_path)
    path = store.raw_partition("contacts", day)
    table = store.read(path, RAW_CONTACTS)
    # ... during the day, long before the export was written, and beyond the refresh
    # window of 36 hours: only the day's own partition still remembers those profiles.
    intraday = pa.scalar(datetime(2026, 3, 7, 23, 0, tzinfo=UTC),
                         RAW_CONTACTS.field("fetched_at").type)
    column = pa.array([intraday.as_py()] * table.num_rows, intraday.type)
    store.write(path, table.set_column(table.schema.get_field_index("fetched_at"),
                                       "fetched_at", column))
    before = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    rebuilt = extract(emulator, tmp_path, day, [contacts])
    rows = read_raw(tmp_path, "contacts", day, RAW_CONTACTS)
    meta = _contacts_meta(rebuilt)
    assert meta["profiles_from_export"].value > 0
    from_export = [cid for cid, row in rows.items() if row["fetched_at"] > intraday.as_py()
                   and before[cid]["created_at"] is not None]
    assert from_export, "the export is newer than the intraday fetch"
    for cid in from_export:
        row, earlier = rows[cid], before[cid]
        # The export speaks for what its file holds; GET's columns are kept, not dropped.
        for column in ("custom_attributes_json", "created_at", "updated_at", "name", "emails"):
            assert row[column] == earlier[column], (cid, column)
    assert sum(1 for cid in from_export if rows[cid]["custom_attributes_json"]) > 2
