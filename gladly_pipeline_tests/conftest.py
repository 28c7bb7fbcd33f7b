"""Shared fixtures: an emulator per test module and a client and resources pointed at it."""

import os
import uuid
from datetime import UTC, datetime

import psycopg2
import pytest
from sqlalchemy.engine import make_url

# No test may post Dagster telemetry anywhere.
os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
# A developer's own account settings must not reach the tests (nor the tests their ledger).
for _name in list(os.environ):
    if _name == "DAGSTER_PG_URL" or (
        _name.startswith("GLADLY_")
        and not _name.startswith(("GLADLY_TEST_", "GLADLY_REQUIRE_", "GLADLY_UPDATE_"))
    ):
        del os.environ[_name]

from gladly_pipeline.client import GladlyClient, RetryPolicy  # noqa: E402
from gladly_pipeline.emulator import EmulatorConfig, start_emulator  # noqa: E402
from gladly_pipeline.resources import DataRoot, GladlyResource  # noqa: E402

# A Monday, the day after the US switched to daylight saving time (2026-03-08).
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
TOKEN = "test-token-5f0c1d9e"
USERNAME = "api-user@example.com"

# Fast retries so fault tests take milliseconds, not the production backoff.
FAST_RETRY = RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fails any test whose captured output or error text shows the API token.

    Covers every log line, print and traceback the suite produces, so a leak anywhere
    (client, assets, Dagster's run logs) is caught where it happens.
    """
    outcome = yield
    report = outcome.get_result()
    captured = "\n".join(content for _, content in report.sections)
    if TOKEN in captured or TOKEN in (report.longreprtext or ""):
        report.outcome = "failed"
        report.longrepr = f"the Gladly API token appeared in the output of {item.nodeid}"


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


# The server on which each PostgreSQL test creates a database of its own (.ci/run sets it).
PG_ADMIN_URL = make_url(
    os.environ.get("GLADLY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
)
# Set in CI, which has PostgreSQL: there an unreachable server fails instead of skipping.
REQUIRE_POSTGRES = os.environ.get("GLADLY_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def postgres_url():
    """A freshly created PostgreSQL database for one test, dropped afterwards."""
    name = f"gladly_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.set(database=name).render_as_string(hide_password=False)
    # FORCE: a worker's or daemon's connection may still be closing.
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(statement: str) -> None:
    try:
        conn = psycopg2.connect(
            host=PG_ADMIN_URL.host,
            port=PG_ADMIN_URL.port,
            user=PG_ADMIN_URL.username,
            password=PG_ADMIN_URL.password,
            dbname=PG_ADMIN_URL.database,
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        where = f"{PG_ADMIN_URL.host}:{PG_ADMIN_URL.port}"
        first_line = str(exc).strip().splitlines()[0]
        reason = f"PostgreSQL unreachable at {where} ({first_line}); CI must not skip this"
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    conn.autocommit = True  # CREATE and DROP DATABASE refuse to run in a transaction.
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()
