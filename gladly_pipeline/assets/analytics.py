"""Analysis-ready tables: messages, conversations and contacts joined and named."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from ..privacy import hash_contacts, hash_messages
from ..resources import DataRoot
from ..schemas import (
    ANALYTICS_CONTACTS,
    ANALYTICS_CONVERSATIONS,
    ANALYTICS_MESSAGES,
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
    RAW_REFERENCE,
)
from ..storage import TableStore
from ..tables import (
    add_conversation_span,
    build_contacts,
    build_conversations,
    build_messages,
    merge_map,
    to_arrow,
)

GROUP = "gladly_analytics"
# Rebuilt after raw partitions land, once no raw run is still going (a backfill of many
# days leads to one rebuild at its end, not one per day).
AFTER_RAW_UPDATES = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after new raw data")
UNUSED = ("raw_json",)
RAW = [AssetKey(["raw", name]) for name in
       ("messages", "conversations", "contacts", "agents", "inboxes", "topics")]


@multi_asset(
    group_name=GROUP,
    specs=[
        AssetSpec(
            ["analytics", "messages"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            description=(
                "One row per conversation item across all extracted days: type, channel, "
                "direction (inbound, outbound, internal), sender with name, content, "
                "subject, from and to, and the conversation and contact it belongs to "
                "(merged contacts resolved to the surviving profile)."
            ),
        ),
        AssetSpec(
            ["analytics", "conversations"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            description=(
                "One row per conversation, latest known state: status, created, last "
                "activity and closed times, contact, inbox, agent and topic names, who "
                "started it, message counts by direction and channel, first agent "
                "response and resolution times in seconds, and the whole transcript in "
                "order. `history_complete` is false when the conversation began before "
                "the first extracted day; its start-based fields are then empty."
            ),
        ),
        AssetSpec(
            ["analytics", "contacts"],
            deps=RAW,
            kinds={"parquet"},
            automation_condition=AFTER_RAW_UPDATES,
            description=(
                "One row per customer profile, latest version: name, primary email and "
                "phone, custom attributes, whether it is active or was merged into another "
                "profile, and its first and last conversation."
            ),
        ),
    ],
)
def analytics_tables(context: AssetExecutionContext, data_root: DataRoot):
    store = data_root.store()
    # The tables are built from the typed columns; Gladly's JSON stays on disk.
    raw_messages = store.read_raw("messages", RAW_MESSAGES, skip=UNUSED)
    raw_conversations = store.read_raw("conversations", RAW_CONVERSATIONS, skip=UNUSED)
    raw_contacts = store.read_raw("contacts", RAW_CONTACTS, skip=UNUSED)
    context.log.info(
        "Building tables from %d raw items, %d conversation rows, %d profile rows",
        raw_messages.num_rows, raw_conversations.num_rows, raw_contacts.num_rows,
    )
    hasher = data_root.pseudonymizer()
    merges = merge_map(raw_contacts.to_pandas())
    contacts = build_contacts(raw_contacts, merges)
    if hasher:
        # Before anything is derived from them, so names and emails never leak into
        # messages, conversations or transcripts.
        contacts = hash_contacts(contacts, hasher)
    names = _names(store, contacts)
    messages = build_messages(raw_messages, merges, names)
    if hasher:
        messages = hash_messages(messages, hasher)
    conversations = build_conversations(raw_conversations, messages, merges, names, contacts)
    contacts = add_conversation_span(contacts, conversations)
    outputs = [
        ("messages", messages, ANALYTICS_MESSAGES),
        ("conversations", conversations, ANALYTICS_CONVERSATIONS),
        ("contacts", contacts, ANALYTICS_CONTACTS),
    ]
    for name, frame, schema in outputs:
        path = store.analytics(name)
        store.write(path, to_arrow(frame, schema))
        context.log.info("Wrote %d rows to analytics/%s", len(frame), name)
        yield MaterializeResult(
            asset_key=AssetKey(["analytics", name]),
            metadata={
                "dagster/row_count": len(frame),
                "path": MetadataValue.path(str(path)),
                "merged_contacts": len(merges),
                "personal_data_hashed": hasher is not None,
            },
        )


def _names(store: TableStore, contacts) -> dict:
    """id -> name lookups for agents, inboxes, topics and contacts."""
    names = {}
    for table in ("agents", "inboxes", "topics"):
        path = store.reference(table)
        frame = store.read(path, RAW_REFERENCE).to_pandas() if path.exists() else None
        names[table] = {} if frame is None else dict(zip(frame["id"], frame["name"], strict=True))
    names["contacts"] = dict(zip(contacts["contact_id"], contacts["name"], strict=True))
    return names
