"""The export path: a day's conversation items streamed from the export jobs covering it."""

import logging
from typing import Optional

from ..client import GladlyClient, GladlyNotFound
from ..storage import StorePath, TableStore
from ..windows import Window
from .coverage import ExportNotAvailable, jobs_for_window
from .itemlines import ItemReader, LineBlocks, Prefetch
from .staging import Admit, MessageStats, check_malformed, write_day_tables

log = logging.getLogger(__name__)

ITEMS_FILE = "conversation_items.jsonl"

def extract_messages(
    client: GladlyClient,
    window: Window,
    store: TableStore,
    path: StorePath,
    *,
    jobs: Optional[list] = None,
    admit: Admit = None,
) -> MessageStats:
    """Writes every conversation item of `window` from the export jobs covering it.

    `admit` receives {conversation_id: first activity in the window} and returns the
    conversation ids to leave out (the volume budget); their items are not written.
    """
    if jobs is None:
        jobs = client.export_jobs(status="COMPLETED")
    skipped: list = []
    while True:
        try:
            covering = jobs_for_window([j for j in jobs if j["id"] not in skipped], window)
        except ExportNotAvailable as gap:
            if not skipped:
                raise
            # Lead with the skipped jobs: "try again later" would be wrong advice here.
            gone = ", ".join(skipped)
            raise ExportNotAvailable(
                f"Day {window.day} cannot be extracted: export jobs {gone} are listed as "
                f"COMPLETED but their {ITEMS_FILE} is gone (expired or deleted) or not "
                "listed, and no other job covers the day. Waiting will not help; Gladly "
                f"Support can regenerate the export. ({gap})"
            ) from None
        try:
            stats = _extract_from_jobs(client, covering, window, store, path, admit)
        except ExportFileGone as gone:
            # Listed as COMPLETED but its files expired or were deleted: report it and
            # try without it; if the other jobs do not cover the day, that says so.
            log.warning("%s; extracting %s without it", gone, window.day)
            skipped.append(gone.job_id)
            continue
        stats.skipped_jobs = skipped
        return stats


class ExportFileGone(Exception):
    """A COMPLETED job whose items file cannot be read: expired, deleted or never listed."""

    def __init__(self, job_id: str, why: str = "is gone (expired or deleted)"):
        super().__init__(f"Export job {job_id} is listed as COMPLETED but its {ITEMS_FILE} {why}")
        self.job_id = job_id


def _extract_from_jobs(client, jobs, window, store, path, admit) -> MessageStats:
    stats = MessageStats(jobs=[job["id"] for job in jobs])
    seen: set = set()
    tables = (table for job in jobs for table in _job_items(client, job, window, seen, stats))
    write_day_tables(store, path, tables, stats, admit)
    return stats


def _job_items(client, job: dict, window: Window, seen: set, stats: MessageStats):
    """Tables of the job's items in `window` not seen in a newer job, a block at a time."""
    job_id = job["id"]
    files = job.get("files") or []
    if ITEMS_FILE not in files:
        # An empty day and a broken export look alike here; never take it as empty.
        raise ExportFileGone(job_id, f"is not among its files {sorted(files)}")
    blocks = LineBlocks(client.export_file_lines(job_id, ITEMS_FILE))
    reader = ItemReader(job_id, window, seen, stats)
    try:
        for block in Prefetch(blocks):
            yield from reader.tables(block)
    except GladlyNotFound:
        if blocks.lines_read():
            raise
        raise ExportFileGone(job_id) from None
    stats.lines += blocks.lines
    stats.malformed += reader.malformed
    check_malformed(f"{ITEMS_FILE} of export job {job_id}", blocks.lines, reader.malformed)
