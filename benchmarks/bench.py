"""Benchmark: requests, pacing, parse speed, memory and rebuild time at a chosen account size.

    python -m benchmarks.bench --sizes 10000 100000     (or: make bench SIZES="10000 100000")

For each size N the emulator generates a seeded account of about N conversations over 7 days
(about 10 items each) and the pipeline runs against it in-process, each size in a fresh
subprocess so that memory peaks do not mix. Every figure is a ratio taken in the same run:

- requests per new conversation on the daily path: the three raw assets materialized for the
  first exported day (nothing stored yet) and the next (the day before stored, its
  conversation fetches stamped at the time its daily run would have made them), counted by
  the emulator, divided by the conversations created that day; the profiles are fetched
  once more as full profiles, with the profile cache on and off, for the cost of that
  setting;
- the request rate reached during the per-conversation and per-contact fan-out, as a share
  of Gladly's 10/s, with the client at its default 8/s, on a bounded sample of one day;
- export lines parsed and written per second, against pyarrow.json on the same file;
- peak RSS, with the emulator's share (it lives in the same process) taken out;
- the time to build analytics/conversations, against DuckDB computing the same table from
  the same Parquet.

It prints one aligned table, the targets met or missed, and last a `bench:` line for tools.
Nothing is asserted: timings depend on the machine.
"""

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

# Before Dagster is imported: no benchmark run may post telemetry.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.json as pj  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from dagster import DagsterInstance, materialize  # noqa: E402

from gladly_pipeline.assets.raw import contacts, conversations, messages  # noqa: E402
from gladly_pipeline.assets.reference import agents, inboxes, topics  # noqa: E402
from gladly_pipeline.client import (  # noqa: E402
    CONVERSATIONS_PER_CUSTOMER_CAP,
    CappedList,
    GladlyClient,
    GladlyMoved,
    GladlyNotFound,
    GladlyUnavailable,
    ProfileLookup,
    RequestStats,
)
from gladly_pipeline.emulator import EmulatorConfig, start_emulator  # noqa: E402
from gladly_pipeline.extract import (  # noqa: E402
    CUSTOMERS_FILE,
    ITEMS_FILE,
    covered_days,
    extract_messages,
    fetch_contacts,
    fetch_conversations,
    jobs_for_window,
)
from gladly_pipeline.resources import DataRoot, GladlyResource  # noqa: E402
from gladly_pipeline.schemas import (  # noqa: E402
    ANALYTICS_CONVERSATIONS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
)
from gladly_pipeline.storage import PART_FILE, TableStore  # noqa: E402
from gladly_pipeline.tables import (  # noqa: E402
    CONVERSATIONS_QUERY,
    RAW_SOURCES,
    REFERENCE_SOURCES,
    rebuild,
    setup_statements,
    stats_statements,
)
from gladly_pipeline.timeutil import parse_timestamp  # noqa: E402
from gladly_pipeline.windows import window_for_day  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAW_DAILY = [messages, conversations, contacts]
REFERENCE = [agents, inboxes, topics]

DEFAULT_SIZES = (10_000, 100_000)
DAYS = 7
SEED = 1
# The daily export of 2026-03-08 is published 2 to 4 hours after the day ends; at 04:00 the
# seven days 03-02 (from 04:00, which is 23:00 in the org's New York) to 03-08 are exported.
NOW = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)

# Gladly's documented per-organisation limit; the client's default pace stays below it.
GLADLY_RATE = 10
# The fan-out at 8/s is the slow part of a real day (100k conversations a week is ~36,000
# requests a day, over an hour); the pacing is the same after 400 requests as after 36,000.
DEFAULT_RATE_SAMPLE = 400
# Days materialized over HTTP and counted: the first (cold) and the next (warm). Later days
# are filled without HTTP (see _InProcessClient) only so the rebuild sees a whole week.
DEFAULT_HTTP_DAYS = 2
# For the counted days the client is not paced and keeps many requests in flight: the count
# does not depend on either, and the emulator answers each request only after ~45 ms
# (its replies go out in two writes and meet Nagle's algorithm), so 4 in flight would take
# 10 minutes for one 100k day.
UNPACED_RATE = 100_000.0
UNPACED_WORKERS = 32
REPEATS = 3  # the parse timings keep the best of this many runs, ours and pyarrow's alike

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

TARGETS = {
    "requests": 1.0,  # at most this many requests per new conversation, contacts cached
    "rate": 0.90,  # at least this share of the configured rate during fan-out
    "parse": 0.5,  # at least this share of pyarrow.json's lines per second
    "rss_growth": 0.15,  # peak RSS at 100k at most this much above the peak at 10k
    "rebuild": 1.5,  # at most this multiple of DuckDB's time
}
RSS_SIZES = (10_000, 100_000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--rate-sample", type=int, default=DEFAULT_RATE_SAMPLE,
                        help="requests in the paced fan-out sample (8/s: 400 take 50 s)")
    parser.add_argument("--http-days", type=int, default=DEFAULT_HTTP_DAYS,
                        help="days extracted over HTTP and counted (at least 2)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.http_days < 2 or args.http_days > DAYS or args.rate_sample < 2:
        parser.error("--http-days must be 2 to 7 and --rate-sample at least 2")
    if args.worker is not None:
        return run_worker(args.worker, args)
    results = [run_size(size, args) for size in sorted(set(args.sizes))]
    print_report(results, args)
    return 0 if all("error" not in r for r in results) else 1


# ---------------------------------------------------------------- parent


def run_size(size: int, args) -> dict:
    """Runs one size in a fresh interpreter and returns what it measured."""
    progress(f"[{size}] starting a worker")
    with tempfile.TemporaryDirectory(prefix="gladly-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "benchmarks.bench", "--worker", str(size), "--out", str(out),
            "--rate-sample", str(args.rate_sample), "--http-days", str(args.http_days),
        ]
        env = dict(os.environ, DAGSTER_DISABLE_TELEMETRY="1")
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, check=False)
        elapsed = time.monotonic() - started
        if done.returncode != 0 or not out.exists():
            return {"size": size, "error": f"worker exited {done.returncode}", "wall": elapsed}
        result = json.loads(out.read_text())
    result["wall"] = elapsed
    progress(f"[{size}] done in {elapsed:.0f} s")
    return result


