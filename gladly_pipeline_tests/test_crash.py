"""A run killed outright (SIGKILL) leaves readable Parquet and an honest budget ledger."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from gladly_pipeline.budget import BudgetLedger, billing_period
from gladly_pipeline.storage import TableStore

DAY = "2026-03-08"
REPO = Path(__file__).resolve().parent.parent
TABLES = ("messages", "conversations", "contacts")
PERIOD = billing_period(datetime(2026, 3, 9, 12, tzinfo=UTC))


def start(root: Path) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    log = open(root.parent / f"{root.name}-worker.log", "ab")  # noqa: SIM115 - child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "gladly_pipeline_tests.crash_worker", str(root), DAY],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"},
    )


def run_to_end(root: Path) -> float:
    began = time.monotonic()
    code = start(root).wait(timeout=300)
    log = (root.parent / f"{root.name}-worker.log").read_text(errors="replace")
    assert code == 0, f"worker failed ({code}); its log ends:\n{log[-3000:]}"
    return time.monotonic() - began


def rows(root: Path, table: str) -> list:
    data = pq.read_table(TableStore(root).raw_partition(table, DAY)).to_pylist()
    for row in data:
        row.pop("fetched_at", None)
    return sorted(data, key=lambda r: r["id"])


def counted(root: Path) -> set:
    ledger = BudgetLedger.for_sqlite_file(root / "_state" / "budget.sqlite3")
    try:
        return ledger.counted(PERIOD)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    root = tmp_path_factory.mktemp("undisturbed")
    seconds = run_to_end(root)
    return root, seconds


# Five kills spread over the run: before, during and after each table's write and the
# ledger's reserve and commit. CI runs all five every time.
@pytest.mark.parametrize("share", [0.35, 0.5, 0.65, 0.8, 0.95])
def test_sigkill_mid_run_leaves_the_previous_day_and_an_honest_ledger(
    tmp_path, undisturbed, share
):
    reference, seconds = undisturbed
    run_to_end(tmp_path)
    before = {table: rows(tmp_path, table) for table in TABLES}
    # A day's first extraction killed mid-way: its files are absent or whole.
    first = tmp_path / "first"
    killed_first = start(first)

    victim = start(tmp_path)
    time.sleep(seconds * share)
    for process in (victim, killed_first):
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    # Every table reads back whole: the killed run's half-written files stay invisible.
    for table in TABLES:
        dataset = ds.dataset(tmp_path / "raw" / table, format="parquet", partitioning="hive")
        assert dataset.to_table().num_rows == len(before[table])
        assert rows(tmp_path, table) == before[table]
    written = {r["conversation_id"] for r in before["messages"] if r["conversation_id"]}
    assert counted(tmp_path) <= written, "a unit is counted for data that was not written"

    first_written = set()
    for table in TABLES:
        path = TableStore(first).raw_partition(table, DAY)
        if path.exists():
            assert rows(first, table) == rows(reference, table)
            if table == "messages":
                first_written = {r["conversation_id"] for r in rows(first, table)}
    if (first / "_state").exists():
        assert counted(first) <= first_written

    # A rerun converges to the same rows as a run that was never disturbed.
    run_to_end(tmp_path)
    for table in TABLES:
        assert rows(tmp_path, table) == rows(reference, table)
    assert counted(tmp_path) == counted(reference)
