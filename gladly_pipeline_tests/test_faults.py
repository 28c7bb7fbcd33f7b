"""Each fault the emulator injects, met by the client (and, where it answers, the extraction)."""

import base64
import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from gladly_pipeline.client import (
    GladlyAuthError,
    GladlyBadRequest,
    GladlyClient,
    GladlyDataError,
    GladlyNotFound,
    GladlyPermissionError,
    GladlyUnavailable,
    RetryPolicy,
)
from gladly_pipeline.emulator import Fault, start_emulator
from gladly_pipeline.emulator.data import (
    REST_ONLY_TYPES,
    UNKNOWN_CONTENT_TYPE,
    UNKNOWN_ITEM_FIELD,
)
from gladly_pipeline.extract import (
    ITEMS_FILE,
    extract_messages,
    extract_messages_from_events,
    fetch_contacts,
)
from gladly_pipeline.storage import TableStore
from gladly_pipeline.timeutil import format_timestamp, parse_timestamp
from gladly_pipeline.windows import window_for_day

from .conftest import FAST_RETRY, TOKEN, USERNAME, make_client, small_config

DAY = "2026-03-08"
EXPORT = "/api/v1/export"
# Tiny timeouts and delays: a slow fault outlasts the read timeout five times over.
READ_TIMEOUT = 0.2
SLOW_SECONDS = 1.0


@pytest.fixture(scope="module")
def emu():
    # Twelve conversations a day: the day's items file has enough lines for share checks.
    with start_emulator(small_config(conversations_per_day=12)) as running:
        yield running


@pytest.fixture(autouse=True)
def disarm_faults(request):
    """A fault a test left armed must not leak into the next test."""
    yield
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").clear_faults()


@pytest.fixture
def client(emu):
    client = make_client(emu)
    yield client
    client.close()


def day_job(emu) -> dict:
    return next(
        job
        for job in emu.data.visible_jobs()
        if job["status"] == "COMPLETED" and job["parameters"]["startAt"].startswith(DAY)
    )


def items_path(job: dict) -> str:
    return f"/api/v1/export/jobs/{job['id']}/files/{ITEMS_FILE}"


def clean_lines(emu, job: dict) -> list:
    reader = make_client(emu)
    try:
        return list(reader.export_file_lines(job["id"], ITEMS_FILE))
    finally:
        reader.close()


def requests_for(emu, path: str) -> int:
    return sum(1 for _, logged, _ in emu.request_log if logged == path)


# ---------------------------------------------------------------- transient: retried


def test_429_burst_without_retry_after_is_retried_and_counted(emu, client):
    emu.inject(status=429, times=3, path_prefix="/api/v1/agents")

    agents = client.agents()

    assert [agent["id"] for agent in agents] == [agent["id"] for agent in emu.data.agents]
    assert client.stats.throttled == 3 and client.stats.retries == 3
    assert client.stats.requests == 4


def test_429s_outlasting_the_wait_budget_give_up_before_every_attempt_is_spent(emu):
    policy = RetryPolicy(max_attempts=50, base_seconds=0.02, cap_seconds=0.02, max_total_wait=0.1)
    client = make_client(emu, retry=policy)
    emu.inject(status=429, times=50, path_prefix="/api/v1/agents")
    started = time.monotonic()

    with pytest.raises(GladlyUnavailable, match="still failing"):
        client.agents()

    # Each wait is at most 0.02 s: about ten retries fit the 0.1 s budget, never 49.
    assert client.stats.requests < 50
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("html", [False, True], ids=["json-errors", "html-page"])
def test_5xx_with_either_body_is_retried_to_success(emu, client, status, html):
    emu.inject(status=status, times=2, path_prefix="/api/v1/inboxes", html=html)

    assert client.inboxes() == emu.data.inboxes
    assert client.stats.server_errors == 2 and client.stats.retries == 2