def progress(message: str) -> None:
    # Progress goes to stderr: stdout holds only the table and the final `bench:` line.
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- worker


def run_worker(size: int, args) -> int:
    """Measures one size in this process and writes the figures as JSON to --out."""
    base_rss = current_rss_mb()
    started = time.monotonic()
    config = EmulatorConfig(
        seed=SEED, now=NOW, days=DAYS, conversations_per_day=max(1, round(size / DAYS)),
        # Off while counting and filling days; the fan-out sample switches Gladly's 10/s on.
        rate_limit_per_second=None,
    )
    emulator = start_emulator(config)
    result = {"size": size, "generate_seconds": time.monotonic() - started}
    result.update(
        conversations=len(emulator.data.conversations),
        items=len(emulator.data.items),
        customers=len(emulator.data.customers),
    )
    progress(f"[{size}] generated {result['conversations']} conversations, "
             f"{result['items']} items in {result['generate_seconds']:.0f} s")
    # The emulator's data stays resident for the whole run: its share is what generation
    # left behind. The peak is then reset so that the pipeline's own peak shows.
    result["rss_after_generate"] = current_rss_mb()
    result["rss_base"] = base_rss
    result["peak_generate"] = peak_rss_mb()
    result["peak_reset"] = reset_peak_rss()
    # The generated account is millions of dicts that never change; left to the cyclic
    # collector, every full collection would walk them and bill the pipeline for it (at
    # 100k, parsing ran 3x slower). Frozen, they are skipped, as if in another process.
    gc.freeze()
    result["load_start"] = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="gladly-bench-data-") as tmp:
            result.update(measure(emulator, Path(tmp), size, args))
    finally:
        emulator.stop()
    result["worker_seconds"] = time.monotonic() - started
    result["load_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # Freeing millions of generated dicts one by one takes ~40 s at 100k and measures
    # nothing; the results are written and the temporary files are gone.
    os._exit(0)


def measure(emulator, tmp: Path, size: int, args) -> dict:
    root = tmp / "data"
    instance = DagsterInstance.ephemeral()
    days = exported_days(emulator)
    figures = {"days": days}
    clock = time.monotonic()
    figures["daily"] = extract_counted_days(emulator, days[: args.http_days], root, instance)
    figures["daily_seconds"] = time.monotonic() - clock
    progress(f"[{size}] counted {args.http_days} days over HTTP in "
             f"{figures['daily_seconds']:.0f} s")
    clock = time.monotonic()
    fill_days(emulator, days[args.http_days:], root, instance)
    extract_reference(emulator, root, instance)
    figures["fill_seconds"] = time.monotonic() - clock
    progress(f"[{size}] filled {len(days) - args.http_days} more days in-process in "
             f"{figures['fill_seconds']:.0f} s")
    sample_day = days[1]
    figures["rate"] = measure_fan_out_rate(emulator, root, sample_day, args.rate_sample)
    progress(f"[{size}] fan-out sample: {figures['rate']['requests']} requests in "
             f"{figures['rate']['seconds']:.0f} s")
    figures["parse"] = measure_parse(emulator, sample_day, tmp)
    progress(f"[{size}] parsed {figures['parse']['lines']} export lines")
    figures["peak_before_rebuild"] = max(peak_rss_mb(), figures["parse"]["peak_before_yardstick"])
    figures["rebuild"] = measure_rebuild(root, tmp)
    # Read before DuckDB runs in this process, so that its memory is not counted as ours.
    figures["peak_pipeline"] = max(peak_rss_mb(), figures["peak_before_rebuild"])
    figures["duckdb"] = measure_duckdb(root, tmp)
    figures["throttled_total"] = sum(1 for _, _, status in emulator.request_log if status == 429)
    progress(f"[{size}] rebuild {figures['rebuild']['conversations_seconds']:.1f} s, "
             f"DuckDB {figures['duckdb']['seconds']:.1f} s")
    return figures


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc); the peak so far where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where this reads 1024x too high).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux 4.0+: "5" to clear_refs).

    Without it the peak read at the end could be generation's transient peak instead of
    the pipeline's; the report says which one it is.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the daily path


def exported_days(emulator) -> list:
    return covered_days(emulator.data.visible_jobs())[-DAYS:]


def http_resources(emulator, root: Path, **settings) -> dict:
    gladly = GladlyResource(
        base_url=emulator.base_url,
        username=emulator.config.username,
        api_token=emulator.config.api_token,
        **settings,
    )
    return {"gladly": gladly, "data_root": DataRoot(path=str(root))}


