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
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from gladly_pipeline.emulator import (
    EmulatorConfig,
    Fault,
    generate,
    parse_fault,
    start_emulator,
)
from gladly_pipeline.emulator import __main__ as emulator_cli
from gladly_pipeline.emulator.data import parse_timestamp
from gladly_pipeline.emulator.requestlog import RequestLog

UTC = UTC
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


# ---------------------------------------------------------------- events API


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_lines(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


def same_ms(first: str, second: str) -> bool:
    """Two timestamps name the same millisecond (items may print more or fewer digits)."""
    return abs(ms(first) - ms(second)) < timedelta(milliseconds=1)


EVENT_START = NOW - timedelta(hours=23)
ENTITIES = "&".join(f"entities={name}" for name in ("CONTACT", "CONVERSATION"))
# Message item types and the channel their CONTACT/MESSAGE_* events carry (reference §12.8).
MESSAGE_CHANNELS = {
    "CHAT_MESSAGE": "CHAT",
    "EMAIL": "EMAIL",
    "SMS": "SMS",
    "FACEBOOK_MESSAGE": "FB_MESSENGER",
    "INSTAGRAM_DIRECT": "INSTAGRAM_DIRECT",
    "WHATSAPP": "WHATSAPP",
    "VOICEMAIL": "VOICEMAIL",
}


def test_events_refuse_missing_old_or_reversed_windows_and_bad_entities(api):
    start = iso(EVENT_START)
    cases = {
        "/api/v1/events?entities=CONTACT": ("startAt", "blank"),
        f"/api/v1/events?startAt={iso(NOW - timedelta(hours=25))}&entities=CONTACT": (
            "startAt",
            "invalid",
        ),
        f"/api/v1/events?startAt={start}": ("entities", "blank"),
        f"/api/v1/events?startAt={start}&entities=CONTACT&entities=ORDER": ("entities", "invalid"),
        f"/api/v1/events?startAt={start}&entities=CONTACT,CONVERSATION": ("entities", "invalid"),
        f"/api/v1/events?startAt={start}&endAt={iso(NOW - timedelta(hours=23, minutes=1))}"
        "&entities=CONTACT": ("endAt", "invalid"),
        f"/api/v1/events?startAt={start}&endAt={iso(NOW + timedelta(hours=1))}&entities=CONTACT": (
            "endAt",
            "invalid",
        ),
        "/api/v1/events?startAt=yesterday&entities=CONTACT": ("startAt", "invalid"),
    }

    for path, (attr, code) in cases.items():
        response = api(path)
        assert response.status_code == 400, path
        assert response.json()["errors"][0]["attr"] == attr, path
        assert response.json()["errors"][0]["code"] == code, path


def test_events_stream_as_json_lines_ascending_within_the_window(api):
    response = api(f"/api/v1/events?startAt={iso(EVENT_START)}&{ENTITIES}")
    events = event_lines(response)
    stamps = [ms(event["timestamp"]) for event in events]

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-jsonlines"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert len(events) > 100 and stamps == sorted(stamps)
    assert stamps[0] >= EVENT_START and stamps[-1] <= NOW
    assert all(
        set(event) == {"id", "type", "timestamp", "initiator", "content"} for event in events
    )
    assert all(fraction_digits(event["timestamp"]) == 3 for event in events)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", event["id"]) for event in events)
    assert {event["type"].split("/")[0] for event in events} == {
        "CONTACT",
        "CONVERSATION",
        "CONVERSATION_ASSIGNEE",
    }


def test_every_message_in_the_window_has_exactly_one_contact_event(api, emu):
    events = event_lines(api(f"/api/v1/events?startAt={iso(EVENT_START)}&entities=CONTACT"))
    named = Counter(e["content"]["messageId"] for e in events if "messageId" in e["content"])
    by_message = {e["content"]["messageId"]: e for e in events if "messageId" in e["content"]}
    messages = [
        item
        for item in emu.data.items
        if item["content"]["type"] in MESSAGE_CHANNELS and ms(item["timestamp"]) >= EVENT_START
    ]

    assert len(messages) > 50
    assert set(named) == {item["id"] for item in messages} and set(named.values()) == {1}
    for item in messages:
        event = by_message[item["id"]]
        inbound = item["initiator"]["type"] in ("CUSTOMER", "INTERNAL", "EXTERNAL")
        assert event["type"] == ("CONTACT/MESSAGE_RECEIVED" if inbound else "CONTACT/MESSAGE_SENT")
        assert same_ms(event["timestamp"], item["timestamp"])
        assert event["initiator"] == item["initiator"]
        assert event["content"]["channel"] == MESSAGE_CHANNELS[item["content"]["type"]]
        assert event["content"]["conversationId"] == item["conversationId"]
        assert event["content"]["customerId"] == item["customerId"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", event["content"]["contactId"])


def test_calls_start_and_end_contacts_that_name_no_item(api, emu):
    events = event_lines(api(f"/api/v1/events?startAt={iso(EVENT_START)}&entities=CONTACT"))
    calls = [e for e in events if e["content"]["channel"] == "PHONE_CALL"]
    started = [e for e in calls if e["type"] == "CONTACT/STARTED"]
    ended = {e["content"]["contactId"]: e for e in calls if e["type"] == "CONTACT/ENDED"}
    call_items = [
        item
        for item in emu.data.items
        if item["content"]["type"] == "PHONE_CALL" and ms(item["timestamp"]) >= EVENT_START
    ]

    assert started and len(started) == len(call_items)
    assert all("messageId" not in e["content"] for e in calls)
    for event in started:
        end = ended[event["content"]["contactId"]]
        assert ms(end["timestamp"]) > ms(event["timestamp"])
        assert end["content"]["conversationId"] == event["content"]["conversationId"]


def test_notes_topics_and_closes_become_conversation_events(api, emu):
    events = event_lines(api(f"/api/v1/events?startAt={iso(EVENT_START)}&entities=CONVERSATION"))
    notes = {e["content"]["noteId"]: e for e in events if e["type"] == "CONVERSATION/NOTE_CREATED"}
    window = [item for item in emu.data.items if ms(item["timestamp"]) >= EVENT_START]
    note_items = [item for item in window if item["content"]["type"] == "CONVERSATION_NOTE"]
    closes = [
        item
        for item in window
        if item["content"] == {"type": "CONVERSATION_STATUS_CHANGE", "status": "CLOSED"}
    ]
    added = sum(len(i["content"].get("addedTopicIds", [])) for i in window)

    assert note_items and set(notes) == {item["id"] for item in note_items}
    for item in note_items:
        content = notes[item["id"]]["content"]
        assert (content["conversationId"], content["customerId"]) == (
            item["conversationId"],
            item["customerId"],
        )
    assert len([e for e in events if e["type"] == "CONVERSATION/CLOSED"]) == len(closes)
    assert len([e for e in events if e["type"] == "CONVERSATION/TOPIC_ADDED"]) == added
    for event in events:
        if event["type"] != "CONVERSATION/NOTE_CREATED":
            assert event["content"]["context"]["assignee"]["inboxId"]
        if event["type"] == "CONVERSATION/CREATED":
            conversation = emu.data.conversations[event["content"]["conversationId"]]
            assert event["timestamp"] == conversation["createdAt"]


def test_repeated_entities_return_the_union_in_order(api):
    start = iso(EVENT_START)
    contact = event_lines(api(f"/api/v1/events?startAt={start}&entities=CONTACT"))
    conversation = event_lines(api(f"/api/v1/events?startAt={start}&entities=CONVERSATION"))
    both = event_lines(api(f"/api/v1/events?startAt={start}&{ENTITIES}"))

    assert contact and conversation
    assert sorted(e["id"] for e in both) == sorted(e["id"] for e in contact + conversation)
    assert [ms(e["timestamp"]) for e in both] == sorted(ms(e["timestamp"]) for e in both)


def test_events_accept_an_escaped_offset_and_reject_an_unescaped_plus(api):
    local = (EVENT_START + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000")
    escaped = api(f"/api/v1/events?startAt={local}%2B02:00&{ENTITIES}")
    in_utc = api(f"/api/v1/events?startAt={iso(EVENT_START)}&{ENTITIES}")
    unescaped = api(f"/api/v1/events?startAt={local}+02:00&{ENTITIES}")

    assert escaped.status_code == 200 and event_lines(escaped) == event_lines(in_utc)
    assert unescaped.status_code == 400 and unescaped.json()["errors"][0]["attr"] == "startAt"


def test_window_is_half_open_so_adjacent_windows_share_no_event(api):
    middle = NOW - timedelta(hours=6)
    first = event_lines(
        api(f"/api/v1/events?startAt={iso(EVENT_START)}&endAt={iso(middle)}&{ENTITIES}")
    )
    second = event_lines(api(f"/api/v1/events?startAt={iso(middle)}&{ENTITIES}"))
    whole = event_lines(api(f"/api/v1/events?startAt={iso(EVENT_START)}&{ENTITIES}"))

    assert first and second
    assert ms(first[-1]["timestamp"]) < middle <= ms(second[0]["timestamp"])
    assert first + second == whole


def test_unmodelled_entities_answer_empty_streams(api):
    response = api(f"/api/v1/events?startAt={iso(EVENT_START)}&entities=TASK&entities=AGENT_STATUS")

    assert response.status_code == 200 and response.text == ""


def test_nothing_is_evented_after_now_and_profiles_and_merges_have_events(default_data):
    data, _ = default_data
    by_type: dict[str, list[dict]] = {}
    for event in data.events:
        by_type.setdefault(event["type"], []).append(event)
    created = {
        e["content"]["customerId"]: e["timestamp"] for e in by_type["CUSTOMER_PROFILE/CREATED"]
    }
    merges = {
        e["content"]["sourceCustomerId"]: e["content"]["destinationCustomerId"]
        for e in by_type["CUSTOMER/MERGED"]
    }

    assert max(ms(event["timestamp"]) for event in data.events) <= NOW
    assert merges == data.merged
    for customer_id, profile in data.customers.items():
        assert same_ms(created[customer_id], profile["createdAt"])
    assert len(by_type["CONVERSATION/CREATED"]) == len(data.conversations)
    assert by_type["CONVERSATION/REOPENED"]
    assert {e["content"]["reason"] for e in by_type["CONVERSATION_ASSIGNEE/UPDATED"]} == {
        "MESSAGE_OUTBOUND",
        "AUTOMATED_ASSIGNMENT",
    }


def test_twitter_and_voice_ai_items_have_no_events(default_data):
    data, _ = default_data
    silent = {
        item["id"]
        for item in data.items
        if item["content"]["type"] in ("TWITTER", "VOICE_AI_MESSAGE", "CUSTOMER_ACTIVITY")
    }
    named = {
        event["content"].get("messageId") or event["content"].get("noteId") for event in data.events
    }

    assert silent and silent.isdisjoint(named)


def test_activities_in_a_conversation_fall_on_a_day_it_has_events(default_data):
    data, _ = default_data
    evented_days = {
        (event["content"]["conversationId"], event["timestamp"][:10])
        for event in data.events
        if "conversationId" in event["content"]
    }
    activities = [
        item
        for item in data.items
        if item["content"]["type"] == "CUSTOMER_ACTIVITY" and "conversationId" in item
    ]

    assert len(activities) >= 10
    for item in activities:
        day = ms(item["timestamp"]).date().isoformat()
        assert (item["conversationId"], day) in evented_days


# ---------------------------------------------------------------- missing export files


def test_job_whose_file_is_gone_is_listed_completed_but_its_files_404():
    with start_emulator(small_config(conversations_per_day=2, missing_file_jobs=1)) as running:
        session = requests.Session()
        session.auth = AUTH
        jobs = session.get(running.base_url + "/api/v1/export/jobs?status=COMPLETED", timeout=10)
        newest, older = jobs.json()[0], jobs.json()[1]
        base = running.base_url + "/api/v1/export/jobs/{}/files/conversation_items.jsonl"
        gone = session.get(base.format(newest["id"]), timeout=10)
        still_there = session.get(base.format(older["id"]), timeout=10)

    assert newest["status"] == "COMPLETED" and "conversation_items.jsonl" in newest["files"]
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "not_exist" and gone.json()["errors"][0]["detail"]
    assert still_there.status_code == 200


def test_expire_files_makes_one_jobs_files_404_from_then_on():
    with start_emulator(small_config(conversations_per_day=2)) as running:
        job = next(j for j in running.data.visible_jobs() if j["status"] == "COMPLETED")
        url = f"{running.base_url}/api/v1/export/jobs/{job['id']}/files/agents.jsonl"
        before = requests.get(url, auth=AUTH, timeout=10)
        running.expire_files(job["id"])
        after = requests.get(url, auth=AUTH, timeout=10)
        job_url = f"{running.base_url}/api/v1/export/jobs/{job['id']}"
        listed = requests.get(job_url, auth=AUTH, timeout=10)

        with pytest.raises(KeyError):
            running.expire_files("no-such-job")

    assert before.status_code == 200 and after.status_code == 404
    assert listed.json()["files"] == job["files"]


# ---------------------------------------------------------------- moving the clock

JUST_AFTER_MIDNIGHT = datetime(2026, 3, 9, 0, 5, tzinfo=UTC)
BEFORE_NEXT_MIDNIGHT = datetime(2026, 3, 9, 23, 55, tzinfo=UTC)


def test_future_days_stay_hidden_until_the_clock_reaches_them():
    data = generate(small_config(now=JUST_AFTER_MIDNIGHT, future_days=1))
    later = data.at(BEFORE_NEXT_MIDNIGHT)

    assert data.horizon == JUST_AFTER_MIDNIGHT + timedelta(days=1)
    assert max(ms(item["timestamp"]) for item in data.items) <= JUST_AFTER_MIDNIGHT
    assert max(ms(event["timestamp"]) for event in data.events) <= JUST_AFTER_MIDNIGHT
    assert max(ms(job["updatedAt"]) for job in data.jobs) <= JUST_AFTER_MIDNIGHT
    assert all(ms(c["createdAt"]) <= JUST_AFTER_MIDNIGHT for c in data.customers.values())
    assert all(ms(c["createdAt"]) <= JUST_AFTER_MIDNIGHT for c in data.conversations.values())
    assert len(later.items) > len(data.items) and len(later.events) > len(data.events)
    assert set(data.items_by_id) < set(later.items_by_id)
    with pytest.raises(ValueError):
        data.at(JUST_AFTER_MIDNIGHT + timedelta(days=1, minutes=1))


def client_of(running):
    """GET a path of a running emulator with the right credentials."""
    session = requests.Session()
    session.auth = AUTH
    return lambda path: session.get(running.base_url + path, timeout=10)


def test_set_now_reveals_the_days_job_items_and_events():
    config = small_config(now=JUST_AFTER_MIDNIGHT, future_days=1, conversations_per_day=12)
    with start_emulator(config) as running:
        get = client_of(running)
        events_path = f"/api/v1/events?startAt={iso(JUST_AFTER_MIDNIGHT)}&entities=CONTACT"
        later = running.data.at(BEFORE_NEXT_MIDNIGHT)
        item = next(i for i in later.items if ms(i["timestamp"]) > JUST_AFTER_MIDNIGHT)
        item_path = f"/api/v1/conversation-items/{item['id']}"
        jobs_before = get("/api/v1/export/jobs?status=COMPLETED").json()
        events_before = event_lines(get(events_path))
        item_before = get(item_path).status_code

        running.set_now(BEFORE_NEXT_MIDNIGHT)
        jobs_after = get("/api/v1/export/jobs?status=COMPLETED").json()
        events_after = event_lines(get(events_path))
        item_after = get(item_path).status_code
        listed = get(f"/api/v1/conversations/{item['conversationId']}/items").json()
        clock = running.clock()

    new_jobs = [job for job in jobs_after if job["id"] not in {j["id"] for j in jobs_before}]
    assert [job["parameters"]["startAt"] for job in new_jobs] == ["2026-03-08T00:00:00.000Z"]
    assert events_before == [] and len(events_after) > 20
    assert all(ms(e["timestamp"]) <= BEFORE_NEXT_MIDNIGHT for e in events_after)
    assert (item_before, item_after) == (404, 200) and item in listed
    assert BEFORE_NEXT_MIDNIGHT <= clock < BEFORE_NEXT_MIDNIGHT + timedelta(minutes=1)


def test_clock_never_moves_backward_nor_past_the_generated_days():
    with start_emulator(small_config(days=1, conversations_per_day=2, future_days=1)) as running:
        with pytest.raises(ValueError):
            running.set_now(NOW - timedelta(minutes=1))
        with pytest.raises(ValueError):
            running.set_now(NOW + timedelta(days=2))
        with pytest.raises(ValueError):
            running.set_now(datetime(2026, 3, 9, 13, 0))  # naive
        running.set_now(NOW + timedelta(hours=1))

        assert running.data.now == NOW + timedelta(hours=1)


def test_merge_takes_effect_when_the_clock_reaches_it():
    config = small_config(now=JUST_AFTER_MIDNIGHT, future_days=1, merged_customer_share=0.2)
    data = generate(config)
    merge = next(
        event
        for event in data.at(data.horizon).events
        if event["type"] == "CUSTOMER/MERGED" and ms(event["timestamp"]) > JUST_AFTER_MIDNIGHT
    )
    old = merge["content"]["sourceCustomerId"]
    after = data.at(ms(merge["timestamp"]))

    assert old in data.customers and old not in data.merged
    assert old not in after.customers
    assert after.merged[old] == merge["content"]["destinationCustomerId"]


def test_future_days_zero_is_the_default_and_both_stay_deterministic():
    default = json.dumps(generate(small_config()).api_json(), sort_keys=True)
    explicit = json.dumps(generate(small_config(future_days=0)).api_json(), sort_keys=True)
    future = json.dumps(generate(small_config(future_days=1)).api_json(), sort_keys=True)
    future_again = json.dumps(generate(small_config(future_days=1)).api_json(), sort_keys=True)

    assert default == explicit
    assert future == future_again


# ---------------------------------------------------------------- injected faults


def file_path(emu) -> str:
    """The items file of a completed job with enough lines for the line-level faults."""
    job = max(
        (j for j in emu.data.visible_jobs() if j["status"] == "COMPLETED"),
        key=lambda j: sum(1 for _ in emu.data.export_items(j)),
    )
    return f"/api/v1/export/jobs/{job['id']}/files/conversation_items.jsonl"


def read_until_cut(response: requests.Response) -> list[bytes]:
    lines = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in response.iter_lines():
            lines.append(line)
    return lines


@pytest.mark.parametrize("status", [401, 403])
def test_injected_auth_failure_refuses_good_credentials_once(api, emu, status):
    emu.inject(status=status, path_prefix="/api/v1/agents")

    refused = api("/api/v1/agents")
    accepted = api("/api/v1/agents")

    assert refused.status_code == status and refused.json()["errors"][0]["detail"]
    assert "emulator-token" not in refused.text
    assert accepted.status_code == 200


def test_slow_fault_outlasts_a_read_timeout_once(emu):
    url = emu.base_url + "/api/v1/teams"
    emu.inject(Fault("slow", "/api/v1/teams", seconds=1.0))

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, auth=AUTH, timeout=(5, 0.2))
    started = time.monotonic()
    recovered = requests.get(url, auth=AUTH, timeout=(5, 0.5))

    assert recovered.status_code == 200 and time.monotonic() - started < 0.5


def test_reset_cuts_a_file_after_n_lines_then_serves_it_whole(api, emu):
    path = file_path(emu)
    full = api(path).content.splitlines()
    emu.inject(Fault("reset", path, after_lines=5))

    cut = read_until_cut(api(path, stream=True))
    again = api(path).content.splitlines()

    assert len(full) > 20
    assert cut == full[:5]  # the half-sent sixth line never completes
    assert again == full


def test_reset_cuts_a_json_body_halfway(api, emu):
    emu.inject(Fault("reset", "/api/v1/inboxes"))

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api("/api/v1/inboxes")
    assert api("/api/v1/inboxes").json() == emu.data.inboxes


def test_truncate_cuts_the_last_line_and_ends_the_body_cleanly(api, emu):
    path = file_path(emu)
    full = api(path).content
    emu.inject(Fault("truncate", path))

    cut = api(path).content

    assert full.endswith(b"\n") and not cut.endswith(b"\n")
    assert cut.splitlines()[:-1] == full.splitlines()[:-1]
    last = cut.splitlines()[-1]
    assert full.splitlines()[-1].startswith(last)
    with pytest.raises(ValueError):
        json.loads(last)


def test_garbage_replaces_an_even_share_of_lines(api, emu):
    path = file_path(emu)
    full = api(path).content.splitlines()
    emu.inject(Fault("garbage", path, share=0.25))

    garbled = api(path).content.splitlines()
    changed = [n for n, (a, b) in enumerate(zip(full, garbled, strict=True)) if a != b]

    assert len(changed) == len(full) // 4
    assert changed[:2] == [3, 7]  # every fourth line
    for number in changed:
        with pytest.raises((ValueError, AttributeError)):
            json.loads(garbled[number]).get("id")


def test_stream_faults_wait_for_a_streamed_answer(api, emu):
    fault = emu.inject(Fault("truncate", "/api/v1"))

    assert api("/api/v1/agents").json() == emu.data.agents
    assert emu.pending_faults() == [(fault, 1)]
    assert not api(file_path(emu)).content.endswith(b"\n")
    assert emu.pending_faults() == []


def test_clear_faults_disarms_what_is_left(api, emu):
    emu.inject(status=500, times=5, path_prefix="/api/v1/topics")
    emu.inject(Fault("reset", "/api/v1/export"))
    api("/api/v1/topics")

    assert [remaining for _, remaining in emu.pending_faults()] == [4, 1]
    emu.clear_faults()
    assert emu.pending_faults() == [] and api("/api/v1/topics").status_code == 200


def test_faults_in_the_config_are_armed_from_the_start():
    config = small_config(days=1, faults=(Fault("status", "/api/v1/agents", times=2, status=429),))
    with start_emulator(config) as running:
        get = client_of(running)
        statuses = [get("/api/v1/agents").status_code for _ in range(3)]

    assert statuses == [429, 429, 200]


@pytest.mark.parametrize(
    "settings",
    [
        {"kind": "explode"},
        {"kind": "status", "times": 0},
        {"kind": "status", "status": 200},
        {"kind": "garbage", "share": 0},
        {"kind": "slow", "path_prefix": "api/v1"},
    ],
)
def test_impossible_faults_are_refused(settings):
    with pytest.raises(ValueError):
        Fault(**settings)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("429:3:/api/v1/conversations", Fault("status", "/api/v1/conversations", 3, status=429)),
        ("503html", Fault("status", html=True)),
        ("slow:2:/api/v1/agents:1.5", Fault("slow", "/api/v1/agents", 2, seconds=1.5)),
        ("reset:1:/api/v1/export:50", Fault("reset", "/api/v1/export", after_lines=50)),
        (
            "reset::/api/v1/events:after_lines=3,rst=1",
            Fault("reset", "/api/v1/events", after_lines=3, rst=True),
        ),
        ("garbage:5:/api/v1/export:0.1", Fault("garbage", "/api/v1/export", 5, share=0.1)),
        ("truncate", Fault("truncate")),
    ],
)
def test_cli_fault_specs(spec, expected):
    assert parse_fault(spec) == expected


