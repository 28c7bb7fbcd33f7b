"""Builds the analysis-ready tables from the raw ones: DuckDB SQL, streamed to Parquet.

The whole rebuild is SQL run by an in-process DuckDB with a memory limit and a folder to
spill to, so its memory stays bounded however much history the raw tables hold. DuckDB
reads the raw Parquet files that the storage layer lists (TableStore.raw_files), only the
columns a query uses (on S3 through a pyarrow dataset of them, TableStore.dataset); each
result streams out in record batches into the store's atomic writer, so no table is ever
whole in Python.

The SQL reads these relations, which `rebuild` defines as views and the benchmark defines
its own way (plain read_parquet globs):

    raw_messages, raw_conversations, raw_contacts   every raw partition, plus `date`
    ref_agents, ref_inboxes, ref_topics              id and name of the reference lists
"""

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

import duckdb
import pyarrow as pa

from .privacy import Pseudonymizer, hashed_list_sql, hashed_text_sql, hashed_value_sql
from .privacy import register_functions as register_hashing
from .schemas import (
    ANALYTICS_CONTACTS,
    ANALYTICS_CONVERSATIONS,
    ANALYTICS_MESSAGES,
    CHANNEL_COUNT_COLUMNS,
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
    RAW_REFERENCE,
)
from .storage import TableStore

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
HISTORY_TOLERANCE_SECONDS = 5 * 60

# Merges can chain (A into B, later B into C); more hops than this means a cycle.
MAX_MERGE_HOPS = 20

# The raw columns the tables are built from; Gladly's JSON stays on disk.
UNUSED = ("raw_json",)
RAW_SOURCES = {
    "raw_messages": ("messages", RAW_MESSAGES),
    "raw_conversations": ("conversations", RAW_CONVERSATIONS),
    "raw_contacts": ("contacts", RAW_CONTACTS),
}
REFERENCE_SOURCES = {"ref_agents": "agents", "ref_inboxes": "inboxes", "ref_topics": "topics"}
REFERENCE_NAMES = pa.schema([RAW_REFERENCE.field("id"), RAW_REFERENCE.field("name")])

# Rows per record batch handed from DuckDB to the Parquet writer, and so per row group:
# small enough that a batch of conversations with long transcripts stays a few tens of MB.
BATCH_ROWS = 16_384
# DuckDB memory reserved per raw item for the transcripts' lists (see buckets_for).
BYTES_PER_ITEM = 2048

# In the order written: conversations first, so that the time to it can be compared with
# DuckDB building that table alone (see benchmarks/bench.py).
TABLES = ("conversations", "messages", "contacts")
SCHEMAS = {
    "messages": ANALYTICS_MESSAGES,
    "conversations": ANALYTICS_CONVERSATIONS,
    "contacts": ANALYTICS_CONTACTS,
}


@dataclass(frozen=True)
class RebuildLimits:
    """How much of the machine the rebuild may use (see DataRoot for the settings)."""

    memory_limit: str = "512MB"
    threads: Optional[int] = None  # None: DuckDB's default, one per core
    temp_directory: Optional[str] = None  # None: a fresh folder under the system's temp


@dataclass(frozen=True)
class Written:
    """One table written by the rebuild."""

    name: str
    rows: int
    seconds: float  # since the previous table was written (the first: since the start)
    metadata: dict = field(default_factory=dict)


def rebuild(
    store: TableStore, limits: RebuildLimits, hasher: Optional[Pseudonymizer] = None,
) -> Iterator[Written]:
    """Rebuilds the three analytics tables from every raw partition, yielding each when written.

    Each table replaces the old file atomically; a failure leaves the previous version of
    any table not yet written. Nothing is held in Python but one record batch at a time.
    """
    spill = limits.temp_directory or tempfile.mkdtemp(prefix="gladly-rebuild-")
    connection = None
    try:
        clock = time.perf_counter()
        connection = duckdb.connect(config=_settings(limits, spill))
        # The transcript's timestamps and `day` are UTC whatever the machine's zone (set
        # after connecting: the time zone extension loads only then).
        connection.execute("SET TimeZone = 'UTC'")
        _register_sources(connection, store)
        if hasher:
            register_hashing(connection, hasher)
        for statement in setup_statements(hashed=hasher is not None):
            connection.execute(statement)
        items = connection.execute("SELECT count(*) FROM raw_messages").fetchone()[0]
        buckets = buckets_for(items, limits.memory_limit)
        for statement in stats_statements(buckets):
            connection.execute(statement)
        for name in TABLES:
            rows = _write(connection, store, store.analytics(name), TABLE_QUERIES[name],
                          SCHEMAS[name])
            metadata = {}
            if name == "conversations":
                metadata = {"raw_items": items, "transcript_buckets": buckets}
            if name == "contacts":
                merged = connection.execute("SELECT count(*) FROM merges").fetchone()[0]
                metadata["merged_contacts"] = merged
            now = time.perf_counter()
            yield Written(name, rows, now - clock, metadata)
            clock = time.perf_counter()
    except duckdb.OutOfMemoryException as error:
        # Tables not written yet keep their previous version; the lever is the limit.
        raise MemoryError(
            f"The analytics rebuild needs more than rebuild_memory_limit={limits.memory_limit} "
            f"(DuckDB: {str(error).splitlines()[0]}); raise the limit in the data_root "
            "resource. Tables not rewritten yet keep their previous version."
        ) from error
    finally:
        if connection is not None:
            connection.close()
        if not limits.temp_directory:
            shutil.rmtree(spill, ignore_errors=True)


