"""Analysis-ready tables: messages, conversations and contacts joined and named."""

from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from ..resources import DataRoot
from ..tables import rebuild

GROUP = "gladly_analytics"
# Rebuilt after raw partitions land, once no raw run is still going (a backfill of many
# days leads to one rebuild at its end, not one per day).
AFTER_RAW_UPDATES = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after new raw data")
# The tables are rebuilt after every raw update: intraday refreshes through the day and the
# export a few hours after midnight UTC. A rebuild older than a day and a few hours means
# the daily path has stalled; the UI shows the asset as late (dagster.yaml enables
# freshness evaluation). The `fresh_messages` check looks at the data itself instead.
FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
)
RAW = [AssetKey(["raw", name]) for name in
       ("messages", "conversations", "contacts", "agents", "inboxes", "topics")]


@multi_asset(
    group_name=GROUP,
    specs=[
        AssetSpec(
            ["analytics", "messages"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            freshness_policy=FRESHNESS,
            description=(
                "One row per conversation item across all extracted days: type, channel, "
                "direction (inbound, outbound, internal), sender with name, content, "
                "subject, from and to, and the conversation and contact it belongs to "
                "(merged contacts resolved to the surviving profile)."
            ),
        ),
        AssetSpec(
            ["analytics", "conversations"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            freshness_policy=FRESHNESS,
            description=(
                "One row per conversation, latest known state: status, created, last "
                "activity and closed times, contact, inbox, agent and topic names, who "
                "started it, message counts by direction and channel, first agent "
                "response and resolution times in seconds, and the whole transcript in "
                "order. `history_complete` is false when the conversation began before "
                "the first extracted day; its start-based fields are then empty."
            ),
        ),
        AssetSpec(
            ["analytics", "contacts"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            freshness_policy=FRESHNESS,
            description=(
                "One row per customer profile, latest version: name, primary email and "
                "phone, custom attributes, whether it is active or was merged into another "
                "profile, and its first and last conversation."
            ),
        ),
    ],
)
def analytics_tables(context: AssetExecutionContext, data_root: DataRoot):
    store = data_root.store()
    limits = data_root.rebuild_limits()
    hasher = data_root.pseudonymizer()
    context.log.info(
        "Rebuilding the analytics tables from %d raw partitions in DuckDB (memory limit %s, "
        "threads %s, spilling to %s)",
        sum(len(store.raw_files(table)) for table in ("messages", "conversations", "contacts")),
        limits.memory_limit, limits.threads or "default",
        limits.temp_directory or "a temporary folder",
    )
    for table in rebuild(store, limits, hasher):
        path = store.analytics(table.name)
        context.log.info("Wrote %d rows to analytics/%s in %.1f s",
                         table.rows, table.name, table.seconds)
        yield MaterializeResult(
            asset_key=AssetKey(["analytics", table.name]),
            metadata={
                "dagster/row_count": table.rows,
                "path": MetadataValue.path(store.uri(path)),
                "seconds": table.seconds,
                "personal_data_hashed": hasher is not None,
                **table.metadata,
            },
        )
