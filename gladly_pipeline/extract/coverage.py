"""Which export jobs cover a UTC window, and why a window cannot be extracted."""

from collections.abc import Iterable
from datetime import timedelta
from typing import Optional

from ..timeutil import parse_timestamp
from ..windows import Window


class ExportNotAvailable(Exception):
    """The export jobs Gladly lists do not cover the window (not yet, or expired)."""


def job_window(job: dict) -> Optional[Window]:
    params = job.get("parameters") or {}
    start = parse_timestamp(params.get("startAt"))
    end = parse_timestamp(params.get("endAt"))
    if start is None or end is None or end <= start:
        return None
    return Window(start, end)


def jobs_for_window(jobs: Iterable[dict], window: Window) -> list:
    """The completed jobs overlapping `window`, newest first; raises if they leave gaps."""
    spans, chosen = [], []
    for job in jobs:
        span = job_window(job)
        if job.get("status") != "COMPLETED" or span is None:
            continue
        spans.append(span)
        if span.overlaps(window):
            chosen.append((span, job))
    gaps = _gaps(window, [span for span, _ in chosen])
    if gaps:
        raise ExportNotAvailable(_coverage_message(window, gaps, spans))
    # Newest first: when an item appears in two jobs, the later export's copy wins.
    chosen.sort(key=lambda pair: (pair[1].get("updatedAt") or "", pair[1]["id"]), reverse=True)
    return [job for _, job in chosen]


def _gaps(window: Window, spans: list) -> list:
    gaps, cursor = [], window.start
    for span in sorted(spans, key=lambda s: s.start):
        if span.start > cursor:
            gaps.append(Window(cursor, min(span.start, window.end)))
        cursor = max(cursor, span.end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        gaps.append(Window(cursor, window.end))
    return gaps


def _coverage_message(window: Window, gaps: list, spans: list) -> str:
    """Says why the day cannot be extracted, judged from the jobs Gladly still lists.

    Gladly's own job list is the clock here: the machine's time may differ from the
    account's, and the list is what decides what can be read.
    """
    missing = ", ".join(gap.describe() for gap in gaps)
    if spans and window.end <= min(s.start for s in spans):
        return (
            f"Day {window.day} is older than every export job Gladly still keeps (exports "
            f"are deleted after 14 days), so it cannot be extracted (missing {missing}). "
            "History beyond 14 days needs Gladly's Reports API, not used by this pipeline yet."
        )
    if not spans or window.end > max(s.end for s in spans):
        return (
            f"Gladly has no completed export job covering {missing} of day {window.day} "
            "yet. Daily exports are published a few hours after the day ends (UTC); "
            "materialize this day again later."
        )
    return (
        f"Gladly lists no completed export job covering {missing} of day {window.day}, "
        "although later days have one: the job failed or was deleted. Gladly Support can "
        "regenerate it."
    )


def covered_days(jobs: Iterable[dict]) -> list:
    """UTC days (YYYY-MM-DD) fully covered by the completed jobs, oldest first."""
    spans = [job_window(j) for j in jobs if j.get("status") == "COMPLETED"]
    spans = [s for s in spans if s is not None]
    if not spans:
        return []
    first = min(s.start for s in spans).replace(hour=0, minute=0, second=0, microsecond=0)
    last = max(s.end for s in spans)
    days, day = [], first
    while day < last:
        window = Window(day, day + timedelta(days=1))
        if not _gaps(window, [s for s in spans if s.overlaps(window)]):
            days.append(window.day)
        day = window.end
    return days
