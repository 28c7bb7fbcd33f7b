"""Scale-out: real runs through the multiprocess executor, and the Kubernetes examples.

The runs go through the `dagster` CLI, as a launched run does: a process of its own that
loads the definitions from the module, with the project's dagster.yaml in a temporary
DAGSTER_HOME. The examples in docs/deploy are checked offline: Dagster's and dagster-k8s's
own config schemas, the Helm chart's keys we rely on, and the Dockerfile's sources.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from gladly_pipeline.assets.raw import GLADLY_POOL
from gladly_pipeline.budget import BudgetLedger, billing_period

from .conftest import NOW, TOKEN, USERNAME

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "docs" / "deploy"
DAGSTER_CLI = Path(sys.executable).parent / "dagster"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

DAY = "2026-03-07"
# Fewer than the day's new conversations: the run must defer some and count the rest.
BUDGET = 3
RUN_TIMEOUT_SECONDS = 300
STEP_EVENTS = (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS)
GLADLY_STEPS = {"raw__agents", "raw__inboxes", "raw__topics"}
RAW_STEPS = {"raw__messages", "raw__conversations", "raw__contacts"}
CONCURRENT_DAYS = ("2026-03-05", "2026-03-06")


# Runs through the multiprocess executor


def start_cli_job(home: Path, env: dict, job: str, tags: dict) -> subprocess.Popen:
    """`dagster job execute` in its own process group, so that a hung run can be killed whole."""
    command = [str(DAGSTER_CLI), "job", "execute", "-m", "gladly_pipeline.definitions",
               "-j", job, "--tags", json.dumps(tags)]
    # cwd: the CLI reads .env from the working directory; a developer's must not count.
    return subprocess.Popen(command, env=env, cwd=home, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish_cli_job(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # A step that never gets its pool slot blocks for ever: stop the run and its steps.
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{process.args} did not finish in {RUN_TIMEOUT_SECONDS} s:\n"
                    f"{output[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def run_cli_job(home: Path, env: dict, job: str, tags: dict) -> subprocess.CompletedProcess:
    return finish_cli_job(start_cli_job(home, env, job, tags))


def make_home(base: Path, emulator, **settings) -> tuple:
    """A DAGSTER_HOME with the project's dagster.yaml, and the environment of a run on it."""
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    data_root = base / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "GLADLY_BASE_URL": emulator.base_url,
        "GLADLY_USERNAME": USERNAME,
        "GLADLY_API_TOKEN": TOKEN,
        "GLADLY_DATA_ROOT": str(data_root),
        **settings,
    }
    return home, data_root, env


@pytest.fixture(scope="module")
def multiprocess_runs(emulator, tmp_path_factory):
    """One day extracted, then the reference and analytics tables, on one SQLite instance
    configured by the project's dagster.yaml; yields the instance and both runs."""
    home, data_root, env = make_home(
        tmp_path_factory.mktemp("deploy"), emulator,
        GLADLY_CONVERSATIONS_PER_PERIOD=str(BUDGET),
    )
    day = run_cli_job(home, env, "extract_day", {"dagster/partition": DAY})
    tables = run_cli_job(home, env, "refresh_tables", {})
    with DagsterInstance.from_config(str(home)) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        yield instance, runs, {"extract_day": day, "refresh_tables": tables}, data_root


@pytest.fixture(scope="module")
def concurrent_day_runs(emulator, tmp_path_factory):
    """Two days extracted by two runs started together on one instance."""
    home, _, env = make_home(tmp_path_factory.mktemp("deploy_concurrent"), emulator)
    # Opened first, so that the instance's SQLite schema exists before the runs start: two
    # processes creating it at once can leave two alembic heads (seen once here).
    with DagsterInstance.from_config(str(home)) as instance:
        processes = [start_cli_job(home, env, "extract_day", {"dagster/partition": day})
                     for day in CONCURRENT_DAYS]
        results = [finish_cli_job(process) for process in processes]
        yield instance, instance.get_runs(), results


def step_records(instance: DagsterInstance, run_id: str) -> dict:
    """Step key -> {event type: (timestamp, pid)} of the run's step start and success."""
    steps = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type in STEP_EVENTS:
            steps.setdefault(event.step_key, {})[event.event_type] = (record.timestamp, event.pid)
    return steps


