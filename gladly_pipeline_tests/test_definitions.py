"""The code location loads, and everything a user sees in the UI is described."""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from gladly_pipeline.definitions import defs, gladly_host, optional_settings, privacy_settings

RAW = ["messages", "conversations", "contacts"]


def test_definitions_load_with_all_assets_and_jobs():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw/messages", "raw/conversations", "raw/contacts",
        "raw/agents", "raw/inboxes", "raw/topics",
        "analytics/messages", "analytics/conversations", "analytics/contacts",
    }
    assert defs.resolve_job_def("extract_day") is not None
    assert defs.resolve_job_def("refresh_tables") is not None


def test_every_asset_has_a_description_for_data_consumers():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description
        assert description and len(description) > 40, key.to_user_string()


def test_analytics_tables_go_late_in_the_ui_a_day_after_their_last_rebuild(tmp_path):
    graph = defs.resolve_asset_graph()
    for name in ("messages", "conversations", "contacts"):
        policy = graph.get(AssetKey(["analytics", name])).freshness_policy
        assert policy is not None, name
        assert policy.fail_window.to_timedelta() == timedelta(hours=30)
        assert policy.warn_window.to_timedelta() == timedelta(hours=26)
    # Dagster evaluates freshness policies only when the instance enables them.
    project = Path(__file__).resolve().parents[1]
    shutil.copy(project / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    assert instance.get_settings("freshness") == {"enabled": True}
    production = yaml.safe_load((project / "dagster-postgres.yaml").read_text())
    assert production["freshness"] == {"enabled": True}


def test_raw_tables_are_daily_partitioned_in_utc():
    graph = defs.resolve_asset_graph()
    for name in RAW:
        partitions = graph.get(AssetKey(["raw", name])).partitions_def
        assert partitions is not None and partitions.timezone == "UTC"


def test_host_env_var_is_base_url_when_set_else_subdomain(monkeypatch):
    monkeypatch.setenv("GLADLY_BASE_URL", "http://127.0.0.1:1")
    assert set(gladly_host()) == {"base_url"}
    monkeypatch.delenv("GLADLY_BASE_URL")
    assert set(gladly_host()) == {"subdomain"}


def test_api_token_is_wired_as_an_env_var_not_a_value():
    gladly = defs.resources["gladly"]
    # The UI shows the variable's name; the value is resolved only when a run starts.
    assert "GLADLY_API_TOKEN" in repr(gladly.api_token)


def test_budget_and_schedule_settings_come_from_env_vars_when_set(monkeypatch):
    monkeypatch.setenv("GLADLY_CONVERSATIONS_PER_PERIOD", "5000")
    monkeypatch.setenv("GLADLY_BILLING_PERIOD_START_DAY", " 15 ")
    monkeypatch.delenv("GLADLY_FIRST_RUN_LOOKBACK_DAYS", raising=False)
    assert optional_settings() == {"conversations_per_period": 5000,
                                   "billing_period_start_day": 15}


def test_full_contact_profiles_is_switched_on_by_env_var(monkeypatch):
    for name in ("GLADLY_CONVERSATIONS_PER_PERIOD", "GLADLY_BILLING_PERIOD_START_DAY",
                 "GLADLY_FIRST_RUN_LOOKBACK_DAYS", "GLADLY_INTRADAY_REFRESH_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLADLY_FULL_CONTACT_PROFILES", "True")
    monkeypatch.setenv("GLADLY_CONTACT_REFRESH_HOURS", "0")
    assert optional_settings() == {"full_contact_profiles": True, "contact_refresh_hours": 0}
    monkeypatch.setenv("GLADLY_FULL_CONTACT_PROFILES", "sometimes")
    with pytest.raises(ValueError, match="GLADLY_FULL_CONTACT_PROFILES must be 1 or 0"):
        optional_settings()


@pytest.mark.parametrize("value", ["on", "Y", "ture", "enabled"])
def test_a_mistyped_privacy_switch_fails_rather_than_leaving_data_unhashed(monkeypatch, value):
    monkeypatch.setenv("GLADLY_HASH_PERSONAL_DATA", value)
    with pytest.raises(ValueError, match="GLADLY_HASH_PERSONAL_DATA must be 1 or 0"):
        privacy_settings()


@pytest.mark.parametrize("value", ["1", " 1 ", "TRUE", "yes"])
def test_the_privacy_switch_reads_the_same_words_as_every_flag(monkeypatch, value):
    monkeypatch.setenv("GLADLY_HASH_PERSONAL_DATA", value)
    assert privacy_settings()["hash_personal_data"] is True
    monkeypatch.setenv("GLADLY_HASH_PERSONAL_DATA", "0")
    assert privacy_settings() == {}


def test_a_setting_that_is_not_a_number_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("GLADLY_INTRADAY_REFRESH_MINUTES", "hourly")
    with pytest.raises(ValueError, match="GLADLY_INTRADAY_REFRESH_MINUTES"):
        optional_settings()


def test_sensors_start_running_by_default():
    names = {s.name: s.default_status.value for s in defs.sensors}
    assert names == {
        "gladly_export_jobs": "RUNNING",
        "gladly_intraday": "RUNNING",
        "gladly_automation": "RUNNING",
    }


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("GLADLY_FIRST_RUN_LOOKBACK_DAYS", "30", "from 1 to 14"),
        ("GLADLY_BILLING_PERIOD_START_DAY", "31", "from 1 to 28"),
        ("GLADLY_INTRADAY_REFRESH_MINUTES", "1", "from 5 up"),
    ],
)
def test_a_setting_out_of_range_is_named_with_what_is_allowed(monkeypatch, name, value, allowed):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}={value} is out of range: allowed {allowed}"):
        optional_settings()


def test_instances_free_the_gladly_pool_slots_of_dead_runs(tmp_path):
    # Without it, one step process dying before its step starts keeps the only
    # `gladly_api` slot claimed and every later Gladly step waits for ever.
    project = Path(__file__).resolve().parents[1]
    shutil.copy(project / "dagster.yaml", tmp_path / "dagster.yaml")
    settings = DagsterInstance.from_config(str(tmp_path)).run_monitoring_settings
    assert settings["enabled"] is True
    assert 0 < settings["free_slots_after_run_end_seconds"] <= 600
    production = yaml.safe_load((project / "dagster-postgres.yaml").read_text())
    assert production["run_monitoring"] == settings


def test_rebuild_limits_come_from_env_vars_and_a_bad_one_is_named(monkeypatch):
    from gladly_pipeline.definitions import data_root_settings

    monkeypatch.setenv("GLADLY_REBUILD_MEMORY_LIMIT", "1gb")
    monkeypatch.setenv("GLADLY_REBUILD_THREADS", "2")
    monkeypatch.setenv("GLADLY_REBUILD_TEMP_DIRECTORY", "/tmp/spill")
    settings = data_root_settings()
    assert settings["rebuild_memory_limit"] == "1gb"
    assert settings["rebuild_threads"] == 2
    assert settings["rebuild_temp_directory"] == "/tmp/spill"
    monkeypatch.setenv("GLADLY_REBUILD_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="GLADLY_REBUILD_MEMORY_LIMIT='lots' is not valid"):
        data_root_settings()
    monkeypatch.setenv("GLADLY_REBUILD_MEMORY_LIMIT", "512MB")
    monkeypatch.setenv("GLADLY_REBUILD_THREADS", "0")
    with pytest.raises(ValueError, match="GLADLY_REBUILD_THREADS='0' is not valid"):
        data_root_settings()
