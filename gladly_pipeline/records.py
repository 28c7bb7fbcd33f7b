"""Flattens Gladly JSON records into rows that match the declared raw schemas."""

import json
from datetime import datetime
from typing import Optional

from .timeutil import parse_timestamp

# Where each content type keeps its text: most use `content`, notes and activities `body`.
_TEXT_FIELDS = ("content", "body")


def message_row(item: dict, raw_json: str, job_id: Optional[str]) -> dict:
    """One conversation item (export line or REST item) as a raw `messages` row."""
    content = item.get("content")
    if not isinstance(content, dict):
        content = {}
    initiator = _obj(item.get("initiator"))
    responder = _obj(item.get("responder"))
    return {
        "id": item["id"],
        "conversation_id": _str(item.get("conversationId")),
        "customer_id": _str(item.get("customerId")),
        "timestamp": parse_timestamp(item.get("timestamp")),
        "content_type": _str(content.get("type")),
        # The chat's session. The item-level `sessionId` (a Gladly AI session) is REST
        # only, not exported: a typed column for it would change when the export
        # rebuilds the day, so it stays in raw_json.
        "session_id": _str(content.get("sessionId")),
        "initiator_id": _str(initiator.get("id")),
        "initiator_type": _str(initiator.get("type")),
        "responder_id": _str(responder.get("id")),
        "responder_type": _str(responder.get("type")),
        "message_type": _str(content.get("messageType")),
        "text": _text(content),
        "subject": _str(content.get("subject")),
        "from_address": _str(content.get("from")),
        "to_addresses": _str_list(content.get("to")),
        "cc_addresses": _str_list(content.get("cc")),
        "status": _str(content.get("status")),
        "activity_type": _str(content.get("activityType")),
        "title": _str(content.get("title")),
        "started_at": parse_timestamp(content.get("startedAt")),
        "answered_at": parse_timestamp(content.get("answeredAt")),
        "completed_at": parse_timestamp(content.get("completedAt")),
        "recording_status": _str(content.get("recordingStatus")),
        "recording_duration_seconds": _int(content.get("recordingDuration")),
        "recording_url": _str(content.get("recordingUrl")),
        "added_topic_ids": _str_list(content.get("addedTopicIds")),
        "removed_topic_ids": _str_list(content.get("removedTopicIds")),
        "attachment_count": _count(content.get("attachments")),
        "source_job_id": job_id,
        "raw_json": raw_json,
    }


def conversation_row(conversation: dict, fetched_at: datetime) -> dict:
    """One GET conversations/{id} answer as a raw `conversations` row."""
    attributes = conversation.get("customAttributes")
    return {
        "id": conversation["id"],
        "customer_id": _str(conversation.get("customerId")),
        "inbox_id": _str(conversation.get("inboxId")),
        "agent_id": _str(conversation.get("agentId")),
        "status": _str(conversation.get("status")),
        "created_at": parse_timestamp(conversation.get("createdAt")),
        "closed_at": parse_timestamp(conversation.get("closedAt")),
        # Gladly omits topicIds when no topic applies: that is an empty list, not unknown.
        "topic_ids": _str_list(conversation.get("topicIds")) or [],
        "custom_attributes_json": _dumps(attributes) if attributes else None,
        "fetched_at": fetched_at,
        "raw_json": _dumps(conversation),
    }


def contact_row(profile: dict, fetched_at: datetime) -> dict:
    """One GET customer-profiles/{id} answer as a raw `contacts` row."""
    emails = [e for e in profile.get("emails") or [] if isinstance(e, dict)]
    phones = [p for p in profile.get("phones") or [] if isinstance(p, dict)]
    external_ids = profile.get("externalCustomerIds")
    attributes = profile.get("customAttributes")
    return {
        "id": profile["id"],
        "merged_into": None,
        "deleted": False,
        "name": _str(profile.get("name")),
        "address": _str(profile.get("address")),
        "emails": [_str(e.get("original")) for e in emails if e.get("original")],
        "primary_email": _primary(emails, "original"),
        "phones": [_str(p.get("normalized") or p.get("original")) for p in phones
                   if p.get("normalized") or p.get("original")],
        "primary_phone": _primary(phones, "normalized", "original"),
        "external_customer_id": _str(profile.get("externalCustomerId")),
        "external_customer_ids_json": _dumps(external_ids) if external_ids else None,
        "custom_attributes_json": _dumps(attributes) if attributes else None,
        "created_at": parse_timestamp(profile.get("createdAt")),
        "updated_at": parse_timestamp(profile.get("updatedAt")),
        "fetched_at": fetched_at,
        "raw_json": _dumps(profile),
    }


