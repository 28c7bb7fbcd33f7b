"""Asset checks: they pass on a real extraction and each fails on the fault it looks for."""

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from dagster import AssetCheckSeverity, AssetSelection, AssetSpec, materialize

from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.checks import build_checks
from gladly_pipeline.definitions import defs
from gladly_pipeline.resources import DataRoot
from gladly_pipeline.schemas import (
    ANALYTICS_CONTACTS,
    ANALYTICS_CONVERSATIONS,
    ANALYTICS_MESSAGES,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
)
from gladly_pipeline.storage import TableStore

from .conftest import NOW, make_resources

DAYS = ["2026-03-06", "2026-03-07", "2026-03-08"]
ASSETS = [messages, conversations, contacts, agents, inboxes, topics, analytics_tables]
# The emulator's clock, so freshness and "future" are judged as on the day it serves.
CHECKS = build_checks(clock=lambda: NOW)
NAMES = {key.to_user_string() for group in CHECKS for key in group.check_keys}


def run_checks(root) -> dict:
    """Runs every check on the tables under `root`: {"asset:check": evaluation}."""
    # The checked tables as plain specs: nothing here can materialize them, only check them.
    tables = [AssetSpec(key) for key in {key.asset_key for group in CHECKS
                                         for key in group.check_keys}]
    result = materialize([*tables, *CHECKS], selection=AssetSelection.all_asset_checks(),
                         resources={"data_root": DataRoot(path=str(root))})
    assert result.success
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def failed(results: dict) -> set:
    return {name for name, result in results.items() if not result.passed}


# A real extraction from the emulator.


@pytest.fixture(scope="module")
def extracted(emulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(emulator, root)
    for day in DAYS:
        assert materialize(ASSETS[:3], partition_key=day, resources=resources).success
    assert materialize(ASSETS[3:], resources=resources).success
    return root


def test_every_check_passes_on_a_real_extraction(emulator, extracted):
    result = materialize(
        [*ASSETS, *CHECKS],
        selection=AssetSelection.all_asset_checks(),
        resources=make_resources(emulator, extracted),
    )
    assert result.success
    evaluations = {e.asset_check_key.to_user_string(): e for e in
                   result.get_asset_check_evaluations()}
    assert set(evaluations) == NAMES
    assert {key for key, e in evaluations.items() if not e.passed} == set()
    assert not result.get_asset_materialization_events()  # checks only, nothing rebuilt
    assert evaluations["raw/messages:unique_ids"].metadata["partitions"].value == len(DAYS)
    assert evaluations["analytics/messages:conversations_exist"].metadata[
        "references"].value > 0


def test_jobs_of_the_definitions_run_the_checks_of_their_assets():
    nodes = {name: {node.name for node in defs.resolve_job_def(name).nodes}
             for name in ("extract_day", "refresh_tables")}
    assert "raw_table_checks" in nodes["extract_day"]
    assert "analytics_table_checks" in nodes["refresh_tables"]


def test_one_day_of_raw_messages_runs_only_its_own_checks(emulator, tmp_path):
    result = materialize([*ASSETS, *CHECKS], partition_key="2026-03-08",
                         selection=AssetSelection.assets(messages),
                         resources=make_resources(emulator, tmp_path))
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key.to_user_string() for e in evaluations} == {
        "raw/messages:unique_ids",
        "raw/messages:timestamps_in_partition_day",
        "raw/messages:no_future_timestamps",
    }
    assert all(e.passed for e in evaluations)


def test_check_metadata_is_numbers_never_record_contents(extracted):
    for name, result in run_checks(extracted).items():
        assert result.metadata, name
        for key, entry in result.metadata.items():
            kind = type(entry.value).__name__
            assert kind in ("int", "float"), f"{name}: {key} is a {kind}"


# Crafted tables, each with one fault. The baseline passes every check.


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text + "+00:00")


