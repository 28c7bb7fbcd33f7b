"""Which days to extract, decided from Gladly's export job list and a cursor.

Pure functions: the sensors call them with what Gladly listed and the stored cursor.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from ..extract import ExportNotAvailable, covered_days, job_window, jobs_for_window
from ..timeutil import parse_timestamp
from ..windows import daily_partitions, window_for_day


@dataclass(frozen=True)
class JobCursor:
    """The newest job `updatedAt` handled, and the ids handled at exactly that instant.

    Compared inclusively: a job that appears later with the same `updatedAt` as the
    cursor is still new, because its id is not among those handled.
    """

    updated_at: Optional[datetime] = None
    ids_at_cursor: frozenset = frozenset()

    @classmethod
    def parse(cls, raw: Optional[str]) -> Optional["JobCursor"]:
        if not raw:
            return None
        data = json.loads(raw)
        return cls(parse_timestamp(data["updated_at"]), frozenset(data["ids"]))

    def dump(self) -> str:
        stamp = format_iso_us(self.updated_at) if self.updated_at else None
        return json.dumps({"updated_at": stamp, "ids": sorted(self.ids_at_cursor)})

    def is_new(self, job: dict) -> bool:
        updated = parse_timestamp(job.get("updatedAt"))
        if updated is None or self.updated_at is None:
            return True
        if updated > self.updated_at:
            return True
        return updated == self.updated_at and job["id"] not in self.ids_at_cursor

    def advance(self, jobs: list) -> "JobCursor":
        """The cursor after handling `jobs` (and everything handled before)."""
        cursor = self
        for job in jobs:
            updated = parse_timestamp(job.get("updatedAt"))
            if updated is None:
                continue
            if cursor.updated_at is None or updated > cursor.updated_at:
                cursor = JobCursor(updated, frozenset([job["id"]]))
            elif updated == cursor.updated_at:
                cursor = JobCursor(updated, cursor.ids_at_cursor | {job["id"]})
        return cursor


def format_iso_us(moment: datetime) -> str:
    # Microseconds, so the cursor keeps all the precision we compare with.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class DayRun:
    day: str
    job_ids: tuple

    @property
    def run_key(self) -> str:
        # Names the jobs: a new job for the same day makes a new key, a repeat does not.
        return f"export:{self.day}:{'+'.join(self.job_ids)}"


@dataclass
class ExportPlan:
    runs: list = field(default_factory=list)
    cursor: JobCursor = field(default_factory=JobCursor)
    new_jobs: list = field(default_factory=list)
    waiting_days: list = field(default_factory=list)


def plan_export_runs(
    jobs: list, cursor: Optional[JobCursor], *, lookback_days: int, now: datetime
) -> ExportPlan:
    """One run per day touched by new completed jobs, once the day is fully covered."""
    completed = [j for j in jobs if j.get("status") == "COMPLETED" and job_window(j)]
    if cursor is None:
        days = _first_run_days(completed, lookback_days, now)
        new_jobs = completed
    else:
        new_jobs = [j for j in completed if cursor.is_new(j)]
        days = _days_touched(new_jobs)
    plan = ExportPlan(new_jobs=new_jobs)
    for day in days:
        try:
            covering = jobs_for_window(completed, window_for_day(day))
        except ExportNotAvailable:
            # Not all of this day is exported yet; the job that completes it will be new.
            plan.waiting_days.append(day)
            continue
        plan.runs.append(DayRun(day, tuple(sorted(j["id"] for j in covering))))
    plan.cursor = (cursor or JobCursor()).advance(new_jobs)
    return plan


def _first_run_days(completed: list, lookback_days: int, now: datetime) -> list:
    """The most recent `lookback_days` fully exported days (today is never exported)."""
    today = now.strftime("%Y-%m-%d")
    exported = [d for d in covered_days(completed) if d < today and _is_key(d)]
    return exported[-lookback_days:]


def _days_touched(jobs: list) -> list:
    days = set()
    for job in jobs:
        span = job_window(job)
        day = span.start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < span.end:
            key = day.strftime("%Y-%m-%d")
            if _is_key(key):
                days.add(key)
            day += timedelta(days=1)
    return sorted(days)


def _is_key(day: str) -> bool:
    return daily_partitions.has_partition_key(day)


def intraday_days(now: datetime, jobs: list) -> list:
    """Today, and yesterday while no export job covers it yet."""
    today = now.strftime("%Y-%m-%d")
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    if yesterday in covered_days(jobs):
        return [today]
    return [yesterday, today]
