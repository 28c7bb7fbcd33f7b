"""Flattens Gladly JSON records into rows that match the declared raw schemas."""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from .timeutil import parse_timestamp

_INT_TEXT = re.compile(r"-?[0-9]+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

@dataclass(frozen=True)
class ItemField:
    """Where a typed `messages` column comes from in a conversation item, and how.

    `kind` says how the JSON value becomes the column's value: "str" (a scalar as text),
    "timestamp" (RFC 3339 to UTC), "str_list" (a list of scalars, or one scalar as a list
    of one), "int" (an integer, or one sent as a string), "count" (a list's length) and
    "text" (the first of `paths` that holds a string). Each path is a tuple of keys from
    the item; a step onto anything but an object gives None. `varies`: Gladly sends the
    field as a string in some items and as another JSON type in others (documented).
    """

    column: str
    kind: str
    paths: tuple
    varies: bool = False

    def read(self, item: dict):
        if self.kind == "text":
            return _first_str(_lookup(item, path) for path in self.paths)
        return CONVERTERS[self.kind](_lookup(item, self.paths[0]))


def _field(column: str, kind: str, *paths: str, varies: bool = False) -> ItemField:
    return ItemField(column, kind, tuple(tuple(path.split(".")) for path in paths), varies)


# The one map from an item's JSON to the `messages` columns, in schema order (between
# `id` and `source_job_id`). message_row applies it to one item; the export path's
# columnar parser (extract/itemlines.py) builds its pyarrow.json schema and columns from it.
ITEM_FIELDS = (
    _field("conversation_id", "str", "conversationId"),
    _field("customer_id", "str", "customerId"),
    _field("timestamp", "timestamp", "timestamp"),
    _field("content_type", "str", "content.type"),
    # The chat's session. The item-level `sessionId` (a Gladly AI session) is REST only,
    # not exported: a typed column for it would change when the export rebuilds the day,
    # so it stays in raw_json.
    _field("session_id", "str", "content.sessionId"),
    _field("initiator_id", "str", "initiator.id"),
    _field("initiator_type", "str", "initiator.type"),
    _field("responder_id", "str", "responder.id"),
    _field("responder_type", "str", "responder.type"),
    _field("message_type", "str", "content.messageType"),
    # Where each content type keeps its text: most use `content`, notes and activities `body`.
    _field("text", "text", "content.content", "content.body"),
    _field("subject", "str", "content.subject"),
    _field("from_address", "str", "content.from"),
    # SMS and calls give one number as `to`, emails a list: the column is a list for all.
    _field("to_addresses", "str_list", "content.to", varies=True),
    _field("cc_addresses", "str_list", "content.cc"),
    _field("status", "str", "content.status"),
    _field("activity_type", "str", "content.activityType"),
    _field("title", "str", "content.title"),
    _field("started_at", "timestamp", "content.startedAt"),
    _field("answered_at", "timestamp", "content.answeredAt"),
    _field("completed_at", "timestamp", "content.completedAt"),
    _field("recording_status", "str", "content.recordingStatus"),
    # A number, or a string ("100") in one of Gladly's examples.
    _field("recording_duration_seconds", "int", "content.recordingDuration", varies=True),
    _field("recording_url", "str", "content.recordingUrl"),
    _field("added_topic_ids", "str_list", "content.addedTopicIds"),
    _field("removed_topic_ids", "str_list", "content.removedTopicIds"),
    _field("attachment_count", "count", "content.attachments"),
)


def message_row(item: dict, raw_json: str, job_id: Optional[str]) -> dict:
    """One conversation item (export line or REST item) as a raw `messages` row."""
    row = {"id": item["id"]}
    for field in ITEM_FIELDS:
        row[field.column] = field.read(item)
    row["source_job_id"] = job_id
    row["raw_json"] = raw_json
    return row


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
    """Integers that Gladly sometimes sends as strings (recordingDuration: "100").

    Only ASCII digits count, and only values that fit the int64 column: anything else
    (" 1e3", "--5", 2**70) is not a number we can store, so None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def _count(value) -> Optional[int]:
    return len(value) if isinstance(value, list) else None


def _lookup(item: dict, path: tuple):
    value = item
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first_str(values) -> Optional[str]:
    return next((value for value in values if isinstance(value, str)), None)


CONVERTERS = {
    "str": _str,
    "timestamp": parse_timestamp,
    "str_list": _str_list,
    "int": _int,
    "count": _count,
}


def _primary(entries: list, *keys: str) -> Optional[str]:
    """The entry flagged primary, else the first one (Gladly's default is not primary)."""
    if not entries:
        return None
    chosen = next((e for e in entries if e.get("primary") is True), entries[0])
    for key in keys:
        if chosen.get(key):
            return str(chosen[key])
    return None
