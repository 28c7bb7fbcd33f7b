"""The Dagster UI in a real browser: catalog, partitions, and one day launched by a click.

Starts the emulator and `dagster dev` (webserver, daemon, code server) as a user would,
drives Debian's Chromium through Playwright, and stops every process it started. Chromium
may load http://127.0.0.1:<ui port> and nothing else; any other request is refused and
fails the test.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("GLADLY_REQUIRE_BROWSER") == "1"
DAY = "2026-03-08"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# A small account with one exported day (DAY): the sensors start running with the daemon and
# their first runs (that day, today, the reference lists) go before ours through the one-step
# `gladly_api` pool, so the less they have to do, the sooner our run starts.
EMULATOR_ARGS = ["--port", "0", "--seed", "1", "--quiet", "--now", "2026-03-09T12:00:00Z",
                 "--days", "1", "--conversations-per-day", "20"]
UI_START_SECONDS = 90
LAUNCH_SECONDS = 90  # the webserver asks the code server for the plan: slow under load
RUN_SECONDS = 240  # queued behind the sensors' first runs; ~1 min on an idle machine


@pytest.fixture
def playwright_api():
    """Playwright's sync API, or a skip (a failure when GLADLY_REQUIRE_BROWSER=1)."""
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason}; GLADLY_REQUIRE_BROWSER=1 forbids skipping it")
        pytest.skip(reason)
    return sync_api


# Processes: each in its own process group with default signal handlers, stopped by group.


