"""The volume budget in the pipeline: deferral, the sensor's stop, the next period, races."""

import threading
from datetime import UTC, datetime

import pyarrow.parquet as pq
from dagster import SkipReason, build_sensor_context, materialize

from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.budget import BudgetLedger, billing_period
from gladly_pipeline.definitions import defs
from gladly_pipeline.emulator import start_emulator
from gladly_pipeline.storage import TableStore

from .conftest import make_resources, small_config

UTC = UTC
RAW = [messages, conversations, contacts]
# Periods start on the 10th, so moving the emulator's clock a day crosses into the next.
BUDGET = {"conversations_per_period": 3, "billing_period_start_day": 10}


def extract(emu, root, day, **settings):
    result = materialize(RAW, partition_key=day, resources=make_resources(emu, root, **settings))
    assert result.success
    return {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}


def export_sensor(emu, root, **settings):
    sensor = next(s for s in defs.sensors if s.name == "gladly_export_jobs")
    with build_sensor_context(resources=make_resources(emu, root, **settings)) as context:
        return sensor(context)


def first_activity(emu, day):
    """Each conversation's first item of the day, as Gladly's data says."""
    first = {}
    for item in emu.data.items:
        cid = item.get("conversationId")
        if cid and item["timestamp"].startswith(day) and cid not in first:
            first[cid] = item["timestamp"]
    return first


def test_spent_budget_defers_the_newest_conversations_and_the_next_period_resumes(tmp_path):
    config = small_config(now=datetime(2026, 3, 9, 12, tzinfo=UTC), future_days=1)
    with start_emulator(config) as emu:
        meta = extract(emu, tmp_path, "2026-03-07", **BUDGET)["raw/messages"]
        assert meta["budget_period"].value == "2026-02-10"
        assert meta["budget_used"].value == 3 and meta["budget_left"].value == 0
        assert meta["deferred_conversations"].value > 0

        # The three conversations with the oldest activity that day are the ones kept.
        expected = sorted(first_activity(emu, "2026-03-07").items(), key=lambda kv: kv[1])
        table = pq.read_table(TableStore(tmp_path).raw_partition("messages", "2026-03-07"))
        kept = set(table.column("conversation_id").drop_null().to_pylist())
        assert kept == {cid for cid, _ in expected[:3]}
        convs = pq.read_table(TableStore(tmp_path).raw_partition("conversations", "2026-03-07"))
        assert set(convs.column("id").to_pylist()) == kept

        # A rerun in the same period costs nothing more and changes nothing.
        again = extract(emu, tmp_path, "2026-03-07", **BUDGET)["raw/messages"]
        assert again["budget_used"].value == 3
        assert again["budget_new_conversations"].value == 0

        skipped = export_sensor(emu, tmp_path, **BUDGET)
        assert isinstance(skipped, SkipReason)
        assert "3 of 3" in skipped.skip_message and "2026-02-10" in skipped.skip_message

        emu.set_now(datetime(2026, 3, 10, 6, tzinfo=UTC))
        resumed = export_sensor(emu, tmp_path, **BUDGET)
        assert resumed.run_requests, "a new period must lift the stop"
        meta = extract(emu, tmp_path, "2026-03-09", **BUDGET)["raw/messages"]
        assert meta["budget_period"].value == "2026-03-10"
        assert meta["budget_used"].value == 3


def test_two_runs_at_once_never_overspend(tmp_path):
    limit = 5
    errors = []

    def run(day):
        try:
            extract(emu, tmp_path, day, conversations_per_period=limit)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with start_emulator(small_config(conversations_per_day=8)) as emu:
        threads = [threading.Thread(target=run, args=(d,)) for d in ("2026-03-06", "2026-03-07")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors
    store = TableStore(tmp_path)
    written = set()
    for day in ("2026-03-06", "2026-03-07"):
        table = pq.read_table(store.raw_partition("messages", day))
        written |= set(table.column("conversation_id").drop_null().to_pylist())
    ledger = BudgetLedger.for_sqlite_file(tmp_path / "_state" / "budget.sqlite3")
    period = billing_period(datetime(2026, 3, 9, 12, tzinfo=UTC))
    counted = ledger.counted(period)
    ledger.close()
    assert len(counted) == limit
    assert written == counted


def test_rerun_in_a_later_period_never_cuts_a_day_already_written(tmp_path):
    config = small_config(now=datetime(2026, 3, 9, 12, tzinfo=UTC), future_days=1)
    with start_emulator(config) as emu:
        extract(emu, tmp_path, "2026-03-07")  # no budget: the whole day
        path = TableStore(tmp_path).raw_partition("messages", "2026-03-07")
        before = pq.read_table(path)
        emu.set_now(datetime(2026, 3, 10, 6, tzinfo=UTC))  # a new period, a tight budget
        meta = extract(emu, tmp_path, "2026-03-07", **BUDGET)["raw/messages"]
    assert meta["deferred_conversations"].value == 0
    assert meta["budget_new_conversations"].value == 0
    assert pq.read_table(path).num_rows == before.num_rows
