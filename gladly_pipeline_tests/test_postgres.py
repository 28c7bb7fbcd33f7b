"""The pipeline on a PostgreSQL Dagster instance: a daemon-run backfill, the sensor, the ledger."""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    SensorResult,
    build_sensor_context,
    materialize,
)
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.definitions.sensor_definition import SensorType
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    SensorInstigatorData,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.definitions import defs
from gladly_pipeline.emulator import start_emulator
from gladly_pipeline.storage import TableStore

from .conftest import TOKEN, USERNAME, make_resources, small_config

REPO = Path(__file__).resolve().parents[1]
DAEMON = Path(sys.executable).parent / "dagster-daemon"
# workspace.yaml's names: the daemon matches sensor states by location, repository and name.
LOCATION = "gladly_pipeline"
REPOSITORY = "__repository__"

RAW_TABLES = ("messages", "conversations", "contacts")
RAW_KEYS = [AssetKey(["raw", table]) for table in RAW_TABLES]
BACKFILL_DAYS = ["2026-03-05", "2026-03-06", "2026-03-07"]
# Every sensor the definitions start by default, stopped for the backfill test (see there).
SENSOR_TYPES = {
    "gladly_export_jobs": SensorType.STANDARD,
    "gladly_intraday": SensorType.STANDARD,
    "gladly_automation": SensorType.AUTOMATION,
}

BACKFILL_TIMEOUT_SECONDS = 240
DAEMON_STOP_SECONDS = 20
QUEUE_LIFECYCLE = (
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_STARTING,
    DagsterEventType.RUN_START,
    DagsterEventType.RUN_SUCCESS,
)
TERMINAL = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}


@contextmanager
def pg_instance(tmp_path, postgres_url, monkeypatch):
    """A Dagster instance configured by the repo's dagster-postgres.yaml, on postgres_url."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster-postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def stop_sensor_in_instance(instance: DagsterInstance, name: str, kind: SensorType) -> None:
    """Records the sensor as stopped, as the UI's toggle would, before any daemon sees it."""
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name="gladly_pipeline.definitions",
            working_directory=str(REPO),
        ),
        LOCATION,
    )
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, REPOSITORY), name)
    data = SensorInstigatorData(sensor_type=kind)
    instance.add_instigator_state(
        InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.STOPPED, data)
    )


def request_raw_backfill(instance: DagsterInstance, days: list) -> str:
    backfill_id = f"test{uuid.uuid4().hex[:8]}"
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=defs.resolve_asset_graph(),
        partition_names=days,
        asset_selection=RAW_KEYS,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill_id


def daemon_env(home: Path, postgres_url: str, emu, data_root: Path) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAGSTER_", "GLADLY_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_URL=postgres_url,
        DAGSTER_DISABLE_TELEMETRY="1",
        GLADLY_BASE_URL=emu.base_url,
        GLADLY_USERNAME=USERNAME,
        GLADLY_API_TOKEN=TOKEN,
        GLADLY_DATA_ROOT=str(data_root),
    )
    return env


