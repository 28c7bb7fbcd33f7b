"""Raw extraction assets: one daily UTC partition per day of Gladly activity."""

from datetime import datetime, timedelta

import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..client import GladlyClient
from ..extract import (
    ExportNotAvailable,
    events_reach,
    extract_messages,
    extract_messages_from_events,
    fetch_contacts,
    fetch_conversations,
    jobs_for_window,
    recent_contacts,
    window_metadata,
)
from ..resources import DataRoot, GladlyResource
from ..schemas import RAW_CONVERSATIONS, RAW_MESSAGES
from ..timeutil import UTC
from ..windows import Window, daily_partitions, window_for_day

GROUP = "gladly_raw"
# Every step that calls Gladly takes a slot of this pool; dagster.yaml limits it to one,
# so parallel runs and backfills never exceed the organisation's request rate together.
GLADLY_POOL = "gladly_api"
# No backfill policy: Dagster then launches one run per day, so a backfill of a range is
# bounded to one partition per run and a failed day is retried alone.


def partition_window(context: AssetExecutionContext) -> Window:
    return window_for_day(context.partition_key)


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    pool=GLADLY_POOL,
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
    # Listed first: the answer also gives Gladly's clock, so no extra request is needed.
    jobs = client.export_jobs(status="COMPLETED")
    ledger = gladly.open_ledger(store)
    # Reservations belong to the day, not to one Dagster run: a rerun after a run was
    # killed outright takes over its reservations and counts them once its data is written.
    budget = DayBudget(ledger, gladly, now=client.server_time(), run_id=f"day:{window.day}",
                       stored=_stored_conversations(store, path))
    try:
        stats = _extract_day(context, client, gladly, jobs, window, path, store, budget.admit)
    except BaseException as exc:
        budget.release()
        if isinstance(exc, ExportNotAvailable):
            raise Failure(str(exc), metadata=window_metadata(window)) from None
        raise
    else:
        # Only now is the day's data in place: its units become counted.
        budget.commit()
        budget_metadata = budget.metadata()
    finally:
        client.close()
        ledger.close()
    context.log.info(
        "Wrote %d items from %s (%d duplicates, %d outside the day, %d malformed, "
        "%d conversations deferred by the budget)",
        stats.written, _source(stats), stats.duplicates, stats.outside_window,
        stats.malformed, stats.deferred_conversations,
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "source": stats.source,
            "export_jobs": MetadataValue.json(stats.jobs),
            "export_jobs_skipped": MetadataValue.json(stats.skipped_jobs),
            "export_lines_read": stats.lines,
            "events_read": stats.events,
            "duplicate_items": stats.duplicates,
            "items_outside_window": stats.outside_window,
            "malformed_lines": stats.malformed,
            "malformed_line_positions": MetadataValue.json(stats.malformed_positions[:100]),
            "capped_conversations": len(stats.capped_conversations),
            "deferred_conversations": stats.deferred_conversations,
            "deferred_items": stats.deferred_items,
            **budget_metadata,
            **_request_metadata(client),
            "path": MetadataValue.path(str(path)),
        }
    )


def _extract_day(context, client, gladly, jobs, window, path, store, admit):
    """Export jobs when they cover the day; else the Events API while it reaches."""
    try:
        jobs_for_window(jobs, window)
    except ExportNotAvailable as not_exported:
        now = client.server_time()
        if events_reach(window, now) is None:
            raise
        context.log.info(
            "%s is not exported yet (%s); refreshing it from the Events API",
            window.day, not_exported,
        )
        return extract_messages_from_events(
            client, window, store, path, now=now, workers=gladly.max_parallel_requests,
            admit=admit,
        )
    context.log.info("Extracting conversation items for %s from export jobs", window.describe())
    return extract_messages(client, window, store, path, jobs=jobs, admit=admit)


class DayBudget:
    """The volume budget as one day's extraction sees it: reserve, then commit or release."""

    def __init__(self, ledger, gladly: GladlyResource, *, now, run_id: str, stored: set):
        self.ledger = ledger
        self.limit = gladly.conversations_per_period
        self.period = gladly.period(now)
        self.run_id = run_id
        # Conversations this day already holds were ingested (and counted) when first
        # written; refreshing them costs nothing, and a rerun in a later period must not
        # cut a day already written down to what that period's budget has left.
        self.stored = stored
        self.reservation = None

    def admit(self, first_activity: dict) -> set:
        """Reserves units oldest activity first; returns the conversations deferred."""
        new = {cid: ts for cid, ts in first_activity.items() if cid not in self.stored}
        ordered = sorted(new, key=lambda cid: (new[cid], cid))
        self.reservation = self.ledger.reserve(
            self.period, ordered, limit=self.limit, run_id=self.run_id
        )
        return set(self.reservation.deferred)

    def commit(self) -> None:
        self.ledger.commit(self.run_id)

    def release(self) -> None:
        self.ledger.release(self.run_id)

    def metadata(self) -> dict:
        used = self.ledger.usage(self.period)
        meta = {"budget_period": self.period.label, "budget_used": used}
        if self.limit is not None:
            meta["budget_limit"] = self.limit
            meta["budget_left"] = max(self.limit - used, 0)
        if self.reservation is not None:
            meta["budget_new_conversations"] = len(self.reservation.newly_reserved)
        return meta


def _stored_conversations(store, path) -> set:
    if not path.exists():
        return set()
    ids = store.read(path, RAW_MESSAGES).column("conversation_id").drop_null()
    return set(pc.unique(ids).to_pylist())


def _source(stats) -> str:
    if stats.source == "events":
        return f"{stats.events} events ({stats.conversations_touched} conversations)"
    return f"{len(stats.jobs)} export jobs"


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    pool=GLADLY_POOL,
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
    pool=GLADLY_POOL,
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
    now = datetime.now(UTC)
    cached = {}
    if gladly.contact_refresh_hours:
        # Profiles change rarely: one fetched for another day within the refresh window
        # is reused, which saves about one request per conversation.
        cached = recent_contacts(store, now - timedelta(hours=gladly.contact_refresh_hours))
    client = gladly.get_client()
    try:
        table, stats = fetch_contacts(
            client, ids, workers=gladly.max_parallel_requests, now=now, cached=cached
        )
    finally:
        client.close()
    path = store.raw_partition("contacts", window.day)
    store.write(path, table)
    context.log.info(
        "Wrote %d profiles (%d reused from the last %d hours, %d merged into another, "
        "%d not found)",
        stats.written, stats.reused, gladly.contact_refresh_hours, stats.merged,
        len(stats.not_found),
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "merged_profiles": stats.merged,
            "profiles_reused": stats.reused,
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
