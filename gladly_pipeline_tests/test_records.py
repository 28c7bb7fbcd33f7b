"""Each content type's columns, and the documented quirks, in the raw `messages` row."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from gladly_pipeline.records import contact_row, conversation_row, message_row
from gladly_pipeline.schemas import RAW_CONTACTS, RAW_CONVERSATIONS, RAW_MESSAGES

UTC = UTC
FETCHED = datetime(2026, 3, 9, tzinfo=UTC)


def item(content, **extra):
    record = {
        "id": "gHufx-U3QqOmhvFuViceTw",
        "customerId": "1h-7sUzlQlS4HbrCk1sSJw",
        "conversationId": "Qh3xq0bcQ0Ow5rC8GbEy8g",
        "timestamp": "2026-03-08T10:11:12.345Z",
        "initiator": {"id": "1h-7sUzlQlS4HbrCk1sSJw", "type": "CUSTOMER"},
        "content": content,
    }
    record.update(extra)
    return record


def row(record):
    result = message_row(record, json.dumps(record), "job-1")
    # Every row must fit the declared schema exactly.
    pa.Table.from_pylist([result], schema=RAW_MESSAGES)
    return result


CASES = [
    ({"type": "CHAT_MESSAGE", "sessionId": "s1", "content": "hi", "messageType": "TEXT"},
     {"text": "hi", "message_type": "TEXT", "session_id": "s1"}),
    ({"type": "EMAIL", "from": "a@x.com", "to": ["b@y.com"], "cc": ["c@y.com"],
      "subject": "Order", "content": "Where is it?"},
     {"from_address": "a@x.com", "to_addresses": ["b@y.com"], "cc_addresses": ["c@y.com"],
      "subject": "Order", "text": "Where is it?"}),
    ({"type": "SMS", "from": "+15550100123", "to": "+15550100999", "content": "ok"},
     {"from_address": "+15550100123", "to_addresses": ["+15550100999"], "text": "ok"}),
    ({"type": "PHONE_CALL", "from": "+15550100123", "to": "+15550100999",
      "startedAt": "2026-03-08T10:11:12Z", "completedAt": "2026-03-08T10:15:00.5Z",
      "recordingStatus": "AVAILABLE", "recordingDuration": 228,
      "recordingUrl": "/api/v1/conversation-items/x/media/recording"},
     {"recording_duration_seconds": 228, "recording_status": "AVAILABLE",
      "started_at": datetime(2026, 3, 8, 10, 11, 12, tzinfo=UTC)}),
    ({"type": "VOICEMAIL", "recordingDuration": "100", "recordingStatus": "AVAILABLE"},
     {"recording_duration_seconds": 100}),
    ({"type": "CONVERSATION_NOTE", "body": "called back"}, {"text": "called back"}),
    ({"type": "CONVERSATION_STATUS_CHANGE", "status": "CLOSED"}, {"status": "CLOSED"}),
    ({"type": "TOPIC_CHANGE", "addedTopicIds": ["t1"], "removedTopicIds": []},
     {"added_topic_ids": ["t1"], "removed_topic_ids": []}),
    ({"type": "CUSTOMER_ACTIVITY", "activityType": "SURVEY", "title": "CSAT", "body": "5/5"},
     {"activity_type": "SURVEY", "title": "CSAT", "text": "5/5"}),
    ({"type": "FACEBOOK_MESSAGE", "pageId": "p", "userId": "u", "content": "hey",
      "attachments": [{"id": "a"}]},
     {"text": "hey", "attachment_count": 1}),
    ({"type": "INSTAGRAM_DIRECT", "content": "ig"}, {"text": "ig"}),
    ({"type": "WHATSAPP", "content": "wa"}, {"text": "wa"}),
    ({"type": "TWITTER", "content": "tw"}, {"text": "tw"}),
    ({"type": "VOICE_AI_MESSAGE", "companyNumber": "+1555", "body": "Hello"},
     {"text": "Hello"}),
]


@pytest.mark.parametrize("content, expected", CASES, ids=[c["type"] for c, _ in CASES])
def test_each_content_type_fills_its_columns(content, expected):
    result = row(item(content))
    assert result["content_type"] == content["type"]
    for column, value in expected.items():
        assert result[column] == value, column


def test_unknown_content_type_and_fields_are_kept_in_raw_json():
    record = item({"type": "CUSTOM_CHANNEL_MESSAGE", "payload": {"x": 1}}, newField=True)
    result = row(record)
    assert result["content_type"] == "CUSTOM_CHANNEL_MESSAGE"
    assert json.loads(result["raw_json"])["newField"] is True


def test_email_without_subject_and_item_without_conversation():
    record = item({"type": "EMAIL", "from": "a@x.com", "to": ["b@y.com"], "content": "x"})
    del record["conversationId"]
    result = row(record)
    assert result["subject"] is None
    assert result["conversation_id"] is None


def test_nanosecond_timestamp_is_truncated_to_microseconds():
    result = row(item({"type": "SMS", "content": "x"}, timestamp="2019-02-21T07:15:18.07272933Z"))
    assert result["timestamp"] == datetime(2019, 2, 21, 7, 15, 18, 72729, tzinfo=UTC)


def test_conversation_without_topic_ids_gets_an_empty_list():
    record = {"id": "c1", "customerId": "p1", "inboxId": "i1", "status": "OPEN",
              "createdAt": "2026-03-08T10:00:00.000Z"}
    result = conversation_row(record, FETCHED)
    assert result["topic_ids"] == []
    assert result["agent_id"] is None
    pa.Table.from_pylist([result], schema=RAW_CONVERSATIONS)


def test_profile_primary_email_and_phone_with_empty_type_and_no_updated_at():
    profile = {
        "id": "p1",
        "name": "Ada Example",
        "emails": [{"original": "old@x.com"}, {"original": "ada@x.com", "primary": True}],
        "phones": [{"original": "(555) 010-0123", "normalized": "+15550100123", "type": ""}],
        "customAttributes": {"tier": "gold"},
        "createdAt": "2021-09-28T21:10:10.373Z",
    }
    result = contact_row(profile, FETCHED)
    assert result["primary_email"] == "ada@x.com"
    assert result["emails"] == ["old@x.com", "ada@x.com"]
    assert result["primary_phone"] == "+15550100123"
    assert result["updated_at"] is None
    assert json.loads(result["custom_attributes_json"]) == {"tier": "gold"}
    pa.Table.from_pylist([result], schema=RAW_CONTACTS)


@pytest.mark.parametrize(
    "duration, expected",
    [(228, 228), ("100", 100), (" 100 ", 100), ("-5", -5), (11.0, 11), (11.5, None),
     ("--5", None), ("1e3", None), ("\u0661\u0662", None), (True, None), (2**70, None),
     ("99999999999999999999", None), (None, None)],
)
def test_recording_duration_takes_integers_and_integer_strings_that_fit(duration, expected):
    result = row(item({"type": "VOICEMAIL", "recordingDuration": duration}))
    assert result["recording_duration_seconds"] == expected
