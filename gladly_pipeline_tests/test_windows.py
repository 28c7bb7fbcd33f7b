"""Partition windows in UTC and how export jobs are chosen to cover them."""

from datetime import UTC, datetime, timedelta

import pytest

from gladly_pipeline.extract import ExportNotAvailable, covered_days, jobs_for_window
from gladly_pipeline.windows import Window, daily_partitions, window_for_day

UTC = UTC


def job(job_id, start, end, updated=None, status="COMPLETED"):
    return {
        "id": job_id,
        "status": status,
        "updatedAt": updated or end,
        "parameters": {"type": "CONVERSATIONS", "startAt": start, "endAt": end},
        "files": ["conversation_items.jsonl"],
    }


def test_partition_window_is_the_utc_day():
    window = window_for_day("2026-03-08")
    assert window.start == datetime(2026, 3, 8, tzinfo=UTC)
    assert window.end == datetime(2026, 3, 9, tzinfo=UTC)
    assert window.contains(datetime(2026, 3, 8, 23, 59, 59, 999999, tzinfo=UTC))
    assert not window.contains(window.end)


def test_malformed_partition_key_is_refused_with_the_expected_format():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        window_for_day("2026-3-8")


def test_partitions_are_daily_in_utc():
    assert daily_partitions.timezone == "UTC"
    keys = daily_partitions.get_partition_keys(current_time=datetime(2026, 3, 9, 0, 5, tzinfo=UTC))
    # At 00:05 the day just begun is a partition too: the intraday path refreshes it.
    assert keys[-2:] == ["2026-03-08", "2026-03-09"]


def test_a_utc_day_takes_both_local_midnight_jobs_that_overlap_it():
    jobs = [
        job("a", "2026-03-07T05:00:00.000Z", "2026-03-08T05:00:00.000Z"),
        # DST began on 2026-03-08 in New York: this local day is 23 hours long.
        job("b", "2026-03-08T05:00:00.000Z", "2026-03-09T04:00:00.000Z"),
        job("c", "2026-03-09T04:00:00.000Z", "2026-03-10T04:00:00.000Z"),
        job("x", "2026-03-01T05:00:00.000Z", "2026-03-02T05:00:00.000Z"),
    ]
    chosen = jobs_for_window(jobs, window_for_day("2026-03-08"))
    assert sorted(j["id"] for j in chosen) == ["a", "b"]


def test_hourly_jobs_cover_a_day_only_when_all_24_are_there():
    day = datetime(2026, 3, 8, tzinfo=UTC)
    hourly = [
        job(str(h), _iso(day + timedelta(hours=h)), _iso(day + timedelta(hours=h + 1)))
        for h in range(24)
    ]
    assert len(jobs_for_window(hourly, window_for_day("2026-03-08"))) == 24
    with pytest.raises(ExportNotAvailable, match="13:00:00"):
        jobs_for_window(hourly[:13] + hourly[14:], window_for_day("2026-03-08"))


def test_failed_and_pending_jobs_do_not_count_as_coverage():
    jobs = [job("f", "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z", status="FAILED")]
    with pytest.raises(ExportNotAvailable, match="no completed export job"):
        jobs_for_window(jobs, window_for_day("2026-03-08"))


def test_day_older_than_every_listed_job_says_retention():
    jobs = [job("a", "2026-02-24T00:00:00Z", "2026-02-25T00:00:00Z")]
    with pytest.raises(ExportNotAvailable, match="deleted after 14 days"):
        jobs_for_window(jobs, window_for_day("2026-01-02"))


def test_missing_job_between_covered_days_says_it_failed_or_was_deleted():
    jobs = [
        job("a", "2026-03-06T00:00:00Z", "2026-03-07T00:00:00Z"),
        job("c", "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"),
    ]
    with pytest.raises(ExportNotAvailable, match="failed or was deleted"):
        jobs_for_window(jobs, window_for_day("2026-03-07"))


def test_covered_days_lists_only_complete_utc_days():
    jobs = [
        job("a", "2026-03-07T05:00:00.000Z", "2026-03-08T05:00:00.000Z"),
        job("b", "2026-03-08T05:00:00.000Z", "2026-03-09T04:00:00.000Z"),
    ]
    # 03-07 starts before the first job; 03-08 is covered; 03-09 only partly.
    assert covered_days(jobs) == ["2026-03-08"]


def test_window_overlap_is_half_open():
    a = Window(datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC))
    b = Window(datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
    assert not a.overlaps(b)


def _iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