def test_answer_slower_than_the_read_timeout_times_out_and_is_retried(emu):
    client = make_client(emu, read_timeout=READ_TIMEOUT)
    emu.inject(Fault("slow", "/api/v1/agents", seconds=SLOW_SECONDS))
    started = time.monotonic()

    agents = client.agents()

    assert agents == emu.data.agents
    assert time.monotonic() - started < SLOW_SECONDS, "the client waited the fault out"
    assert client.stats.timeouts == 1 and client.stats.network_errors == 1
    assert client.stats.retries == 1 and client.stats.resets == 0


def test_export_file_stalling_mid_way_resumes_after_the_read_timeout(emu):
    job = day_job(emu)
    expected = clean_lines(emu, job)
    client = make_client(emu, read_timeout=READ_TIMEOUT)
    emu.inject(Fault("slow", items_path(job), seconds=SLOW_SECONDS, after_lines=10))

    lines = list(client.export_file_lines(job["id"], ITEMS_FILE))

    assert lines == expected
    assert client.stats.timeouts == 1 and client.stats.retries == 1


def test_export_file_cut_mid_stream_is_read_fully_and_once_per_line(emu, client, caplog):
    job = day_job(emu)
    expected = clean_lines(emu, job)
    before = requests_for(emu, items_path(job))
    emu.inject(Fault("reset", items_path(job), after_lines=5))

    with caplog.at_level(logging.WARNING, logger="gladly_pipeline.client"):
        lines = list(client.export_file_lines(job["id"], ITEMS_FILE))

    assert len(expected) > 20
    # The cut left line 6 half-sent: it must not be handed out, nor lines 1-5 twice.
    assert lines == expected
    assert "broke off after 5 lines" in caplog.text
    assert requests_for(emu, items_path(job)) - before == 2
    assert client.stats.resets == 1 and client.stats.retries == 1


def test_export_file_ended_by_a_tcp_reset_is_read_fully(emu, client):
    job = day_job(emu)
    expected = clean_lines(emu, job)
    emu.inject(Fault("reset", items_path(job), after_lines=5, rst=True))

    assert list(client.export_file_lines(job["id"], ITEMS_FILE)) == expected
    assert client.stats.resets == 1


def test_json_answer_cut_halfway_is_retried(emu, client):
    emu.inject(Fault("reset", "/api/v1/topics"))

    assert client.topics() == emu.data.topics
    assert client.stats.resets == 1 and client.stats.retries == 1


def test_events_stream_cut_mid_way_resumes_without_repeating_events(emu, client):
    start_at = format_timestamp(client.server_time() - timedelta(hours=23))
    entities = ["CONTACT", "CONVERSATION"]
    expected = list(client.event_lines(start_at=start_at, entities=entities))
    emu.inject(Fault("reset", "/api/v1/events", after_lines=7))

    lines = list(client.event_lines(start_at=start_at, entities=entities))

    assert len(expected) > 20
    assert lines == expected
    assert client.stats.resets == 1


def test_download_that_keeps_breaking_gives_up_within_the_retry_budget(emu, client):
    job = day_job(emu)
    emu.inject(Fault("reset", items_path(job), times=10, after_lines=2))

    with pytest.raises(GladlyUnavailable, match="broke off 4 times"):
        list(client.export_file_lines(job["id"], ITEMS_FILE))

    assert client.stats.resets == FAST_RETRY.max_attempts


# ---------------------------------------------------------------- damaged files


def test_truncated_last_line_reaches_the_extraction_as_one_malformed_line(emu, tmp_path):
    job = day_job(emu)
    expected = clean_lines(emu, job)
    client = make_client(emu)
    emu.inject(Fault("truncate", items_path(job)))
    store = TableStore(tmp_path)
    path = store.raw_partition("messages", DAY)

    stats = extract_messages(client, window_for_day(DAY), store, path)

    # The stream ended cleanly: the client cannot tell, and hands the cut line over.
    assert stats.malformed == 1
    assert stats.malformed_positions == [f"{job['id']}:{len(expected)}"]
    assert stats.written == len(expected) - 1 - stats.outside_window
    assert client.stats.network_errors == 0