def _default_signals() -> None:
    # A background child may inherit SIGINT ignored; restore both so the group stops on TERM.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def running_daemon(env: dict, log_path: Path):
    """dagster-daemon in a process group of its own; the whole group is gone on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(DAEMON), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
        try:
            yield process
        finally:
            _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    # The group holds the daemon, its code server and any run or step worker it launched.
    for sig, grace in ((signal.SIGTERM, DAEMON_STOP_SECONDS), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    # Workers may outlive the leader by a moment; make sure none is left.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=5)


def wait_for_backfill(instance, backfill_id, process, log_path):
    deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status in TERMINAL:
            return backfill
        if process.poll() is not None:
            pytest.fail(f"dagster-daemon exited with {process.returncode}:\n{_tail(log_path)}")
        time.sleep(2)
    pytest.fail(
        f"backfill still {instance.get_backfill(backfill_id).status} after "
        f"{BACKFILL_TIMEOUT_SECONDS} s; daemon log:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 80) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def written_days(root: Path, table: str) -> list:
    folder = TableStore(root).raw_table_dir(table)
    return sorted(p.parent.name.removeprefix("date=") for p in folder.glob("date=*/*.parquet"))


def test_backfill_of_three_days_through_the_daemon_on_postgres_materializes_exactly_those(
    tmp_path, postgres_url, monkeypatch
):
    data_root = tmp_path / "data"
    log_path = tmp_path / "daemon.log"
    with (
        start_emulator(small_config()) as emu,
        pg_instance(tmp_path, postgres_url, monkeypatch) as instance,
    ):
        # All three default-running sensors are stopped before the daemon starts. The export
        # and intraday sensors would request other days of these very assets on their first
        # tick; stopped, the test can assert on every raw partition, not only the backfill's.
        # The automation sensor never touches a raw partition, but its first tick builds the
        # reference tables, whose steps take the one `gladly_api` pool slot the backfill's
        # steps wait for: on 2 busy cores that pushed the backfill past the timeout.
        for name, kind in SENSOR_TYPES.items():
            stop_sensor_in_instance(instance, name, kind)
        backfill_id = request_raw_backfill(instance, BACKFILL_DAYS)

        env = daemon_env(instance.root_directory, postgres_url, emu, data_root)
        with running_daemon(env, log_path) as process:
            backfill = wait_for_backfill(instance, backfill_id, process, log_path)

        log = _tail(log_path)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, log
        runs = instance.get_runs(filters=RunsFilter.for_backfill(backfill_id))
        assert runs, log
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs), log
        assert sorted({run.tags["dagster/partition"] for run in runs}) == BACKFILL_DAYS
        # Launched by the daemon for the location workspace.yaml names.
        assert {run.remote_job_origin.location_name for run in runs} == {LOCATION}

        # Each run went through the run queue: enqueued by the backfill, then launched by the
        # daemon's queued-run coordinator.
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        for run in runs:
            kinds = [
                record.event_log_entry.dagster_event.event_type
                for record in instance.get_records_for_run(run.run_id).records
                if record.event_log_entry.is_dagster_event
            ]
            # Dagster 1.13 logs no RUN_DEQUEUED: the daemon's launch shows as RUN_STARTING.
            lifecycle = [kind for kind in kinds if kind in QUEUE_LIFECYCLE]
            assert lifecycle == list(QUEUE_LIFECYCLE), kinds

        for key in RAW_KEYS:
            assert instance.get_materialized_partitions(key) == set(BACKFILL_DAYS), key
        # The daemon honoured the stopped states: no sensor ever ticked, no other run exists.
        states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        stopped = {state.name: state for state in states if not state.is_running}
        assert set(SENSOR_TYPES) <= set(stopped)
        for name in SENSOR_TYPES:
            state = stopped[name]
            assert instance.get_ticks(state.instigator_origin_id, state.selector_id) == [], name
        assert {run.run_id for run in instance.get_runs()} == {run.run_id for run in runs}

    for table in RAW_TABLES:
        assert written_days(data_root, table) == BACKFILL_DAYS, table


def test_export_sensor_on_postgres_instance_storage(tmp_path, postgres_url, monkeypatch):
    # Ten days of history: enough completed export jobs for the seven-day first look-back.
    with (
        start_emulator(small_config(days=10)) as emu,
        pg_instance(tmp_path, postgres_url, monkeypatch) as instance,
    ):
        sensor = next(s for s in defs.sensors if s.name == "gladly_export_jobs")
        resources = make_resources(emu, tmp_path / "data")
        with build_sensor_context(instance=instance, resources=resources) as context:
            first = sensor(context)
        assert isinstance(first, SensorResult)
        # The emulator's clock reads 2026-03-09 12:00 UTC: the 8th is the last exported day.
        last = date(2026, 3, 8)
        expected = [str(last - timedelta(days=n)) for n in range(6, -1, -1)]
        assert sorted(r.partition_key for r in first.run_requests) == expected
        assert first.cursor

        with build_sensor_context(
            instance=instance, cursor=first.cursor, resources=resources
        ) as context:
            second = sensor(context)
        assert isinstance(second, SensorResult)
        assert not second.run_requests
        assert "no fully exported day" in second.skip_reason.skip_message


def test_budget_ledger_lives_in_the_instance_database_on_postgres(
    tmp_path, postgres_url, monkeypatch
):
    data_root = tmp_path / "data"
    with (
        start_emulator(small_config()) as emu,
        pg_instance(tmp_path, postgres_url, monkeypatch) as instance,
    ):
        result = materialize(
            [messages, conversations, contacts],
            partition_key="2026-03-07",
            resources=make_resources(emu, data_root, conversations_per_period=3),
            instance=instance,
        )
        assert result.success
        assert instance.get_materialized_partitions(RAW_KEYS[0]) == {"2026-03-07"}

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            rows = conn.execute(
                sa.text(
                    "SELECT period, state, count(*) FROM gladly_budget_units GROUP BY period, state"
                )
            ).all()
    finally:
        engine.dispose()
    # The ledger sits next to Dagster's own tables in the instance's database.
    assert {"gladly_budget_units", "runs", "event_logs"} <= tables
    assert [tuple(row) for row in rows] == [("2026-03", "counted", 3)]
    assert not (data_root / "_state" / "budget.sqlite3").exists()
    assert not (data_root / "_state").exists()