def _settings(limits: RebuildLimits, spill: str) -> dict:
    settings = {
        "memory_limit": limits.memory_limit,
        "temp_directory": spill,
        # Every output is sorted explicitly; keeping scan order as well costs memory.
        "preserve_insertion_order": False,
    }
    if limits.threads:
        settings["threads"] = limits.threads
    return settings


def _register_sources(connection: duckdb.DuckDBPyConnection, store: TableStore) -> None:
    sources = [(relation, schema, store.raw_files(table), True)
               for relation, (table, schema) in RAW_SOURCES.items()]
    for relation, table in REFERENCE_SOURCES.items():
        path = store.reference(table)
        files = [str(path)] if store.exists(path) else []
        sources.append((relation, REFERENCE_NAMES, files, False))
    for relation, schema, files, partitioned in sources:
        if files and not store.files_are_local:
            # DuckDB reads s3:// only through an extension it would download: it scans a
            # pyarrow dataset over the store's filesystem instead.
            connection.register(f"{relation}_files", store.dataset(files, schema, partitioned))
            files = f"{relation}_files"
        connection.execute(source_view_sql(relation, schema, files, partitioned))


def source_view_sql(relation: str, schema: pa.Schema, files, partitioned=True) -> str:
    """A view of a table's Parquet files with its declared columns (and `date`, if daily).

    DuckDB reads the files itself (read_parquet: parallel, only the columns and row groups
    a query needs). No files yet gives an empty view of the same columns and types.
    `files` may instead name a relation registered with the connection (a pyarrow dataset).
    """
    columns = [field for field in schema if field.name not in UNUSED]
    if not files:
        empty = [f"NULL::{_duckdb_type(field.type)} AS {field.name}" for field in columns]
        empty += ["NULL::VARCHAR AS date"] if partitioned else []
        return f"CREATE TEMP VIEW {relation} AS SELECT {', '.join(empty)} LIMIT 0"
    names = [field.name for field in columns]
    names += ["CAST(date AS VARCHAR) AS date"] if partitioned else []
    if isinstance(files, str):
        return f"CREATE TEMP VIEW {relation} AS SELECT {', '.join(names)} FROM {files}"
    paths = "[" + ", ".join(sql_text(path) for path in files) + "]"
    # Older partitions may lack a column added to the schema later: union_by_name fills it.
    return (f"CREATE TEMP VIEW {relation} AS SELECT {', '.join(names)} FROM read_parquet("
            f"{paths}, hive_partitioning = {str(partitioned).lower()}, union_by_name = true)")


DUCKDB_TYPES = {
    pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    pa.list_(pa.string()): "VARCHAR[]",
}


def _duckdb_type(arrow_type: pa.DataType) -> str:
    return DUCKDB_TYPES[arrow_type]


def _write(connection, store: TableStore, path, query: str, schema: pa.Schema) -> int:
    """Streams the query's result into the table's atomic writer, cast to its schema."""
    reader = connection.sql(query).to_arrow_reader(BATCH_ROWS)
    rows = 0
    with store.writer(path, schema) as writer:
        for batch in reader:
            writer.write_batch(batch.cast(schema))
            rows += batch.num_rows
    return rows


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values) -> str:
    return ", ".join(sql_text(value) for value in sorted(values))


