"""Downstream tables follow new raw partitions without anyone clicking."""

from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions, materialize

from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.definitions import defs

from .conftest import make_resources

ANALYTICS = [AssetKey(["analytics", name]) for name in ("messages", "conversations", "contacts")]
REFERENCE = [AssetKey(["raw", name]) for name in ("agents", "inboxes", "topics")]


def requested(result, key):
    return result.get_num_requested(key)


def test_new_raw_day_requests_an_analytics_rebuild_once(emulator, tmp_path):
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        # Reference lists are fetched when missing; analytics wait for raw data.
        assert all(requested(first, key) == 1 for key in REFERENCE)
        assert all(requested(first, key) == 0 for key in ANALYTICS)

        result = materialize([messages, conversations, contacts], partition_key="2026-03-07",
                             resources=make_resources(emulator, tmp_path), instance=instance)
        assert result.success
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert all(requested(after, key) == 1 for key in ANALYTICS)

        # Handled: the next tick with no new raw data asks for nothing more.
        quiet = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert all(requested(quiet, key) == 0 for key in ANALYTICS)