def test_cli_flags_reach_the_config_and_bad_specs_are_refused(capsys):
    args = emulator_cli.parse_args(
        ["--fault", "429:3:/api/v1/agents", "--fault", "truncate", "--unknown-shapes"]
        + ["--duplicate-items", "2"]
    )
    config = emulator_cli.config_from(args)

    assert config.faults == (Fault("status", "/api/v1/agents", 3, status=429), Fault("truncate"))
    assert config.unknown_shapes and config.duplicate_items == 2
    for bad in ("teapot:1", "429:many", "slow:1:/api/v1:soon", "truncate:1:/api/v1:3"):
        with pytest.raises(SystemExit):
            emulator_cli.parse_args(["--fault", bad])
    assert "--fault" in capsys.readouterr().err


def test_cli_help_documents_the_fault_flags(capsys):
    with pytest.raises(SystemExit):
        emulator_cli.parse_args(["--help"])
    text = capsys.readouterr().out

    for flag in ("--fault", "--unknown-shapes", "--duplicate-items", "truncate", "garbage"):
        assert flag in text


# ---------------------------------------------------------------- profiles changed at run time


def two_profiles(running) -> tuple[str, str]:
    """Two live customers with an email; the first has conversations."""
    data = running.data
    with_email = [cid for cid, profile in data.customers.items() if profile.get("emails")]
    old = next(cid for cid in with_email if data.conversations_by_customer.get(cid))
    return old, next(cid for cid in with_email if cid != old)