def setup_statements(hashed: bool = False) -> list:
    """Temporary views and tables the three table queries read, in order.

    With `hashed`, names, addresses, phone numbers and free text pass through the
    pseudonymiser's SQL functions (privacy.register_functions) before anything is derived
    from them, so they never reach messages, conversations or transcripts in the clear.
    """
    value = hashed_value_sql if hashed else _same
    text = hashed_text_sql if hashed else _same
    values = hashed_list_sql if hashed else _same
    channel = " ".join(f"WHEN {sql_text(k)} THEN {sql_text(v)}" for k, v in CHANNELS.items())
    return [
        # The latest fetch of each profile; on equal fetch times the later partition wins.
        """
        CREATE TEMP TABLE profiles AS
        SELECT * EXCLUDE (date) FROM raw_contacts
        QUALIFY row_number() OVER (PARTITION BY id ORDER BY fetched_at DESC, date DESC) = 1
        """,
        # Every merged-away profile id and the profile that survives today.
        f"""
        CREATE TEMP TABLE merges AS
        WITH RECURSIVE hops (start_id, current_id, depth) AS (
            SELECT id, merged_into, 1 FROM profiles WHERE merged_into IS NOT NULL
            UNION ALL
            SELECT hops.start_id, profiles.merged_into, hops.depth + 1
            FROM hops JOIN profiles ON profiles.id = hops.current_id
            WHERE profiles.merged_into IS NOT NULL AND hops.depth < {MAX_MERGE_HOPS}
        )
        SELECT start_id AS id, arg_max(current_id, depth) AS survivor
        FROM hops GROUP BY start_id
        """,
        # analytics/contacts less the conversation span; the source of contact names.
        f"""
        CREATE TEMP TABLE people AS
        SELECT
            profiles.id AS contact_id,
            {value('profiles.name')} AS name,
            {value('profiles.primary_email')} AS primary_email,
            {values('profiles.emails')} AS emails,
            {value('profiles.primary_phone')} AS primary_phone,
            {values('profiles.phones')} AS phones,
            {value('profiles.address')} AS address,
            profiles.external_customer_id,
            profiles.custom_attributes_json,
            profiles.created_at,
            profiles.updated_at,
            merges.survivor IS NULL AND NOT coalesce(profiles.deleted, false) AS active,
            coalesce(profiles.deleted, false) AS deleted,
            merges.survivor AS merged_into,
            absorbed.merged_ids
        FROM profiles
        LEFT JOIN merges ON merges.id = profiles.id
        LEFT JOIN (
            SELECT survivor, list(id ORDER BY id) AS merged_ids FROM merges GROUP BY survivor
        ) AS absorbed ON absorbed.survivor = profiles.id
        """,
        # Reference lists are unique by id; grouping keeps a duplicate from multiplying rows.
        "CREATE TEMP VIEW agents AS SELECT id, any_value(name) AS name FROM ref_agents "
        "GROUP BY id",
        "CREATE TEMP VIEW inboxes AS SELECT id, any_value(name) AS name FROM ref_inboxes "
        "GROUP BY id",
        """
        CREATE TEMP TABLE topics AS
        SELECT map_from_entries(list(struct_pack(k := id, v := name))) AS names
        FROM (SELECT id, any_value(name) AS name FROM ref_topics GROUP BY id)
        """,
        # An item is kept once: the copy in the latest partition. Ids in more than one
        # partition are rare (the checks report them), so only they are looked up, rather
        # than every item sorted with all its columns.
        """
        CREATE TEMP TABLE repeated_items AS
        SELECT id, max(date) AS date FROM raw_messages GROUP BY id HAVING count(*) > 1
        """,
        """
        CREATE TEMP VIEW items AS
        SELECT raw_messages.* EXCLUDE (date) FROM raw_messages
        ANTI JOIN repeated_items
            ON repeated_items.id = raw_messages.id AND repeated_items.date <> raw_messages.date
        """,
        # analytics/messages, unsorted.
        f"""
        CREATE TEMP VIEW messages AS
        SELECT
            items.id AS message_id,
            items.conversation_id,
            coalesce(merges.survivor, items.customer_id) AS contact_id,
            items.customer_id AS original_customer_id,
            items.timestamp AS created_at,
            coalesce(items.completed_at, items.timestamp) AS updated_at,
            CAST(items.timestamp AS DATE) AS day,
            items.content_type AS type,
            CASE items.content_type {channel} END AS channel,
            CASE
                WHEN items.content_type IN ({sql_list(INTERNAL_TYPES)}) THEN 'internal'
                WHEN items.initiator_type IN ({sql_list(INBOUND_SENDERS)}) THEN 'inbound'
                WHEN items.initiator_type IN ({sql_list(OUTBOUND_SENDERS)}) THEN 'outbound'
            END AS direction,
            items.initiator_type AS sender_type,
            items.initiator_id AS sender_id,
            CASE
                WHEN items.initiator_id = {sql_text(GLADLY_AI_ID)} THEN 'Gladly AI'
                WHEN items.initiator_type = 'AGENT' THEN agents.name
                WHEN items.initiator_type = 'CUSTOMER' THEN people.name
            END AS sender_name,
            {text('items.text')} AS content,
            {text('items.subject')} AS subject,
            {value('items.from_address')} AS from_address,
            {values('items.to_addresses')} AS to_addresses,
            {values('items.cc_addresses')} AS cc_addresses,
            items.message_type,
            items.status,
            items.recording_duration_seconds AS duration_seconds,
            items.attachment_count
        FROM items
        LEFT JOIN merges ON merges.id = items.customer_id
        LEFT JOIN people ON people.contact_id = coalesce(merges.survivor, items.customer_id)
        LEFT JOIN agents ON agents.id = items.initiator_id
        """,
        # The latest fetch of each conversation, its contact resolved through merges.
        """
        CREATE TEMP VIEW conversation_rows AS
        SELECT latest.*, coalesce(merges.survivor, latest.customer_id) AS contact_id
        FROM (
            SELECT * EXCLUDE (date) FROM raw_conversations
            QUALIFY row_number() OVER (PARTITION BY id ORDER BY fetched_at DESC, date DESC) = 1
        ) AS latest
        LEFT JOIN merges ON merges.id = latest.customer_id
        """,
    ]


