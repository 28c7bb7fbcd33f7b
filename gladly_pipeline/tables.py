"""Builds the analysis-ready tables from the raw ones (pure functions, no I/O)."""

import numpy as np
import pandas as pd
import pyarrow as pa

from .schemas import CHANNEL_COUNT_COLUMNS

CHANNELS = {
    "CHAT_MESSAGE": "CHAT",
    "EMAIL": "EMAIL",
    "SMS": "SMS",
    "PHONE_CALL": "PHONE",
    "VOICEMAIL": "VOICEMAIL",
    "FACEBOOK_MESSAGE": "FACEBOOK_MESSENGER",
    "INSTAGRAM_DIRECT": "INSTAGRAM_DIRECT",
    "WHATSAPP": "WHATSAPP",
    "TWITTER": "TWITTER",
    "VOICE_AI_MESSAGE": "VOICE_AI",
}

# Items that record work inside Gladly rather than a message to or from the customer.
INTERNAL_TYPES = {"CONVERSATION_NOTE", "CONVERSATION_STATUS_CHANGE", "TOPIC_CHANGE",
                  "CUSTOMER_ACTIVITY"}
INBOUND_SENDERS = {"CUSTOMER", "EXTERNAL"}
OUTBOUND_SENDERS = {"AGENT", "API", "AUTOMATION", "SYSTEM", "INTERNAL"}

# Gladly's own AI (Sidekick) posts as this SYSTEM initiator.
GLADLY_AI_ID = "SIDEKICK_V2"
# A conversation's first extracted item within this much of its creation means the
# extraction saw its beginning, so who started it and the first response are known.
HISTORY_TOLERANCE = pd.Timedelta(minutes=5)

# Merges can chain (A into B, later B into C); more hops than this means a cycle.
MAX_MERGE_HOPS = 20


def latest(frame: pd.DataFrame, key: str, order: str = "fetched_at") -> pd.DataFrame:
    """One row per key: the most recently fetched."""
    if frame.empty:
        return frame
    ordered = frame.sort_values([key, order], kind="stable")
    return ordered.drop_duplicates(key, keep="last").reset_index(drop=True)


def merge_map(raw_contacts: pd.DataFrame) -> dict:
    """Maps every merged-away profile id to the profile that survives today."""
    merged = latest(raw_contacts, "id")
    direct = dict(
        merged.loc[merged["merged_into"].notna(), ["id", "merged_into"]].itertuples(index=False)
    )
    resolved = {}
    for start in direct:
        current, hops = start, 0
        while current in direct and hops < MAX_MERGE_HOPS:
            current, hops = direct[current], hops + 1
        resolved[start] = current
    return resolved


def build_messages(raw_messages: pa.Table, merges: dict, names: dict) -> pd.DataFrame:
    """One row per conversation item with channel, direction, sender and contact keys."""
    df = raw_messages.to_pandas()
    df = df.drop_duplicates("id", keep="last")
    content_type = df["content_type"]
    sender_type = df["initiator_type"]
    direction = np.select(
        [content_type.isin(INTERNAL_TYPES), sender_type.isin(INBOUND_SENDERS),
         sender_type.isin(OUTBOUND_SENDERS)],
        ["internal", "inbound", "outbound"],
        default=None,
    )
    contact_id = df["customer_id"].map(lambda cid: merges.get(cid, cid))
    out = pd.DataFrame(
        {
            "message_id": df["id"],
            "conversation_id": df["conversation_id"],
            "contact_id": contact_id,
            "original_customer_id": df["customer_id"],
            "created_at": df["timestamp"],
            "updated_at": df["completed_at"].fillna(df["timestamp"]),
            "day": df["timestamp"].dt.date,
            "type": content_type,
            "channel": content_type.map(CHANNELS),
            "direction": direction,
            "sender_type": sender_type,
            "sender_id": df["initiator_id"],
            "sender_name": _sender_names(df, contact_id, names),
            "content": df["text"],
            "subject": df["subject"],
            "from_address": df["from_address"],
            "to_addresses": df["to_addresses"],
            "cc_addresses": df["cc_addresses"],
            "message_type": df["message_type"],
            "status": df["status"],
            "duration_seconds": df["recording_duration_seconds"],
            "attachment_count": df["attachment_count"],
        }
    )
    return out.sort_values(["created_at", "message_id"], kind="stable").reset_index(drop=True)