def test_merge_customer_answers_301_and_moves_contacts_and_conversations():
    with start_emulator(small_config(future_days=1)) as running:
        get = client_of(running)
        old, into = two_profiles(running)
        email = running.data.customers[old]["emails"][0]["normalized"]
        conversations = {c["id"] for c in running.data.conversations_by_customer[old]}

        running.merge_customer(old, into)
        moved = get(f"/api/v1/customer-profiles/{old}?x=1")
        found = get(f"/api/v1/customer-profiles?email={email}").json()
        listed = {c["id"] for c in get(f"/api/v1/customers/{into}/conversations").json()}
        events = event_lines(get(f"/api/v1/events?startAt={iso(NOW)}&entities=CUSTOMER"))
        running.set_now(NOW + timedelta(hours=1))
        later = get(f"/api/v1/customer-profiles/{old}")

    assert moved.history[0].status_code == 301  # requests followed the Location
    assert moved.history[0].json()["errors"][0]["meta"] == {"old": old, "new": into}
    assert moved.json()["id"] == into
    assert [profile["id"] for profile in found] == [into]
    assert conversations <= listed
    assert events[-1]["type"] == "CUSTOMER/MERGED"
    assert events[-1]["content"] == {"destinationCustomerId": into, "sourceCustomerId": old}
    assert later.history and later.json()["id"] == into  # survives moving the clock


