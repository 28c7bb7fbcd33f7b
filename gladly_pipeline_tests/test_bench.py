"""The benchmark at its smallest size: it runs, prints its table and a parseable last line.

Only that the figures are produced is checked; their values depend on the machine.
"""

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_KEYS = (
    "conversations", "requests_per_conversation", "rate_utilization", "parse_ratio",
    "rss_10k_mb", "rss_100k_mb", "rebuild_ratio",
)


def test_small_benchmark_prints_a_table_and_a_machine_readable_last_line():
    # 1000 conversations and a 24-request paced sample (3 s at 8/s) keep this near 20 s.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--sizes", "1000", "--rate-sample", "24"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[1].split() == ["figure", "N=1000"]
    assert any(line.startswith("requests/new conversation, first day") for line in lines)
    assert any(line.startswith("Targets (N=1000):") for line in lines)

    last = lines[-1]
    assert last.startswith("bench: ")
    figures = dict(pair.split("=", 1) for pair in last.removeprefix("bench: ").split())
    assert tuple(figures) == BENCH_KEYS
    values = {key: float(value) for key, value in figures.items()}  # "nan" parses too
    assert values["conversations"] == 1000
    measured = ("requests_per_conversation", "rate_utilization", "parse_ratio", "rebuild_ratio")
    assert not any(math.isnan(values[key]) for key in measured)
