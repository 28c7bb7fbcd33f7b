"""The Dagster assets against the emulator: partitions, reruns, empty days, tables."""

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.emulator import start_emulator
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


def extract(emu, root, day):
    result = materialize(RAW_DAILY, partition_key=day, resources=make_resources(emu, root))
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
    first = extract(emulator, tmp_path, "2026-03-07")
    second = extract(emulator, tmp_path, "2026-03-08")
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
    extract(emulator, tmp_path, "2026-03-07")
    result = materialize([contacts], partition_key="2026-03-07",
                         resources=make_resources(emulator, tmp_path, contact_refresh_hours=0))
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["profiles_reused"].value == 0
    assert meta["gladly_requests"].value == meta["dagster/row_count"].value