def exported_contact_row(line: dict, raw_json: str, fetched_at: datetime) -> dict:
    """One customers.jsonl line (the export's reduced profile) as a raw `contacts` row.

    The line has no custom attributes and no timestamps: those columns stay null. Its
    addresses are plain strings without a primary flag, so the first one listed is taken
    as primary; Gladly does not document the order (GET lists the primary one first in
    every sample we have, and the emulator does the same).
    """
    emails = _str_list(line.get("emailAddresses")) or []
    phones = _str_list(line.get("phoneNumbers")) or []
    external_ids = line.get("externalCustomerIds")
    return {
        "id": line["id"],
        "merged_into": None,
        "deleted": False,
        "name": _str(line.get("name")),
        "address": _str(line.get("address")),
        "emails": emails,
        "primary_email": emails[0] if emails else None,
        "phones": phones,
        "primary_phone": phones[0] if phones else None,
        "external_customer_id": _str(line.get("externalCustomerId")),
        "external_customer_ids_json": _dumps(external_ids) if external_ids else None,
        "custom_attributes_json": None,
        "created_at": None,
        "updated_at": None,
        "fetched_at": fetched_at,
        "raw_json": raw_json,
    }


def is_full_contact_row(row: dict) -> bool:
    """Whether a raw contact row came from GET customer-profiles/{id} (or is a 301/404 mark).

    A profile from GET always carries `createdAt` (reference §12.3); the export's reduced
    profile never does. A GET answer without it would only be fetched once more.
    """
    return row["created_at"] is not None or bool(row["merged_into"]) or bool(row["deleted"])


def merged_contact_row(old_id: str, new_id: str, fetched_at: datetime) -> dict:
    """A profile id Gladly answered with 301: it now lives on as `new_id`."""
    return _placeholder_contact(
        old_id, fetched_at, merged_into=new_id, raw={"id": old_id, "mergedInto": new_id}
    )


def deleted_contact_row(customer_id: str, fetched_at: datetime) -> dict:
    """A profile id Gladly answered with 404: deleted (e.g. a privacy request)."""
    return _placeholder_contact(
        customer_id, fetched_at, deleted=True, raw={"id": customer_id, "notFound": True}
    )


def _placeholder_contact(customer_id, fetched_at, *, raw, merged_into=None, deleted=False):
    row = {name: None for name in contact_row({"id": customer_id}, fetched_at)}
    row.update(
        id=customer_id,
        merged_into=merged_into,
        deleted=deleted,
        emails=[],
        phones=[],
        fetched_at=fetched_at,
        raw_json=_dumps(raw),
    )
    return row


def reference_row(record: dict, fetched_at: datetime) -> dict:
    """An agent, inbox or topic as a raw reference row."""
    disabled = record.get("disabled")
    return {
        "id": record["id"],
        "name": _str(record.get("name")),
        "email": _str(record.get("emailAddress")),
        "disabled": disabled if isinstance(disabled, bool) else None,
        "parent_id": _str(record.get("parentId")),
        "fetched_at": fetched_at,
        "raw_json": _dumps(record),
    }


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value) -> Optional[str]:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _str_list(value) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and not isinstance(v, (dict, list))]
    # SMS and calls give one number as `to`; keep the column a list for every type.
    return [str(value)]


def _int(value) -> Optional[int]:
    """Integers that Gladly sometimes sends as strings (recordingDuration: "100")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _count(value) -> Optional[int]:
    return len(value) if isinstance(value, list) else None


def _text(content: dict) -> Optional[str]:
    for name in _TEXT_FIELDS:
        value = content.get(name)
        if isinstance(value, str):
            return value
    return None


def _primary(entries: list, *keys: str) -> Optional[str]:
    """The entry flagged primary, else the first one (Gladly's default is not primary)."""
    if not entries:
        return None
    chosen = next((e for e in entries if e.get("primary") is True), entries[0])
    for key in keys:
        if chosen.get(key):
            return str(chosen[key])
    return None