def item(item_id, conversation_id, at, **extra):
    return {"id": item_id, "conversation_id": conversation_id, "timestamp": ts(at),
            "raw_json": "{}", **extra}


def conversation(conversation_id):
    return {"id": conversation_id, "fetched_at": NOW, "raw_json": "{}"}


def message(message_id, conversation_id, at):
    return {"message_id": message_id, "conversation_id": conversation_id, "created_at": ts(at)}


def baseline() -> dict:
    """{(zone, table, day or None): rows} of a small consistent account."""
    return {
        ("raw", "messages", "2026-03-07"): [
            item("m1", "c1", "2026-03-07T00:00:00"),
            item("m2", "c1", "2026-03-07T23:59:59.999999"),
        ],
        ("raw", "messages", "2026-03-08"): [item("m3", "c2", "2026-03-08T20:00:00")],
        ("raw", "conversations", "2026-03-07"): [conversation("c1")],
        ("raw", "conversations", "2026-03-08"): [conversation("c1"), conversation("c2")],
        ("analytics", "messages", None): [
            message("m1", "c1", "2026-03-07T00:00:00"),
            message("m2", "c1", "2026-03-07T23:59:59"),
            message("m3", "c2", "2026-03-08T20:00:00"),
            message("m4", None, "2026-03-08T21:00:00"),  # an activity outside conversations
        ],
        ("analytics", "conversations", None): [
            {"conversation_id": "c1", "contact_id": "p1"},
            {"conversation_id": "c2", "contact_id": "p2"},
        ],
        ("analytics", "contacts", None): [{"contact_id": "p1"}, {"contact_id": "p2"}],
    }


SCHEMAS = {
    ("raw", "messages"): RAW_MESSAGES,
    ("raw", "conversations"): RAW_CONVERSATIONS,
    ("analytics", "messages"): ANALYTICS_MESSAGES,
    ("analytics", "conversations"): ANALYTICS_CONVERSATIONS,
    ("analytics", "contacts"): ANALYTICS_CONTACTS,
}


def write_tables(root, tables: dict) -> None:
    store = TableStore(root)
    for (zone, name, day), rows in tables.items():
        path = store.raw_partition(name, day) if zone == "raw" else store.analytics(name)
        store.write(path, pa.Table.from_pylist(rows, schema=SCHEMAS[zone, name]))


def checks_with(root, **faults) -> dict:
    """Writes the baseline with some tables replaced by faulty rows, then runs every check."""
    tables = baseline()
    for key, rows in faults.items():
        zone, name, *day = key.split("__")
        tables[zone, name, day[0].replace("_", "-") if day else None] = rows
    write_tables(root, tables)
    return run_checks(root)


def assert_fails_alone(results: dict, name: str, severity=AssetCheckSeverity.ERROR):
    assert failed(results) == {name}
    assert results[name].severity == severity
    return {key: entry.value for key, entry in results[name].metadata.items()}


def test_baseline_fixture_passes_every_check(tmp_path):
    results = checks_with(tmp_path)
    assert failed(results) == set()
    assert set(results) == NAMES


def test_dangling_message_fails_the_conversation_reference(tmp_path):
    rows = baseline()["analytics", "messages", None] + [
        message("m5", "c-gone", "2026-03-08T22:00:00")
    ]
    results = checks_with(tmp_path, analytics__messages=rows)
    meta = assert_fails_alone(results, "analytics/messages:conversations_exist")
    assert meta == {"dangling": 1, "references": 4}


def test_conversation_of_an_unknown_contact_fails_the_contact_reference(tmp_path):
    rows = [{"conversation_id": "c1", "contact_id": "p1"},
            {"conversation_id": "c2", "contact_id": "p-gone"}]
    results = checks_with(tmp_path, analytics__conversations=rows)
    assert assert_fails_alone(results, "analytics/conversations:contacts_exist")["dangling"] == 1


