"""The export-job and intraday sensors: cursors, first run, ties, DST, run keys."""

from datetime import UTC, datetime, timedelta

import pytest
from dagster import SensorResult, build_sensor_context

from gladly_pipeline.definitions import defs
from gladly_pipeline.emulator import start_emulator
from gladly_pipeline.sensors.plan import JobCursor, plan_export_runs

from .conftest import make_resources, small_config

UTC = UTC


def job(job_id, start, end, updated):
    return {
        "id": job_id,
        "status": "COMPLETED",
        "updatedAt": updated,
        "parameters": {"type": "CONVERSATIONS", "startAt": start, "endAt": end},
        "files": ["conversation_items.jsonl"],
    }


def daily_jobs(last_day: datetime, count: int) -> list:
    jobs = []
    for n in range(count):
        start = last_day - timedelta(days=n)
        end = start + timedelta(days=1)
        updated = end + timedelta(hours=3)
        jobs.append(job(f"job-{start:%m%d}", _iso(start), _iso(end), _iso(updated)))
    return jobs


@pytest.mark.parametrize("hour, minute, newest", [(0, 5, "2026-03-07"), (23, 55, "2026-03-08")])
def test_first_tick_requests_the_last_seven_exported_days(hour, minute, newest):
    now = datetime(2026, 3, 9, hour, minute, tzinfo=UTC)
    jobs = [j for j in daily_jobs(datetime(2026, 3, 8, tzinfo=UTC), 14)
            if j["updatedAt"] <= _iso(now)]
    plan = plan_export_runs(jobs, None, lookback_days=7, now=now)
    days = [run.day for run in plan.runs]
    assert len(days) == 7 and days[-1] == newest
    assert plan.cursor.updated_at == max(datetime.fromisoformat(j["updatedAt"]) for j in jobs)


def test_second_tick_with_nothing_new_requests_nothing():
    now = datetime(2026, 3, 9, 12, tzinfo=UTC)
    jobs = daily_jobs(datetime(2026, 3, 8, tzinfo=UTC), 14)
    first = plan_export_runs(jobs, None, lookback_days=7, now=now)
    second = plan_export_runs(jobs, JobCursor.parse(first.cursor.dump()), lookback_days=7,
                              now=now)
    assert second.runs == [] and second.new_jobs == []
    assert second.cursor == first.cursor


def test_late_job_with_the_cursors_timestamp_is_not_skipped():
    tie = "2026-03-09T03:00:00.000Z"
    a = job("a", "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z", tie)
    first = plan_export_runs([a], JobCursor(), lookback_days=7, now=_now())
    assert [r.day for r in first.runs] == ["2026-03-08"]
    # A regenerated export of the same day shows up later with the same updatedAt.
    b = job("b", "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z", tie)
    second = plan_export_runs([a, b], first.cursor, lookback_days=7, now=_now())
    assert [r.day for r in second.runs] == ["2026-03-08"]
    assert second.runs[0].run_key != first.runs[0].run_key
    assert second.runs[0].job_ids == ("a", "b")
    third = plan_export_runs([a, b], second.cursor, lookback_days=7, now=_now())
    assert third.runs == []


def test_two_jobs_covering_one_day_in_one_tick_give_one_run():
    jobs = [
        job("x", "2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z", "2026-03-08T08:00:00Z"),
        # 2026-03-08 is a 23-hour day in New York (DST began).
        job("y", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", "2026-03-09T07:00:00Z"),
    ]
    cursor = JobCursor(datetime(2026, 3, 1, tzinfo=UTC))
    plan = plan_export_runs(jobs, cursor, lookback_days=7, now=_now())
    assert [(r.day, r.job_ids) for r in plan.runs] == [("2026-03-08", ("x", "y"))]
    # 03-07 is only partly covered and 03-09 has only begun: they wait for their jobs.
    assert plan.waiting_days == ["2026-03-07", "2026-03-09"]


def test_cursor_round_trips_with_microseconds_and_ids():
    cursor = JobCursor(datetime(2026, 3, 9, 3, 12, 45, 72729, tzinfo=UTC), frozenset({"a"}))
    assert JobCursor.parse(cursor.dump()) == cursor


def _sensor(name):
    return next(s for s in defs.sensors if s.name == name)


def test_export_sensor_against_the_emulator_then_a_new_job_the_next_morning(tmp_path):
    now = datetime(2026, 3, 9, 0, 5, tzinfo=UTC)
    with start_emulator(small_config(now=now, days=10, future_days=1)) as emu:
        resources = make_resources(emu, tmp_path)
        sensor = _sensor("gladly_export_jobs")
        with build_sensor_context(resources=resources) as context:
            first = sensor(context)
        assert isinstance(first, SensorResult)
        days = sorted(r.partition_key for r in first.run_requests)
        assert len(days) == 7 and days[-1] == "2026-03-07"

        with build_sensor_context(cursor=first.cursor, resources=resources) as context:
            again = sensor(context)
        assert isinstance(again, SensorResult) and not again.run_requests
        assert "no fully exported day" in again.skip_reason.skip_message

        emu.set_now(datetime(2026, 3, 9, 23, 55, tzinfo=UTC))
        with build_sensor_context(cursor=first.cursor, resources=resources) as context:
            later = sensor(context)
        assert [r.partition_key for r in later.run_requests] == ["2026-03-08"]
        assert "export:2026-03-08:" in later.run_requests[0].run_key


def test_daily_local_schedule_on_the_dst_day_gives_one_run_for_the_utc_day(tmp_path):
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    config = small_config(now=now, days=6, schedule="daily-local",
                          org_timezone="America/New_York")
    with start_emulator(config) as emu:
        resources = make_resources(emu, tmp_path)
        cursor = JobCursor(datetime(2026, 3, 8, 12, tzinfo=UTC)).dump()
        with build_sensor_context(cursor=cursor, resources=resources) as context:
            result = _sensor("gladly_export_jobs")(context)
    runs = {r.partition_key: r.run_key for r in result.run_requests}
    assert "2026-03-08" in runs
    # The UTC day 03-08 needs the local days of 03-07 and of 03-08 (23 hours long).
    assert runs["2026-03-08"].count("+") == 1


@pytest.mark.parametrize(
    "hour, minute, expected",
    [(0, 5, ["2026-03-08", "2026-03-09"]), (23, 55, ["2026-03-09"])],
)
def test_intraday_sensor_refreshes_today_and_yesterday_until_exported(
    tmp_path, hour, minute, expected
):
    now = datetime(2026, 3, 9, hour, minute, tzinfo=UTC)
    with start_emulator(small_config(now=now)) as emu:
        resources = make_resources(emu, tmp_path)
        with build_sensor_context(resources=resources) as context:
            requests = list(_sensor("gladly_intraday")(context))
        assert [r.partition_key for r in requests] == expected
        with build_sensor_context(resources=resources) as context:
            repeat = list(_sensor("gladly_intraday")(context))
    # Within one refresh interval the run keys repeat, so Dagster launches nothing new.
    assert [r.run_key for r in repeat] == [r.run_key for r in requests]


def _now():
    return datetime(2026, 3, 9, 12, tzinfo=UTC)


def _iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")