def _same(expression: str) -> str:
    return expression


def _stats_query(bucket: str) -> str:
    """Per conversation: counts, first sender, first response and transcript.

    `bucket` is SQL that picks the conversations of one bucket (or `true` for all).
    """
    channel_counts = ",\n".join(
        f"count(*) FILTER (WHERE channel = {sql_text(name)}) AS {column}"
        for name, column in CHANNEL_COUNT_COLUMNS.items()
    )
    return f"""
WITH
labelled AS NOT MATERIALIZED (
    SELECT *,
        direction IN ('inbound', 'outbound') AS talk,
        direction IN ('inbound', 'outbound') OR type = 'CONVERSATION_NOTE' AS said,
        -- The transcript's line: [time] sender (role, channel): text
        '[' || strftime(created_at, '%Y-%m-%dT%H:%M:%SZ') || '] '
            || coalesce(sender_name, sender_type, 'UNKNOWN')
            || ' (' || CASE WHEN type = 'CONVERSATION_NOTE' THEN 'note'
                            ELSE lower(direction) END
            || ', ' || lower(coalesce(channel, 'INTERNAL')) || '): '
            || coalesce(content, subject, '(' || replace(lower(type), '_', ' ') || ')')
            AS line
    FROM messages
    WHERE conversation_id IS NOT NULL AND {bucket}
),
counted AS (
    SELECT
        conversation_id,
        -- Items without a known direction still count as messages.
        count(*) FILTER (WHERE direction IS DISTINCT FROM 'internal') AS message_count,
        count(*) FILTER (WHERE direction = 'inbound') AS inbound_messages,
        count(*) FILTER (WHERE direction = 'outbound') AS outbound_messages,
        count(*) FILTER (WHERE direction = 'internal') AS internal_items,
        {channel_counts},
        min(created_at) AS first_item_at,
        max(updated_at) AS last_activity_at,
        -- Who started it: the first non-empty value of each among the messages (arg_min
        -- keeps one value per group where an ordered aggregate would hold every row).
        arg_min(sender_type, (created_at, message_id))
            FILTER (WHERE talk AND sender_type IS NOT NULL) AS first_sender_type,
        arg_min(sender_id, (created_at, message_id))
            FILTER (WHERE talk AND sender_id IS NOT NULL) AS first_sender_id,
        arg_min(channel, (created_at, message_id))
            FILTER (WHERE talk AND channel IS NOT NULL) AS first_channel,
        min(created_at) FILTER (WHERE direction = 'inbound') AS asked_at,
        -- The lines in time order. Sorting each conversation's list costs far less time
        -- and memory than string_agg(... ORDER BY ...), which buffers every row.
        array_to_string(list_transform(
            list_sort(list(struct_pack(at := created_at, id := message_id, line := line))
                      FILTER (WHERE said)),
            lambda said_line: said_line.line), chr(10)) AS transcript
    FROM labelled
    GROUP BY conversation_id
),
-- From the customer's first message to the first agent reply after it: replies by
-- automation or Gladly AI are outbound, but they are not a response by the team.
responses AS (
    SELECT labelled.conversation_id,
           epoch(min(labelled.created_at) - counted.asked_at) AS first_response_seconds
    FROM labelled JOIN counted USING (conversation_id)
    WHERE labelled.direction = 'outbound' AND labelled.sender_type = 'AGENT'
      AND labelled.created_at >= counted.asked_at
    GROUP BY labelled.conversation_id, counted.asked_at
)
SELECT counted.*, responses.first_response_seconds
FROM counted LEFT JOIN responses USING (conversation_id)
"""


