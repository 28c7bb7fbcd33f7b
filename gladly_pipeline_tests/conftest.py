"""Shared fixtures: an emulator per test module and a client and resources pointed at it."""

import os
from datetime import datetime, timezone

import pytest

# No test may post Dagster telemetry anywhere.
os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"

from gladly_pipeline.client import GladlyClient, RetryPolicy  # noqa: E402
from gladly_pipeline.emulator import EmulatorConfig, start_emulator  # noqa: E402
from gladly_pipeline.resources import DataRoot, GladlyResource  # noqa: E402

# A Monday, the day after the US switched to daylight saving time (2026-03-08).
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc)
TOKEN = "test-token-5f0c1d9e"
USERNAME = "api-user@example.com"

# Fast retries so fault tests take milliseconds, not the production backoff.
FAST_RETRY = RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05)


def small_config(**overrides) -> EmulatorConfig:
    settings = dict(
        seed=7,
        now=NOW,
        days=5,
        conversations_per_day=6,
        username=USERNAME,
        api_token=TOKEN,
        rate_limit_per_second=None,
    )
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture(scope="module")
def emulator():
    with start_emulator(small_config()) as emu:
        yield emu


def make_client(emu, **kwargs) -> GladlyClient:
    kwargs.setdefault("requests_per_second", 500)
    kwargs.setdefault("retry", FAST_RETRY)
    return GladlyClient(emu.base_url, USERNAME, TOKEN, **kwargs)


@pytest.fixture
def client(emulator):
    client = make_client(emulator)
    yield client
    client.close()


def make_resources(emu, data_root, **gladly_settings) -> dict:
    gladly_settings.setdefault("requests_per_second", 500)
    return {
        "gladly": GladlyResource(
            base_url=emu.base_url,
            username=USERNAME,
            api_token=TOKEN,
            **gladly_settings,
        ),
        "data_root": DataRoot(path=str(data_root)),
    }