def _sender_names(df: pd.DataFrame, contact_id: pd.Series, names: dict) -> pd.Series:
    agent_names = df["initiator_id"].map(names["agents"])
    contact_names = contact_id.map(names["contacts"])
    is_agent = df["initiator_type"] == "AGENT"
    is_customer = df["initiator_type"] == "CUSTOMER"
    named = agent_names.where(is_agent, contact_names.where(is_customer))
    named = named.mask(df["initiator_id"] == GLADLY_AI_ID, "Gladly AI")
    return named.astype(object).where(named.notna(), None)


def build_conversations(
    raw_conversations: pa.Table, messages: pd.DataFrame, merges: dict, names: dict,
    contacts: pd.DataFrame,
) -> pd.DataFrame:
    """One row per conversation: latest state, names, counts, timings and transcript."""
    conv = latest(raw_conversations.to_pandas(), "id")
    conv["contact_id"] = conv["customer_id"].map(lambda cid: merges.get(cid, cid))
    in_conv = messages[messages["conversation_id"].notna()]
    stats = _conversation_stats(in_conv)
    out = conv.merge(stats, how="left", left_on="id", right_index=True)
    emails = dict(zip(contacts["contact_id"], contacts["primary_email"], strict=True))
    # Items before the first extracted day are unknown: say so rather than guess.
    complete = (out["first_item_at"] <= out["created_at"] + HISTORY_TOLERANCE).fillna(False)
    topic_names = names["topics"]
    result = pd.DataFrame(
        {
            "conversation_id": out["id"],
            "contact_id": out["contact_id"],
            "contact_name": out["contact_id"].map(names["contacts"]),
            "contact_email": out["contact_id"].map(emails),
            "status": out["status"],
            "created_at": out["created_at"],
            # Last activity: the newest item, or the close if Gladly reports a later one.
            "updated_at": _latest(out["last_activity_at"], out["closed_at"], out["created_at"]),
            "closed_at": out["closed_at"],
            "inbox_id": out["inbox_id"],
            "inbox_name": out["inbox_id"].map(names["inboxes"]),
            "agent_id": out["agent_id"],
            "agent_name": out["agent_id"].map(names["agents"]),
            "topic_ids": out["topic_ids"],
            "topic_names": out["topic_ids"].map(
                lambda ids: [topic_names.get(t) for t in ids] if ids is not None else None
            ),
            "initiator_type": out["initiator_type"].where(complete),
            "initiator_id": out["initiator_id"].where(complete),
            "first_channel": out["first_channel"].where(complete),
            "history_complete": complete,
            "message_count": out["message_count"].fillna(0),
            "inbound_messages": out["inbound_messages"].fillna(0),
            "outbound_messages": out["outbound_messages"].fillna(0),
            "internal_items": out["internal_items"].fillna(0),
            **{col: out[col].fillna(0) for col in CHANNEL_COUNT_COLUMNS.values()},
            "first_response_seconds": out["first_response_seconds"].where(complete),
            "resolution_seconds": (out["closed_at"] - out["created_at"]).dt.total_seconds(),
            "transcript": out["transcript"],
            "custom_attributes_json": out["custom_attributes_json"],
        }
    )
    return result.sort_values("conversation_id").reset_index(drop=True)


def _conversation_stats(messages: pd.DataFrame) -> pd.DataFrame:
    """Per-conversation counts, first sender, first response and transcript."""
    ordered = messages.sort_values(["conversation_id", "created_at", "message_id"], kind="stable")
    groups = ordered.groupby("conversation_id", sort=False)
    direction = ordered["direction"]
    by_conversation = ordered["conversation_id"]
    stats = pd.DataFrame(
        {
            "message_count": (direction != "internal").groupby(by_conversation).sum(),
            "inbound_messages": (direction == "inbound").groupby(by_conversation).sum(),
            "outbound_messages": (direction == "outbound").groupby(by_conversation).sum(),
            "internal_items": (direction == "internal").groupby(by_conversation).sum(),
            "first_item_at": groups["created_at"].min(),
            "last_activity_at": groups["updated_at"].max(),
        }
    )
    for channel, column in CHANNEL_COUNT_COLUMNS.items():
        hits = ordered["channel"] == channel
        stats[column] = hits.groupby(ordered["conversation_id"]).sum()
    talk = ordered[ordered["direction"].isin(["inbound", "outbound"])]
    first = talk.groupby("conversation_id", sort=False).first()
    stats["initiator_type"] = first["sender_type"]
    stats["initiator_id"] = first["sender_id"]
    stats["first_channel"] = first["channel"]
    stats["first_response_seconds"] = _first_response(talk)
    stats["transcript"] = _transcripts(ordered)
    return stats