def extract_counted_days(emulator, days: list, root: Path, instance) -> list:
    """Materializes the raw assets day by day over HTTP, as configured by default.

    Each day's conversation fetches are then stamped with the time its daily run would
    have made them (see `stamp_as_daily_run`); each later day's conversations are also
    counted as a backfill would fetch them, the day before fetched minutes earlier
    (`back_to_back`). Afterwards every day's contacts are fetched
    again as full profiles (`full_contact_profiles`), day by day with the profile cache on
    (profiles fetched for the day before are known) and for the later days once more with
    it off, then put back as configured by default.
    """
    settings = dict(requests_per_second=UNPACED_RATE, max_parallel_requests=UNPACED_WORKERS)
    default = http_resources(emulator, root, **settings)
    full = http_resources(emulator, root, full_contact_profiles=True, **settings)
    full_uncached = http_resources(emulator, root, full_contact_profiles=True,
                                   contact_refresh_hours=0, **settings)
    counted, as_fetched = [], {}
    for day in days:
        clock = time.monotonic()
        started = datetime.now(UTC)
        paths, result = counted_run(emulator, RAW_DAILY, day, default, instance)
        figures = count_day(day, paths, root, time.monotonic() - clock)
        for key in ("profiles_reused", "profiles_from_export", "conversations_reused",
                    "conversations_from_customer_lists"):
            figures[key] = metadata_sum(result, key)
        as_fetched[day] = TableStore(root).read(
            TableStore(root).raw_partition("conversations", day), RAW_CONVERSATIONS)
        figures["stamped_at"] = stamp_as_daily_run(emulator, root, day, started)
        counted.append(figures)
    for index, day in enumerate(days[1:], start=1):
        paths = back_to_back(emulator, root, days[index - 1], day, as_fetched, default,
                             instance)
        counted[index]["back_to_back_conversation_requests"] = sum(
            1 for path in paths
            if path.startswith((CONVERSATION_PATH, CUSTOMER_LIST_PATH))
        )
    for index, day in enumerate(days):
        paths, _ = counted_run(emulator, [contacts], day, full, instance)
        counted[index]["full_contact_requests"] = len(profile_ids(paths))
        if index:
            paths, _ = counted_run(emulator, [contacts], day, full_uncached, instance)
            counted[index]["full_uncached_contact_requests"] = len(profile_ids(paths))
    for day in days:
        counted_run(emulator, [contacts], day, default, instance)
    return counted


def stamp_as_daily_run(emulator, root: Path, day: str, started: datetime) -> str:
    """Gives the conversations this run fetched the time the daily run would fetch them.

    The counted days are extracted minutes apart, long after all of them ended; in
    production a day is extracted once its export is published, hours after the day
    ends, and the next day's conversations are judged against that time (a conversation
    is fetched again if it has an item after its last fetch). So this run's fetches are
    stamped with the publication time of the day's export (the covering jobs' newest
    `updatedAt`), the earliest moment its daily run could have made them. Rows reused
    from an earlier fetch keep their time.
    """
    jobs = jobs_for_window(emulator.data.visible_jobs(), window_for_day(day))
    published = max(parse_timestamp(job["updatedAt"]) for job in jobs)
    store = TableStore(root)
    path = store.raw_partition("conversations", day)
    table = store.read(path, RAW_CONVERSATIONS)
    fetched = table.column("fetched_at")
    fresh = pc.greater_equal(fetched, pa.scalar(started, fetched.type))
    stamped = pc.if_else(fresh, pa.scalar(published, fetched.type), fetched)
    index = table.schema.get_field_index("fetched_at")
    store.write(path, table.set_column(index, "fetched_at", stamped))
    return published.isoformat()


def back_to_back(emulator, root: Path, before: str, day: str, as_fetched: dict,
                 resources: dict, instance) -> list:
    """The requests of `day`'s conversations with `before`'s as fetched, not as stamped.

    The stored partitions are put back as they were afterwards.
    """
    store = TableStore(root)
    earlier, path = (store.raw_partition("conversations", d) for d in (before, day))
    stamped_earlier = store.read(earlier, RAW_CONVERSATIONS)
    stamped = store.read(path, RAW_CONVERSATIONS)
    store.write(earlier, as_fetched[before])
    path.unlink()
    try:
        paths, _ = counted_run(emulator, [conversations], day, resources, instance)
    finally:
        store.write(earlier, stamped_earlier)
        store.write(path, stamped)
    return paths


def counted_run(emulator, assets: list, day: str, resources: dict, instance) -> tuple:
    """Materializes `assets` for `day`; returns the paths the emulator was asked for."""
    before = len(emulator.request_log)
    result = materialize(assets, partition_key=day, resources=resources, instance=instance,
                         run_config=QUIET)
    return [path for _, path, _ in emulator.request_log[before:]], result


def metadata_sum(result, key: str) -> int:
    """Sum of a numeric metadata entry over the run's materializations (0 when absent)."""
    total = 0
    for event in result.get_asset_materialization_events():
        entry = event.materialization.metadata.get(key)
        total += entry.value if entry is not None else 0
    return total


PROFILE_PATH = "/api/v1/customer-profiles/"
CONVERSATION_PATH = "/api/v1/conversations/"
CUSTOMER_LIST_PATH = "/api/v1/customers/"


def profile_ids(paths: list) -> list:
    return [path[len(PROFILE_PATH):] for path in paths if path.startswith(PROFILE_PATH)]


