"""Per-id REST reads: the conversations and customer profiles behind a day's items."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

import pyarrow as pa

from ..client import GladlyClient, GladlyDataError, GladlyNotFound
from ..records import contact_row, conversation_row, deleted_contact_row, merged_contact_row
from ..schemas import RAW_CONTACTS, RAW_CONVERSATIONS
from ..storage import TableStore
from ..timeutil import UTC


@dataclass
class FetchStats:
    requested: int = 0
    written: int = 0
    not_found: list = field(default_factory=list)
    merged: int = 0
    reused: int = 0


def fetch_conversations(
    client: GladlyClient, ids: list, *, workers: int = 4, now: Optional[datetime] = None
) -> tuple:
    """GET each conversation (current status, inbox, assignee, topics)."""
    fetched_at = now or datetime.now(UTC)
    stats = FetchStats(requested=len(ids))
    rows = []
    for conversation_id, answer in fan_out(client.conversation, ids, workers):
        if answer is None:
            stats.not_found.append(conversation_id)
        else:
            rows.append(conversation_row(answer, fetched_at))
    check_not_found("conversations", stats)
    stats.written = len(rows)
    return pa.Table.from_pylist(rows, schema=RAW_CONVERSATIONS), stats


def fetch_contacts(
    client: GladlyClient,
    ids: list,
    *,
    workers: int = 4,
    now: Optional[datetime] = None,
    cached: Optional[dict] = None,
) -> tuple:
    """GET each customer profile; a merged id is recorded and its survivor fetched too.

    `cached` maps ids to raw contact rows fetched recently (see `recent_contacts`); those
    are reused as they are, keeping their `fetched_at`, instead of asked for again.
    """
    fetched_at = now or datetime.now(UTC)
    cached = cached or {}
    stats = FetchStats(requested=len(ids))
    rows, done = [], set()
    pending = sorted(set(ids))
    # Merges can chain (A -> B -> C); each round fetches the survivors of the last.
    while pending:
        done.update(pending)
        survivors = []
        reused = [cached[cid] for cid in pending if cid in cached]
        stats.reused += len(reused)
        for row in reused:
            rows.append(row)
            if row["merged_into"]:
                survivors.append(row["merged_into"])
        to_fetch = [cid for cid in pending if cid not in cached]
        for customer_id, lookup in fan_out(client.customer_profile, to_fetch, workers):
            if lookup is None:
                # Kept as a row, so the contact shows as deleted rather than vanishing.
                stats.not_found.append(customer_id)
                rows.append(deleted_contact_row(customer_id, fetched_at))
            elif lookup.merged_into:
                stats.merged += 1
                rows.append(merged_contact_row(customer_id, lookup.merged_into, fetched_at))
                survivors.append(lookup.merged_into)
            else:
                rows.append(contact_row(lookup.profile, fetched_at))
        pending = sorted(set(survivors) - done)
    check_not_found("customer profiles", stats)
    stats.written = len(rows)
    return pa.Table.from_pylist(rows, schema=RAW_CONTACTS), stats


def recent_contacts(store: TableStore, since: datetime) -> dict:
    """Raw contact rows fetched at or after `since`, newest per id, from any day's file.

    Only files written since then can hold such rows, so older days are not read.
    """
    folder = store.raw_table_dir("contacts")
    cutoff = since.timestamp()
    paths = [p for p in folder.glob("date=*/part-0.parquet") if p.stat().st_mtime >= cutoff]
    newest: dict = {}
    for path in paths:
        for row in store.read(path, RAW_CONTACTS).to_pylist():
            if row["fetched_at"] < since:
                continue
            known = newest.get(row["id"])
            if known is None or row["fetched_at"] > known["fetched_at"]:
                newest[row["id"]] = row
    return newest


# Gladly answers 404 for a conversation deleted by a merge, or a profile deleted for
# privacy; a few are normal. Many mean something else is wrong (a wrong host, an outage
# page), and writing the day without them would silently shrink it.
MAX_NOT_FOUND_SHARE = 0.10
MIN_NOT_FOUND_TO_FAIL = 3


def check_not_found(kind: str, stats: FetchStats) -> None:
    missing = len(stats.not_found)
    if missing >= MIN_NOT_FOUND_TO_FAIL and missing > stats.requested * MAX_NOT_FOUND_SHARE:
        raise GladlyDataError(
            f"{missing} of {stats.requested} {kind} answered 404: too many to be merges or "
            "deletions, so the day was not written (the previous version is kept)"
        )


def fan_out(fetch: Callable, ids: list, workers: int):
    """Yields (id, answer or None when Gladly says 404), in the order of `ids`.

    The client's shared limiter keeps the pace; threads only hide network latency.
    """
    def one(key):
        try:
            return key, fetch(key)
        except GladlyNotFound:
            return key, None

    if workers <= 1 or len(ids) <= 1:
        yield from map(one, ids)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gladly") as pool:
        yield from pool.map(one, ids)