def test_delete_customer_answers_404_from_then_on():
    with start_emulator(small_config(future_days=1)) as running:
        get = client_of(running)
        customer_id, _ = two_profiles(running)
        email = running.data.customers[customer_id]["emails"][0]["normalized"]

        running.delete_customer(customer_id)
        profile = get(f"/api/v1/customer-profiles/{customer_id}")
        conversations = get(f"/api/v1/customers/{customer_id}/conversations")
        found = get(f"/api/v1/customer-profiles?email={email}").json()
        running.set_now(NOW + timedelta(hours=1))
        later = get(f"/api/v1/customer-profiles/{customer_id}")
        with pytest.raises(KeyError):
            running.delete_customer(customer_id)

    assert profile.status_code == conversations.status_code == later.status_code == 404
    assert customer_id not in [p["id"] for p in found]


def test_impossible_merges_are_refused():
    with start_emulator(small_config(days=1)) as running:
        customer_id = next(iter(running.data.customers))
        with pytest.raises(KeyError):
            running.merge_customer("nobody", customer_id)
        with pytest.raises(ValueError):
            running.merge_customer(customer_id, customer_id)

        assert running.data.customers[customer_id]["id"] == customer_id


# ---------------------------------------------------------------- unknown shapes and duplicates


def test_unknown_shapes_change_only_some_message_items():
    plain = generate(small_config())
    novel = generate(small_config(unknown_shapes=True))
    again = generate(small_config(unknown_shapes=True))
    changed = [
        (before, after)
        for before, after in zip(plain.items, novel.items, strict=True)
        if before != after
    ]
    custom = [a for _, a in changed if a["content"]["type"] == "CUSTOM_CHANNEL_MESSAGE"]
    extra = [a for _, a in changed if "channelContext" in a]

    assert json.dumps(novel.api_json()) == json.dumps(again.api_json())
    assert [b["id"] for b, _ in changed] == [a["id"] for _, a in changed]
    assert custom and extra and len(changed) <= len(custom) + len(extra)
    assert all(a["content"]["content"] for a in custom)
    assert {k: v for k, v in plain.api_json().items() if k != "items"} == {
        k: v for k, v in novel.api_json().items() if k != "items"
    }