def test_item_id_repeated_on_another_day_fails_unique_ids(tmp_path):
    rows = [item("m3", "c2", "2026-03-08T20:00:00"), item("m1", "c1", "2026-03-08T21:00:00")]
    results = checks_with(tmp_path, raw__messages__2026_03_08=rows)
    meta = assert_fails_alone(results, "raw/messages:unique_ids")
    assert (meta["duplicates_across_days"], meta["duplicates_within_day"]) == (1, 0)


def test_item_id_twice_in_one_day_fails_unique_ids(tmp_path):
    rows = [item("m3", "c2", "2026-03-08T20:00:00"), item("m3", "c2", "2026-03-08T20:00:00")]
    results = checks_with(tmp_path, raw__messages__2026_03_08=rows)
    meta = assert_fails_alone(results, "raw/messages:unique_ids")
    assert (meta["duplicates_across_days"], meta["duplicates_within_day"]) == (0, 1)


def test_conversation_twice_in_one_day_fails_but_on_two_days_passes(tmp_path):
    rows = [conversation("c1"), conversation("c2"), conversation("c2")]
    results = checks_with(tmp_path, raw__conversations__2026_03_08=rows)
    assert assert_fails_alone(results, "raw/conversations:unique_ids_per_day")["duplicates"] == 1


@pytest.mark.parametrize("table,column", [
    ("messages", "message_id"), ("conversations", "conversation_id"), ("contacts", "contact_id"),
])
def test_duplicate_analytics_key_fails_its_unique_check(tmp_path, table, column):
    rows = baseline()["analytics", table, None]
    results = checks_with(tmp_path, **{f"analytics__{table}": rows + rows[:1]})
    meta = assert_fails_alone(results, f"analytics/{table}:unique_{column}s")
    assert meta == {"duplicates": 1, "rows": len(rows) + 1}


def test_item_stamped_at_the_next_midnight_is_outside_its_partition_day(tmp_path):
    rows = baseline()["raw", "messages", "2026-03-07"] + [
        item("m9", "c1", "2026-03-08T00:00:00")  # windows are half-open: this is 03-08
    ]
    results = checks_with(tmp_path, raw__messages__2026_03_07=rows)
    meta = assert_fails_alone(results, "raw/messages:timestamps_in_partition_day")
    assert meta == {"outside_window": 1}


def test_future_timestamp_fails_beyond_the_clock_skew_allowance(tmp_path):
    soon, later = NOW + timedelta(minutes=2), NOW + timedelta(hours=1)
    today = [
        {**item("m7", "c2", "2026-03-09T11:00:00"), "timestamp": soon},
        {**item("m8", "c2", "2026-03-09T11:30:00"), "completed_at": later},
    ]
    results = checks_with(tmp_path, raw__messages__2026_03_09=today)
    meta = assert_fails_alone(results, "raw/messages:no_future_timestamps")
    assert meta == {"future_timestamps": 1}


def test_stale_analytics_messages_warn_as_late(tmp_path):
    rows = [message("m1", "c1", "2026-03-07T00:00:00"), message("m2", "c1", "2026-03-08T05:00:00")]
    results = checks_with(tmp_path, analytics__messages=rows)
    meta = assert_fails_alone(
        results, "analytics/messages:fresh_messages", severity=AssetCheckSeverity.WARN
    )
    assert meta == {"newest_age_hours": 31.0, "max_age_hours": 30.0}


def test_fresh_analytics_within_the_limit_pass(tmp_path):
    rows = [message("m2", "c1", "2026-03-08T07:00:00")]  # 29 hours before NOW
    results = checks_with(tmp_path, analytics__messages=rows)
    assert results["analytics/messages:fresh_messages"].passed


def test_tables_not_materialized_yet_fail_with_a_warning_instead_of_crashing(tmp_path):
    results = run_checks(tmp_path)
    assert failed(results) == NAMES
    for result in results.values():
        assert result.severity == AssetCheckSeverity.WARN
        assert "not materialized yet" in result.description
        assert result.metadata["missing_tables"].value == 1