def count_day(day: str, paths: list, root: Path, seconds: float) -> dict:
    """One day's requests by kind, with the conversations it holds and those it began."""
    profiles = len(profile_ids(paths))
    conversations = sum(1 for path in paths if path.startswith(CONVERSATION_PATH))
    lists = sum(1 for path in paths if path.startswith(CUSTOMER_LIST_PATH))
    active, new = conversations_of_day(root, day)
    return {
        "day": day,
        "requests": len(paths),
        "conversation_requests": conversations,
        "customer_list_requests": lists,
        "contact_requests": profiles,
        "other_requests": len(paths) - conversations - lists - profiles,
        "active_conversations": active,
        "new_conversations": new,
        "seconds": seconds,
    }


def conversations_of_day(root: Path, day: str) -> tuple:
    """(conversations active that day, conversations created that day) from raw/conversations."""
    path = TableStore(root).raw_partition("conversations", day)
    created = pq.read_table(path, columns=["created_at"]).column("created_at")
    window = window_for_day(day)
    inside = pc.and_(pc.greater_equal(created, window.start), pc.less(created, window.end))
    return len(created), pc.sum(pc.fill_null(inside, False)).as_py() or 0


def fill_days(emulator, days: list, root: Path, instance) -> None:
    """The remaining days through the same assets, answered in-process (no HTTP, uncounted)."""
    _IN_PROCESS["emulator"] = emulator
    resources = http_resources(emulator, root, max_parallel_requests=1)
    # One in flight: nothing to wait for in-process, and threads would only add overhead.
    resources["gladly"] = _InProcessGladly(
        base_url=emulator.base_url,
        username=emulator.config.username,
        api_token=emulator.config.api_token,
        max_parallel_requests=1,
    )
    for day in days:
        materialize(RAW_DAILY, partition_key=day, resources=resources,
                    instance=instance, run_config=QUIET)


def extract_reference(emulator, root: Path, instance) -> None:
    resources = http_resources(emulator, root, requests_per_second=UNPACED_RATE)
    materialize(REFERENCE, resources=resources, instance=instance,
                run_config=QUIET)


# Dagster rebuilds resources from their config, so the emulator cannot ride along as a
# field; the in-process resource finds it here. One worker process, one emulator.
_IN_PROCESS: dict = {}


class _InProcessGladly(GladlyResource):
    """GladlyResource whose client answers from the emulator's data, without HTTP."""
    def get_client(self):
        return _InProcessClient(_IN_PROCESS["emulator"])


class _InProcessClient:
    """The client calls the raw assets make, answered straight from the emulator's Dataset.

    Only for the days after the counted ones, which exist so that the rebuild reads a whole
    week: over HTTP a 100k week is ~200k requests, several minutes at the emulator's pace.
    """
    def __init__(self, emulator):
        self.emulator = emulator
        self.data = emulator.data
        self.stats = RequestStats()

    def close(self) -> None:
        pass

    def server_time(self) -> datetime:
        return self.emulator.clock()

    def export_jobs(self, status=None) -> list:
        self.stats.add(requests=1)
        jobs = self.data.visible_jobs()
        return [job for job in jobs if status is None or job["status"] == status][::-1]

    def export_file_lines(self, job_id: str, filename: str):
        self.stats.add(requests=1)
        job = next(job for job in self.data.visible_jobs() if job["id"] == job_id)
        lines = {
            ITEMS_FILE: self.data.export_items,
            CUSTOMERS_FILE: self.data.export_customers,
        }[filename](job)
        for line in lines:
            yield json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()

    def customer_conversations(self, customer_id: str) -> CappedList:
        self.stats.add(requests=1)
        path = f"{CUSTOMER_LIST_PATH}{customer_id}/conversations"
        if customer_id in self.data.merged:
            raise GladlyMoved(f"{path} moved", path=path, new_id=self.data.merged[customer_id])
        if customer_id not in self.data.customers:
            raise _not_found(path)
        owned = self.data.conversations_by_customer.get(customer_id, [])
        listed = CappedList(owned[:CONVERSATIONS_PER_CUSTOMER_CAP])
        listed.limited = len(owned) > CONVERSATIONS_PER_CUSTOMER_CAP
        return listed

    def conversation(self, conversation_id: str) -> dict:
        self.stats.add(requests=1)
        found = self.data.conversations.get(conversation_id)
        if found is None:
            raise _not_found(CONVERSATION_PATH + conversation_id)
        return found

    def customer_profile(self, customer_id: str):
        self.stats.add(requests=1)
        if customer_id in self.data.merged:
            return ProfileLookup(customer_id, None, merged_into=self.data.merged[customer_id])
        profile = self.data.customers.get(customer_id)
        if profile is None:
            raise _not_found(PROFILE_PATH + customer_id)
        return ProfileLookup(customer_id, profile)


def _not_found(path: str):
    return GladlyNotFound(f"{path} not found", status=404, path=path)


# ---------------------------------------------------------------- fan-out pacing


