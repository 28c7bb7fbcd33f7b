"""Wires the Gladly pipeline: assets, jobs and resources in one Definitions."""

import os
from typing import Optional

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    define_asset_job,
    multiprocess_executor,
)
from pydantic import ValidationError

from .assets.analytics import analytics_tables
from .assets.raw import contacts, conversations, messages
from .assets.reference import agents, inboxes, topics
from .checks import gladly_checks
from .resources import DataRoot, GladlyResource
from .sensors.sensors import export_jobs_sensor, intraday_sensor

RAW_DAILY = AssetSelection.assets(messages, conversations, contacts)
REFERENCE = AssetSelection.assets(agents, inboxes, topics)
ANALYTICS = AssetSelection.assets(analytics_tables)

extract_day_job = define_asset_job(
    "extract_day",
    selection=RAW_DAILY,
    description="Extract one UTC day of Gladly conversations, items and contacts.",
)
refresh_tables_job = define_asset_job(
    "refresh_tables",
    selection=REFERENCE | ANALYTICS,
    description="Refresh agents, inboxes and topics, then rebuild the analysis-ready tables.",
)


def gladly_host() -> dict:
    """Which env var names the host: GLADLY_BASE_URL when set, else GLADLY_SUBDOMAIN.

    Only the variable's presence is read here; its value stays an EnvVar resolved at
    run time, and the UI shows the variable's name, not its value.
    """
    if os.environ.get("GLADLY_BASE_URL"):
        return {"base_url": EnvVar("GLADLY_BASE_URL")}
    return {"subdomain": EnvVar("GLADLY_SUBDOMAIN")}


# Optional settings users give as env vars; unset ones keep the resource's default.
OPTIONAL_INT_SETTINGS = {
    "conversations_per_period": "GLADLY_CONVERSATIONS_PER_PERIOD",
    "billing_period_start_day": "GLADLY_BILLING_PERIOD_START_DAY",
    "first_run_lookback_days": "GLADLY_FIRST_RUN_LOOKBACK_DAYS",
    "intraday_refresh_minutes": "GLADLY_INTRADAY_REFRESH_MINUTES",
    "contact_refresh_hours": "GLADLY_CONTACT_REFRESH_HOURS",
}
OPTIONAL_BOOL_SETTINGS = {
    "full_contact_profiles": "GLADLY_FULL_CONTACT_PROFILES",
}
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no")


def optional_settings() -> dict:
    """Read when the code location loads: these are not secrets, and their ranges are
    checked right away (an EnvVar would be checked only as a placeholder at load time)."""
    settings = {}
    for field, name in OPTIONAL_INT_SETTINGS.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            settings[field] = int(raw)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
        _check_range(field, name, settings[field])
    for field, name in OPTIONAL_BOOL_SETTINGS.items():
        flag = env_flag(name)
        if flag is not None:
            settings[field] = flag
    return settings


def env_flag(name: str) -> Optional[bool]:
    """An on/off env var: None when unset; a value that is neither fails, naming it.

    Strict on purpose: a typo must not quietly switch a setting off (personal-data
    hashing among them).
    """
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name} must be 1 or 0 (true or false), got {raw!r}")
    return raw in TRUE_WORDS


def _check_range(field: str, name: str, value: int) -> None:
    """Names the env var, where the resource's own error would name only its field."""
    bounds = GladlyResource.model_fields[field].metadata
    low = next((b.ge for b in bounds if hasattr(b, "ge")), None)
    high = next((b.le for b in bounds if hasattr(b, "le")), None)
    if (low is not None and value < low) or (high is not None and value > high):
        allowed = f"from {low}" + (f" to {high}" if high is not None else " up")
        raise ValueError(f"{name}={value} is out of range: allowed {allowed}")


def privacy_settings() -> dict:
    """Hash personal data in the analytics tables when GLADLY_HASH_PERSONAL_DATA is on."""
    if not env_flag("GLADLY_HASH_PERSONAL_DATA"):
        return {}
    return {"hash_personal_data": True, "personal_data_salt": EnvVar("GLADLY_PII_SALT")}


