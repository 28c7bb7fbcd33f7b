"""The conversations and customer profiles behind a day's items: stored, exported or GET."""

import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..client import GladlyClient, GladlyDataError, GladlyMoved, GladlyNotFound
from ..records import (
    contact_row,
    conversation_row,
    deleted_contact_row,
    exported_contact_row,
    is_full_contact_row,
    merged_contact_row,
)
from ..schemas import RAW_CONTACTS, RAW_CONVERSATIONS, TS
from ..storage import TableStore
from ..timeutil import UTC, parse_timestamp
from .rowtables import RowBatches, RowsById, as_rows_by_id
from .staging import check_malformed


@dataclass
class FetchStats:
    requested: int = 0
    written: int = 0
    not_found: list = field(default_factory=list)
    merged: int = 0
    reused: int = 0
    # Conversations: how many came from a customer's conversation list, in how many lists.
    listed: int = 0
    list_requests: int = 0
    # Contacts: profiles taken from the export's customers.jsonl.
    exported: int = 0


# A customer's conversation list costs one request, like one GET conversation: it pays from
# the second conversation of that customer to fetch.
MIN_CONVERSATIONS_TO_LIST = 2


def fetch_conversations(
    client: GladlyClient,
    ids: list,
    *,
    workers: int = 4,
    now: Optional[datetime] = None,
    stored: Optional[dict] = None,
    customers: Optional[dict] = None,
) -> tuple:
    """The current record (status, inbox, assignee, topics) of each conversation.

    `stored` maps ids to raw rows fetched after the conversation's last activity (see
    `reusable_conversations`): those are copied as they are, with their `fetched_at`.
    `customers` maps ids to the customer the items name: a customer with several
    conversations to fetch is asked for its conversation list once (reference §5)
    instead of one GET per conversation; any id the list lacks is fetched alone.
    """
    fetched_at = now or datetime.now(UTC)
    stored = as_rows_by_id(stored, RAW_CONVERSATIONS)
    stats = FetchStats(requested=len(ids))
    rows = RowBatches(RAW_CONVERSATIONS)
    reused = [cid for cid in ids if cid in stored]
    rows.add_table(stored.take(reused))
    stats.reused = len(reused)
    pending = [cid for cid in ids if cid not in stored]
    # Rows are made as the answers come: a record is not kept once its row is.
    found = _from_customer_lists(client, pending, customers or {}, workers, stats,
                                 lambda record: rows.add(conversation_row(record, fetched_at)))
    alone = [cid for cid in pending if cid not in found]
    for conversation_id, answer in fan_out(client.conversation, alone, workers):
        if answer is None:
            stats.not_found.append(conversation_id)
        else:
            rows.add(conversation_row(answer, fetched_at))
    check_not_found("conversations", stats)
    stats.written = len(rows)
    return rows.table(), stats


def _from_customer_lists(client, ids: list, customers: dict, workers: int, stats, keep) -> set:
    """Hands `keep` each record of `ids` found in its customer's list; returns their ids."""
    by_customer: dict = {}
    for conversation_id in ids:
        customer_id = customers.get(conversation_id)
        if customer_id:
            by_customer.setdefault(customer_id, set()).add(conversation_id)
    worth = sorted(c for c, owned in by_customer.items() if len(owned) >= MIN_CONVERSATIONS_TO_LIST)
    found = set()
    # The list's elements are conversation records as GET conversations/{id} gives them
    # (reference §5 and §12.1); it holds the oldest 100, so a newer id may be missing.
    for customer_id, (answer, requests) in fan_out(_conversation_list(client), worth, workers):
        stats.list_requests += requests
        # None: deleted (404) or merged twice over; its conversations are fetched alone.
        for record in answer or []:
            if (isinstance(record, dict) and record.get("id") in by_customer[customer_id]
                    and record["id"] not in found):
                found.add(record["id"])
                keep(record)
    stats.listed = len(found)
    return found


