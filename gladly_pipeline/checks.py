"""Asset checks on the Parquet tables: unique keys, references, time windows, freshness.

Each check is a short function of the data root that reads only the columns it needs and
reports counts, never record contents (conversations and contacts are personal data). A
table that is not materialized yet fails its checks with a WARN that says so, not a crash.

The checks run in two ops, one for the raw tables and one for the analytics tables: under
the multiprocess executor every op is a process of its own (~5 s each), and the checks
themselves take milliseconds.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    multi_asset_check,
)

from .resources import DataRoot
from .schemas import TS
from .storage import TableStore
from .windows import window_for_day

RAW_MESSAGES = AssetKey(["raw", "messages"])
RAW_CONVERSATIONS = AssetKey(["raw", "conversations"])
MESSAGES = AssetKey(["analytics", "messages"])
CONVERSATIONS = AssetKey(["analytics", "conversations"])
CONTACTS = AssetKey(["analytics", "contacts"])

# The times of raw/messages that no item may have in the future.
RAW_MESSAGE_TIMES = ["timestamp", "started_at", "answered_at", "completed_at"]

# Gladly's clock and ours may disagree by a few seconds (NTP keeps both close, not equal),
# and an item recorded while the extraction ran is stamped just before the check runs.
# Five minutes covers both; anything further ahead is a parsing or time zone fault.
FUTURE_ALLOWANCE = timedelta(minutes=5)

# A day's export lands a few hours after midnight UTC, so right before it lands the newest
# message is about a day and those hours old. Older than this, at least one day is late.
DEFAULT_MAX_AGE = timedelta(hours=30)

ERROR = AssetCheckSeverity.ERROR
WARN = AssetCheckSeverity.WARN


class Verdict(NamedTuple):
    passed: bool
    severity: AssetCheckSeverity
    description: str
    metadata: dict


Check = Callable[[TableStore], Verdict]


class NotMaterialized(Exception):
    """A table a check reads has no file under the data root yet."""


# Reading helpers: only the named columns, so checks never load contents they don't need.


def raw_days(store: TableStore, table: str, columns: list) -> dict:
    """{day: table of `columns`} for every `date=` partition of a raw table."""
    partitions = store.raw_partitions(table)
    if not partitions:
        raise NotMaterialized(f"raw/{table}")
    return {stored.day: store.read(stored.path, columns=columns) for stored in partitions}


def analytics_table(store: TableStore, table: str, columns: list) -> pa.Table:
    path = store.analytics(table)
    if not store.exists(path):
        raise NotMaterialized(f"analytics/{table}")
    return store.read(path, columns=columns)


def duplicates(column) -> int:
    return len(column) - len(pc.unique(column))


def count_true(mask) -> int:
    return pc.sum(mask).as_py() or 0  # the sum of no (or only null) values is null


def verdict(failures: int, what: str, metadata: dict, severity=ERROR) -> Verdict:
    description = f"{failures} {what}" if failures else f"no {what}"
    return Verdict(failures == 0, severity, description, metadata)


def utc_now() -> datetime:
    return datetime.now(UTC)


# Unique keys.


def unique_item_ids(store: TableStore) -> Verdict:
    days = raw_days(store, "messages", ["id"])
    distinct = [pc.unique(table.column("id")) for table in days.values()]
    within = sum(len(t) for t in days.values()) - sum(map(len, distinct))
    across = sum(map(len, distinct)) - len(pc.unique(pa.chunked_array(distinct, pa.string())))
    metadata = {"duplicates": within + across, "duplicates_within_day": within,
                "duplicates_across_days": across, "partitions": len(days)}
    return verdict(within + across, "duplicate item ids", metadata)


def unique_conversation_ids_per_day(store: TableStore) -> Verdict:
    days = raw_days(store, "conversations", ["id"])
    found = sum(duplicates(table.column("id")) for table in days.values())
    metadata = {"duplicates": found, "partitions": len(days)}
    return verdict(found, "duplicate conversation ids within a day", metadata)


def unique_key(table: str, column: str) -> Check:
    def evaluate(store: TableStore) -> Verdict:
        keys = analytics_table(store, table, [column]).column(column)
        found = duplicates(keys)
        return verdict(found, f"duplicate {column} values", {"duplicates": found,
                                                              "rows": len(keys)})

    return evaluate


# References between the analysis tables.


def references(table: str, column: str, target: str) -> Check:
    """Every non-null `column` of `table` is a key (the same column name) of `target`."""

    def evaluate(store: TableStore) -> Verdict:
        refs = analytics_table(store, table, [column]).column(column).drop_null()
        known = analytics_table(store, target, [column]).column(column).combine_chunks()
        dangling = len(refs) - count_true(pc.is_in(refs, value_set=known))
        return verdict(dangling, f"{column} values missing from analytics/{target}",
                       {"dangling": dangling, "references": len(refs)})

    return evaluate


# Time.


def timestamps_in_partition_day(store: TableStore) -> Verdict:
    outside = 0
    for day, table in raw_days(store, "messages", ["timestamp"]).items():
        stamps = table.column("timestamp").drop_null()
        try:
            window = window_for_day(day)
        except ValueError:  # a folder that names no partition: none of its rows is in it
            outside += len(stamps)
            continue
        early = pc.less(stamps, pa.scalar(window.start, TS))
        late = pc.greater_equal(stamps, pa.scalar(window.end, TS))
        outside += count_true(pc.or_(early, late))
    return verdict(outside, "items outside their partition's day", {"outside_window": outside})


def no_future_timestamps(clock: Callable[[], datetime]) -> Check:
    def evaluate(store: TableStore) -> Verdict:
        limit = pa.scalar(clock() + FUTURE_ALLOWANCE, TS)
        future = sum(
            count_true(pc.greater(table.column(name), limit))
            for table in raw_days(store, "messages", RAW_MESSAGE_TIMES).values()
            for name in RAW_MESSAGE_TIMES
        )
        return verdict(future, "item times in the future", {"future_timestamps": future})

    return evaluate


def fresh_messages(clock: Callable[[], datetime], max_age: timedelta) -> Check:
    limit = max_age.total_seconds() / 3600

    def evaluate(store: TableStore) -> Verdict:
        created = analytics_table(store, "messages", ["created_at"]).column("created_at")
        newest = pc.max(created).as_py()
        if newest is None:
            return Verdict(False, WARN, "analytics/messages has no message", {"rows": 0})
        age = (clock() - newest).total_seconds() / 3600
        description = f"the newest message is {age:.1f} hours old (limit {limit:g})"
        metadata = {"newest_age_hours": round(age, 2), "max_age_hours": limit}
        return Verdict(age <= limit, WARN, description, metadata)

    return evaluate


# Wiring: one op per zone, running only the checks selected for the run.


def check_group(name: str, checks: list) -> AssetChecksDefinition:
    """One op for (AssetCheckSpec, check function) pairs; runs the selected subset."""
    by_key = {spec.key: evaluate for spec, evaluate in checks}

    @multi_asset_check(name=name, specs=[spec for spec, _ in checks], can_subset=True)
    def _checks(context: AssetCheckExecutionContext, data_root: DataRoot):
        store = data_root.store()
        for key in sorted(context.selected_asset_check_keys, key=str):
            try:
                passed, severity, description, metadata = by_key[key](store)
            except NotMaterialized as missing:
                passed, severity, metadata = False, WARN, {"missing_tables": 1}
                description = f"{missing} is not materialized yet: nothing to check"
            yield AssetCheckResult(
                asset_key=key.asset_key, check_name=key.name, passed=passed,
                severity=severity, description=description, metadata=metadata,
            )

    return _checks


def raw_checks(clock: Callable[[], datetime]) -> list:
    skew = FUTURE_ALLOWANCE.total_seconds() / 60
    return [
        (AssetCheckSpec("unique_ids", asset=RAW_MESSAGES,
                        description="Item ids are unique in each day and across days."),
         unique_item_ids),
        (AssetCheckSpec("timestamps_in_partition_day", asset=RAW_MESSAGES,
                        description="Each item's timestamp is in the UTC day of its `date=` "
                                    "partition."),
         timestamps_in_partition_day),
        (AssetCheckSpec("no_future_timestamps", asset=RAW_MESSAGES,
                        description="No item time (timestamp, call start, answer, end) is "
                                    f"later than now plus {skew:g} minutes of clock skew."),
         no_future_timestamps(clock)),
        (AssetCheckSpec("unique_ids_per_day", asset=RAW_CONVERSATIONS,
                        description="Conversation ids are unique within each day (one "
                                    "conversation may be active on many days)."),
         unique_conversation_ids_per_day),
    ]


def analytics_checks(clock: Callable[[], datetime], max_age: timedelta) -> list:
    hours = max_age.total_seconds() / 3600
    keys = [(MESSAGES, "message_id"), (CONVERSATIONS, "conversation_id"),
            (CONTACTS, "contact_id")]
    return [
        *[(AssetCheckSpec(f"unique_{column}s", asset=asset, description=f"`{column}` is unique."),
           unique_key(asset.path[-1], column)) for asset, column in keys],
        (AssetCheckSpec("conversations_exist", asset=MESSAGES,
                        description="Every message's conversation_id, when set, is a row of "
                                    "analytics/conversations."),
         references("messages", "conversation_id", "conversations")),
        (AssetCheckSpec("contacts_exist", asset=CONVERSATIONS,
                        description="Every conversation's contact_id, when set, is a row of "
                                    "analytics/contacts."),
         references("conversations", "contact_id", "contacts")),
        (AssetCheckSpec("fresh_messages", asset=MESSAGES,
                        description=f"The newest message is at most {hours:g} hours old (a "
                                    "day's export lands a few hours after midnight UTC); a "
                                    "quiet day on the account warns too."),
         fresh_messages(clock, max_age)),
    ]


def build_checks(
    clock: Callable[[], datetime] = utc_now, max_age: timedelta = DEFAULT_MAX_AGE
) -> list:
    """The checks' two ops; `clock` and `max_age` let tests pin the time-dependent ones."""
    return [
        check_group("raw_table_checks", raw_checks(clock)),
        check_group("analytics_table_checks", analytics_checks(clock, max_age)),
    ]


gladly_checks = build_checks()