def test_a_few_garbage_lines_are_skipped_and_located(emu, tmp_path):
    job = day_job(emu)
    expected = clean_lines(emu, job)
    emu.inject(Fault("garbage", items_path(job), share=0.05))
    store = TableStore(tmp_path)
    path = store.raw_partition("messages", DAY)

    stats = extract_messages(make_client(emu), window_for_day(DAY), store, path)

    garbage = len(expected) // 20
    assert stats.malformed == garbage >= 3
    assert pq.read_table(path).num_rows == len(expected) - garbage - stats.outside_window


def test_mostly_garbage_file_fails_the_day_instead_of_writing_holes(emu, tmp_path):
    emu.inject(Fault("garbage", items_path(day_job(emu)), share=0.5))
    store = TableStore(tmp_path)
    path = store.raw_partition("messages", DAY)

    with pytest.raises(GladlyDataError, match="malformed lines"):
        extract_messages(make_client(emu), window_for_day(DAY), store, path)

    assert not path.exists()


# ---------------------------------------------------------------- fatal: no retry


@pytest.mark.parametrize("status, error", [(401, GladlyAuthError), (403, GladlyPermissionError)])
def test_auth_refused_mid_run_is_fatal_at_once_and_names_no_token(emu, client, status, error):
    job = day_job(emu)
    assert client.agents()
    emu.inject(status=status, path_prefix=items_path(job))

    with pytest.raises(error) as caught:
        list(client.export_file_lines(job["id"], ITEMS_FILE))

    assert str(status) in str(caught.value) and USERNAME in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert client.stats.requests == 2 and client.stats.retries == 0