def _conversation_list(client):
    """A function giving (a customer's conversation list or None, requests it took)."""
    def fetch(customer_id):
        try:
            return client.customer_conversations(customer_id), 1
        except GladlyNotFound:
            return None, 1
        except GladlyMoved as moved:
            # The conversations moved with the merge: the survivor's list holds them, for
            # one request more instead of one per conversation. One hop only.
            try:
                return client.customer_conversations(moved.new_id), 2
            except (GladlyMoved, GladlyNotFound):
                return None, 2

    return fetch


def reusable_conversations(store: TableStore, last_activity: dict) -> RowsById:
    """Stored conversation rows still current: fetched after the day's last activity.

    `last_activity` maps each conversation active during the day to its latest item time
    (a call's end, not its start: Gladly lists a call once it is over). A row fetched
    later, for any day, already shows what that activity did, so it is reused; its
    `fetched_at` is the clock read before that fetch began, so it errs early, and
    REUSE_MARGIN covers a skew between this machine's clock and Gladly's.
    Only files written since the day began can hold such rows.
    """
    if not last_activity:
        return RowsById(RAW_CONVERSATIONS.empty_table())
    earliest = min(last_activity.values())
    cutoff = (earliest - REUSE_MARGIN).timestamp()
    paths = [
        stored.path for stored in store.raw_partitions("conversations")
        if stored.modified.timestamp() >= cutoff
    ]
    wanted = pa.array(sorted(last_activity), pa.string())
    found = []
    for path in paths:
        table = store.read(path, RAW_CONVERSATIONS)
        found.append(table.filter(pc.fill_null(pc.is_in(table["id"], wanted), False)))
    # The newest fetch of each id is the one judged.
    newest = _newest_per_id(found, RAW_CONVERSATIONS)
    fetched = newest.table["fetched_at"].to_pylist()
    kept = [index for index, cid in enumerate(newest)
            if fetched[index] - REUSE_MARGIN > last_activity[cid]]
    return RowsById(newest.table.take(pa.array(kept, pa.int64())))


# Clock skew between this machine (which stamps fetched_at) and Gladly (which stamps items),
# and the seconds Gladly may take to record an item; generous, as it only costs requests.
REUSE_MARGIN = timedelta(minutes=10)


def fetch_contacts(
    client: GladlyClient,
    ids: list,
    *,
    workers: int = 4,
    now: Optional[datetime] = None,
    cached: Optional[dict] = None,
    exported: Optional[dict] = None,
    earlier: Optional[dict] = None,
) -> tuple:
    """Each customer profile, from the export file, stored rows or GET.

    `exported` maps ids to rows read from the export's customers.jsonl (see
    `read_exported_contacts`); `cached` to raw contact rows fetched recently (see
    `recent_contacts`); `earlier` to the rows the day's partition held before this run.
    An id with an export row gets the newest knowledge among those rows (`newest_contact`);
    an id without one takes its cached row, and `earlier` never spares a GET. Stored rows
    keep their `fetched_at`. Every other id is asked for with GET: a merged id is recorded
    and its survivor found too.
    """
    fetched_at = now or datetime.now(UTC)
    cached = as_rows_by_id(cached, RAW_CONTACTS)
    exported = as_rows_by_id(exported, RAW_CONTACTS)
    earlier = earlier or {}
    stats = FetchStats(requested=len(ids))
    rows, done = RowBatches(RAW_CONTACTS), set()
    pending = sorted(set(ids))
    # Merges can chain (A -> B -> C); each round finds the survivors of the last.
    while pending:
        done.update(pending)
        survivors = []
        for cid in pending:
            if cid in exported:
                row = newest_contact(exported[cid], [cached.get(cid), earlier.get(cid)])
                if row["fetched_at"] == exported[cid]["fetched_at"]:
                    stats.exported += 1
                else:
                    stats.reused += 1
            elif cid in cached:
                stats.reused += 1
                row = cached[cid]
            else:
                continue
            rows.add(row)
            if row["merged_into"]:
                survivors.append(row["merged_into"])
        to_fetch = [cid for cid in pending if cid not in cached and cid not in exported]
        for customer_id, lookup in fan_out(client.customer_profile, to_fetch, workers):
            if lookup is None:
                # Kept as a row, so the contact shows as deleted rather than vanishing.
                stats.not_found.append(customer_id)
                rows.add(deleted_contact_row(customer_id, fetched_at))
            elif lookup.merged_into:
                stats.merged += 1
                rows.add(merged_contact_row(customer_id, lookup.merged_into, fetched_at))
                survivors.append(lookup.merged_into)
            else:
                rows.add(contact_row(lookup.profile, fetched_at))
        pending = sorted(set(survivors) - done)
    check_not_found("customer profiles", stats)
    stats.written = len(rows)
    return rows.table(), stats