def stats_statements(buckets: int) -> list:
    """Fills the temporary table `stats`, one bucket of conversations at a time.

    The transcript's per-conversation lists are the one part of the rebuild DuckDB cannot
    spill; built for a bucket at a time, they take memory in proportion to the bucket, not
    to the history (see buckets_for).
    """
    if buckets <= 1:
        return ["CREATE TEMP TABLE stats AS " + _stats_query("true")]
    picks = [f"hash(conversation_id) % {buckets} = {bucket}" for bucket in range(buckets)]
    return (["CREATE TEMP TABLE stats AS " + _stats_query(picks[0])]
            + ["INSERT INTO stats " + _stats_query(pick) for pick in picks[1:]])


def buckets_for(items: int, memory_limit: str) -> int:
    """How many buckets keep the transcripts' lists of `items` raw items well within
    the memory limit (measured: about 1 KB of DuckDB memory per item, here doubled)."""
    per_bucket = max(1, memory_bytes(memory_limit) // BYTES_PER_ITEM)
    return max(1, -(-items // per_bucket))


UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_bytes(size: str) -> int:
    """'512MB' -> 512000000; the forms DataRoot accepts (a number and KB to TiB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*", size, re.IGNORECASE)
    if not match:
        raise ValueError(f"memory limit {size!r} is not a size such as 512MB or 2GB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def _conversations_query() -> str:
    channel_columns = ", ".join(
        f"coalesce({column}, 0) AS {column}" for column in CHANNEL_COUNT_COLUMNS.values()
    )
    return f"""
WITH
joined AS (
    SELECT
        conversation_rows.*,
        stats.* EXCLUDE (conversation_id),
        -- Items before the first extracted day are unknown: say so rather than guess.
        coalesce(stats.first_item_at <= conversation_rows.created_at
                 + INTERVAL {HISTORY_TOLERANCE_SECONDS} SECOND, false) AS history_complete
    FROM conversation_rows
    LEFT JOIN stats ON stats.conversation_id = conversation_rows.id
)
SELECT
    joined.id AS conversation_id,
    joined.contact_id,
    people.name AS contact_name,
    people.primary_email AS contact_email,
    joined.status,
    joined.created_at,
    -- Last activity: the newest item, or the close if Gladly reports a later one.
    greatest(joined.last_activity_at, joined.closed_at, joined.created_at) AS updated_at,
    joined.closed_at,
    joined.inbox_id,
    inboxes.name AS inbox_name,
    joined.agent_id,
    agents.name AS agent_name,
    joined.topic_ids,
    list_transform(joined.topic_ids, lambda t: topics.names[t]) AS topic_names,
    CASE WHEN history_complete THEN first_sender_type END AS initiator_type,
    CASE WHEN history_complete THEN first_sender_id END AS initiator_id,
    CASE WHEN history_complete THEN first_channel END AS first_channel,
    history_complete,
    coalesce(message_count, 0) AS message_count,
    coalesce(inbound_messages, 0) AS inbound_messages,
    coalesce(outbound_messages, 0) AS outbound_messages,
    coalesce(internal_items, 0) AS internal_items,
    {channel_columns},
    CASE WHEN history_complete THEN first_response_seconds END AS first_response_seconds,
    epoch(joined.closed_at - joined.created_at) AS resolution_seconds,
    transcript,
    joined.custom_attributes_json
FROM joined
CROSS JOIN topics
LEFT JOIN people ON people.contact_id = joined.contact_id
LEFT JOIN inboxes ON inboxes.id = joined.inbox_id
LEFT JOIN agents ON agents.id = joined.agent_id
ORDER BY conversation_id
"""


MESSAGES_QUERY = "SELECT * FROM messages ORDER BY created_at, message_id"

CONTACTS_QUERY = """
SELECT
    people.*,
    coalesce(span.conversation_count, 0) AS conversation_count,
    span.first_conversation_at,
    span.last_conversation_at
FROM people
LEFT JOIN (
    SELECT contact_id, count(*) AS conversation_count,
           min(created_at) AS first_conversation_at, max(created_at) AS last_conversation_at
    FROM conversation_rows
    GROUP BY contact_id
) AS span USING (contact_id)
ORDER BY contact_id
"""

CONVERSATIONS_QUERY = _conversations_query()

TABLE_QUERIES = {
    "messages": MESSAGES_QUERY,
    "conversations": CONVERSATIONS_QUERY,
    "contacts": CONTACTS_QUERY,
}
