"""The sensors that keep the tables current without anyone clicking."""

from datetime import timedelta

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ..resources import DataRoot, GladlyResource
from .plan import JobCursor, intraday_days, plan_export_runs

EXPORT_POLL_SECONDS = 300
INTRADAY_POLL_SECONDS = 300


def export_jobs_sensor(job):
    @sensor(
        name="gladly_export_jobs",
        job=job,
        minimum_interval_seconds=EXPORT_POLL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Polls Gladly's completed export jobs. The first tick requests the last "
            "`first_run_lookback_days` days; later ticks request one run per day touched "
            "by a new job, once the day is fully covered."
        ),
    )
    def _sensor(context: SensorEvaluationContext, gladly: GladlyResource, data_root: DataRoot):
        cursor = JobCursor.parse(context.cursor)
        jobs, now = _jobs_and_time(gladly)
        blocked = _budget_block(gladly, data_root, now)
        if blocked:
            # The cursor stays put, so these jobs are picked up when the budget allows.
            return SkipReason(blocked)
        plan = plan_export_runs(jobs, cursor, lookback_days=gladly.first_run_lookback_days,
                                now=now)
        if plan.waiting_days:
            context.log.info("Days not yet fully exported: %s", ", ".join(plan.waiting_days))
        if not plan.runs:
            return SensorResult(
                skip_reason=SkipReason(
                    f"Checked {len(jobs)} completed export jobs: {len(plan.new_jobs)} new, "
                    "no fully exported day to extract"
                ),
                cursor=plan.cursor.dump(),
            )
        context.log.info(
            "%d new export jobs -> runs for %s", len(plan.new_jobs),
            ", ".join(run.day for run in plan.runs),
        )
        requests = [
            RunRequest(run_key=run.run_key, partition_key=run.day,
                       tags={"gladly/source": "export"})
            for run in plan.runs
        ]
        return SensorResult(run_requests=requests, cursor=plan.cursor.dump())

    return _sensor


def intraday_sensor(job):
    @sensor(
        name="gladly_intraday",
        job=job,
        minimum_interval_seconds=INTRADAY_POLL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Every `intraday_refresh_minutes`, refreshes today (and yesterday until its "
            "export job lands) from Gladly's Events API."
        ),
    )
    def _sensor(context: SensorEvaluationContext, gladly: GladlyResource, data_root: DataRoot):
        jobs, now = _jobs_and_time(gladly)
        blocked = _budget_block(gladly, data_root, now)
        if blocked:
            return SkipReason(blocked)
        period = timedelta(minutes=gladly.intraday_refresh_minutes)
        slot = int(now.timestamp() // period.total_seconds())
        days = intraday_days(now, jobs)
        return [
            RunRequest(run_key=f"intraday:{day}:{slot}", partition_key=day,
                       tags={"gladly/source": "events"})
            for day in days
        ]

    return _sensor


def _jobs_and_time(gladly: GladlyResource):
    """Gladly's completed export jobs and its clock, which decides what is new."""
    client = gladly.get_client()
    try:
        return client.export_jobs(status="COMPLETED"), client.server_time()
    finally:
        client.close()


def _budget_block(gladly: GladlyResource, data_root: DataRoot, now):
    if gladly.conversations_per_period is None:
        return None
    ledger = gladly.open_ledger(data_root.store())
    try:
        return gladly.budget_block_reason(ledger, now)
    finally:
        ledger.close()