def executor_pid(instance: DagsterInstance, run_id: str) -> int:
    """The run process's pid, from the multiprocess executor's own engine event."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if "using multiprocess executor" in (record.user_message or ""):
            return record.dagster_event.pid
    pytest.fail("the run did not use the multiprocess executor")


@pytest.mark.parametrize("job", ["extract_day", "refresh_tables"])
def test_run_succeeds_with_each_step_in_a_process_of_its_own(multiprocess_runs, job):
    instance, runs, results, _ = multiprocess_runs
    assert results[job].returncode == 0, results[job].stdout[-4000:]
    run = runs[job]
    assert run.status == DagsterRunStatus.SUCCESS

    steps = step_records(instance, run.run_id)
    assert all(set(events) == set(STEP_EVENTS) for events in steps.values()), steps
    pids = {key: events[DagsterEventType.STEP_START][1] for key, events in steps.items()}
    assert len(set(pids.values())) == len(pids), f"steps shared a process: {pids}"
    assert executor_pid(instance, run.run_id) not in pids.values()


def test_day_run_writes_every_raw_table(multiprocess_runs):
    _, _, _, data_root = multiprocess_runs
    for table in ("messages", "conversations", "contacts"):
        assert (data_root / "raw" / table / f"date={DAY}" / "part-0.parquet").is_file(), table


def test_budget_ledger_counts_across_step_processes(multiprocess_runs):
    """The step process reserved and counted in the shared ledger, not in memory of its own."""
    instance, runs, _, data_root = multiprocess_runs
    event = instance.get_latest_materialization_event(AssetKey(["raw", "messages"]))
    assert event.run_id == runs["extract_day"].run_id
    metadata = event.asset_materialization.metadata
    assert metadata["deferred_conversations"].value > 0
    assert metadata["budget_used"].value == BUDGET

    with BudgetLedger.for_sqlite_file(data_root / "_state" / "budget.sqlite3") as ledger:
        assert ledger.usage(billing_period(NOW)) == BUDGET


def test_pool_runs_gladly_steps_one_at_a_time(multiprocess_runs):
    """refresh_tables has three independent steps that call Gladly: the pool serializes them."""
    instance, runs, _, _ = multiprocess_runs
    run_id = runs["refresh_tables"].run_id
    blocked = [
        record.step_key
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        if (record.user_message or "").startswith(f"Step blocked by limit for pool {GLADLY_POOL}")
    ]
    # Ready together with room for two processes, so the executor tried them at once.
    assert len(blocked) >= 1 and set(blocked) <= GLADLY_STEPS, blocked

    steps = step_records(instance, run_id)
    spans = sorted(
        (events[DagsterEventType.STEP_START][0], events[DagsterEventType.STEP_SUCCESS][0], key)
        for key, events in steps.items() if key in GLADLY_STEPS
    )
    assert {key for _, _, key in spans} == GLADLY_STEPS
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"{first} and {second} called Gladly at the same time"


def test_pool_keeps_concurrent_runs_from_calling_gladly_together(concurrent_day_runs):
    instance, runs, results = concurrent_day_runs
    assert all(result.returncode == 0 for result in results), results[0].stdout[-4000:]
    assert sorted(run.tags["dagster/partition"] for run in runs) == list(CONCURRENT_DAYS)
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
    records = [instance.get_run_record_by_id(run.run_id) for run in runs]
    assert max(r.start_time for r in records) < min(r.end_time for r in records), (
        "the runs did not overlap in time, so they tested nothing about the pool"
    )

    spans = sorted(
        (events[DagsterEventType.STEP_START][0], events[DagsterEventType.STEP_SUCCESS][0],
         f"{run.tags['dagster/partition']} {key}")
        for run in runs
        for key, events in step_records(instance, run.run_id).items() if key in RAW_STEPS
    )
    assert len(spans) == 2 * len(RAW_STEPS)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"{first} and {second} called Gladly at the same time"


def test_pool_slots_are_free_after_the_runs(multiprocess_runs):
    instance, _, _, _ = multiprocess_runs
    info = instance.event_log_storage.get_concurrency_info(GLADLY_POOL)
    assert info.limit == 1
    assert info.claimed_slots == [] and info.pending_steps == []


# The Kubernetes examples in docs/deploy


def example_instance() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())


def test_example_dagster_yaml_passes_dagster_instance_validation():
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_example_dagster_yaml_keeps_every_local_instance_setting():
    """Kubernetes keeps what the local instance sets: Gladly's pool limit, the run queue,
    telemetry off, freshness evaluation. A setting added to dagster.yaml must come here too."""
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    example = example_instance()
    for key, value in local.items():
        if key == "run_monitoring":
            # Kubernetes adds pod start and poll timings to what the local instance sets.
            kept = {name: example[key].get(name) for name in value}
            assert kept == value, f"docs/deploy/dagster.yaml differs on {key}"
            continue
        assert example.get(key) == value, f"docs/deploy/dagster.yaml differs on {key}"


@pytest.fixture
def k8s_launcher():
    """dagster-k8s's K8sRunLauncher class, imported here rather than at the top: loading the
    kubernetes client sets the `urllib3` and `client` loggers to WARNING for the whole
    process, and other tests rely on urllib3's DEBUG records. Their levels are put back."""
    loggers = [logging.getLogger(name) for name in ("urllib3", "client")]
    levels = [logger.level for logger in loggers]
    from dagster_k8s import K8sRunLauncher

    yield K8sRunLauncher
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def test_example_k8s_run_launcher_config_passes_dagster_k8s_schema(tmp_path, k8s_launcher):
    launcher = example_instance()["run_launcher"]
    assert launcher["module"] == "dagster_k8s"
    result = validate_config(k8s_launcher.config_type(), launcher["config"])
    assert result.success, [error.message for error in result.errors]

    # The constructor takes the processed config as it would in the cluster; only the
    # cluster credentials come from a kubeconfig on 127.0.0.1 (nothing connects to it).
    processed = process_config(k8s_launcher.config_type(), launcher["config"]).value
    kubeconfig = write_local_kubeconfig(tmp_path)
    built = k8s_launcher(**{**processed, "load_incluster_config": False,
                              "kubeconfig_file": str(kubeconfig)})
    assert built.job_namespace == "dagster"
    assert built.dagster_home == "/opt/dagster/dagster_home"


