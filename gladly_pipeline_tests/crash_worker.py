"""Runs one day's raw extraction in its own process, for the crash tests to kill.

    python -m gladly_pipeline_tests.crash_worker DATA_ROOT DAY
"""

import os
import sys

os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"

from dagster import materialize  # noqa: E402

from gladly_pipeline.assets.raw import contacts, conversations, messages  # noqa: E402
from gladly_pipeline.emulator import start_emulator  # noqa: E402
from gladly_pipeline_tests.conftest import make_resources, small_config  # noqa: E402

# Big enough that writing a day takes a noticeable moment; a budget so the ledger is used.
CRASH_CONFIG = {"days": 3, "conversations_per_day": 200}
BUDGET = 150


def main(root: str, day: str) -> int:
    with start_emulator(small_config(**CRASH_CONFIG)) as emu:
        resources = make_resources(emu, root, conversations_per_period=BUDGET)
        result = materialize([messages, conversations, contacts], partition_key=day,
                             resources=resources)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
