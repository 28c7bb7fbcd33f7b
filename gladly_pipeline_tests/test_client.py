"""The Gladly client against the emulator: auth, retries, merges, caps, streaming."""

import json
import random
import socket

import pytest

from gladly_pipeline.client import (
    GladlyAuthError,
    GladlyClient,
    GladlyMoved,
    GladlyNotFound,
    GladlyPermissionError,
    GladlyUnavailable,
    RequestStats,
    RetryPolicy,
    resolve_base_url,
)
from gladly_pipeline.client.throttle import RateLimiter
from gladly_pipeline.emulator import start_emulator

from .conftest import FAST_RETRY, TOKEN, USERNAME, make_client, small_config


def test_wrong_token_fails_fast_naming_user_and_host_but_not_token(emulator):
    bad = GladlyClient(emulator.base_url, USERNAME, "wrong-token", retry=FAST_RETRY)
    with pytest.raises(GladlyAuthError) as caught:
        bad.agents()
    message = str(caught.value)
    assert USERNAME in message
    assert emulator.base_url.split("//")[1] in message
    assert "wrong-token" not in message and TOKEN not in message
    assert bad.stats.requests == 1, "a 401 must not be retried"


def test_user_without_api_permission_gets_a_permission_error():
    config = small_config(forbidden_usernames={USERNAME})
    with start_emulator(config) as emu:
        client = make_client(emu)
        with pytest.raises(GladlyPermissionError, match="API User"):
            client.organization()


def test_token_never_appears_in_client_repr(client):
    assert TOKEN not in repr(client)
    assert USERNAME in repr(client)


def test_429_burst_is_retried_to_success(emulator, client):
    emulator.inject(status=429, times=2, path_prefix="/api/v1/agents")
    agents = client.agents()
    assert agents and all("id" in a for a in agents)
    assert client.stats.throttled == 2
    assert client.stats.retries == 2


def test_5xx_with_html_body_is_retried_to_success(emulator, client):
    emulator.inject(status=503, times=1, path_prefix="/api/v1/inboxes", html=True)
    emulator.inject(status=500, times=1, path_prefix="/api/v1/inboxes")
    assert client.inboxes()
    assert client.stats.server_errors == 2


def test_persistent_5xx_gives_up_within_the_retry_budget(emulator):
    client = make_client(emulator, retry=RetryPolicy(max_attempts=3, base_seconds=0.01))
    emulator.inject(status=502, times=3, path_prefix="/api/v1/topics")
    with pytest.raises(GladlyUnavailable, match="3 attempts"):
        client.topics()
    assert client.stats.requests == 3


def test_request_stats_keep_their_metadata_names_and_add_new_ones_at_the_end():
    # Assets publish these as gladly_<name> metadata: renaming one breaks plots over time.
    assert list(RequestStats().as_dict()) == [
        "requests",
        "retries",
        "throttled_429",
        "server_errors_5xx",
        "network_errors",
        "timeouts",
        "connection_resets",
    ]


def test_refused_connection_is_a_network_error_but_neither_timeout_nor_reset():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = GladlyClient(f"http://127.0.0.1:{port}", USERNAME, TOKEN, retry=FAST_RETRY)

    with pytest.raises(GladlyUnavailable, match="ConnectionError"):
        client.agents()

    stats = client.stats
    assert (stats.requests, stats.network_errors, stats.retries) == (4, 4, 3)
    assert stats.timeouts == stats.resets == 0


def test_merged_customer_is_reported_not_followed(emulator, client):
    old_id, new_id = next(iter(emulator.data.merged.items()))
    lookup = client.customer_profile(old_id)
    assert lookup.profile is None
    assert lookup.merged_into == new_id
    survivor = client.customer_profile(new_id)
    assert survivor.profile["id"] == new_id


def test_customer_conversation_list_matches_get_and_says_where_a_merged_id_went(
    emulator, client
):
    customer_id = max(emulator.data.conversations_by_customer,
                      key=lambda cid: len(emulator.data.conversations_by_customer[cid]))
    listed = client.customer_conversations(customer_id)
    assert len(listed) >= 2 and listed.limited is False
    assert [c["createdAt"] for c in listed] == sorted(c["createdAt"] for c in listed)
    for record in listed:
        assert record == client.conversation(record["id"])
    old_id, new_id = next(iter(emulator.data.merged.items()))
    with pytest.raises(GladlyMoved) as moved:
        client.customer_conversations(old_id)
    assert moved.value.new_id == new_id and moved.value.status == 301