def test_dagster_k8s_schema_rejects_a_misspelt_launcher_key(k8s_launcher):
    """The check above can fail: a key the launcher does not know is an error."""
    config = {**example_instance()["run_launcher"]["config"], "env_secret": ["x"]}
    assert not validate_config(k8s_launcher.config_type(), config).success


def write_local_kubeconfig(tmp_path: Path) -> Path:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "local", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
        "current-context": "local",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def test_example_instance_loads_on_postgresql(postgres_url, tmp_path, monkeypatch):
    """The whole example instance comes up against a real PostgreSQL (the run launcher is
    built only when a run is launched, which needs a cluster)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert not instance.telemetry_enabled
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        # Pools are enforced through this database, so the limit holds across run pods.
        assert instance.event_log_storage.supports_global_concurrency_limits


# Helm values: Dagster's chart schema is not available offline (not on PyPI), so these check
# the keys we rely on against the chart's documented layout, and what maps onto Dagster's and
# dagster-k8s's own schemas.

# Top-level keys of the chart's values (its values.py model, 1.x).
CHART_TOP_LEVEL_KEYS = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
    "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
    "global", "retention", "concurrency", "additionalInstanceConfig",
}
# The chart's k8sRunLauncher keys that this file sets, and the dagster-k8s field each one
# becomes in the rendered dagster.yaml.
HELM_TO_K8S_LAUNCHER = {
    "imagePullPolicy": "image_pull_policy",
    "loadInclusterConfig": "load_incluster_config",
    "jobNamespace": "job_namespace",
    "envVars": "env_vars",
    "resources": "resources",
}
# What the chart fills in itself from the release.
CHART_SUPPLIED_LAUNCHER_CONFIG = {
    "service_account_name": "dagster",
    "instance_config_map": "dagster-instance",
    "dagster_home": "/opt/dagster/dagster_home",
    "postgres_password_secret": "dagster-postgresql",
}
# Instance settings the chart renders from values of its own (checked above).
CHART_RENDERED_SETTINGS = {"telemetry", "concurrency", "run_monitoring"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def test_helm_values_use_only_chart_keys():
    values = helm_values()
    assert set(values) <= CHART_TOP_LEVEL_KEYS, set(values) - CHART_TOP_LEVEL_KEYS


def test_helm_values_match_the_example_instance():
    values, instance = helm_values(), example_instance()
    assert values["telemetry"]["enabled"] is False
    assert values["concurrency"]["enabled"] is True
    pools, runs = instance["concurrency"]["pools"], instance["concurrency"]["runs"]
    assert values["concurrency"]["pools"]["defaultLimit"] == pools["default_limit"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]

    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"] == {"enabled": True, "type": "QueuedRunCoordinator"}
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"]["enabled"] is True
    assert (daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"]
            == monitoring["free_slots_after_run_end_seconds"])
    assert daemon["runMonitoring"]["startTimeoutSeconds"] == monitoring["start_timeout_seconds"]
    # The local instance's settings the chart has no value for come through
    # additionalInstanceConfig, unchanged.
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    extra = values.get("additionalInstanceConfig", {})
    for key in set(local) - CHART_RENDERED_SETTINGS:
        assert extra.get(key) == local[key], f"helm-values.yaml misses {key}"


def test_helm_run_launcher_renders_a_valid_dagster_k8s_config(k8s_launcher):
    launcher = helm_values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    helm_config = launcher["config"]["k8sRunLauncher"]
    unmapped = set(helm_config) - set(HELM_TO_K8S_LAUNCHER)
    assert not unmapped, f"no known dagster-k8s field for {unmapped}"
    config = {HELM_TO_K8S_LAUNCHER[key]: value for key, value in helm_config.items()}
    config.update(CHART_SUPPLIED_LAUNCHER_CONFIG)
    result = validate_config(k8s_launcher.config_type(), config)
    assert result.success, [error.message for error in result.errors]


def test_helm_user_deployment_serves_this_project():
    deployments = helm_values()["dagster-user-deployments"]
    assert deployments["enabled"] is True
    (deployment,) = deployments["deployments"]
    assert DNS_LABEL.match(deployment["name"]), "Kubernetes names: lowercase, digits and -"
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    # Run pods need the same secrets and settings as the code server.
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    secrets = [source["name"] for source in deployment["envSecrets"]]
    maps = [source["name"] for source in deployment["envConfigMaps"]]
    launcher = example_instance()["run_launcher"]["config"]
    assert secrets == launcher["env_secrets"] and maps == launcher["env_config_maps"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["DAGSTER_DISABLE_TELEMETRY"] == "1"


def test_helm_postgresql_uses_psycopg2_and_a_secret():
    values = helm_values()
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql"


# The Dockerfile


def dockerfile_instructions() -> list:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [tuple(line.strip().split(None, 1)) for line in logical.splitlines() if line.strip()]


def test_dockerfile_copies_files_that_exist():
    copies = [args.split() for op, args in dockerfile_instructions() if op == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_dockerfile_pins_dagster_k8s_like_the_dev_extra():
    (pin,) = [spec for spec in PYPROJECT["project"]["optional-dependencies"]["dev"]
              if spec.startswith("dagster-k8s")]
    runs = " ".join(args for op, args in dockerfile_instructions() if op == "RUN")
    assert f'"{pin}"' in runs


def test_dockerfile_serves_the_project_module():
    (command,) = [args for op, args in dockerfile_instructions() if op == "CMD"]
    argv = json.loads(command)
    assert argv[:3] == ["dagster", "api", "grpc"]
    assert argv[argv.index("--module-name") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]


def test_deploy_docs_name_only_variables_the_project_reads():
    """A misspelt or renamed variable in a secret or ConfigMap is silently ignored."""
    source = "\n".join(path.read_text() for path in (REPO / "gladly_pipeline").rglob("*.py"))
    named = set()
    for path in DEPLOY.iterdir():
        named |= set(re.findall(r"\bGLADLY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert named, "docs/deploy names no GLADLY_ variable"
    unknown = {name for name in named if f'"{name}"' not in source}
    assert not unknown, f"docs/deploy names variables the code never reads: {sorted(unknown)}"