# Columns customers.jsonl has no say on (reference §12.3): only GET knows them.
GET_ONLY_CONTACT_COLUMNS = ("custom_attributes_json", "created_at", "updated_at")
# Columns both sources spell alike, compared to tell whether the profile changed between a
# GET and a later export (phones are not: GET gives them normalized, the file as typed).
SHARED_CONTACT_COLUMNS = ("name", "address", "external_customer_id",
                          "external_customer_ids_json")


def newest_contact(exported_row: dict, others: list) -> dict:
    """The row of one customer that holds the newest knowledge, the export's row among them.

    - A merged (301) or deleted (404) mark wins over any export row, however old: Gladly
      never brings such an id back, while an export written before the merge, or one that
      still lists the profile, would show it live.
    - Otherwise the newest row by `fetched_at` wins whole, a GET profile included.
    - An export row newer than the newest GET profile speaks for what the file holds (name,
      address, emails, phones, external ids) and takes the GET-only columns (custom
      attributes, created_at, updated_at) from that GET profile rather than dropping them:
      they are the newest known. `updated_at` is kept only if the columns both sources
      spell alike did not change in between; otherwise the profile was edited at an
      unknown moment after the GET, and it stays null. Custom attributes edited after the
      GET are not seen (the file lacks them), as with any profile reused within
      `contact_refresh_hours`.
    """
    known = [row for row in others if row is not None]
    marks = [row for row in known if row["merged_into"] or row["deleted"]]
    if marks:
        return max(marks, key=lambda row: row["fetched_at"])
    newest = max([exported_row, *known], key=lambda row: row["fetched_at"])
    if newest is not exported_row:
        return newest
    full = [row for row in known if is_full_contact_row(row)]
    if not full:
        return exported_row
    profile = max(full, key=lambda row: row["fetched_at"])
    combined = dict(exported_row)
    for column in GET_ONLY_CONTACT_COLUMNS:
        combined[column] = profile[column]
    changed = any(exported_row[c] != profile[c] for c in SHARED_CONTACT_COLUMNS) or (
        sorted(exported_row["emails"] or []) != sorted(profile["emails"] or []))
    if changed:
        combined["updated_at"] = None
    return combined


CUSTOMERS_FILE = "customers.jsonl"


@dataclass
class ExportedContacts:
    """Rows read from the export's customers.jsonl, and what reading them found."""

    # id -> row, kept as Arrow (see rowtables); the first job's line of an id wins.
    rows: RowsById = field(default_factory=lambda: RowsById(RAW_CONTACTS.empty_table()))
    jobs: list = field(default_factory=list)
    missing_files: list = field(default_factory=list)
    lines: int = 0
    malformed: int = 0


