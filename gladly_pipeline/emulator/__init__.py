"""Local Gladly API emulator: a seeded synthetic account served over Gladly's REST API.

    with start_emulator(EmulatorConfig(seed=1, days=3)) as emu:
        auth = (emu.config.username, emu.config.api_token)
        requests.get(f"{emu.base_url}/api/v1/agents", auth=auth, timeout=10)

It also serves the Events API (`/api/v1/events`, the last 24 hours). Tests can move its clock
forward with `emu.set_now(moment)` when `EmulatorConfig.future_days` generated the days ahead,
and make an export job's files vanish with `missing_file_jobs` or `emu.expire_files(job_id)`.

Faults a client must survive are armed per test or from the start (faults.py):

    emu.inject(Fault("reset", "/api/v1/export", after_lines=100))  # or --fault reset:1:...
    emu.inject(status=429, times=3, path_prefix="/api/v1/agents")
    emu.merge_customer(old_id, into_id)  # old_id answers 301 from now on
    emu.delete_customer(customer_id)  # 404 from now on

`EmulatorConfig(unknown_shapes=True)` adds an unknown content type and field to some items;
`duplicate_items=N` repeats items of one export job in the next job's file.

Run it standalone with `python -m gladly_pipeline.emulator` (or `gladly-emulator`).
"""

from gladly_pipeline.emulator.data import (
    CONVERSATIONS_CAP,
    ITEMS_CAP,
    SEARCH_CAP,
    Dataset,
    EmulatorConfig,
    generate,
)
from gladly_pipeline.emulator.faults import Fault, parse_fault
from gladly_pipeline.emulator.server import Emulator, start_emulator

__all__ = [
    "CONVERSATIONS_CAP",
    "ITEMS_CAP",
    "SEARCH_CAP",
    "Dataset",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "generate",
    "parse_fault",
    "start_emulator",
]
