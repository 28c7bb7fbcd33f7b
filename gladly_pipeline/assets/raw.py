"""Raw extraction assets: one daily UTC partition per day of Gladly activity."""

from datetime import datetime, timedelta

import pyarrow as pa
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
    CUSTOMERS_FILE,
    ExportedContacts,
    ExportNotAvailable,
    events_reach,
    extract_messages,
    extract_messages_from_events,
    fetch_contacts,
    fetch_conversations,
    jobs_for_window,
    read_exported_contacts,
    recent_contacts,
    reusable_conversations,
    window_metadata,
)
from ..resources import DataRoot, GladlyResource
from ..schemas import RAW_CONTACTS, RAW_CONVERSATIONS, RAW_MESSAGES
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
            "path": MetadataValue.path(store.uri(path)),
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
    if not store.exists(path):
        return set()
    ids = store.read(path, CONVERSATION_COLUMN).column("conversation_id").drop_null()
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
        "Gladly reports them after the day's last item: status, inbox, assigned agent, "
        "topics, created and closed times. A conversation already fetched after its last "
        "item of the day (for any day) is copied with its `fetched_at` instead of asked "
        "for again; a customer with several conversations to fetch is asked once for its "
        "conversation list."
    ),
)
def conversations(
    context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
) -> MaterializeResult:
    window = partition_window(context)
    store = data_root.store()
    items = store.read(store.raw_partition("messages", window.day), ACTIVITY_COLUMNS)
    activity, owners = _activity(items)
    ids = sorted(owners)
    # Read before any request: a fetch made after this instant errs early, never late.
    now = datetime.now(UTC)
    stored = reusable_conversations(store, activity)
    context.log.info(
        "%d conversations active in %s; %d unchanged since their last fetch, %d to fetch",
        len(ids), window.describe(), len(stored), len(ids) - len(stored),
    )
    client = gladly.get_client()
    try:
        table, stats = fetch_conversations(
            client, ids, workers=gladly.max_parallel_requests, now=now,
            stored=stored, customers=owners,
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
    context.log.info(
        "Wrote %d conversations (%d reused, %d from %d customer-list requests, %d fetched "
        "alone)",
        stats.written, stats.reused, stats.listed, stats.list_requests,
        stats.written - stats.reused - stats.listed,
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "conversations_reused": stats.reused,
            "conversations_from_customer_lists": stats.listed,
            "customer_list_requests": stats.list_requests,
            "conversations_not_found": len(stats.not_found),
            **_request_metadata(client),
            "path": MetadataValue.path(store.uri(path)),
        }
    )


# The columns each asset reads from the day's items: never raw_json nor the texts.
ACTIVITY_COLUMNS = pa.schema(
    [RAW_MESSAGES.field(name) for name in
     ("conversation_id", "customer_id", "timestamp", "completed_at")]
)
CONVERSATION_COLUMN = pa.schema([RAW_MESSAGES.field("conversation_id")])
OWNER_COLUMNS = pa.schema([RAW_MESSAGES.field(n) for n in ("conversation_id", "customer_id")])
CONVERSATION_OWNERS = pa.schema([RAW_CONVERSATIONS.field(n) for n in ("id", "customer_id")])


def _activity(items: pa.Table) -> tuple:
    """Per conversation: its last activity of the day, and the customer its items name.

    A call's item is stamped when it started, but Gladly lists it once it is over, so
    its end counts. Where items name two customers (a merge), either one will do: it only
    groups the conversation with others of that customer.
    """
    grouped = items.filter(pc.is_valid(items["conversation_id"])).group_by(
        "conversation_id").aggregate(
        [("timestamp", "max"), ("completed_at", "max"), ("customer_id", "min")]
    )
    ids = grouped["conversation_id"].to_pylist()
    activity = {}
    for cid, started, ended in zip(ids, grouped["timestamp_max"].to_pylist(),
                                   grouped["completed_at_max"].to_pylist(), strict=True):
        known = [moment for moment in (started, ended) if moment is not None]
        if known:
            activity[cid] = max(known)
    owners = dict(zip(ids, grouped["customer_id_min"].to_pylist(), strict=True))
    return activity, owners