def test_no_failure_leaks_the_token_or_the_authorization_header(emu, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 logs every connection and request at DEBUG
    client = make_client(emu)
    emu.inject(status=401, path_prefix="/api/v1/agents")
    emu.inject(status=403, path_prefix="/api/v1/inboxes")
    emu.inject(status=503, times=9, path_prefix="/api/v1/topics")
    emu.inject(Fault("reset", EXPORT, times=9))
    calls = [
        client.agents,
        client.inboxes,
        lambda: client.conversation("no-such-conversation"),
        lambda: client.find_customers(phone="not-a-phone"),
        client.topics,
        lambda: list(client.export_file_lines(day_job(emu)["id"], ITEMS_FILE)),
        _closed_port_client().organization,
    ]

    failures = [_failure(call) for call in calls]

    assert [type(failure) for failure in failures] == [
        GladlyAuthError,
        GladlyPermissionError,
        GladlyNotFound,
        GladlyBadRequest,
        GladlyUnavailable,
        GladlyUnavailable,
        GladlyUnavailable,
    ]
    assert any(record.name.startswith("urllib3") for record in caplog.records)
    texts = [text for failure in failures for text in _chain_texts(failure)]
    texts += [record.getMessage() for record in caplog.records] + [caplog.text, repr(client)]
    basic = base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
    for secret in (TOKEN, basic):
        assert not [text for text in texts if secret in text]


def _failure(call) -> Exception:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _closed_port_client() -> GladlyClient:
    """A client for a port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return GladlyClient(f"http://127.0.0.1:{port}", USERNAME, TOKEN, retry=FAST_RETRY)


def _chain_texts(error: BaseException) -> list:
    """str and repr of an exception and of every exception it was raised from or during."""
    texts = []
    while error is not None:
        texts += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return texts


# ---------------------------------------------------------------- profiles change under us


def test_customer_merged_between_two_calls_is_reported_with_its_survivor():
    with start_emulator(small_config()) as running:
        client = make_client(running)
        old, into = _two_customers_with_email(running)
        email = running.data.customers[old]["emails"][0]["normalized"]
        before = client.customer_profile(old)

        running.merge_customer(old, into)
        after = client.customer_profile(old)
        survivor = client.customer_profile(into).profile
        found = client.find_customers(email=email)
        table, stats = fetch_contacts(client, [old], workers=1)

    assert before.profile["id"] == old and before.merged_into is None
    assert after.profile is None and after.merged_into == into
    assert email in {entry["normalized"] for entry in survivor["emails"]}
    assert [profile["id"] for profile in found] == [into]
    assert stats.merged == 1 and sorted(table.column("id").to_pylist()) == sorted([old, into])


def test_deleted_customer_answers_not_found_from_then_on():
    with start_emulator(small_config()) as running:
        client = make_client(running)
        customer_id = next(iter(running.data.customers))
        assert client.customer_profile(customer_id).profile["id"] == customer_id

        running.delete_customer(customer_id)

        with pytest.raises(GladlyNotFound, match="404"):
            client.customer_profile(customer_id)
        with pytest.raises(GladlyNotFound):
            client.customer_conversations(customer_id)


def _two_customers_with_email(running) -> tuple:
    with_email = [cid for cid, p in running.data.customers.items() if p.get("emails")]
    return with_email[0], with_email[1]


# ---------------------------------------------------------------- shapes we have not seen


def test_unknown_content_type_and_field_pass_through_the_client_and_the_export_path(tmp_path):
    with start_emulator(small_config(conversations_per_day=12, unknown_shapes=True)) as running:
        client = make_client(running)
        item = _unknown_item(running)
        listed = client.conversation_items(item["conversationId"])
        store = TableStore(tmp_path)
        path = store.raw_partition("messages", DAY)
        extract_messages(client, window_for_day(DAY), store, path)

    assert item in listed
    rows = pq.read_table(path).to_pylist()
    custom = [row for row in rows if row["content_type"] == UNKNOWN_CONTENT_TYPE]
    assert custom and all(row["text"] for row in custom)
    assert any(UNKNOWN_ITEM_FIELD in json.loads(row["raw_json"]) for row in rows)


def _unknown_item(running) -> dict:
    return next(
        item
        for item in running.data.items
        if item["content"]["type"] == UNKNOWN_CONTENT_TYPE and item["timestamp"] >= DAY
    )


LATE_ON_DAY = datetime(2026, 3, 8, 23, 30, tzinfo=UTC)  # events still reach the whole day


def test_unknown_content_type_also_survives_the_intraday_path(tmp_path):
    config = small_config(now=LATE_ON_DAY, conversations_per_day=12, unknown_shapes=True)
    with start_emulator(config) as running:
        client = make_client(running)
        expected = {
            item["id"]
            for item in running.data.items
            if item["content"]["type"] == UNKNOWN_CONTENT_TYPE and item["timestamp"] >= DAY
        }
        store = TableStore(tmp_path)
        path = store.raw_partition("messages", DAY)
        extract_messages_from_events(
            client, window_for_day(DAY), store, path, now=client.server_time(), workers=1
        )

    rows = pq.read_table(path).to_pylist()
    assert expected
    assert expected <= {row["id"] for row in rows}


def test_mostly_garbage_events_stream_fails_the_refresh(tmp_path):
    with start_emulator(small_config(now=LATE_ON_DAY, conversations_per_day=12)) as running:
        client = make_client(running)
        running.inject(Fault("garbage", "/api/v1/events", share=0.5))
        store = TableStore(tmp_path)
        path = store.raw_partition("messages", DAY)

        with pytest.raises(GladlyDataError, match="malformed"):
            extract_messages_from_events(
                client, window_for_day(DAY), store, path, now=client.server_time(), workers=1
            )


# ---------------------------------------------------------------- one item, two jobs


def test_item_listed_in_two_export_jobs_is_written_once(tmp_path):
    config = small_config(conversations_per_day=12, schedule="hourly", duplicate_items=3)
    window = window_for_day(DAY)
    with start_emulator(config) as running:
        expected = [
            item["id"]
            for item in running.data.items
            if window.contains(parse_timestamp(item["timestamp"]))
            and item["content"]["type"] not in REST_ONLY_TYPES
        ]
        store = TableStore(tmp_path)
        path = store.raw_partition("messages", DAY)
        stats = extract_messages(make_client(running), window, store, path)

    ids = pq.read_table(path).column("id").to_pylist()
    assert len(stats.jobs) == 24 and stats.duplicates > 0
    # Every hourly file repeats three earlier items: the day's are duplicates, the rest
    # (before midnight) belong to the day before.
    assert stats.duplicates + stats.outside_window == 3 * 24
    assert sorted(ids) == sorted(expected)