def read_exported_contacts(client: GladlyClient, jobs: list, wanted: set) -> ExportedContacts:
    """The reduced profiles (reference §12.3) of `wanted` ids from the jobs' customers.jsonl.

    `jobs` come newest first (`jobs_for_window`), so an id in two files keeps the newer
    line. A row's `fetched_at` is its job's `updatedAt`: when Gladly wrote the file, which
    is when the profile was as the line says. A job without the file is reported and its
    customers go through GET instead.
    """
    found = ExportedContacts()
    rows, ids = RowBatches(RAW_CONTACTS), set()
    for job in jobs:
        if CUSTOMERS_FILE not in (job.get("files") or []):
            found.missing_files.append(job["id"])
            continue
        written = parse_timestamp(job.get("updatedAt"))
        if written is None:
            found.missing_files.append(job["id"])
            continue
        try:
            _read_customers_file(client, job["id"], written, wanted, found, rows, ids)
        except GladlyNotFound:
            found.missing_files.append(job["id"])
            continue
        found.jobs.append(job["id"])
    found.rows = RowsById(rows.unsorted())
    return found


def _read_customers_file(client, job_id: str, written: datetime, wanted: set, found,
                         rows: RowBatches, ids: set) -> None:
    lines = malformed = 0
    for raw in client.export_file_lines(job_id, CUSTOMERS_FILE):
        if not raw.strip():
            continue
        lines += 1
        try:
            line = json.loads(raw)
            customer_id = line["id"]
        # RecursionError: a line nested deeper than Python's recursion limit.
        except (ValueError, TypeError, KeyError, RecursionError):
            malformed += 1
            continue
        if not isinstance(customer_id, str):
            malformed += 1
            continue
        if customer_id in wanted and customer_id not in ids:
            ids.add(customer_id)
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            rows.add(exported_contact_row(line, text, written))
    found.lines += lines
    found.malformed += malformed
    check_malformed(f"{CUSTOMERS_FILE} of export job {job_id}", lines, malformed)


def recent_contacts(store: TableStore, since: datetime, *, full_only: bool = False) -> RowsById:
    """Raw contact rows fetched at or after `since`, newest per id, from any day's file.

    `full_only` skips rows read from the export's reduced profiles, for a caller that
    wants custom attributes and timestamps. Only files written since `since` can hold
    such rows, so older days are not read.
    """
    cutoff = since.timestamp()
    paths = [
        stored.path for stored in store.raw_partitions("contacts")
        if stored.modified.timestamp() >= cutoff
    ]
    found = []
    for path in paths:
        table = store.read(path, RAW_CONTACTS)
        keep = pc.greater_equal(table["fetched_at"], pa.scalar(since, TS))
        if full_only:
            keep = pc.and_(keep, _full_contact_rows(table))
        found.append(table.filter(pc.fill_null(keep, False)))
    return _newest_per_id(found, RAW_CONTACTS)


def _full_contact_rows(table: pa.Table) -> pa.Array:
    """records.is_full_contact_row, for a whole table."""
    merged = pc.and_(pc.is_valid(table["merged_into"]),
                     pc.not_equal(table["merged_into"], ""))
    return pc.or_(pc.or_(pc.is_valid(table["created_at"]), pc.fill_null(merged, False)),
                  pc.fill_null(table["deleted"], False))


def _newest_per_id(tables: list, schema: pa.Schema) -> RowsById:
    """The row of each id with the latest fetched_at (the first one on a tie)."""
    if not tables:
        return RowsById(schema.empty_table())
    rows = pa.concat_tables(tables)
    fetched = rows["fetched_at"].to_pylist()
    newest: dict = {}
    for index, row_id in enumerate(rows["id"].to_pylist()):
        known = newest.get(row_id)
        if known is None or fetched[index] > fetched[known]:
            newest[row_id] = index
    return RowsById(rows.take(pa.array(list(newest.values()), pa.int64())))


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
    # A few requests per worker are queued ahead, not all of them: a day's futures and
    # answers waiting for an early slow one would grow with the day (issue 5).
    ahead: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gladly") as pool:
        try:
            for key in ids:
                ahead.append(pool.submit(one, key))
                if len(ahead) >= workers * QUEUED_PER_WORKER:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


QUEUED_PER_WORKER = 4