def test_unknown_conversation_raises_not_found(client):
    with pytest.raises(GladlyNotFound, match="404"):
        client.conversation("AAAAAAAAAAAAAAAAAAAAAA")


def test_items_list_capped_at_1000_is_flagged_limited():
    with start_emulator(small_config(big_conversation_items=1200)) as emu:
        client = make_client(emu)
        big = max(emu.data.conversations, key=lambda cid: _item_count(emu, cid))
        items = client.conversation_items(big)
        assert len(items) == 1000
        assert items.limited is True


def test_short_items_list_is_not_flagged_limited(emulator, client):
    conversation_id = next(iter(emulator.data.conversations))
    items = client.conversation_items(conversation_id)
    assert items.limited is False
    assert all(i.get("conversationId") == conversation_id for i in items)


def test_export_file_streams_one_json_object_per_line(emulator, client):
    job = next(j for j in client.export_jobs(status="COMPLETED") if j["files"])
    lines = list(client.export_file_lines(job["id"], "conversation_items.jsonl"))
    assert lines
    for line in lines:
        assert "id" in json.loads(line)


def test_customer_search_by_email_and_phone(emulator, client):
    profile = next(p for p in emulator.data.customers.values() if p.get("emails"))
    email = profile["emails"][0]["original"]
    assert profile["id"] in [p["id"] for p in client.find_customers(email=email)]
    with_phone = next(p for p in emulator.data.customers.values() if p.get("phones"))
    phone = with_phone["phones"][0]["normalized"]
    assert with_phone["id"] in [p["id"] for p in client.find_customers(phone=phone)]


def test_rate_limiter_spaces_requests_at_the_configured_rate():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(9):
        limiter.acquire()
    # Nine requests at 4/s: the first goes at once, the ninth two seconds later.
    assert now[0] == pytest.approx(2.0)


def test_client_stays_under_the_emulators_rate_limit():
    with start_emulator(small_config(rate_limit_per_second=10)) as emu:
        client = make_client(emu, requests_per_second=8)
        for _ in range(20):
            client.organization()
        assert client.stats.throttled == 0


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"subdomain": "acme"}, "https://acme.gladly.com"),
        ({"base_url": "https://acme.us-1.gladly.com/"}, "https://acme.us-1.gladly.com"),
        ({"base_url": "https://acme.gladly.qa/api/v1"}, "https://acme.gladly.qa"),
        ({"base_url": "http://127.0.0.1:8765"}, "http://127.0.0.1:8765"),
        ({"base_url": "http://[::1]:8765"}, "http://[::1]:8765"),
    ],
)
def test_base_url_from_subdomain_or_full_url(kwargs, expected):
    assert resolve_base_url(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"subdomain": "acme.evil.com/"}, "subdomain"),
        ({"base_url": "http://acme.gladly.com"}, "https"),
        ({"base_url": "https://user:pw@acme.gladly.com"}, "credentials"),
        ({"base_url": "acme.gladly.com"}, "not a URL"),
        ({"subdomain": "-"}, "subdomain"),
        ({"subdomain": "acme-"}, "subdomain"),
        ({"subdomain": "a" * 64}, "subdomain"),
        ({"base_url": "https://acme .gladly.com"}, "host name"),
        ({"base_url": "http://127.0.0.1:99999"}, "port"),
        ({"base_url": "https://acme.gladly.com/some/path"}, "path"),
        ({}, "GLADLY_SUBDOMAIN"),
    ],
)
def test_bad_hosts_are_refused_before_any_request(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        resolve_base_url(**kwargs)


def _item_count(emu, conversation_id):
    return sum(1 for item in emu.data.items if item.get("conversationId") == conversation_id)


def test_default_retry_policy_rides_out_a_burst_but_stays_bounded():
    policy = RetryPolicy()
    rng = random.Random(7)
    waits = [sum(policy.delay(n, rng) for n in range(policy.max_attempts - 1))
             for _ in range(200)]
    # A 429 burst of 20 s must not fail the day, yet the worst case is capped.
    assert sum(waits) / len(waits) > 40
    assert policy.max_total_wait <= 180