# Data root settings given as env vars; each is wired only when its variable is set, so a
# local data root needs none of them. Values stay EnvVars resolved at run time (the
# secrets never reach the UI or the run logs).
DATA_ROOT_SETTINGS = {
    "s3_endpoint_url": "GLADLY_S3_ENDPOINT_URL",
    "s3_region": "GLADLY_S3_REGION",
    "s3_access_key_id": "GLADLY_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "GLADLY_S3_SECRET_ACCESS_KEY",
    "s3_session_token": "GLADLY_S3_SESSION_TOKEN",
}


# The analytics rebuild's limits (a pod's memory and disk are sized around them). Not
# secrets: read when the code location loads, so a bad value is named right away.
REBUILD_SETTINGS = {
    "rebuild_memory_limit": "GLADLY_REBUILD_MEMORY_LIMIT",
    "rebuild_threads": "GLADLY_REBUILD_THREADS",
    "rebuild_temp_directory": "GLADLY_REBUILD_TEMP_DIRECTORY",
}


def data_root_settings() -> dict:
    """Object storage settings (see DATA_ROOT_SETTINGS), the rebuild's limits and the
    privacy ones."""
    settings = {
        field: EnvVar(name) for field, name in DATA_ROOT_SETTINGS.items()
        if os.environ.get(name)
    }
    return {**settings, **rebuild_settings(), **privacy_settings()}


def rebuild_settings() -> dict:
    settings = {}
    for field, name in REBUILD_SETTINGS.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            settings[field] = DataRoot(**{field: raw}).model_dump()[field]
        except ValidationError as error:
            detail = error.errors()[0]["msg"]
            raise ValueError(f"{name}={raw!r} is not valid: {detail}") from None
    return settings


def ledger_settings() -> dict:
    """The budget ledger's own URL (GLADLY_BUDGET_LEDGER_URL) when one is given."""
    if os.environ.get("GLADLY_BUDGET_LEDGER_URL"):
        return {"budget_ledger_url": EnvVar("GLADLY_BUDGET_LEDGER_URL")}
    return {}


# Each step of a run in a process of its own. Steps that call Gladly still go one at a time
# across all runs (pool `gladly_api`, limit in dagster.yaml); what runs beside them are the
# checks, so two processes at once is all a run can use. The number is fixed because
# Dagster's default, the CPU count, is the node's in a container, not the pod's: a small pod
# on a large node would start one ~215 MB process per step and run out of memory. forkserver
# imports this module once per run and forks each step from it, where a fresh interpreter
# imports Dagster, pandas and pyarrow again for every step: on 2 cores a step started 1.5 s
# after launch instead of 2.2-2.4 s, and runs took 25-35 % less time (docs/deploy).
step_executor = multiprocess_executor.configured(
    {"max_concurrent": 2, "start_method": {"forkserver": {}}},
    name="gladly_multiprocess",
)

# Dagster creates this sensor stopped by default; the product relies on it to rebuild the
# analytics tables after new raw data, so it starts running.
automation_sensor = AutomationConditionSensorDefinition(
    "gladly_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)

defs = Definitions(
    assets=[messages, conversations, contacts, agents, inboxes, topics, analytics_tables],
    asset_checks=gladly_checks,
    jobs=[extract_day_job, refresh_tables_job],
    executor=step_executor,
    sensors=[
        export_jobs_sensor(extract_day_job),
        intraday_sensor(extract_day_job),
        automation_sensor,
    ],
    resources={
        "gladly": GladlyResource(
            **gladly_host(),
            **optional_settings(),
            **ledger_settings(),
            username=EnvVar("GLADLY_USERNAME"),
            api_token=EnvVar("GLADLY_API_TOKEN"),
        ),
        "data_root": DataRoot(**data_root_settings()),
    },
)