def test_duplicate_items_repeat_the_last_items_before_each_window():
    plain = generate(small_config())
    doubled = generate(small_config(duplicate_items=2))
    job = [j for j in plain.jobs if j["status"] == "COMPLETED"][-1]
    start = ms(job["parameters"]["startAt"])
    before = [
        i["id"]
        for i in plain.items
        if ms(i["timestamp"]) < start
        and i["content"]["type"] not in ("TWITTER", "VOICE_AI_MESSAGE")
    ]

    lines = [item["id"] for item in doubled.export_items(job)]

    assert lines == [item["id"] for item in plain.export_items(job)] + before[-2:]
    assert doubled.api_json() == plain.api_json()


def test_no_fault_or_quirk_configured_leaves_the_data_as_it_was():
    default = json.dumps(generate(small_config()).api_json(), sort_keys=True)
    explicit = small_config(faults=(), unknown_shapes=False, duplicate_items=0)
    with_faults = small_config(faults=(Fault("reset"), Fault("status", status=429)))

    assert json.dumps(generate(explicit).api_json(), sort_keys=True) == default
    assert json.dumps(generate(with_faults).api_json(), sort_keys=True) == default


def test_request_log_reads_back_every_entry_as_it_was_logged():
    log = RequestLog()
    entries = [("GET", "/api/v1/conversations/a", 200), ("HEAD", "/api/v1/x/é%20b", 404),
               ("GET", "", 429), ("POST", "/api/v1/customers/\udcff", 301)]
    for entry in entries:
        log.append(entry)
    assert len(log) == 4 and list(log) == entries and log == entries
    assert log[-1] == entries[-1] and log[1:3] == entries[1:3] and log[::-2] == entries[::-2]
    assert [path for _, path, _ in log[2:]] == ["", "/api/v1/customers/\udcff"]
    with pytest.raises(IndexError):
        log[4]
