"""The volume budget: billing periods, and the ledger on SQLite and PostgreSQL."""

import multiprocessing
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gladly_pipeline.budget import BudgetLedger, billing_period

UTC = UTC
MARCH = billing_period(datetime(2026, 3, 9, 12, tzinfo=UTC))
APRIL = billing_period(datetime(2026, 4, 9, 12, tzinfo=UTC))

class Clock:
    """A settable clock for the ledger's `clock=` argument."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(datetime(2026, 3, 9, 12, tzinfo=UTC))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'budget.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request):
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def ledger(ledger_url, clock):
    with BudgetLedger.from_url(ledger_url, clock=clock) as ledger:
        ledger.ensure_schema()
        yield ledger


def ids(prefix: str, count: int) -> list:
    return [f"{prefix}{n}" for n in range(count)]


# Billing periods


def test_calendar_month_period_is_labelled_by_its_month():
    period = billing_period(datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    assert period.label == "2026-03"
    assert period.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 4, 1, tzinfo=UTC)


def test_mid_month_start_day_crosses_the_year_boundary():
    period = billing_period(datetime(2026, 1, 10, tzinfo=UTC), start_day=15)
    assert period.label == "2025-12-15"
    assert (period.start, period.end) == (
        datetime(2025, 12, 15, tzinfo=UTC),
        datetime(2026, 1, 15, tzinfo=UTC),
    )


def test_moment_exactly_at_a_boundary_opens_the_new_period():
    boundary = datetime(2026, 3, 15, tzinfo=UTC)
    period = billing_period(boundary, start_day=15)
    assert period.label == "2026-03-15"
    assert period.start == boundary
    assert period.end == datetime(2026, 4, 15, tzinfo=UTC)
    just_before = billing_period(boundary - timedelta(microseconds=1), start_day=15)
    assert just_before.end == boundary
    assert not just_before.contains(boundary)


def test_period_of_a_non_utc_moment_follows_its_utc_instant():
    # 01:00 in Paris on 1 April is still 31 March in UTC.
    paris_summer = timezone(timedelta(hours=2))
    assert billing_period(datetime(2026, 4, 1, 1, tzinfo=paris_summer)).label == "2026-03"


def test_start_day_29_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="billing_period_start_day"):
        billing_period(datetime(2026, 3, 9, tzinfo=UTC), start_day=29)


def test_naive_moment_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        billing_period(datetime(2026, 3, 9))


# The ledger, on both backends


def test_budget_spent_mid_list_defers_the_rest_in_order(ledger):
    res = ledger.reserve(MARCH, ["c5", "c1", "c4", "c2", "c3"], limit=3, run_id="run-1")
    assert res.admitted == ["c5", "c1", "c4"]
    assert res.newly_reserved == ["c5", "c1", "c4"]
    assert res.deferred == ["c2", "c3"]
    assert (res.used, res.left) == (3, 0)
    assert ledger.usage(MARCH) == 3


def test_rerun_of_the_same_ids_is_free_and_does_not_increase_usage(ledger):
    first = ledger.reserve(MARCH, ids("c", 4), limit=5, run_id="run-1")
    again = ledger.reserve(MARCH, ids("c", 4), limit=5, run_id="run-1")
    assert again.admitted == ids("c", 4)
    assert again.newly_reserved == []
    assert (first.used, again.used, again.left) == (4, 4, 1)

    ledger.commit("run-1")
    backfill = ledger.reserve(MARCH, ids("c", 4), limit=5, run_id="backfill-1")
    assert backfill.newly_reserved == []
    assert ledger.usage(MARCH) == 4


def test_next_period_admits_the_same_ids_again(ledger):
    ledger.reserve(MARCH, ids("c", 3), limit=3, run_id="run-march")
    ledger.commit("run-march")
    april = ledger.reserve(APRIL, ids("c", 3), limit=3, run_id="run-april")
    assert april.newly_reserved == ids("c", 3)
    assert (ledger.usage(MARCH), ledger.usage(APRIL)) == (3, 3)


def test_release_frees_the_units_of_a_failed_run(ledger):
    ledger.reserve(MARCH, ids("a", 3), limit=3, run_id="failed")
    assert ledger.release("failed") == 3
    assert ledger.usage(MARCH) == 0

    retry = ledger.reserve(MARCH, ids("b", 3), limit=3, run_id="retry")
    assert retry.admitted == ids("b", 3)
    assert ledger.counted(MARCH) == set()


def test_committed_ids_stay_free_after_the_budget_is_spent(ledger):
    ledger.reserve(MARCH, ["c1", "c2"], limit=2, run_id="run-1")
    assert ledger.commit("run-1") == 2
    assert ledger.counted(MARCH) == {"c1", "c2"}

    res = ledger.reserve(MARCH, ["n1", "c2", "n2", "c1"], limit=2, run_id="run-2")
    assert res.admitted == ["c2", "c1"]
    assert res.deferred == ["n1", "n2"]
    assert (res.used, res.left) == (2, 0)


def test_live_reservation_of_another_run_admits_the_id_free(ledger):
    ledger.reserve(MARCH, ["c1"], limit=1, run_id="daily")
    intraday = ledger.reserve(MARCH, ["c1", "c2"], limit=1, run_id="intraday")
    assert intraday.admitted == ["c1"]
    assert intraday.deferred == ["c2"]
    assert intraday.newly_reserved == []


def test_abandoned_reservation_past_its_ttl_neither_counts_nor_blocks(ledger, clock):
    ledger.reserve(MARCH, ids("killed", 3), limit=3, run_id="killed-run")
    clock.now += timedelta(hours=6, seconds=1)
    assert ledger.usage(MARCH) == 0

    res = ledger.reserve(MARCH, ["k", "killed0"], limit=3, run_id="next-run")
    # The dead run's id costs a unit again: nothing of it was ever committed.
    assert res.newly_reserved == ["k", "killed0"]
    assert (res.used, res.left) == (2, 1)
    assert ledger.commit("killed-run") == 0
    assert ledger.counted(MARCH) == set()


def test_reservation_within_its_ttl_still_blocks(ledger, clock):
    ledger.reserve(MARCH, ["slow"], limit=1, run_id="slow-run")
    clock.now += timedelta(hours=5, minutes=59)
    assert ledger.reserve(MARCH, ["other"], limit=1, run_id="other-run").deferred == ["other"]


def test_commit_and_release_are_idempotent_and_ignore_unknown_runs(ledger):
    ledger.reserve(MARCH, ids("c", 2), limit=None, run_id="run-1")
    assert ledger.commit("no-such-run") == 0
    assert ledger.release("no-such-run") == 0
    assert (ledger.commit("run-1"), ledger.commit("run-1")) == (2, 0)
    # Releasing after the commit does not uncount what was written.
    assert ledger.release("run-1") == 0
    assert ledger.counted(MARCH) == set(ids("c", 2))


def test_unlimited_budget_admits_everything_and_still_reports_usage(ledger):
    res = ledger.reserve(MARCH, ids("c", 50), limit=None, run_id="run-1")
    assert res.deferred == []
    assert (res.used, res.left) == (50, None)


def test_zero_limit_defers_every_new_id(ledger):
    res = ledger.reserve(MARCH, ["c1", "c2"], limit=0, run_id="run-1")
    assert (res.admitted, res.deferred, res.left) == ([], ["c1", "c2"], 0)


def test_an_id_repeated_in_one_call_costs_one_unit(ledger):
    res = ledger.reserve(MARCH, ["c1", "c2", "c1"], limit=5, run_id="run-1")
    assert res.admitted == ["c1", "c2"]
    assert res.used == 2


def test_ensure_schema_twice_is_harmless_and_keeps_the_units(ledger):
    ledger.reserve(MARCH, ["c1"], limit=1, run_id="run-1")
    ledger.commit("run-1")
    ledger.ensure_schema()
    ledger.ensure_schema()
    assert ledger.counted(MARCH) == {"c1"}


def test_concurrent_processes_never_overspend(ledger_url):
    limit, workers = 40, 3
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    shared = ids("shared", 30)
    processes = []
    for worker in range(workers):
        own = ids(f"w{worker}-", 30)
        wanted = [c for pair in zip(shared, own, strict=True) for c in pair]
        args = (ledger_url, f"w{worker}", wanted, limit, barrier, results)
        processes.append(context.Process(target=spend_in_batches, args=args))
    for process in processes:
        process.start()

    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [error for _, _, error in outcomes if error] == []

    spent = [c for newly, _, _ in outcomes for c in newly]
    admitted = {c for _, batch, _ in outcomes for c in batch}
    with BudgetLedger.from_url(ledger_url) as ledger:
        counted = ledger.counted(MARCH)
        assert ledger.usage(MARCH) == limit
    assert len(spent) == len(set(spent)) == limit, "an id was paid for twice"
    assert counted == set(spent)
    assert admitted <= counted


def spend_in_batches(url, name, wanted, limit, barrier, results):
    """One run process: reserves in small batches, committing each, as a run would.

    Puts (newly reserved, admitted, error) on `results`, also when it fails, so the test
    reports the error at once instead of waiting for a result that never comes.
    """
    newly, admitted = [], []
    try:
        with BudgetLedger.from_url(url) as ledger:
            barrier.wait()
            ledger.ensure_schema()  # Concurrently with the other processes, on purpose.
            for batch, offset in enumerate(range(0, len(wanted), 6)):
                run_id = f"{name}-{batch}"
                chunk = wanted[offset : offset + 6]
                res = ledger.reserve(MARCH, chunk, limit=limit, run_id=run_id)
                newly.extend(res.newly_reserved)
                admitted.extend(res.admitted)
                ledger.commit(run_id)
    except Exception as exc:
        results.put((newly, admitted, f"{name}: {type(exc).__name__}: {exc}"))
        return
    results.put((newly, admitted, None))


def test_bare_postgresql_url_uses_psycopg2(postgres_url):
    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    with BudgetLedger.from_url(bare) as ledger:
        ledger.ensure_schema()
        assert ledger.usage(MARCH) == 0


# SQLite specifics and bad input


def test_sqlite_transactions_take_the_write_lock_before_reading(sqlite_url, clock, tmp_path):
    with BudgetLedger.from_url(sqlite_url, clock=clock) as ledger:
        ledger.ensure_schema()
        writer = _hold_write_lock(tmp_path / "budget.sqlite3", seconds=0.5)
        started = time.monotonic()
        # A deferred BEGIN would read at once and miss the other writer's unit.
        assert ledger.usage(MARCH) == 1
        assert time.monotonic() - started >= 0.4
        writer.join()


def test_sqlite_reserve_waits_for_another_writer_and_sees_its_units(sqlite_url, clock, tmp_path):
    with BudgetLedger.from_url(sqlite_url, clock=clock) as ledger:
        ledger.ensure_schema()
        writer = _hold_write_lock(tmp_path / "budget.sqlite3", seconds=0.5)
        res = ledger.reserve(MARCH, ["elsewhere", "c2"], limit=1, run_id="run-1")
        writer.join()
    assert res.admitted == ["elsewhere"]
    assert res.deferred == ["c2"]


def _hold_write_lock(path, seconds: float) -> threading.Thread:
    """Another writer counts `elsewhere` in one transaction that stays open for `seconds`."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO gladly_budget_units VALUES (?, 'elsewhere', 'counted', 'other', ?)",
        (MARCH.label, "2026-03-09 12:00:00.000000"),
    )

    def finish():
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_reserving_ten_thousand_ids_on_sqlite_takes_well_under_a_second(sqlite_url):
    many = ids("c", 10_000)
    with BudgetLedger.from_url(sqlite_url) as ledger:
        ledger.ensure_schema()
        started = time.perf_counter()
        first = ledger.reserve(MARCH, many, limit=None, run_id="run-1")
        again = ledger.reserve(MARCH, many, limit=None, run_id="run-2")
        elapsed = time.perf_counter() - started
    assert len(first.newly_reserved) == 10_000
    assert again.newly_reserved == []
    assert elapsed < 1.0, f"two reserves of 10k ids took {elapsed:.2f} s"


