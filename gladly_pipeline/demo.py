"""`make demo`: the whole pipeline against the local emulator on a SQLite instance.

Starts the emulator in this process, extracts the last 7 days that Gladly's export
jobs cover, rebuilds the analysis-ready tables and prints a short summary.
"""

import argparse
import logging
import os
import sys
import time

import pyarrow.dataset as ds

DAYS = 7
# Dagster's own step-by-step log lines would drown the summary; warnings still show.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--conversations-per-day", type=int, default=30)
    parser.add_argument("--data-root", default=".demo/data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from .emulator import EmulatorConfig, start_emulator

    config = EmulatorConfig(seed=args.seed, conversations_per_day=args.conversations_per_day)
    with start_emulator(config) as emulator:
        os.environ.update(
            GLADLY_BASE_URL=emulator.base_url,
            GLADLY_USERNAME=config.username,
            GLADLY_API_TOKEN=config.api_token,
            GLADLY_DATA_ROOT=os.path.abspath(args.data_root),
        )
        print(f"Emulator: {emulator.base_url} (seed {args.seed})")
        started = time.monotonic()
        failed = run_pipeline(args.days)
        elapsed = time.monotonic() - started
        requests = len(emulator.request_log)
    if failed:
        print(f"Runs failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print_summary(os.path.abspath(args.data_root), requests, elapsed)
    return 0


def run_pipeline(days: int) -> list:
    """Runs extract_day for each covered day, then refresh_tables; returns failed names."""
    from dagster import DagsterInstance

    from .definitions import defs
    from .extract import covered_days
    from .resources import GladlyResource

    gladly = GladlyResource(
        base_url=os.environ["GLADLY_BASE_URL"],
        username=os.environ["GLADLY_USERNAME"],
        api_token=os.environ["GLADLY_API_TOKEN"],
    )
    client = gladly.get_client()
    chosen = covered_days(client.export_jobs(status="COMPLETED"))[-days:]
    client.close()
    instance = DagsterInstance.get()
    extract = defs.resolve_job_def("extract_day")
    failed = []
    for day in chosen:
        result = extract.execute_in_process(
            partition_key=day, instance=instance, run_config=QUIET, raise_on_error=False
        )
        print(f"Extracted {day}: {_row_counts(result)}", flush=True)
        if not result.success:
            failed.append(day)
    refresh = defs.resolve_job_def("refresh_tables")
    result = refresh.execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    print(f"Rebuilt analysis-ready tables: {_row_counts(result)}", flush=True)
    if not result.success:
        failed.append("refresh_tables")
    return failed


def _row_counts(result) -> str:
    if not result.success:
        return "FAILED (see the run in the Dagster UI: make dev)"
    counts = []
    for event in result.get_asset_materialization_events():
        rows = event.materialization.metadata.get("dagster/row_count")
        counts.append(f"{event.asset_key.to_user_string()}={rows.value if rows else '?'}")
    return ", ".join(counts)


def print_summary(root: str, requests: int, elapsed: float) -> None:
    print(f"\nDone in {elapsed:.0f}s with {requests} requests to the emulator.")
    print(f"Parquet under {root}:")
    for layer in ("raw", "analytics"):
        for table in ("messages", "conversations", "contacts"):
            folder = os.path.join(root, layer, table)
            rows = ds.dataset(folder, format="parquet", partitioning="hive").count_rows()
            print(f"  {layer + '/' + table:<24} {rows:>8} rows")
    query = f"SELECT status, count(*) FROM '{root}/analytics/conversations/*.parquet' GROUP BY 1"
    print("Query it, e.g. in .venv/bin/python:")
    print(f'  import duckdb; duckdb.sql("{query}").show()')


if __name__ == "__main__":
    sys.exit(main())
