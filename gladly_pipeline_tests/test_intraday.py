"""The intraday (Events API) path and the export path agree on the same day's rows."""

from datetime import UTC, datetime

import pyarrow.parquet as pq
from dagster import materialize

from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.emulator import start_emulator
from gladly_pipeline.storage import TableStore

from .conftest import make_resources, small_config

UTC = UTC
DAY = "2026-03-08"
# Where and how an item was fetched differs by path; what it says must not.
PROVENANCE = {"raw_json", "source_job_id"}


def extract(emu, root):
    result = materialize([messages, conversations, contacts], partition_key=DAY,
                         resources=make_resources(emu, root))
    assert result.success
    return {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}


def snapshot(root, table):
    rows = pq.read_table(TableStore(root).raw_partition(table, DAY)).to_pylist()
    return {r["id"]: {k: v for k, v in r.items() if k not in PROVENANCE | {"fetched_at"}}
            for r in rows}


def test_events_refreshes_then_export_rebuild_give_the_same_rows(tmp_path):
    config = small_config(now=datetime(2026, 3, 8, 23, 30, tzinfo=UTC), future_days=1,
                          conversations_per_day=10)
    with start_emulator(config) as emu:
        # Late in the day: events reach back over the whole day so far.
        assert extract(emu, tmp_path)["raw/messages"]["source"].value == "events"
        # Just after midnight the export is not out yet; events cover the last half hour.
        emu.set_now(datetime(2026, 3, 9, 0, 30, tzinfo=UTC))
        assert extract(emu, tmp_path)["raw/messages"]["source"].value == "events"
        intraday = {name: snapshot(tmp_path, name) for name in ("messages", "conversations")}

        emu.set_now(datetime(2026, 3, 9, 6, 0, tzinfo=UTC))
        assert extract(emu, tmp_path)["raw/messages"]["source"].value == "export"
        exported = {name: snapshot(tmp_path, name) for name in ("messages", "conversations")}

    # Items outside any conversation (API-made customer activities) have no event, so
    # only the export brings them; everything else must match row for row.
    in_conversations = {k: v for k, v in exported["messages"].items() if v["conversation_id"]}
    assert len(in_conversations) > 20
    assert intraday["messages"] == in_conversations
    assert intraday["conversations"].keys() == exported["conversations"].keys()
