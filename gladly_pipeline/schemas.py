"""The declared Arrow schema of every table we write; nothing is inferred from data."""

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
STR = pa.string()
STR_LIST = pa.list_(pa.string())

# Raw tables: one row per Gladly record as extracted, typed columns for the documented
# fields plus the record's original JSON so fields Gladly adds later are kept.

RAW_MESSAGES = pa.schema(
    [
        pa.field("id", STR, nullable=False),
        pa.field("conversation_id", STR),
        pa.field("customer_id", STR),
        pa.field("timestamp", TS),
        pa.field("content_type", STR),
        pa.field("session_id", STR),
        pa.field("initiator_id", STR),
        pa.field("initiator_type", STR),
        pa.field("responder_id", STR),
        pa.field("responder_type", STR),
        pa.field("message_type", STR),
        pa.field("text", STR),
        pa.field("subject", STR),
        pa.field("from_address", STR),
        pa.field("to_addresses", STR_LIST),
        pa.field("cc_addresses", STR_LIST),
        pa.field("status", STR),
        pa.field("activity_type", STR),
        pa.field("title", STR),
        pa.field("started_at", TS),
        pa.field("answered_at", TS),
        pa.field("completed_at", TS),
        pa.field("recording_status", STR),
        pa.field("recording_duration_seconds", pa.int64()),
        pa.field("recording_url", STR),
        pa.field("added_topic_ids", STR_LIST),
        pa.field("removed_topic_ids", STR_LIST),
        pa.field("attachment_count", pa.int32()),
        pa.field("source_job_id", STR),
        pa.field("raw_json", STR, nullable=False),
    ]
)

RAW_CONVERSATIONS = pa.schema(
    [
        pa.field("id", STR, nullable=False),
        pa.field("customer_id", STR),
        pa.field("inbox_id", STR),
        pa.field("agent_id", STR),
        pa.field("status", STR),
        pa.field("created_at", TS),
        pa.field("closed_at", TS),
        pa.field("topic_ids", STR_LIST),
        pa.field("custom_attributes_json", STR),
        pa.field("fetched_at", TS, nullable=False),
        pa.field("raw_json", STR, nullable=False),
    ]
)

RAW_CONTACTS = pa.schema(
    [
        pa.field("id", STR, nullable=False),
        pa.field("merged_into", STR),
        pa.field("deleted", pa.bool_()),
        pa.field("name", STR),
        pa.field("address", STR),
        pa.field("emails", STR_LIST),
        pa.field("primary_email", STR),
        pa.field("phones", STR_LIST),
        pa.field("primary_phone", STR),
        pa.field("external_customer_id", STR),
        pa.field("external_customer_ids_json", STR),
        pa.field("custom_attributes_json", STR),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("fetched_at", TS, nullable=False),
        pa.field("raw_json", STR, nullable=False),
    ]
)

# Reference tables (agents, inboxes, topics): small, unpartitioned, replaced whole.
RAW_REFERENCE = pa.schema(
    [
        pa.field("id", STR, nullable=False),
        pa.field("name", STR),
        pa.field("email", STR),
        pa.field("disabled", pa.bool_()),
        pa.field("parent_id", STR),
        pa.field("fetched_at", TS, nullable=False),
        pa.field("raw_json", STR, nullable=False),
    ]
)

RAW_SCHEMAS = {
    "messages": RAW_MESSAGES,
    "conversations": RAW_CONVERSATIONS,
    "contacts": RAW_CONTACTS,
}

# Analysis-ready tables: one row per message, conversation and contact, joined and named.

ANALYTICS_MESSAGES = pa.schema(
    [
        pa.field("message_id", STR, nullable=False),
        pa.field("conversation_id", STR),
        pa.field("contact_id", STR),
        pa.field("original_customer_id", STR),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("day", pa.date32()),
        pa.field("type", STR),
        pa.field("channel", STR),
        pa.field("direction", STR),
        pa.field("sender_type", STR),
        pa.field("sender_id", STR),
        pa.field("sender_name", STR),
        pa.field("content", STR),
        pa.field("subject", STR),
        pa.field("from_address", STR),
        pa.field("to_addresses", STR_LIST),
        pa.field("cc_addresses", STR_LIST),
        pa.field("message_type", STR),
        pa.field("status", STR),
        pa.field("duration_seconds", pa.int64()),
        pa.field("attachment_count", pa.int32()),
    ]
)

CHANNEL_COUNT_COLUMNS = {
    "CHAT": "chat_messages",
    "EMAIL": "email_messages",
    "SMS": "sms_messages",
    "PHONE": "phone_calls",
    "VOICEMAIL": "voicemails",
    "FACEBOOK_MESSENGER": "facebook_messages",
    "INSTAGRAM_DIRECT": "instagram_messages",
    "WHATSAPP": "whatsapp_messages",
}

ANALYTICS_CONVERSATIONS = pa.schema(
    [
        pa.field("conversation_id", STR, nullable=False),
        pa.field("contact_id", STR),
        pa.field("contact_name", STR),
        pa.field("contact_email", STR),
        pa.field("status", STR),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("closed_at", TS),
        pa.field("inbox_id", STR),
        pa.field("inbox_name", STR),
        pa.field("agent_id", STR),
        pa.field("agent_name", STR),
        pa.field("topic_ids", STR_LIST),
        pa.field("topic_names", STR_LIST),
        pa.field("initiator_type", STR),
        pa.field("initiator_id", STR),
        pa.field("first_channel", STR),
        pa.field("history_complete", pa.bool_()),
        pa.field("message_count", pa.int64()),
        pa.field("inbound_messages", pa.int64()),
        pa.field("outbound_messages", pa.int64()),
        pa.field("internal_items", pa.int64()),
        *[pa.field(column, pa.int64()) for column in CHANNEL_COUNT_COLUMNS.values()],
        pa.field("first_response_seconds", pa.float64()),
        pa.field("resolution_seconds", pa.float64()),
        pa.field("transcript", STR),
        pa.field("custom_attributes_json", STR),
    ]
)

ANALYTICS_CONTACTS = pa.schema(
    [
        pa.field("contact_id", STR, nullable=False),
        pa.field("name", STR),
        pa.field("primary_email", STR),
        pa.field("emails", STR_LIST),
        pa.field("primary_phone", STR),
        pa.field("phones", STR_LIST),
        pa.field("address", STR),
        pa.field("external_customer_id", STR),
        pa.field("custom_attributes_json", STR),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
        pa.field("active", pa.bool_()),
        pa.field("deleted", pa.bool_()),
        pa.field("merged_into", STR),
        pa.field("merged_ids", STR_LIST),
        pa.field("conversation_count", pa.int64()),
        pa.field("first_conversation_at", TS),
        pa.field("last_conversation_at", TS),
    ]
)