def _first_response(talk: pd.DataFrame) -> pd.Series:
    """Seconds from the customer's first message to the first agent reply after it.

    Replies by automation or Gladly AI are outbound, but they are not a response by the
    team, so they do not end the wait.
    """
    inbound = talk[talk["direction"] == "inbound"].groupby("conversation_id")["created_at"].min()
    by_agent = (talk["direction"] == "outbound") & (talk["sender_type"] == "AGENT")
    outbound = talk[by_agent][["conversation_id", "created_at"]]
    asked = inbound.rename("asked_at").reset_index()
    joined = outbound.merge(asked, on="conversation_id", how="inner")
    replies = joined[joined["created_at"] >= joined["asked_at"]]
    answered = replies.groupby("conversation_id")["created_at"].min()
    return (answered - inbound.reindex(answered.index)).dt.total_seconds()


def _transcripts(ordered: pd.DataFrame) -> pd.Series:
    """The conversation in time order, one line per message, the sender labelled."""
    said = ordered[ordered["direction"].isin(["inbound", "outbound"])
                   | (ordered["type"] == "CONVERSATION_NOTE")]
    stamp = said["created_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    who = said["sender_name"].fillna(said["sender_type"].fillna("UNKNOWN"))
    role = np.where(said["type"] == "CONVERSATION_NOTE", "note",
                    said["direction"].str.lower())
    via = said["channel"].fillna("INTERNAL").str.lower()
    text = said["content"].fillna(said["subject"]).fillna(
        "(" + said["type"].str.lower().str.replace("_", " ") + ")"
    )
    lines = "[" + stamp + "] " + who + " (" + role + ", " + via + "): " + text
    return lines.groupby(said["conversation_id"], sort=False).agg("\n".join)


def _latest(*columns: pd.Series) -> pd.Series:
    return pd.concat(columns, axis=1).max(axis=1)


def build_contacts(raw_contacts: pa.Table, merges: dict) -> pd.DataFrame:
    """The latest profile per contact id, merged ones marked and pointing at the survivor."""
    profiles = latest(raw_contacts.to_pandas(), "id")
    merged_into = profiles["id"].map(merges)
    absorbed = pd.Series(list(merges.keys()), dtype=object).groupby(
        pd.Series(list(merges.values()), dtype=object)
    ).agg(sorted)
    return pd.DataFrame(
        {
            "contact_id": profiles["id"],
            "name": profiles["name"],
            "primary_email": profiles["primary_email"],
            "emails": profiles["emails"],
            "primary_phone": profiles["primary_phone"],
            "phones": profiles["phones"],
            "address": profiles["address"],
            "external_customer_id": profiles["external_customer_id"],
            "custom_attributes_json": profiles["custom_attributes_json"],
            "created_at": profiles["created_at"],
            "updated_at": profiles["updated_at"],
            "active": merged_into.isna() & ~profiles["deleted"].fillna(False).astype(bool),
            "deleted": profiles["deleted"].fillna(False).astype(bool),
            "merged_into": merged_into,
            "merged_ids": profiles["id"].map(absorbed),
        }
    ).sort_values("contact_id").reset_index(drop=True)


def add_conversation_span(contacts: pd.DataFrame, conversations: pd.DataFrame) -> pd.DataFrame:
    """Counts each contact's conversations and their first and last creation times."""
    by_contact = conversations.groupby("contact_id")["created_at"]
    out = contacts.copy()
    out["conversation_count"] = out["contact_id"].map(by_contact.size()).fillna(0)
    out["first_conversation_at"] = out["contact_id"].map(by_contact.min())
    out["last_conversation_at"] = out["contact_id"].map(by_contact.max())
    return out


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Converts with the declared schema, so types never depend on the data."""
    frame = frame[[field.name for field in schema]]
    frame = frame.astype(object).where(frame.notna(), None)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)