def measure_fan_out_rate(emulator, root: Path, day: str, sample: int) -> dict:
    """The first requests of one day's fan-out with production settings, Gladly's 10/s on.

    Half go to conversations and half to profiles, in the order the assets ask (sorted ids).
    Merged profiles add their survivor's request, so the count can pass `sample` a little.
    """
    store = TableStore(root)
    # Only the two id columns: the whole partition with raw_json is ~100 MB at 100k a week.
    items = store.read(store.raw_partition("messages", day), ID_COLUMNS)
    conversation_ids = distinct(items, "conversation_id")[: sample // 2]
    contact_ids = distinct(items, "customer_id")[: sample - len(conversation_ids)]
    gladly = http_resources(emulator, root)["gladly"]  # the defaults: 8/s, 4 in flight
    client = gladly.get_client()
    set_emulator_rate(emulator, GLADLY_RATE)
    before = len(emulator.request_log)
    failure = None
    clock = time.monotonic()
    try:
        fetch_conversations(client, conversation_ids, workers=gladly.max_parallel_requests)
        fetch_contacts(client, contact_ids, workers=gladly.max_parallel_requests)
    except GladlyUnavailable as exc:
        failure = str(exc)
    finally:
        seconds = time.monotonic() - clock
        set_emulator_rate(emulator, None)
        client.close()
    log = emulator.request_log[before:]
    return {
        "requests": len(log),
        "seconds": seconds,
        "rate": len(log) / seconds,
        # The measure: the share of the rate the client is configured for (the
        # emulator meanwhile enforces Gladly's own 10/s, as Gladly would).
        "configured": gladly.requests_per_second,
        "gladly_limit": GLADLY_RATE,
        "throttled": sum(1 for _, _, status in log if status == 429),
        "failure": failure,
    }


ID_COLUMNS = pa.schema([RAW_MESSAGES.field(n) for n in ("conversation_id", "customer_id")])


def set_emulator_rate(emulator, limit) -> None:
    # The emulator fixes its limit at start and has no public switch; a second emulator
    # with the limit on would double generation time and memory at 100k.
    emulator._limiter.limit = limit or 0


def distinct(table, column: str) -> list:
    return sorted(pc.unique(table.column(column).drop_null()).to_pylist())


# ---------------------------------------------------------------- parse throughput


def export_schema():
    """Every field of an export line whose JSON type is stable, for pyarrow.json.

    pyarrow.json cannot infer Gladly's export: `content.to` is a list in emails and a string
    in calls, `content.recordingDuration` a number or a string. Both are left out (the parser
    still reads them, to skip them); everything else is converted.
    """
    text, texts = pa.string(), pa.list_(pa.string())
    actor = pa.struct([("id", text), ("type", text)])
    content_fields = [
        "type", "content", "body", "subject", "from", "messageType", "status", "startedAt",
        "answeredAt", "completedAt", "recordingStatus", "recordingUrl", "activityType",
        "title", "sourceName", "occurredAt", "sessionId", "pageId", "userId",
    ]
    content = pa.struct(
        [(name, text) for name in content_fields]
        + [("cc", texts), ("addedTopicIds", texts), ("removedTopicIds", texts)]
    )
    return pa.schema([
        ("id", text), ("conversationId", text), ("customerId", text), ("timestamp", text),
        ("initiator", actor), ("responder", actor), ("content", content),
    ])


def measure_parse(emulator, day: str, tmp: Path) -> dict:
    """Our parse-and-write path against pyarrow.json.read_json on the same day's file.

    Both read the file from disk: ours through a stand-in client that streams its lines
    (as the real client streams the download), so no copy of the file sits in memory.
    """
    window = window_for_day(day)
    client = GladlyClient(emulator.base_url, emulator.config.username,
                          emulator.config.api_token, requests_per_second=UNPACED_RATE)
    path = tmp / ITEMS_FILE
    try:
        job = jobs_for_window(client.export_jobs(status="COMPLETED"), window)[0]
        with path.open("wb") as items:
            lines = 0
            for line in client.export_file_lines(job["id"], ITEMS_FILE):
                items.write(line + b"\n")
                lines += 1
    finally:
        client.close()
    options = pj.ParseOptions(explicit_schema=export_schema(), unexpected_field_behavior="ignore")

    def pyarrow_read(threads: bool) -> int:
        read = pj.ReadOptions(use_threads=threads)
        return pj.read_json(path, read_options=read, parse_options=options).num_rows

    store = TableStore(tmp / "parse")
    target = store.raw_partition("messages", day)

    def ours() -> int:
        return extract_messages(_OneExportFile(job, path), window, store, target).lines

    figures = {"lines": lines, "ours": best_rate(ours)}
    # pyarrow.json holds the whole day as one table: the yardstick, not the pipeline. Its
    # memory is kept out of the pipeline's peak: the peak so far is noted, and the
    # high-water mark is reset once the yardstick's table is freed.
    figures["peak_before_yardstick"] = peak_rss_mb()
    figures["pyarrow"] = best_rate(lambda: pyarrow_read(True))
    figures["pyarrow_single_thread"] = best_rate(lambda: pyarrow_read(False))
    gc.collect()
    figures["peak_reset_after_yardstick"] = reset_peak_rss()
    return figures


def best_rate(run) -> float:
    """Lines per second of the fastest of REPEATS runs."""
    best = math.inf
    for _ in range(REPEATS):
        clock = time.perf_counter()
        lines = run()
        best = min(best, time.perf_counter() - clock)
    return lines / best


class _OneExportFile:
    """Stands in for the client: one export job whose items file is read from disk."""

    CHUNK_BYTES = 1 << 16

    def __init__(self, job: dict, path: Path):
        self.job = job
        self.path = path

    def export_jobs(self, status=None) -> list:
        return [self.job]

    def export_file_lines(self, job_id: str, filename: str):
        """The file's lines without their newline, read a chunk at a time."""
        with self.path.open("rb") as items:
            rest = b""
            while chunk := items.read(self.CHUNK_BYTES):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield from lines
        if rest:
            yield rest


# ---------------------------------------------------------------- analytics rebuild


def measure_rebuild(root: Path, tmp: Path) -> dict:
    """The analytics rebuild as analytics_tables runs it: the product's function, with
    DataRoot's default limits (memory cap, spilling, threads), timed per table written.

    analytics/conversations is written first, so the time to it (connection, sources,
    shared setup and that table) compares with DuckDB building the same table alone;
    messages and contacts follow for the whole rebuild's time.
    """
    store = TableStore(root)
    steps = {}
    rows = {}
    for table in rebuild(store, DataRoot(path=str(root)).rebuild_limits()):
        steps[table.name] = table.seconds
        rows[table.name] = table.rows
    return {
        "raw_items": pq.ParquetDataset(store.raw_files("messages")).read(["id"]).num_rows,
        "rows": rows["conversations"],
        "conversations_seconds": steps["conversations"],
        "full_seconds": sum(steps.values()),
        "steps": steps,
    }


def measure_duckdb(root: Path, tmp: Path) -> dict:
    """Bare DuckDB builds analytics/conversations from the same raw Parquet; then both agree?

    It runs the product's own SQL (gladly_pipeline.tables) with DuckDB's defaults (no memory
    limit) over plain read_parquet views, and COPYs the result to zstd Parquet. The ratio
    is then our overhead: the memory cap, reading through the storage layer, streaming
    record batches into the atomic writer.
    """
    out = tmp / "duckdb_conversations.parquet"
    copy = f"COPY ({CONVERSATIONS_QUERY}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    # Best of two: a few seconds on 2 shared cores, where one busy second is 30 % of it.
    seconds = math.inf
    for _ in range(2):
        connection = duckdb.connect()
        try:
            clock = time.perf_counter()
            connection.execute("SET TimeZone = 'UTC'")  # strftime of the transcript's stamps
            # The product's statements, the per-conversation stats in one piece (the product
            # splits them into buckets only to stay within its memory limit).
            for statement in baseline_sources(root) + setup_statements() + stats_statements(1):
                connection.execute(statement)
            connection.execute(copy)
            seconds = min(seconds, time.perf_counter() - clock)
        finally:
            connection.close()
    connection = duckdb.connect()
    try:
        ours = root / "analytics" / "conversations" / "part-0.parquet"
        agreement = compare_conversations(connection, ours, out)
    finally:
        connection.close()
    return {"seconds": seconds, **agreement}


def baseline_sources(root: Path) -> list:
    """The relations the product's SQL reads, as DuckDB would read them by itself."""
    raw = root / "raw"
    views = [
        f"CREATE VIEW {relation} AS SELECT * FROM "
        f"read_parquet('{raw}/{table}/*/*.parquet', hive_partitioning = true)"
        for relation, (table, _) in RAW_SOURCES.items()
    ]
    views += [
        f"CREATE VIEW {relation} AS SELECT id, name FROM read_parquet('{raw}/{table}/{PART_FILE}')"
        for relation, table in REFERENCE_SOURCES.items()
    ]
    return views


# Both run the same SQL: agreement on every column proves that our way of running it
# (memory cap and spilling, files from the storage layer, batches cast to the declared
# schema, the atomic writer) changes no row and no value.
COMPARED = tuple(field.name for field in ANALYTICS_CONVERSATIONS if field.name != "conversation_id")
FLOAT_COLUMNS = ("first_response_seconds", "resolution_seconds")


def compare_conversations(connection, ours: Path, theirs: Path) -> dict:
    """Rows in both outputs, and per column how many rows differ (untimed)."""
    differs = ",\n".join(f"count(*) FILTER (WHERE {differ(c)}) AS {c}" for c in COMPARED)
    query = f"""
        SELECT count(*) AS rows, count(o.conversation_id) AS ours,
               count(d.conversation_id) AS duckdb, {differs}
        FROM read_parquet('{ours}') o
        FULL JOIN read_parquet('{theirs}') d USING (conversation_id)
    """
    row = connection.execute(query).fetchone()
    rows, ours_rows, duckdb_rows = row[:3]
    mismatches = {c: n for c, n in zip(COMPARED, row[3:], strict=True) if n}
    return {"compared_rows": rows, "ours_rows": ours_rows, "duckdb_rows": duckdb_rows,
            "mismatches": mismatches}


def differ(column: str) -> str:
    """SQL that is true when the two outputs differ in `column`."""
    if column in FLOAT_COLUMNS:
        # Doubles compared with a tolerance, should a cast or writer ever round them.
        return (f"(o.{column} IS NULL) <> (d.{column} IS NULL) "
                f"OR abs(o.{column} - d.{column}) > 1e-6")
    return f"o.{column} IS DISTINCT FROM d.{column}"


# ---------------------------------------------------------------- report


def derived(result: dict) -> dict:
    """The figures of one size, ratios computed from what the worker measured."""
    if "error" in result:
        return {}
    cold, warm = result["daily"][0], result["daily"][1:]
    warm_new = sum(day["new_conversations"] for day in warm)
    warm_requests = sum(day["requests"] for day in warm)
    warm_profiles = sum(day["contact_requests"] for day in warm)

    def with_contacts(key: str) -> float:
        """The warm days' requests had their profiles come from `key` instead."""
        profiles = sum(day[key] for day in warm)
        return ratio(warm_requests - warm_profiles + profiles, warm_new)

    active = sum(day["active_conversations"] for day in warm)
    rate, parse = result["rate"], result["parse"]
    peak = result["peak_pipeline"]
    return {
        "cold": ratio(cold["requests"], cold["new_conversations"]),
        "warm": ratio(warm_requests, warm_new),
        "warm_conversations": ratio(sum(d["conversation_requests"] for d in warm), warm_new),
        "warm_lists": ratio(sum(d["customer_list_requests"] for d in warm), warm_new),
        "warm_contacts": ratio(warm_profiles, warm_new),
        "warm_other": ratio(sum(d["other_requests"] for d in warm), warm_new),
        "conversations_reused": ratio(sum(d["conversations_reused"] for d in warm), active),
        "conversations_listed": ratio(
            sum(d["conversations_from_customer_lists"] for d in warm), active),
        "profiles_from_export": ratio(
            sum(d["profiles_from_export"] for d in warm),
            sum(d["profiles_from_export"] + d["profiles_reused"] + d["contact_requests"]
                for d in warm)),
        "back_to_back": ratio(
            warm_requests - sum(d["conversation_requests"] + d["customer_list_requests"]
                                for d in warm)
            + sum(d["back_to_back_conversation_requests"] for d in warm), warm_new),
        "full_cached": with_contacts("full_contact_requests"),
        "full_uncached": with_contacts("full_uncached_contact_requests"),
        "warm_day_minutes": ratio(warm_requests, len(warm)) / rate["configured"] / 60,
        "utilization": rate["rate"] / rate["configured"],
        # Against pyarrow's faster setting: on 2 cores its threads do not always pay off.
        "parse_ratio": parse["ours"] / max(parse["pyarrow"], parse["pyarrow_single_thread"]),
        "emulator_mb": result["rss_after_generate"] - result["rss_base"],
        "pipeline_mb": peak - result["rss_after_generate"],
        "peak_mb": max(peak, result["peak_generate"]),
        "rebuild_ratio": result["rebuild"]["conversations_seconds"] / result["duckdb"]["seconds"],
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def print_report(results: list, args) -> None:
    figures = [derived(result) for result in results]
    rows = report_rows(results, figures)
    header = ["figure"] + [f"N={r['size']}" for r in results]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    print(f"Gladly pipeline benchmark: seed {SEED}, {DAYS} days, emulator in-process on "
          f"127.0.0.1, {os.cpu_count()} CPUs")
    for row in [header] + rows:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())
    print("Notes:")
    for note in notes(args):
        print(textwrap.fill(note, width=100, subsequent_indent="  "))
    largest = max(range(len(results)), key=lambda i: results[i]["size"])
    print_targets(results, figures, largest)
    print(bench_line(results, figures, largest))


def report_rows(results: list, figures: list) -> list:
    def row(label, pick, fmt="{:.2f}"):
        cells = []
        for result, figure in zip(results, figures, strict=True):
            try:
                value = pick(result, figure)
            except (KeyError, IndexError, TypeError):
                value = None
            cells.append("-" if value is None else fmt.format(value))
        return [label, *cells]

    return [
        row("conversations / items generated", lambda r, f: f"{r['conversations']} / "
            f"{r['items']}", "{}"),
        row("whole run, s (generation s)", lambda r, f: f"{r['wall']:.0f} "
            f"({r['generate_seconds']:.0f})", "{}"),
        row("machine load, 1-min avg, start/end", lambda r, f: f"{r['load_start']:.1f}/"
            f"{r['load_end']:.1f}", "{}"),
        row("requests/new conversation, first day", lambda r, f: f["cold"]),
        row("  next day (default: export profiles)", lambda r, f: f["warm"]),
        row("    of it GET conversation", lambda r, f: f["warm_conversations"]),
        row("    of it GET customer's conversations", lambda r, f: f["warm_lists"]),
        row("    of it GET customer-profile", lambda r, f: f["warm_contacts"]),
        row("    of it export job list and files", lambda r, f: f["warm_other"]),
        row("    active convs reused / listed, %", lambda r, f:
            f"{100 * f['conversations_reused']:.1f} / {100 * f['conversations_listed']:.1f}",
            "{}"),
        row("    profiles from customers.jsonl, %", lambda r, f:
            100 * f["profiles_from_export"], "{:.1f}"),
        row("  next day, the day before back to back", lambda r, f: f["back_to_back"]),
        row("  next day, full profiles, cache on", lambda r, f: f["full_cached"]),
        row("  next day, full profiles, cache off", lambda r, f: f["full_uncached"]),
        row("  one such day at the client's 8/s, min", lambda r, f: f["warm_day_minutes"],
            "{:.0f}"),
        row("fan-out rate, req/s (sample size)", lambda r, f: f"{r['rate']['rate']:.2f} "
            f"({r['rate']['requests']})", "{}"),
        row("  share of the configured rate, %", lambda r, f: 100 * f["utilization"],
            "{:.1f}"),
        row("  429s in sample / whole run", lambda r, f: f"{r['rate']['throttled']} / "
            f"{r['throttled_total']}", "{}"),
        row("export lines/s, ours (parse+write)", lambda r, f: r["parse"]["ours"], "{:,.0f}"),
        row("  pyarrow.json, 2 threads / 1", lambda r, f: f"{r['parse']['pyarrow']:,.0f} / "
            f"{r['parse']['pyarrow_single_thread']:,.0f}", "{}"),
        row("  ours / pyarrow.json (its faster)", lambda r, f: f["parse_ratio"]),
        row("peak RSS, MB (whole process)", lambda r, f: f["peak_mb"], "{:,.0f}"),
        row("  emulator's data, MB", lambda r, f: f["emulator_mb"], "{:,.0f}"),
        row("  pipeline above it, MB", lambda r, f: f["pipeline_mb"], "{:,.0f}"),
        row("    of it before the rebuild, MB", lambda r, f: r["peak_before_rebuild"]
            - r["rss_after_generate"], "{:,.0f}"),
        row("rebuild to analytics/conversations, s", lambda r, f:
            r["rebuild"]["conversations_seconds"]),
        row("  per table: conversations/messages/contacts", lambda r, f: "/".join(
            f"{s:.1f}" for s in list(r["rebuild"]["steps"].values())[:3]), "{}"),
        row("  whole rebuild (3 tables), s", lambda r, f: r["rebuild"]["full_seconds"]),
        row("  DuckDB alone, same SQL, s (best of 2)", lambda r, f: r["duckdb"]["seconds"]),
        row("  ours / DuckDB", lambda r, f: f["rebuild_ratio"]),
        row("  rows agreeing on all compared columns", agreement, "{}"),
    ]


def agreement(result: dict, figure: dict) -> str:
    duck = result["duckdb"]
    worst = max(duck["mismatches"].values(), default=0)
    same = duck["compared_rows"] - worst if duck["ours_rows"] == duck["duckdb_rows"] else 0
    differing = ", ".join(duck["mismatches"])
    return f"{same}/{duck['compared_rows']}" + (f" (differ: {differing})" if differing else "")


def notes(args) -> list:
    return [
        f"- Days: the first exported day is counted with nothing stored, the next "
        f"{args.http_days - 1} with the days before stored; over HTTP, unpaced, 32 in flight "
        "(counts do not depend on pace). The days run minutes apart, but each day's "
        "conversation fetches are stamped with its export's publication time, when the "
        "daily run would make them, so a conversation with items after that is fetched "
        "again the next day, as in production. 'back to back' counts the day's "
        "conversations again with the day before fetched minutes earlier, as in a "
        "backfill or catch-up, where more are reused.",
        "- Contacts: by default an exported day's profiles come from its customers.jsonl "
        "(one download); GET only for ids it lacks and ids whose conversation now names "
        "another customer (merges). 'full profiles' fetches every profile with GET "
        "(full_contact_profiles=True): 'cache on' with the day before's profiles known "
        "(fetched minutes earlier, within contact_refresh_hours), 'cache off' with "
        "contact_refresh_hours=0.",
        f"- Fan-out: the first {args.rate_sample} requests of one day's fan-out, client at its "
        "default 8/s and 4 in flight, emulator at Gladly's 10/s. The pace is the same for "
        "all ids, so a sample gives the rate (a whole day's time at 8/s is in the table).",
        "- pyarrow.json gets an explicit schema: it cannot infer the export (content.to is a "
        "list or a string, recordingDuration a number or a string), so those two are skipped.",
        "- RSS: the emulator's data is resident in the same process; its share is the RSS "
        "after generation. 'pipeline above it' is the peak after that, read before DuckDB runs; "
        "pyarrow.json's whole-day table (the parse yardstick) is left out: the peak is "
        "noted before it and the high-water mark reset after it.",
    ]


def print_targets(results: list, figures: list, largest: int) -> None:
    figure = figures[largest]
    result = results[largest]
    print(f"Targets (N={result['size']}):")
    if not figure:
        print(f"- no figures: {result.get('error')}")
        return
    failed_on_429 = result["rate"]["failure"] is not None
    rss = rss_by_size(results, figures)
    growth = ratio(rss[RSS_SIZES[1]], rss[RSS_SIZES[0]]) - 1
    checks = [
        ("requests per new conversation, next day", figure["warm"],
         f"<= {TARGETS['requests']:.1f}", figure["warm"] <= TARGETS["requests"]),
        ("share of configured rate in fan-out, no 429 failure", figure["utilization"],
         f">= {TARGETS['rate']:.2f}",
         figure["utilization"] >= TARGETS["rate"] and not failed_on_429),
        ("parse throughput / pyarrow.json", figure["parse_ratio"],
         f">= {TARGETS['parse']:.1f}", figure["parse_ratio"] >= TARGETS["parse"]),
        ("peak RSS growth 10k -> 100k (pipeline)", growth,
         f"<= {TARGETS['rss_growth']:.2f}", growth <= TARGETS["rss_growth"]),
        ("rebuild time / DuckDB", figure["rebuild_ratio"],
         f"<= {TARGETS['rebuild']:.1f}", figure["rebuild_ratio"] <= TARGETS["rebuild"]),
    ]
    for label, value, target, met in checks:
        verdict = "n/a (needs both sizes)" if math.isnan(value) else ("met" if met else "missed")
        print(f"- {label}: {value:.2f} (target {target}): {verdict}")


def rss_by_size(results: list, figures: list) -> dict:
    found = {size: math.nan for size in RSS_SIZES}
    for result, figure in zip(results, figures, strict=True):
        if figure and result["size"] in found:
            found[result["size"]] = figure["pipeline_mb"]
    return found


def bench_line(results: list, figures: list, largest: int) -> str:
    figure = figures[largest] or {}
    rss = rss_by_size(results, figures)
    values = {
        "conversations": results[largest]["size"],
        "requests_per_conversation": figure.get("warm", math.nan),
        "rate_utilization": figure.get("utilization", math.nan),
        "parse_ratio": figure.get("parse_ratio", math.nan),
        "rss_10k_mb": rss[RSS_SIZES[0]],
        "rss_100k_mb": rss[RSS_SIZES[1]],
        "rebuild_ratio": figure.get("rebuild_ratio", math.nan),
    }
    text = " ".join(
        f"{key}={value}" if isinstance(value, int) else f"{key}={value:.3f}"
        for key, value in values.items()
    )
    return f"bench: {text}"


if __name__ == "__main__":
    sys.exit(main())