@asset(
    key_prefix=["raw"],
    group_name=GROUP,
    partitions_def=daily_partitions,
    pool=GLADLY_POOL,
    deps=[messages, conversations],
    kinds={"parquet"},
    description=(
        "The customer profiles (contacts) behind the day's conversations and items. For an "
        "exported day they are the reduced profiles of the export's customers.jsonl: name, "
        "address, emails, phones, external ids; `custom_attributes_json`, `created_at` and "
        "`updated_at` stay null (the GladlyResource setting `full_contact_profiles` fetches "
        "full profiles instead, at about one request per new conversation). Ids the file "
        "lacks, days not exported yet, and customers whose conversation now names another "
        "customer are fetched with GET. A profile merged into another is kept as a row "
        "with `merged_into` set, and the surviving profile is found too. A rerun never "
        "replaces a newer row (a merge or deletion, a GET profile) with an older export row."
    ),
)
def contacts(
    context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
) -> MaterializeResult:
    window = partition_window(context)
    store = data_root.store()
    items = store.read(store.raw_partition("messages", window.day), OWNER_COLUMNS)
    convs = store.read(store.raw_partition("conversations", window.day), CONVERSATION_OWNERS)
    ids = sorted(set(_distinct(items, "customer_id")) | set(_distinct(convs, "customer_id")))
    # The file shows a profile as it was when the export was written; a conversation
    # that names another customer now says the one its items name was merged since.
    moved = _moved_customers(items, convs)
    context.log.info("Finding %d customer profiles for %s", len(ids), window.describe())
    now = datetime.now(UTC)
    path = store.raw_partition("contacts", window.day)
    client = gladly.get_client()
    try:
        exported = ExportedContacts()
        if not gladly.full_contact_profiles:
            exported = _exported_contacts(context, client, window, set(ids) - moved)
        cached = {}
        if gladly.contact_refresh_hours:
            # Profiles change rarely: one fetched for another day within the refresh window
            # is reused instead of asked for again.
            since = now - timedelta(hours=gladly.contact_refresh_hours)
            cached = recent_contacts(store, since, full_only=gladly.full_contact_profiles)
            cached = cached.without(moved)
        # A rerun must not trade what the day's last run learned (a 301/404 mark, a GET
        # profile) for an older export row: those rows compete with the file's.
        earlier = _earlier_contacts(store, path, set(exported.rows))
        table, stats = fetch_contacts(
            client, ids, workers=gladly.max_parallel_requests, now=now, cached=cached,
            exported=exported.rows, earlier=earlier,
        )
    finally:
        client.close()
    store.write(path, table)
    context.log.info(
        "Wrote %d profiles (%d from the export, %d reused from the last %d hours or newer "
        "than the export in the day's last run, %d fetched; %d merged into another, %d not "
        "found)",
        stats.written, stats.exported, stats.reused, gladly.contact_refresh_hours,
        stats.written - stats.exported - stats.reused, stats.merged, len(stats.not_found),
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": stats.written,
            **window_metadata(window),
            "profiles_from_export": stats.exported,
            "profiles_reused": stats.reused,
            "merged_profiles": stats.merged,
            "profiles_not_found": len(stats.not_found),
            "customers_moved_since_export": len(moved),
            "export_jobs": MetadataValue.json(exported.jobs),
            **_request_metadata(client),
            "path": MetadataValue.path(store.uri(path)),
        }
    )


def _moved_customers(items: pa.Table, convs: pa.Table) -> set:
    """Customer ids the items name whose conversation now belongs to another customer."""
    owner = dict(zip(convs["id"].to_pylist(), convs["customer_id"].to_pylist(), strict=True))
    pairs = items.filter(pc.is_valid(items["customer_id"])).group_by(
        ["conversation_id", "customer_id"]).aggregate([])
    moved = set()
    for conversation_id, customer_id in zip(
        pairs["conversation_id"].to_pylist(), pairs["customer_id"].to_pylist(), strict=True
    ):
        current = owner.get(conversation_id)
        if current and current != customer_id:
            moved.add(customer_id)
    return moved


def _exported_contacts(context, client, window, wanted: set) -> ExportedContacts:
    """Reduced profiles from the customers.jsonl of the jobs covering the day, if any.

    Known gap: a profile deleted or edited after the export was written shows as the file
    has it; only GET sees that (README, Limitations). The caller catches merges whose
    conversation row was fetched after them (README, How it extracts, step 3).
    """
    try:
        jobs = jobs_for_window(client.export_jobs(status="COMPLETED"), window)
    except ExportNotAvailable:
        context.log.info("%s is not exported yet: its profiles are fetched with GET", window.day)
        return ExportedContacts()
    exported = read_exported_contacts(client, jobs, wanted)
    if exported.missing_files:
        context.log.warning(
            "Export jobs %s list no readable %s; their customers are fetched with GET",
            ", ".join(exported.missing_files), CUSTOMERS_FILE,
        )
    if exported.malformed:
        context.log.warning("Skipped %d malformed lines of %s", exported.malformed,
                            CUSTOMERS_FILE)
    return exported


def _earlier_contacts(store, path, wanted: set) -> dict:
    """The rows of `wanted` ids the day's partition holds from its last run, by id."""
    if not wanted or not store.exists(path):
        return {}
    table = store.read(path, RAW_CONTACTS)
    table = table.filter(pc.is_in(table["id"], pa.array(sorted(wanted), pa.string())))
    return {row["id"]: row for row in table.to_pylist()}


def _distinct(table, column: str) -> list:
    values = pc.unique(table.column(column).drop_null())
    return sorted(values.to_pylist())


def _request_metadata(client: GladlyClient) -> dict:
    return {f"gladly_{name}": value for name, value in client.stats.as_dict().items()}