def restore_default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(command: list, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=restore_default_signals,
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (run and step processes too), SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits, so it stops counting
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def emulator_url(log: Path, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        for word in log.read_text().split():
            if word.startswith("http://127.0.0.1:"):
                return word
        time.sleep(0.2)
    raise AssertionError(f"the emulator did not start:\n{log.read_text()[-2000:]}")


# The webserver's GraphQL API, to find our run and wait for it (what the UI itself polls).


def graphql(port: int, query: str, **variables) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries {
    loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
UI_RUNS = """query { runsOrError(filter: {tags: [{key: "dagster/from_ui", value: "true"}]}) {
    ... on Runs { results { runId status tags { key value } } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
MATERIALIZATIONS = """query($day: String!) {
    assetOrError(assetKey: {path: ["raw", "messages"]}) { ... on Asset {
        assetMaterializations(partitions: [$day]) { runId metadataEntries {
            label ... on IntMetadataEntry { intValue } } } } } }"""


def wait_until(what: str, probe, seconds: float, logs: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    tail = (logs / "dagster.log").read_text()[-3000:]
    raise AssertionError(f"{what} within {seconds:.0f} s; dagster dev log ends:\n{tail}")


def ui_ready(port: int):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).close()
        entries = graphql(port, LOCATION)["workspaceOrError"]["locationEntries"]
    except OSError:
        return None
    loaded = entries and entries[0]["loadStatus"] == "LOADED"
    if loaded and entries[0]["locationOrLoadError"]["__typename"] != "RepositoryLocation":
        raise AssertionError(f"code location failed: {entries[0]['locationOrLoadError']}")
    return loaded


@pytest.fixture
def dagster_ui(playwright_api, tmp_path):
    """`dagster dev` on a free port against the emulator; yields (port, data root, logs).

    Asks for a browser first: without one there is no point in starting the servers.
    """
    home, data, logs = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "logs"
    for folder in (home, logs):
        folder.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # Only our settings: a developer's GLADLY_* or DAGSTER_PG_URL must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLADLY_", "DAGSTER_"))}
    env.update(DAGSTER_DISABLE_TELEMETRY="1", DAGSTER_HOME=str(home),
               GLADLY_DATA_ROOT=str(data), GLADLY_USERNAME="agent@example.com",
               GLADLY_API_TOKEN="emulator-token")
    port = free_port()
    processes = []
    try:
        emulator = start([sys.executable, "-m", "gladly_pipeline.emulator", *EMULATOR_ARGS],
                         env, logs / "emulator.log")
        processes.append(emulator)
        env["GLADLY_BASE_URL"] = emulator_url(logs / "emulator.log", emulator)
        dagster = Path(sys.executable).with_name("dagster")
        processes.append(start([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)],
                               env, logs / "dagster.log"))
        wait_until("the UI and its code location were not up", lambda: ui_ready(port),
                   UI_START_SECONDS, logs)
        yield port, data, logs
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture
def browser_page(playwright_api, dagster_ui, tmp_path):
    """A Chromium page that may load the UI and nothing else; yields (page, refused URLs)."""
    ui = f"http://127.0.0.1:{dagster_ui[0]}/"
    refused = []

    def local_only(route):
        url = route.request.url
        if url.startswith(ui):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900},
        )
        try:
            context.route("**/*", local_only)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            # Dagster's first-visit "Join the community" dialog: skipped whenever it shows.
            page.add_locator_handler(page.get_by_role("button", name="Skip"),
                                     lambda skip: skip.click())
            yield page, refused
        finally:
            context.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    """Every run keeps its screenshots; GLADLY_UPDATE_SCREENSHOTS=1 refreshes docs/."""
    page.screenshot(path=tmp_path / name)
    if os.environ.get("GLADLY_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(tmp_path / name, DOCS / name)


def my_run(port: int, short_id: str) -> str:
    """The full id of the run our click launched (the UI names it by its first characters)."""
    for run in graphql(port, UI_RUNS)["runsOrError"]["results"]:
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        if run["runId"].startswith(short_id) and tags.get("dagster/partition") == DAY:
            return run["runId"]
    raise AssertionError(f"no run {short_id}… for {DAY} launched from the UI")


def finished(port: int, run_id: str):
    status = graphql(port, RUN, id=run_id)["runOrError"]["status"]
    assert status not in ("FAILURE", "CANCELED"), f"run {run_id} ended {status}"
    return status == "SUCCESS"


def row_count_of(port: int, run_id: str) -> int:
    events = graphql(port, MATERIALIZATIONS, day=DAY)["assetOrError"]["assetMaterializations"]
    mine = next(e for e in events if e["runId"] == run_id)
    return next(m["intValue"] for m in mine["metadataEntries"] if m["label"] == "dagster/row_count")


def see_catalog(page, expect, base: str, shots: Path) -> None:
    """The catalog lists both groups and says what an asset holds."""
    page.goto(f"{base}/assets")
    expect(page.get_by_role("link", name="gladly_raw").first).to_be_visible()
    expect(page.get_by_role("link", name="gladly_analytics").first).to_be_visible()
    expect(page.get_by_text("Every conversation item (message, call").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0)  # statuses shown
    screenshot(page, shots, "ui-assets.png")


def see_partitions(page, expect, shots: Path) -> None:
    """raw/messages has daily partitions, the emulator's days among them."""
    page.get_by_role("link", name="raw / messages").first.click()
    page.get_by_role("tab", name="Partitions").click()
    page.get_by_placeholder("Filter by name").fill("2026-03-0")
    expect(page.get_by_text(DAY, exact=True).first).to_be_visible()
    screenshot(page, shots, "ui-partitions.png")


def launch_one_day(page, expect) -> str:
    """Materialize… with one day typed in, then "Launch 1 run"; returns the run's short id."""
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Show all partitions").click()  # the dialog starts at 90 days back
    partitions = dialog.get_by_placeholder("ex: ", exact=False)
    partitions.fill(DAY)
    partitions.press("Enter")
    dialog.get_by_role("button", name="Launch 1 run").click()
    launched = page.get_by_text(re.compile(r"Launched run \w+"))
    expect(launched).to_be_visible(timeout=LAUNCH_SECONDS * 1000)
    return launched.inner_text().split()[-1]


def see_row_count(page, expect, rows: int, shots: Path) -> None:
    """After a reload, the day's partition shows `dagster/row_count` with our number."""
    page.reload()
    page.get_by_placeholder("Filter by name").fill(DAY)
    page.get_by_text(DAY, exact=True).first.click()
    label = page.get_by_text("dagster/row_count", exact=True).first
    expect(label).to_be_visible()
    expect(page.locator("tr", has=label).get_by_text(str(rows), exact=True)).to_be_visible()
    screenshot(page, shots, "ui-materialized.png")


@pytest.mark.browser
def test_user_launches_one_day_from_the_asset_page_and_sees_its_rows(
    playwright_api, dagster_ui, browser_page, tmp_path
):
    port, data, logs = dagster_ui
    page, refused = browser_page
    expect = playwright_api.expect
    expect.set_options(timeout=30_000)  # the UI fetches its data after the page loads
    try:
        see_catalog(page, expect, f"http://127.0.0.1:{port}", tmp_path)
        see_partitions(page, expect, tmp_path)
        run_id = my_run(port, launch_one_day(page, expect))
        wait_until(f"run {run_id} did not succeed", lambda: finished(port, run_id),
                   RUN_SECONDS, logs)
        rows = row_count_of(port, run_id)
        written = data / "raw" / "messages" / f"date={DAY}" / "part-0.parquet"
        assert rows == pq.read_metadata(written).num_rows > 0
        see_row_count(page, expect, rows, tmp_path)
    except Exception:
        page.screenshot(path=tmp_path / "failure.png")  # what the user saw when it broke
        raise
    assert refused == [], "the UI tried to load something from outside this machine"


# The code location the UI loads, with each optional setting the README documents. No
# browser needed: a failing import is what the UI shows as "Error loading repository location".

@pytest.mark.parametrize("setting,value", [
    ("GLADLY_CONVERSATIONS_PER_PERIOD", "500"),
    ("GLADLY_FIRST_RUN_LOOKBACK_DAYS", "3"),
    ("GLADLY_BILLING_PERIOD_START_DAY", "15"),
    ("GLADLY_INTRADAY_REFRESH_MINUTES", "30"),
])
def test_code_location_loads_with_an_optional_setting_from_the_readme(setting, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLADLY_")}
    env.update(GLADLY_BASE_URL="http://127.0.0.1:8765", DAGSTER_DISABLE_TELEMETRY="1",
               **{setting: value})
    loaded = subprocess.run(
        [sys.executable, "-c", "from gladly_pipeline.definitions import defs; "
                               "defs.resolve_all_job_defs()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-1500:]
