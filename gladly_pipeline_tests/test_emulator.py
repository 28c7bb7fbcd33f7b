"""The Gladly API emulator behaves as the reference says Gladly does, over raw HTTP."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from gladly_pipeline.emulator import EmulatorConfig, generate, start_emulator
from gladly_pipeline.emulator.data import parse_timestamp

UTC = timezone.utc
# The day after the 2026 US spring-forward switch (2026-03-08), so daily-local windows cross it.
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
AUTH = ("agent@example.com", "emulator-token")
ALL_CONTENT_TYPES = {
    "CHAT_MESSAGE",
    "EMAIL",
    "SMS",
    "PHONE_CALL",
    "VOICEMAIL",
    "FACEBOOK_MESSAGE",
    "INSTAGRAM_DIRECT",
    "WHATSAPP",
    "CONVERSATION_NOTE",
    "CONVERSATION_STATUS_CHANGE",
    "TOPIC_CHANGE",
    "CUSTOMER_ACTIVITY",
    "TWITTER",
    "VOICE_AI_MESSAGE",
}


def small_config(**overrides: object) -> EmulatorConfig:
    settings = {
        "seed": 7,
        "now": NOW,
        "days": 3,
        "conversations_per_day": 8,
        "rate_limit_per_second": None,
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def emu():
    with start_emulator(small_config(big_conversation_items=1200)) as running:
        yield running


@pytest.fixture(scope="module")
def default_data():
    started = time.perf_counter()
    data = generate(EmulatorConfig(seed=1, now=NOW))
    return data, time.perf_counter() - started


@pytest.fixture
def api(emu):
    session = requests.Session()
    session.auth = AUTH
    yield lambda path, **kwargs: session.get(emu.base_url + path, timeout=10, **kwargs)
    session.close()


def ms(text: str) -> datetime:
    return parse_timestamp(text)


def fraction_digits(timestamp: str) -> int:
    return len(re.search(r"(?:\.(\d+))?Z$", timestamp)[1] or "")


# ---------------------------------------------------------------- generation


def test_same_seed_gives_identical_json_and_another_seed_differs():
    first = json.dumps(generate(small_config()).api_json(), sort_keys=True)
    again = json.dumps(generate(small_config()).api_json(), sort_keys=True)
    other = json.dumps(generate(small_config(seed=8)).api_json(), sort_keys=True)

    assert first == again
    assert first != other


def test_ids_are_22_char_base64url_of_uuid4(default_data):
    data, _ = default_data
    ids = [item["id"] for item in data.items[:200]] + list(data.customers)[:50]

    for record_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", record_id)
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(record_id + "==")).version == 4


def test_default_size_generates_fast_with_every_content_type(default_data):
    data, seconds = default_data

    assert seconds < 3
    assert 300 <= len(data.conversations) <= 550
    assert {item["content"]["type"] for item in data.items} == ALL_CONTENT_TYPES


def test_default_size_carries_the_documented_quirks(default_data):
    data, _ = default_data
    contents = [item["content"] for item in data.items]
    durations = [c["recordingDuration"] for c in contents if "recordingDuration" in c]
    chats = [c for c in contents if c["type"] == "CHAT_MESSAGE"]
    phones = [p for c in data.customers.values() for p in c.get("phones", [])]
    fractions = Counter(fraction_digits(item["timestamp"]) for item in data.items)

    assert any(c["type"] == "EMAIL" and "subject" not in c for c in contents)
    assert any("topicIds" not in c for c in data.conversations.values())
    assert any("conversationId" not in item for item in data.items)
    assert any(isinstance(d, str) for d in durations) and any(isinstance(d, int) for d in durations)
    assert fractions[9] > 0 and fractions[0] > 0 and (fractions[1] + fractions[2]) > 0
    assert fractions[3] > 0.9 * len(data.items)  # milliseconds are the usual form
    assert any("messageType" not in c for c in chats)
    assert any(p["type"] == "" for p in phones)
    assert any("updatedAt" not in c for c in data.customers.values())
    assert data.merged


def test_records_omit_absent_fields_instead_of_null(default_data):
    data, _ = default_data

    assert "null" not in json.dumps(data.api_json())


def test_every_item_names_a_known_or_merged_customer(default_data):
    data, _ = default_data
    customer_ids = {item["customerId"] for item in data.items}
    conversation_ids = {item["conversationId"] for item in data.items if "conversationId" in item}

    assert customer_ids <= set(data.customers) | set(data.merged)
    assert conversation_ids == set(data.conversations)
    assert all(c["customerId"] in data.customers for c in data.conversations.values())


def test_nothing_is_timestamped_after_now(default_data):
    data, _ = default_data

    assert max(ms(item["timestamp"]) for item in data.items) <= NOW
    for conversation in data.conversations.values():
        assert ms(conversation["createdAt"]) <= NOW
        assert ms(conversation.get("closedAt", conversation["createdAt"])) <= NOW
    assert all(ms(job["updatedAt"]) <= NOW for job in data.jobs)


def test_closed_conversations_end_with_a_closed_status_change(default_data):
    data, _ = default_data
    reopened = 0
    for conversation_id, conversation in data.conversations.items():
        items = data.items_by_conversation[conversation_id]
        times = [ms(item["timestamp"]) for item in items]
        changes = [
            i["content"]["status"]
            for i in items
            if i["content"]["type"] == "CONVERSATION_STATUS_CHANGE"
        ]
        assert times == sorted(times)
        if conversation["status"] == "CLOSED":
            assert changes[-1] == "CLOSED" and "closedAt" in conversation
        reopened += changes[:2] == ["CLOSED", "OPEN"]
    assert reopened > 0


# ---------------------------------------------------------------- protocol


def test_missing_or_wrong_credentials_get_401_without_echoing_them(emu):
    url = emu.base_url + "/api/v1/agents"
    missing = requests.get(url, timeout=10)
    wrong = requests.get(url, auth=("agent@example.com", "not-the-token"), timeout=10)

    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == "unauthorized"
        assert "emulator-token" not in response.text and "agent@example.com" not in response.text


def test_user_without_api_permission_gets_403():
    config = small_config(forbidden_usernames=frozenset({"viewer@example.com"}))
    with start_emulator(config) as running:
        response = requests.get(
            running.base_url + "/api/v1/agents",
            auth=("viewer@example.com", "emulator-token"),
            timeout=10,
        )

    assert response.status_code == 403


def test_lists_are_bare_json_arrays(api):
    for path in (
        "/api/v1/agents",
        "/api/v1/inboxes",
        "/api/v1/teams",
        "/api/v1/topics",
        "/api/v1/export/jobs",
        "/api/v1/export/schedules",
    ):
        response = api(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert isinstance(response.json(), list) and response.json()


def test_reference_data_by_id_and_shapes(api, emu):
    topic = next(t for t in emu.data.topics if "parentId" in t)
    names = Counter(t["name"] for t in api("/api/v1/topics").json())

    assert api(f"/api/v1/topics/{topic['id']}").json() == topic
    assert set(api("/api/v1/organization").json()) == {
        "id",
        "loginDomain",
        "name",
        "timezone",
        "gladlyUrl",
    }
    assert names.most_common(1)[0][1] == 2  # topic names are not unique
    assert any(inbox["disabled"] for inbox in api("/api/v1/inboxes").json())
    assert api("/api/v1/agents/unknown").status_code == 404


def test_unknown_path_404_and_writes_405(emu, api):
    missing = api("/api/v1/no-such-thing")
    write = requests.post(emu.base_url + "/api/v1/agents", json={}, auth=AUTH, timeout=10)

    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "not_exist"
    assert write.status_code == 405


def test_merged_customer_answers_301_with_old_and_new_ids(api, emu):
    old, new = next(iter(emu.data.merged.items()))
    response = api(f"/api/v1/customer-profiles/{old}", allow_redirects=False)
    error = response.json()["errors"][0]

    assert response.status_code == 301
    assert error["code"] == "moved" and error["attr"] == "customerId"
    assert error["meta"] == {"old": old, "new": new}
    assert response.headers["Location"] == f"/api/v1/customer-profiles/{new}"
    assert api(f"/api/v1/customer-profiles/{new}").json()["id"] == new
    assert any(item["customerId"] == old for item in emu.data.items)
    assert api(f"/api/v1/customers/{old}/conversations", allow_redirects=False).status_code == 301


def test_unknown_customer_gets_404_not_exist(api):
    response = api("/api/v1/customer-profiles/nobody-by-that-id")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_exist"


def test_search_by_email_and_by_escaped_phone(api, emu):
    profile = next(p for p in emu.data.customers.values() if "emails" in p and "phones" in p)
    email = profile["emails"][0]["original"]
    phone = profile["phones"][0]["normalized"]

    by_email = api(f"/api/v1/customer-profiles?email={email.upper()}").json()
    by_phone = api(f"/api/v1/customer-profiles?phoneNumber=%2B{phone[1:]}").json()
    unescaped = api(f"/api/v1/customer-profiles?phoneNumber={phone}")
    two_keys = api(f"/api/v1/customer-profiles?email={email}&phoneNumber=%2B{phone[1:]}")

    assert [p["id"] for p in by_email] == [profile["id"]] == [p["id"] for p in by_phone]
    assert by_email[0] == profile  # full profile, not the reduced export shape
    assert unescaped.status_code == 400 and two_keys.status_code == 400
    assert "errors" in two_keys.json()


def test_items_list_caps_at_1000_and_says_so(api, emu):
    big = max(emu.data.items_by_conversation, key=lambda c: len(emu.data.items_by_conversation[c]))
    small = next(c for c, items in emu.data.items_by_conversation.items() if len(items) < 20)

    capped = api(f"/api/v1/conversations/{big}/items")
    whole = api(f"/api/v1/conversations/{small}/items")
    stamps = [ms(item["timestamp"]) for item in capped.json()]

    assert len(emu.data.items_by_conversation[big]) == 1200
    assert len(capped.json()) == 1000 and capped.headers["Gladly-Limited-Data"] == "true"
    assert stamps == sorted(stamps)
    assert whole.headers["Gladly-Limited-Data"] == "false"
    assert whole.json() == emu.data.items_by_conversation[small]
    assert api("/api/v1/conversations/unknown/items").status_code == 404


def test_items_can_be_filtered_by_session(api, emu):
    item = next(i for i in emu.data.items if "sessionId" in i)
    path = f"/api/v1/conversations/{item['conversationId']}/items?sessionId={item['sessionId']}"

    session_items = api(path).json()

    assert item in session_items
    assert all(i["sessionId"] == item["sessionId"] for i in session_items)


def test_customer_conversations_ascending_with_limited_data_flag(api, emu):
    customer_id = max(
        emu.data.conversations_by_customer, key=lambda c: len(emu.data.conversations_by_customer[c])
    )
    response = api(f"/api/v1/customers/{customer_id}/conversations")
    created = [c["createdAt"] for c in response.json()]

    assert response.headers["Gladly-Limited-Data"] == "false"
    assert len(created) >= 2 and created == sorted(created)
    assert api(f"/api/v1/conversations/{response.json()[0]['id']}").json() == response.json()[0]


def test_single_item_and_conversation_lookup(api, emu):
    item = emu.data.items[len(emu.data.items) // 2]

    assert api(f"/api/v1/conversation-items/{item['id']}").json() == item
    assert api("/api/v1/conversation-items/unknown").status_code == 404
    assert api("/api/v1/conversations/unknown").status_code == 404


# ---------------------------------------------------------------- export jobs


def test_daily_jobs_cover_utc_days_and_none_finishes_after_now(api):
    jobs = api("/api/v1/export/jobs?status=COMPLETED").json()
    windows = sorted((ms(j["parameters"]["startAt"]), ms(j["parameters"]["endAt"])) for j in jobs)

    assert len(jobs) == 3  # the day that ended 12 h before now is in; today is not
    for start, end in windows:
        assert (start.hour, start.minute, end - start) == (0, 0, timedelta(days=1))
    for job in jobs:
        lag = ms(job["updatedAt"]) - ms(job["parameters"]["endAt"])
        assert timedelta(hours=2) <= lag <= timedelta(hours=4)
        assert ms(job["updatedAt"]) <= NOW
        assert job["files"] == [
            "agents.jsonl",
            "conversation_items.jsonl",
            "customers.jsonl",
            "topics.jsonl",
        ]


def test_failed_job_has_no_files(api):
    failed = api("/api/v1/export/jobs?status=FAILED").json()

    assert [job["files"] for job in failed] == [[]]


def test_job_that_has_not_finished_yet_does_not_exist():
    just_after_midnight = datetime(2026, 3, 9, 1, 0, tzinfo=UTC)
    data = generate(small_config(now=just_after_midnight))
    last_end = max(ms(job["parameters"]["endAt"]) for job in data.jobs)

    assert last_end < datetime(2026, 3, 9, tzinfo=UTC)


def test_daily_local_windows_follow_org_midnight_across_dst():
    zone = ZoneInfo("America/New_York")
    data = generate(small_config(schedule="daily-local"))
    windows = [
        (ms(job["parameters"]["startAt"]), ms(job["parameters"]["endAt"]))
        for job in data.jobs
        if job["status"] == "COMPLETED"
    ]

    for start, end in windows:
        assert start.astimezone(zone).hour == 0 == end.astimezone(zone).hour
        assert start.hour in (4, 5)  # not UTC midnight
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(windows))
    assert timedelta(hours=23) in {end - start for start, end in windows}


def test_hourly_jobs_appear_about_two_hours_after_their_window():
    data = generate(small_config(schedule="hourly"))
    completed = [job for job in data.jobs if job["status"] == "COMPLETED"]

    assert data.schedule["frequency"] == "HOURLY"
    assert len(completed) >= 3 * 24 - 3
    for job in completed:
        start, end = ms(job["parameters"]["startAt"]), ms(job["parameters"]["endAt"])
        lag = ms(job["updatedAt"]) - end
        assert end - start == timedelta(hours=1)
        assert timedelta(minutes=100) <= lag <= timedelta(minutes=140)


def test_jobs_older_than_14_days_vanish_and_their_files_404():
    with start_emulator(small_config(days=17, conversations_per_day=2)) as running:
        expired = [job for job in running.data.jobs if not running.data.is_retained(job)]
        listed = requests.get(running.base_url + "/api/v1/export/jobs", auth=AUTH, timeout=10)
        file_url = f"/api/v1/export/jobs/{expired[0]['id']}/files/agents.jsonl"
        old_file = requests.get(running.base_url + file_url, auth=AUTH, timeout=10)

    assert expired
    assert {job["id"] for job in listed.json()}.isdisjoint(job["id"] for job in expired)
    assert min(ms(job["updatedAt"]) for job in listed.json()) >= NOW - timedelta(days=14)
    assert old_file.status_code == 404


def test_job_list_checks_its_window(api):
    too_old = (NOW - timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    old_start = api(f"/api/v1/export/jobs?startAt={too_old}")
    late_end = api(f"/api/v1/export/jobs?endAt={future}")
    reversed_window = api(f"/api/v1/export/jobs?startAt={start}&endAt=2026-03-01T00:00:00Z")
    recent = api(f"/api/v1/export/jobs?startAt={start}").json()

    assert old_start.status_code == 400 and old_start.json()["errors"][0]["attr"] == "startAt"
    assert late_end.status_code == 400 and reversed_window.status_code == 400
    assert recent and all(ms(job["updatedAt"]) >= NOW - timedelta(days=1) for job in recent)


def test_export_files_hold_the_window_items_and_their_customers(api, emu):
    job = next(j for j in api("/api/v1/export/jobs?status=COMPLETED").json())
    base = f"/api/v1/export/jobs/{job['id']}/files/"
    response = api(base + "conversation_items.jsonl")
    items = [json.loads(line) for line in response.text.splitlines()]
    customers = [json.loads(line) for line in api(base + "customers.jsonl").text.splitlines()]
    start, end = ms(job["parameters"]["startAt"]), ms(job["parameters"]["endAt"])

    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert items and all(start <= ms(item["timestamp"]) < end for item in items)
    assert not any(i["content"]["type"] in ("VOICE_AI_MESSAGE", "TWITTER") for i in items)
    assert not any("sessionId" in item for item in items)
    assert {c["id"] for c in customers} == {item["customerId"] for item in items}
    assert all(
        set(c)
        <= {
            "id",
            "name",
            "address",
            "emailAddresses",
            "phoneNumbers",
            "externalCustomerId",
            "externalCustomerIds",
        }
        for c in customers
    )
    assert len(api(base + "agents.jsonl").text.splitlines()) == len(emu.data.agents)
    assert api(base + "nope.jsonl").status_code == 404


def test_every_exportable_item_lands_in_exactly_one_daily_job(emu):
    exported = Counter(
        item["id"]
        for job in emu.data.jobs
        if job["status"] == "COMPLETED"
        for item in emu.data.export_items(job)
    )
    last_end = max(ms(job["parameters"]["endAt"]) for job in emu.data.jobs)
    expected = {
        item["id"]
        for item in emu.data.items
        if ms(item["timestamp"]) < last_end
        and item["content"]["type"] not in ("VOICE_AI_MESSAGE", "TWITTER")
    }

    assert set(exported) == expected and max(exported.values()) == 1


# ---------------------------------------------------------------- limits and faults


def test_rate_limit_answers_429_with_headers_and_no_retry_after():
    with start_emulator(small_config(rate_limit_per_second=3)) as running:
        session = requests.Session()
        session.auth = AUTH
        responses = [
            session.get(running.base_url + "/api/v1/organization", timeout=10) for _ in range(10)
        ]

    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 4  # at most 3 per second get through, even across a second boundary
    assert all(r.headers["Ratelimit-Limit-Second"] == "3" for r in responses)
    assert all("Ratelimit-Remaining-Second" in r.headers for r in responses)
    assert all(r.headers["Ratelimit-Remaining-Second"] == "0" for r in limited)
    assert not any("Retry-After" in r.headers for r in responses)
    assert limited[0].json()["errors"]


def test_injected_429_then_success(api, emu):
    emu.inject(status=429, times=2, path_prefix="/api/v1/inboxes")

    statuses = [api("/api/v1/inboxes").status_code for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert api("/api/v1/agents").status_code == 200
    assert emu.request_log[-4:-1] == [("GET", "/api/v1/inboxes", s) for s in statuses]


def test_injected_html_503_then_success(api, emu):
    emu.inject(status=503, times=1, path_prefix="/api/v1/teams", html=True)

    outage = api("/api/v1/teams")
    recovered = api("/api/v1/teams")

    assert outage.status_code == 503 and outage.headers["Content-Type"].startswith("text/html")
    assert recovered.status_code == 200 and isinstance(recovered.json(), list)


def test_injected_500_has_a_json_errors_body(api, emu):
    emu.inject(status=500, path_prefix="/api/v1/topics")

    assert api("/api/v1/topics").json()["errors"]


# ---------------------------------------------------------------- lifecycle and CLI


def test_stop_frees_the_port():
    running = start_emulator(small_config(days=1, conversations_per_day=1))
    port = int(running.base_url.rsplit(":", 1)[1])
    running.stop()

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_refuses_to_listen_beyond_loopback():
    with pytest.raises(ValueError):
        start_emulator(small_config(), host="0.0.0.0")


def test_cli_serves_and_never_prints_the_token():
    env = {**os.environ, "GLADLY_API_TOKEN": "cli-secret"}
    command = [
        sys.executable,
        "-m",
        "gladly_pipeline.emulator",
        "--port",
        "0",
        "--days",
        "1",
        "--conversations-per-day",
        "4",
        "--now",
        "2026-03-09T12:00:00Z",
        "--quiet",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the emulator printed nothing within 20 s"
        banner = process.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", banner)[0]
        response = requests.get(
            base_url + "/api/v1/organization", auth=("agent@example.com", "cli-secret"), timeout=10
        )
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert response.status_code == 200 and response.json()["name"]
    assert "cli-secret" not in banner and "agent@example.com" in banner
    assert process.returncode == 0