def test_bad_run_id_and_limit_are_refused(sqlite_url):
    with BudgetLedger.from_url(sqlite_url) as ledger:
        ledger.ensure_schema()
        with pytest.raises(ValueError, match="run_id"):
            ledger.reserve(MARCH, ["c1"], limit=1, run_id="")
        with pytest.raises(ValueError, match="run_id"):
            ledger.commit("  ")
        with pytest.raises(ValueError, match="limit"):
            ledger.reserve(MARCH, ["c1"], limit=-1, run_id="run-1")
        assert ledger.usage(MARCH) == 0


def test_unsupported_url_scheme_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"sqlite://.*postgresql\+psycopg2://"):
        BudgetLedger.from_url("mysql://user@127.0.0.1/budget")


def test_in_memory_sqlite_is_refused_as_it_cannot_be_shared():
    with pytest.raises(ValueError, match="file path"):
        BudgetLedger.from_url("sqlite://")


def test_sqlite_file_helper_creates_the_folder(tmp_path):
    with BudgetLedger.for_sqlite_file(tmp_path / "state" / "budget.sqlite3") as ledger:
        ledger.ensure_schema()
        assert ledger.reserve(MARCH, ["c1"], limit=1, run_id="run-1").used == 1
    assert (tmp_path / "state" / "budget.sqlite3").exists()
