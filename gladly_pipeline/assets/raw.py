"""Raw extraction assets: one daily UTC partition per day of Gladly activity."""

from datetime import datetime

import pyarrow.compute as pc
from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from ..client import GladlyClient
from ..extract import (
    ExportNotAvailable,
    extract_messages,
    fetch_contacts,
    fetch_conversations,
    window_metadata,
)
from ..resources import DataRoot, GladlyResource
from ..schemas import RAW_CONVERSATIONS, RAW_MESSAGES
from ..timeutil import UTC
from ..windows import Window, daily_partitions, window_for_day

GROUP = "gladly_raw"


def partition_window(context: AssetExecutionContext) -> Window:
    return window_for_day(context.partition_key)


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    kinds={"parquet"},
    description=(
        "Every conversation item (message, call, note, status or topic change, customer "
        "activity) Gladly recorded during the UTC day, one row per item, from the export "
        "jobs covering that day. Typed columns for the documented fields; `raw_json` keeps "
        "the item as Gladly sent it."
    ),
)
def messages(
    context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
) -> MaterializeResult:
    window = partition_window(context)
    store = data_root.store()
    path = store.raw_partition("messages", window.day)
    client = gladly.get_client()
    context.log.info("Extracting conversation items for %s from export jobs", window.describe())
    try:
        stats = extract_messages(client, window, store, path)
    except ExportNotAvailable as exc:
        raise Failure(str(exc), metadata=window_metadata(window)) from None
    finally:
        client.close()
    context.log.info(
        "Wrote %d items from %d export jobs (%d duplicates, %d outside the day, %d malformed)",
        stats.written, len(stats.jobs), stats.duplicates, stats.outside_window, stats.malformed,
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "export_jobs": MetadataValue.json(stats.jobs),
            "export_lines_read": stats.lines,
            "duplicate_items": stats.duplicates,
            "items_outside_window": stats.outside_window,
            "malformed_lines": stats.malformed,
            "malformed_line_positions": MetadataValue.json(stats.malformed_positions[:100]),
            **_request_metadata(client),
            "path": MetadataValue.path(str(path)),
        }
    )


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    deps=[messages],
    kinds={"parquet"},
    description=(
        "The conversations active during the UTC day (those with an item that day), as "
        "Gladly reports them when extracted: status, inbox, assigned agent, topics, "
        "created and closed times."
    ),
)
def conversations(
    context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
) -> MaterializeResult:
    window = partition_window(context)
    store = data_root.store()
    items = store.read(store.raw_partition("messages", window.day), RAW_MESSAGES)
    ids = _distinct(items, "conversation_id")
    context.log.info("Fetching %d conversations active in %s", len(ids), window.describe())
    client = gladly.get_client()
    try:
        table, stats = fetch_conversations(
            client, ids, workers=gladly.max_parallel_requests, now=datetime.now(UTC)
        )
    finally:
        client.close()
    path = store.raw_partition("conversations", window.day)
    store.write(path, table)
    if stats.not_found:
        context.log.warning(
            "%d conversations no longer exist in Gladly (merged away or deleted)",
            len(stats.not_found),
        )
    context.log.info("Wrote %d conversations", stats.written)
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "conversations_not_found": len(stats.not_found),
            **_request_metadata(client),
            "path": MetadataValue.path(str(path)),
        }
    )


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    deps=[messages, conversations],
    kinds={"parquet"},
    description=(
        "The customer profiles (contacts) behind the day's conversations and items: name, "
        "emails, phones, custom attributes. A profile merged into another is kept as a row "
        "with `merged_into` set, and the surviving profile is fetched too."
    ),
)
def contacts(
    context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
) -> MaterializeResult:
    window = partition_window(context)
    store = data_root.store()
    items = store.read(store.raw_partition("messages", window.day), RAW_MESSAGES)
    convs = store.read(store.raw_partition("conversations", window.day), RAW_CONVERSATIONS)
    ids = sorted(set(_distinct(items, "customer_id")) | set(_distinct(convs, "customer_id")))
    context.log.info("Fetching %d customer profiles for %s", len(ids), window.describe())
    client = gladly.get_client()
    try:
        table, stats = fetch_contacts(
            client, ids, workers=gladly.max_parallel_requests, now=datetime.now(UTC)
        )
    finally:
        client.close()
    path = store.raw_partition("contacts", window.day)
    store.write(path, table)
    context.log.info(
        "Wrote %d profiles (%d merged into another, %d not found)",
        stats.written, stats.merged, len(stats.not_found),
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "merged_profiles": stats.merged,
            "profiles_not_found": len(stats.not_found),
            **_request_metadata(client),
            "path": MetadataValue.path(str(path)),
        }
    )


def _distinct(table, column: str) -> list:
    values = pc.unique(table.column(column).drop_null())
    return sorted(values.to_pylist())


def _request_metadata(client: GladlyClient) -> dict:
    return {f"gladly_{name}": value for name, value in client.stats.as_dict().items()}
