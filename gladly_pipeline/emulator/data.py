"""Seeded synthetic Gladly account, shaped exactly as Gladly's REST API and export files return it.

`generate(cfg)` builds reference data, customers, conversations, conversation items, export
jobs and Events API events from `random.Random` streams derived from the seed, so the same config
(seed, `now`, sizes) always yields byte-identical JSON. Every dict here is the API's JSON:
camelCase keys, optional fields omitted rather than null, and the documented quirks of the
reference (docs/gladly-api.md) mixed in at the rates named by the `*_SHARE` constants below.

With `future_days` the account is generated past `now` and kept in a `_History`; a `Dataset` is
the account as seen at one instant, and `Dataset.at(later)` shows it once more time has passed.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from gladly_pipeline.emulator.faults import Fault

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# Hard caps of the unpaged list endpoints (reference §11).
ITEMS_CAP = 1000
CONVERSATIONS_CAP = 100
SEARCH_CAP = 50
RETENTION_DAYS = 14

SCHEDULES = ("daily", "daily-local", "hourly")
EXPORT_FILES = ["agents.jsonl", "conversation_items.jsonl", "customers.jsonl", "topics.jsonl"]
# Content types served by REST but absent from the export file schema (reference §7).
REST_ONLY_TYPES = ("VOICE_AI_MESSAGE", "TWITTER")

# Events API (reference §8). Only CONTACT, CONVERSATION, CUSTOMER and CUSTOMER_PROFILE events
# are generated; the other entities answer empty streams.
EVENT_ENTITIES = (
    "AGENT_AVAILABILITY",
    "AGENT_STATUS",
    "CONTACT",
    "CONVERSATION",
    "CUSTOMER",
    "CUSTOMER_PROFILE",
    "PAYMENT_REQUEST",
    "TASK",
)
EVENTS_LOOKBACK = 24 * HOUR  # startAt may be at most this old
# Event types whose entity is not their prefix. Which entity returns assignee events is open
# (reference §19 q7); CONVERSATION is the likeliest, so that is where the emulator puts them.
EVENT_ENTITY_OF = {"CONVERSATION_ASSIGNEE": "CONVERSATION"}
# Item content types that become CONTACT/MESSAGE_* events, with the event's channel (§12.8).
MESSAGE_CHANNELS = {
    "CHAT_MESSAGE": "CHAT",
    "EMAIL": "EMAIL",
    "SMS": "SMS",
    "FACEBOOK_MESSAGE": "FB_MESSENGER",
    "INSTAGRAM_DIRECT": "INSTAGRAM_DIRECT",
    "WHATSAPP": "WHATSAPP",
    "VOICEMAIL": "VOICEMAIL",
}
# Messages from these initiators come from outside the org: MESSAGE_RECEIVED, not _SENT.
INBOUND_INITIATORS = ("CUSTOMER", "INTERNAL", "EXTERNAL")
# Content types with no documented event; TWITTER and VOICE_AI have no event channel.
SILENT_TYPES = ("CUSTOMER_ACTIVITY", "TWITTER", "VOICE_AI_MESSAGE")

# Quirk rates. Each is a share of the things named; see reference §12 and §15.
NANO_TIMESTAMP_SHARE = 0.03  # items printed with 9 fraction digits
SHORT_FRACTION_SHARE = 0.015  # items printed with 1-2 fraction digits ("...12.07Z")
NO_FRACTION_SHARE = 0.005  # items printed without a fraction ("...12Z")
PROFILE_NANO_SHARE = 0.10  # profile timestamps with 9 fraction digits, as in the spec examples
EMAIL_WITHOUT_SUBJECT_SHARE = 0.05
CONVERSATION_WITHOUT_TOPICS_SHARE = 0.12  # plus unassigned and AI-only ones: ~15 % overall
STRING_RECORDING_DURATION_SHARE = 0.10  # of calls that have a recording
CHAT_WITHOUT_MESSAGE_TYPE_SHARE = 0.03  # of plain-text chat messages
PROFILE_WITHOUT_UPDATED_AT_SHARE = 0.04
PHONE_WITH_BLANK_TYPE_SHARE = 0.05
# With `unknown_shapes`: the share of text messages turned into an unknown content type, and
# (a separate draw) the share given an unknown top-level field.
UNKNOWN_SHAPE_SHARE = 0.05
UNKNOWN_CONTENT_TYPE = "CUSTOM_CHANNEL_MESSAGE"
UNKNOWN_ITEM_FIELD = "channelContext"
TEXT_MESSAGE_TYPES = ("CHAT_MESSAGE", "SMS", "WHATSAPP", "FACEBOOK_MESSAGE", "INSTAGRAM_DIRECT")
ACTIVITY_IN_CONVERSATION_SHARE = 0.08  # conversations holding a CUSTOMER_ACTIVITY
STANDALONE_ACTIVITY_SHARE = 0.08  # conversations whose customer also gets one with no conversation

CHANNEL_WEIGHTS = {
    "CHAT": 34,
    "EMAIL": 26,
    "PHONE": 16,
    "SMS": 10,
    "WHATSAPP": 5,
    "FACEBOOK": 4,
    "INSTAGRAM": 4,
    "TWITTER": 1,
}
# Gamma (shape, scale) of a conversation's item count by channel; other channels use (2, 4).
CONVERSATION_LENGTHS = {
    "CHAT": (2.5, 5.5),
    "EMAIL": (2.0, 3.5),
    "PHONE": (1.5, 2.0),
    "VOICE_AI": (1.5, 2.0),
}
# Local-time weights for when conversations start: quiet nights, busy office hours.
HOUR_WEIGHTS = [0.2] * 7 + [0.5, 1.0] + [1.8] * 9 + [1.0] * 3 + [0.5] * 3
WEEKDAY_WEIGHTS = [1.2, 1.1, 1.0, 1.0, 1.0, 0.6, 0.6]  # Monday first

# Item types that are not a message between the customer and the org.
NOT_MESSAGES = (
    "CONVERSATION_NOTE",
    "TOPIC_CHANGE",
    "CUSTOMER_ACTIVITY",
    "CONVERSATION_STATUS_CHANGE",
)
SIDEKICK = {"id": "SIDEKICK_V2", "type": "SYSTEM"}
SUPPORT_EMAIL = "support@acme-outfitters.example"
SUPPORT_PHONE = "+15550100100"
FACEBOOK_PAGE_ID = "104857600123456"

# fmt: off
# Name pools, kept dense: one name per line would only add length.
FIRST_NAMES = [
    "Ada", "Ben", "Carmen", "Dmitri", "Elif", "Farah", "Gustavo", "Hana", "Ines", "Jamal",
    "Keiko", "Liam", "Maya", "Nikhil", "Olga", "Priya", "Quentin", "Rosa", "Samuel", "Tariq",
    "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Chloe", "Diego",
]
LAST_NAMES = [
    "Okafor", "Lindqvist", "Garcia", "Petrov", "Yilmaz", "Haddad", "Silva", "Sato", "Moreau",
    "Johnson", "Tanaka", "Murphy", "Cohen", "Sharma", "Ivanova", "Patel", "Dubois", "Rossi",
    "Nguyen", "Khan", "Becker", "Kowalski", "Chen", "Lopez", "Adeyemi", "Fischer", "Park",
]
# fmt: on
STREETS = ["Maple", "Oak", "Harbor", "Mission", "Cedar", "Sunset", "Lake", "Hillcrest", "Union"]
CITIES = [
    ("Portland", "OR", "972"),
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Raleigh", "NC", "276"),
    ("Columbus", "OH", "432"),
    ("Tucson", "AZ", "857"),
]
EMAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]

CUSTOMER_LINES = [
    "Hi, where is my order? It was supposed to arrive yesterday.",
    "The jacket I received is the wrong size. Can I exchange it?",
    "I was charged twice for the same order.",
    "Can you help me reset my password?",
    "The box arrived damaged and one item is broken.",
    "Do you ship to Canada?",
    "Thanks, that worked!",
    "Any update on this?",
    "I'd like a refund please.",
    "Is the blue version coming back in stock?",
    "Great, thank you so much for your help.",
    "Sorry, one more question about my return label.",
]
AGENT_LINES = [
    "Thanks for reaching out! Let me look into that for you.",
    "I'm sorry about that. I've issued a replacement at no charge.",
    "Your order shipped this morning; the tracking link is in your email.",
    "I've processed the refund. It should appear in 3-5 business days.",
    "Could you share your order number so I can check?",
    "I've sent a prepaid return label to your email address.",
    "Happy to help! Is there anything else I can do for you?",
    "I've reset your account; you should receive a link shortly.",
]
AI_LINES = [
    "Hi! I'm the Acme assistant. I can help with orders, returns and billing.",
    "I found your order. It is out for delivery today.",
    "Let me connect you with a member of our team.",
    "You can start a return from your order history page.",
]
SUBJECTS = [
    "Order not received",
    "Wrong size",
    "Double charge",
    "Return request",
    "Damaged item",
    "Question about shipping",
    "Refund status",
    "Account access",
]
NOTE_BODIES = [
    "Customer verified by email. Replacement approved.",
    "Escalated to billing for the duplicate charge.",
    "Carrier claim opened, waiting on response.",
    "VIP customer - waived the return fee.",
    "Customer prefers SMS follow-ups.",
]
ACTIVITIES = [
    ("EMAIL", "Order confirmation sent", "Shopify"),
    ("ISSUE", "Payment dispute opened", "Stripe"),
    ("SMS", "Delivery notification", "Klaviyo"),
    ("SURVEY", "CSAT survey answered: 5/5", "Delighted"),
    ("ISSUE", "Return label created", "Loop Returns"),
]
RECORDING_SUMMARIES = [
    "Customer called about a late delivery; agent shared tracking and a discount code.",
    "Customer asked to change the shipping address; agent updated the order.",
]
TIERS = ["Bronze", "Silver", "Gold", "Platinum"]


@dataclass
class EmulatorConfig:
    """What the emulator generates and how it guards its API."""

    seed: int = 1
    now: datetime | None = None  # tz-aware; None = the current time, fixed when generated
    days: int = 14  # days of history before `now`
    conversations_per_day: int = 30
    schedule: str = "daily"  # "daily", "daily-local" or "hourly"
    org_timezone: str = "America/New_York"
    rate_limit_per_second: int | None = 10  # per org; None or 0 disables the limit
    username: str = "agent@example.com"
    api_token: str = "emulator-token"
    merged_customer_share: float = 0.03
    big_conversation_items: int = 0  # > 0 adds one conversation with that many items
    forbidden_usernames: frozenset[str] = frozenset()  # valid credentials that get 403
    failed_job: bool = True  # add one FAILED job (retried by a COMPLETED one) when possible
    # > 0: the newest that many COMPLETED jobs at `now` stay listed but their files answer 404.
    missing_file_jobs: int = 0
    # Days generated after `now`, hidden until `Emulator.set_now` moves the clock onto them.
    future_days: int = 0
    # Faults armed when the server starts (see faults.py); the data does not depend on them.
    faults: tuple[Fault, ...] = ()
    # Items as Gladly may send them after adding features it documents as non-breaking
    # (reference §2.2): content type CUSTOM_CHANNEL_MESSAGE and an unknown top-level field.
    unknown_shapes: bool = False
    # > 0: each job's items file also lists the last that many items before its window, as if
    # re-exported after an edit (whether Gladly does this is open, reference §19 q5).
    duplicate_items: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.now is not None and self.now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        if self.days < 1 or self.conversations_per_day < 0:
            raise ValueError("days must be >= 1 and conversations_per_day >= 0")
        if min(self.missing_file_jobs, self.future_days, self.duplicate_items) < 0:
            raise ValueError("missing_file_jobs, future_days and duplicate_items must be >= 0")
        if not all(isinstance(fault, Fault) for fault in self.faults):
            raise ValueError("faults must be Fault instances")
        ZoneInfo(self.org_timezone)  # fails early on an unknown zone


@dataclass(repr=False)
class Dataset:
    """The account as the API shows it at `now`: API-shaped records plus the server's lookups.

    Nothing here happened after `now`. `at(later)` gives the same account once the clock has
    moved on, revealing what was generated for the days after `now` (`future_days`).
    """

    now: datetime
    organization: dict
    agents: list[dict]
    inboxes: list[dict]
    teams: list[dict]
    topics: list[dict]
    customers: dict[str, dict]  # live profiles by id
    merged: dict[str, str]  # merged-away id -> surviving id
    former_profiles: dict[str, dict]  # merged-away id -> its profile before the merge
    conversations: dict[str, dict]
    items: list[dict]  # ascending by timestamp
    jobs: list[dict]  # every job that has finished by `now`, ascending by updatedAt
    schedule: dict
    item_times: list[int] = field(default_factory=list)  # epoch ms, parallel to `items`
    events: list[dict] = field(default_factory=list)  # Events API lines, ascending by timestamp
    event_times: list[int] = field(default_factory=list)  # epoch ms, parallel to `events`
    # Ids of jobs whose files answer 404; shared by every view of one history, so it persists.
    files_gone: set[str] = field(default_factory=set)
    duplicate_items: int = 0  # items before a job's window that its items file repeats
    history: _History | None = None
    items_by_id: dict[str, dict] = field(default_factory=dict)
    items_by_conversation: dict[str, list[dict]] = field(default_factory=dict)
    conversations_by_customer: dict[str, list[dict]] = field(default_factory=dict)
    customers_by_email: dict[str, list[str]] = field(default_factory=dict)
    customers_by_phone: dict[str, list[str]] = field(default_factory=dict)
    customers_by_external_id: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Dataset(now={format_ms(to_ms(self.now))}, customers={len(self.customers)}, "
            f"conversations={len(self.conversations)}, items={len(self.items)}, "
            f"jobs={len(self.jobs)}, events={len(self.events)})"
        )

    def api_json(self) -> dict:
        """Everything the API can serve, for comparing datasets."""
        return {
            "organization": self.organization,
            "agents": self.agents,
            "inboxes": self.inboxes,
            "teams": self.teams,
            "topics": self.topics,
            "customers": self.customers,
            "merged": self.merged,
            "conversations": self.conversations,
            "items": self.items,
            "jobs": self.jobs,
            "schedule": self.schedule,
            "events": self.events,
        }

    @property
    def horizon(self) -> datetime:
        """The last instant generated: `now` plus `future_days` at generation."""
        return from_ms(self.history.horizon) if self.history else self.now

    def at(self, moment: datetime) -> Dataset:
        """The same account seen at `moment` (UTC, up to the horizon), as a new Dataset."""
        if self.history is None:
            raise ValueError("this dataset was not generated; it has no history to replay")
        return self.history.view(to_ms(moment.astimezone(UTC)))

    def is_retained(self, job: dict) -> bool:
        """Whether the job is still listed: finished within the 14-day retention."""
        finished = to_ms(parse_timestamp(job["updatedAt"]))
        return finished >= to_ms(self.now) - RETENTION_DAYS * DAY

    def visible_jobs(self) -> list[dict]:
        return [job for job in self.jobs if self.is_retained(job)]

    def expire_files(self, job_id: str) -> None:
        """Make a job's files answer 404 from now on, while the job stays listed."""
        if self.history and job_id not in self.history.job_ids:
            raise KeyError(f"no export job {job_id} was generated")
        self.files_gone.add(job_id)

    def export_items(self, job: dict) -> Iterator[dict]:
        """The job's conversation_items.jsonl lines: items timestamped in [startAt, endAt),
        then the `duplicate_items` exportable items just before the window, if configured."""
        start = to_ms(parse_timestamp(job["parameters"]["startAt"]))
        end = to_ms(parse_timestamp(job["parameters"]["endAt"]))
        first = bisect.bisect_left(self.item_times, start)
        last = bisect.bisect_left(self.item_times, end)
        for index in range(first, last):
            item = self.items[index]
            if item["content"]["type"] not in REST_ONLY_TYPES:
                yield export_item(item)
        yield from self._exported_before(first, self.duplicate_items)

    def _exported_before(self, index: int, count: int) -> Iterator[dict]:
        """The last `count` exportable items before position `index`, ascending."""
        found: list[dict] = []
        while index > 0 and len(found) < count:
            index -= 1
            if self.items[index]["content"]["type"] not in REST_ONLY_TYPES:
                found.append(export_item(self.items[index]))
        yield from reversed(found)

    def reindex(self) -> None:
        """Rebuild the server's lookups after records were changed in place."""
        self.items_by_id, self.items_by_conversation = {}, {}
        self.conversations_by_customer = {}
        self.customers_by_email, self.customers_by_phone = {}, {}
        self.customers_by_external_id = {}
        _index(self)

    def export_customers(self, job: dict) -> Iterator[dict]:
        """The job's customers.jsonl lines: reduced profiles of every customer its items name."""
        seen: dict[str, None] = {}
        for item in self.export_items(job):
            seen.setdefault(item["customerId"])
        for customer_id in seen:
            profile = self.customers.get(customer_id) or self.former_profiles[customer_id]
            yield reduced_profile(profile)

    def events_between(self, start_ms: int, end_ms: int, entities: set[str]) -> Iterator[dict]:
        """Events of the given entity types with start <= timestamp < end, ascending."""
        first = bisect.bisect_left(self.event_times, start_ms)
        last = bisect.bisect_left(self.event_times, end_ms)
        for index in range(first, last):
            event = self.events[index]
            if event_entity(event) in entities:
                yield event


def event_entity(event: dict) -> str:
    """The `entities` value that returns an event: its type's prefix, save for the exceptions."""
    prefix = event["type"].partition("/")[0]
    return EVENT_ENTITY_OF.get(prefix, prefix)


# ---------------------------------------------------------------- time and ids


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, Gladly's usual form: 2024-09-14T10:11:12.345Z."""
    seconds, millis = divmod(ms, SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?")


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 / ISO 8601 with 0-9 fraction digits; no offset means UTC."""
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}")
    moment = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S")
    micros = int((match[2] or "0")[:6].ljust(6, "0"))
    offset = match[3] or "Z"
    if offset.upper() == "Z":
        zone = UTC
    else:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        zone = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return moment.replace(microsecond=micros, tzinfo=zone).astimezone(UTC)


def styled_timestamp(rng: random.Random, ms: int, nano_share: float = 0.0) -> tuple[int, str]:
    """Print an instant with the varied precision Gladly uses; returns (instant printed, text).

    Dropping digits moves the instant back a little, so callers keep the returned value to stay
    consistent with the text (items are always at least a second apart, so order survives).
    """
    roll = rng.random()
    seconds_text = format_ms(ms)[:-5]
    if roll < nano_share:
        return ms, f"{seconds_text}.{ms % SECOND:03d}{rng.randrange(10**6):06d}Z"
    roll -= nano_share
    if roll < SHORT_FRACTION_SHARE:
        ms -= ms % 10
        fraction = f"{ms % SECOND:03d}".rstrip("0") or "0"
        return ms, f"{seconds_text}.{fraction}Z"
    if roll < SHORT_FRACTION_SHARE + NO_FRACTION_SHARE:
        return ms - ms % SECOND, f"{seconds_text}Z"
    return ms, format_ms(ms)


# Bits of a 128-bit UUID that RFC 4122 fixes: the version nibble and the variant.
_UUID_FIXED_MASK = (0xF000 << 64) | (0xC000 << 48)
_UUID_V4_BITS = (0x4000 << 64) | (0x8000 << 48)


def new_id(rng: random.Random) -> str:
    """A Gladly id: URL-safe base64 (unpadded, 22 chars) of a random version-4 UUID."""
    value = (rng.getrandbits(128) & ~_UUID_FIXED_MASK) | _UUID_V4_BITS
    return base64.urlsafe_b64encode(value.to_bytes(16, "big")).decode("ascii")[:22]


def export_item(item: dict) -> dict:
    """An item as a conversation_items.jsonl line: the export schema has no `sessionId`."""
    if "sessionId" not in item:
        return item
    return {key: value for key, value in item.items() if key != "sessionId"}


def reduced_profile(profile: dict) -> dict:
    """A customers.jsonl line: the reduced profile of reference §12.3."""
    line = {"id": profile["id"]}
    for key in ("name", "address"):
        if key in profile:
            line[key] = profile[key]
    line["emailAddresses"] = [email["original"] for email in profile.get("emails", [])]
    line["phoneNumbers"] = [phone["normalized"] for phone in profile.get("phones", [])]
    for key in ("externalCustomerId", "externalCustomerIds"):
        if key in profile:
            line[key] = profile[key]
    return line


def resolve_now(cfg: EmulatorConfig) -> datetime:
    """The config's `now` in UTC, or the current time to the millisecond."""
    moment = cfg.now or datetime.now(UTC)
    return from_ms(to_ms(moment.astimezone(UTC)))


# ---------------------------------------------------------------- generation


def generate(cfg: EmulatorConfig) -> Dataset:
    """Build the whole account for `cfg` and show it at `now`; deterministic for the same config.

    Everything up to `now + future_days` is generated here; later clocks only reveal it.
    """
    now = resolve_now(cfg)
    horizon = now + timedelta(days=cfg.future_days)
    first = now - timedelta(days=cfg.days)
    reference = _reference_data(random.Random(f"{cfg.seed}/reference"), cfg)
    rng = random.Random(f"{cfg.seed}/activity")
    builder = _AccountBuilder(cfg, to_ms(first), to_ms(horizon), reference, rng)
    builder.build()
    rng = random.Random(f"{cfg.seed}/jobs")
    schedule, jobs, boundaries = _export_jobs(rng, cfg, first, horizon)
    builder.planned.sort(key=lambda entry: (entry[0], entry[1]))
    history = _History(
        horizon=to_ms(horizon),
        reference=reference,
        customers=builder.customers,
        former_profiles=builder.former_profiles,
        profile_times=builder.profile_times,
        merges=builder.merges,
        plans=builder.plans,
        entries=[(ms, end, item) for ms, _, end, item in builder.planned],
        jobs=jobs,
        schedule=schedule,
        boundaries=boundaries,
        files_gone=_missing_file_jobs(jobs, to_ms(now), cfg.missing_file_jobs),
        duplicate_items=cfg.duplicate_items,
    )
    # A stream of its own, so adding events changed none of the records above.
    history.events = _events(random.Random(f"{cfg.seed}/events"), history, reference)
    if cfg.unknown_shapes:
        _add_unknown_shapes(random.Random(f"{cfg.seed}/unknown-shapes"), history.entries)
    return history.view(to_ms(now))


def _add_unknown_shapes(rng: random.Random, entries: list[tuple[int, int, dict]]) -> None:
    """Turn some text messages into what a client written today has not seen (§2.2, §19 q8).

    Runs after everything else is generated, from a stream of its own, so the rest of the
    account (events included, which keep the message's original channel) stays the same.
    """
    messages = [item for _, _, item in entries if item["content"]["type"] in TEXT_MESSAGE_TYPES]
    if not messages:
        return
    count = max(1, round(len(messages) * UNKNOWN_SHAPE_SHARE))
    for item in rng.sample(messages, count):
        item["content"] = {
            "type": UNKNOWN_CONTENT_TYPE,
            "customChannelId": new_id(rng),
            "content": item["content"].get("content", ""),
        }
    for item in rng.sample(messages, count):
        item[UNKNOWN_ITEM_FIELD] = {"provider": "custom-channel", "deliveryAttempt": 1}


def _index(dataset: Dataset) -> None:
    """Build the lookups the server answers from; items are already in timestamp order."""
    for item in dataset.items:
        dataset.items_by_id[item["id"]] = item
        if "conversationId" in item:
            dataset.items_by_conversation.setdefault(item["conversationId"], []).append(item)
    for conversation in dataset.conversations.values():
        owner = dataset.conversations_by_customer.setdefault(conversation["customerId"], [])
        owner.append(conversation)
    for owned in dataset.conversations_by_customer.values():
        owned.sort(key=lambda conversation: conversation["createdAt"])  # all millisecond Z
    for profile in dataset.customers.values():
        for email in profile.get("emails", []):
            dataset.customers_by_email.setdefault(email["normalized"], []).append(profile["id"])
        for phone in profile.get("phones", []):
            dataset.customers_by_phone.setdefault(phone["normalized"], []).append(profile["id"])
        if "externalCustomerId" in profile:
            by_external = dataset.customers_by_external_id
            by_external.setdefault(profile["externalCustomerId"], []).append(profile["id"])


def _missing_file_jobs(jobs: list[tuple[int, dict]], now: int, count: int) -> set[str]:
    """Ids of the newest `count` COMPLETED jobs finished by `now`.

    The very newest is included: it is the one a client reaches first, so a test sees the
    404 without first consuming older jobs. Jobs that finish after `now` keep their files.
    """
    if count <= 0:
        return set()
    completed = [job["id"] for ms, job in jobs if ms <= now and job["status"] == "COMPLETED"]
    return set(completed[-count:])


# ---------------------------------------------------------------- history and views


@dataclass
class _Merge:
    """One profile merge: when, which ids, and the contacts the survivor gained by it."""

    ms: int
    old: str
    new: str
    emails: frozenset[str]
    phones: frozenset[str]


@dataclass
class _ConversationPlan:
    """One conversation as generated up to the horizon; its record depends on the clock."""

    id: str
    customer_id: str  # before any merge; items keep this id
    inbox_id: str
    entries: list[tuple[int, int, dict]]  # (timestamp ms, end ms, item), ascending
    agent: dict | None = None  # the assignee's initiator dict
    assigned_at: int | None = None
    assigned_reason: str = ""
    custom_attributes: list[dict] | None = None

    def record(self, entries: list[tuple[int, int, dict]], at: int, customer_id: str) -> dict:
        """The conversation as GET /conversations/{id} shows it once `entries` have happened."""
        conversation = {
            "id": self.id,
            "customerId": customer_id,
            "createdAt": format_ms(entries[0][0]),
            "inboxId": self.inbox_id,
        }
        status, closed_at = _status(entries)
        conversation["status"] = status
        if self.agent and self.assigned_at is not None and self.assigned_at <= at:
            conversation["agentId"] = self.agent["id"]
        if closed_at is not None:
            conversation["closedAt"] = format_ms(closed_at)
        topic_ids = _applied_topics(entries)
        if topic_ids:
            conversation["topicIds"] = topic_ids
        if self.custom_attributes:
            conversation["customAttributes"] = self.custom_attributes
        return conversation


def _drop_contacts(profile: dict, key: str, normalized: set[str]) -> None:
    """Remove the emails or phones a merge had not yet brought; no empty lists are left."""
    kept = [entry for entry in profile.get(key, []) if entry["normalized"] not in normalized]
    if kept:
        profile[key] = kept
    else:
        profile.pop(key, None)


def _status(entries: list[tuple[int, int, dict]]) -> tuple[str, int | None]:
    """A conversation's status after its entries, and when it closed if it is CLOSED."""
    statuses = [
        (ms, item["content"]["status"])
        for ms, _, item in entries
        if item["content"]["type"] == "CONVERSATION_STATUS_CHANGE"
    ]
    if statuses and statuses[-1][1] == "CLOSED":
        return "CLOSED", statuses[-1][0]
    messages = [item for _, _, item in entries if item["content"]["type"] not in NOT_MESSAGES]
    if messages and messages[-1]["initiator"]["type"] == "AGENT":
        return "WAITING", None
    return "OPEN", None


def _applied_topics(entries: list[tuple[int, int, dict]]) -> list[str]:
    topics: dict[str, None] = {}
    for _, _, item in entries:
        content = item["content"]
        if content["type"] == "TOPIC_CHANGE":
            topics.update(dict.fromkeys(content.get("addedTopicIds", [])))
            for removed in content.get("removedTopicIds", []):
                topics.pop(removed, None)
    return list(topics)


@dataclass
class _History:
    """Everything generated up to the horizon; `view(ms)` is the account as of that instant.

    Records whose state changes over time (conversations, merged and updated profiles, the
    schedule's nextStartAt) are rebuilt per view; items, jobs and events are only filtered.
    """

    horizon: int
    reference: dict
    customers: dict[str, dict]  # live at the horizon, in creation order
    former_profiles: dict[str, dict]
    profile_times: dict[str, tuple[int, int | None]]  # id -> (createdAt, updatedAt) in ms
    merges: list[_Merge]
    plans: dict[str, _ConversationPlan]
    entries: list[tuple[int, int, dict]]  # (timestamp ms, end ms, item), ascending
    jobs: list[tuple[int, dict]]  # (updatedAt ms, job), ascending
    schedule: dict
    boundaries: list[int]  # export window boundaries, ms, the last one after the horizon
    files_gone: set[str]
    events: list[tuple[int, dict]] = field(default_factory=list)  # (timestamp ms, event)
    duplicate_items: int = 0

    @property
    def job_ids(self) -> set[str]:
        return {job["id"] for _, job in self.jobs}

    def view(self, at: int) -> Dataset:
        """The account at `at` (epoch ms): only what had happened by then."""
        if at > self.horizon:
            raise ValueError(
                f"{format_ms(at)} is past the generated horizon {format_ms(self.horizon)}; "
                "generate more future_days"
            )
        merged = {merge.old: merge.new for merge in self.merges if merge.ms <= at}
        # An item exists once it has ended (a call is listed when it is over), as at generation.
        count = bisect.bisect_right(self.entries, at, key=lambda entry: entry[0])
        entries = [entry for entry in self.entries[:count] if entry[1] <= at]
        events = self.events[: bisect.bisect_right(self.events, at, key=lambda entry: entry[0])]
        dataset = Dataset(
            now=from_ms(at),
            organization=self.reference["organization"],
            agents=self.reference["agents"],
            inboxes=self.reference["inboxes"],
            teams=self.reference["teams"],
            topics=self.reference["topics"],
            customers=self._customers_at(at),
            merged=merged,
            former_profiles={old: self.former_profiles[old] for old in merged},
            conversations=self._conversations_at(at, merged),
            items=[item for _, _, item in entries],
            jobs=[job for ms, job in self.jobs if ms <= at],
            schedule=self._schedule_at(at),
            item_times=[ms for ms, _, _ in entries],
            events=[event for _, event in events],
            event_times=[ms for ms, _ in events],
            files_gone=self.files_gone,
            duplicate_items=self.duplicate_items,
            history=self,
        )
        _index(dataset)
        return dataset

    def _conversations_at(self, at: int, merged: dict[str, str]) -> dict[str, dict]:
        conversations = {}
        for plan in self.plans.values():
            entries = [entry for entry in plan.entries if entry[1] <= at]
            if entries:  # a conversation exists once one of its items does
                customer_id = merged.get(plan.customer_id, plan.customer_id)
                conversations[plan.id] = plan.record(entries, at, customer_id)
        return conversations

    def _customers_at(self, at: int) -> dict[str, dict]:
        """Profiles created by `at`; ids merged away later are still live, survivors leaner."""
        pending = [merge for merge in self.merges if merge.ms > at]
        gains: dict[str, list[_Merge]] = {}
        for merge in pending:
            gains.setdefault(merge.new, []).append(merge)
        live = {}
        for customer_id, profile in self.customers.items():
            if self.profile_times[customer_id][0] <= at:
                live[customer_id] = self._profile_at(profile, at, gains.get(customer_id, []))
        for merge in pending:
            if self.profile_times[merge.old][0] <= at:
                live[merge.old] = self._profile_at(self.former_profiles[merge.old], at, [])
        return live

    def _profile_at(self, profile: dict, at: int, gains: list[_Merge]) -> dict:
        """The profile before merges still to come and before an update still to come.

        Only the last update is known, so until then `updatedAt` equals `createdAt`.
        """
        updated = self.profile_times[profile["id"]][1]
        if not gains and (updated is None or updated <= at):
            return profile  # the common case: shared, not copied
        earlier = dict(profile)
        if updated is not None and updated > at:
            earlier["updatedAt"] = profile["createdAt"]
        if gains:
            emails = {email for merge in gains for email in merge.emails}
            phones = {phone for merge in gains for phone in merge.phones}
            _drop_contacts(earlier, "emails", emails)
            _drop_contacts(earlier, "phones", phones)
        return earlier

    def _schedule_at(self, at: int) -> dict:
        """The schedule with `nextStartAt` = the first window boundary after `at`."""
        next_start = self.boundaries[bisect.bisect_right(self.boundaries, at)]
        return dict(self.schedule, nextStartAt=format_ms(next_start))


def _reference_data(rng: random.Random, cfg: EmulatorConfig) -> dict:
    """Organization, agents, inboxes, teams and topics."""
    organization = {
        "id": new_id(rng),
        "loginDomain": "acme-outfitters",
        "name": "Acme Outfitters",
        "timezone": cfg.org_timezone,
        "gladlyUrl": "https://acme-outfitters.us-1.gladly.com",
    }
    agents = []
    for first, last in zip(FIRST_NAMES[:27:3], LAST_NAMES[1::3], strict=True):
        email = f"{first.lower()}.{last.lower()}@acme-outfitters.example"
        agents.append({"id": new_id(rng), "name": f"{first} {last}", "emailAddress": email})
    # The API user is an agent too; API-initiated items carry its id.
    agents.append({"id": new_id(rng), "name": "API Integration", "emailAddress": cfg.username})
    inbox_names = [
        ("Support", False),
        ("Billing", False),
        ("VIP", False),
        ("Returns", False),
        ("Legacy Email", True),
    ]
    inboxes = [{"id": new_id(rng), "name": name, "disabled": off} for name, off in inbox_names]
    people = agents[:-1]
    teams = [
        _team(rng, "Tier 1", "Front-line chat, SMS and social", people[:5]),
        _team(rng, "Tier 2", "Escalations and phone", people[5:]),
        _team(rng, "Billing Specialists", "Refunds, charges and disputes", people[3:7]),
    ]
    return {
        "organization": organization,
        "agents": agents,
        "inboxes": inboxes,
        "teams": teams,
        "topics": _topics(rng),
    }


def _team(rng: random.Random, name: str, description: str, members: list[dict]) -> dict:
    agent_ids = [agent["id"] for agent in members]
    return {"id": new_id(rng), "name": name, "description": description, "agentIds": agent_ids}


def _topics(rng: random.Random) -> list[dict]:
    """A two-level topic tree; "Refund" appears twice, since topic names are not unique."""
    tree = {
        "Orders": ["Where is my order", "Damaged item", "Cancel order"],
        "Billing": ["Refund", "Payment failed"],
        "Returns": ["Refund", "Exchange"],
        "Product Questions": ["Sizing"],
        "Account": ["Password reset"],
    }
    topics = []
    for parent_name, children in tree.items():
        parent = {"id": new_id(rng), "name": parent_name, "disabled": False}
        topics.append(parent)
        for child in children:
            topics.append(
                {"id": new_id(rng), "name": child, "disabled": False, "parentId": parent["id"]}
            )
    topics.append({"id": new_id(rng), "name": "Legacy Promo", "disabled": True})
    return topics


_CHANNELS = list(CHANNEL_WEIGHTS)
_CHANNEL_CUMULATIVE = list(itertools.accumulate(CHANNEL_WEIGHTS.values()))


def _pick_channel(rng: random.Random) -> str:
    return rng.choices(_CHANNELS, cum_weights=_CHANNEL_CUMULATIVE)[0]


def _log_uniform(rng: random.Random, low_ms: int, high_ms: int) -> int:
    """A delay between low and high, most of them short, as response times are."""
    return int(math.exp(rng.uniform(math.log(low_ms), math.log(high_ms))))


def _utc_day(ms: int) -> int:
    return ms // DAY


def _beside_evented(entries: list[tuple[int, int, dict]], at: int, horizon: int) -> int:
    """Move an activity time, if needed, onto a UTC day when its conversation has events.

    Activities have no event, so a client that follows the Events API reads a conversation's
    items only for the days it saw events on; in real accounts an order or survey record
    arrives alongside the messages. Only items that end by the horizon count (the rest are
    dropped). `at` stays when its day has such an item and `at` is a second or more after the
    first item (the second survives `styled_timestamp` dropping digits, so the activity never
    becomes the first item); else it moves just after the latest evented item before it. The
    day-mate may come later that day, so a view of the clock in between shows the activity
    before any event of its day. Draws nothing from the generator: other records stay as they
    were.
    """
    if at > horizon + SECOND:
        return at  # dropped with everything after the horizon (a second covers digit drops)
    evented = [
        entry
        for index, entry in enumerate(entries)
        if entry[1] <= horizon and (index == 0 or entry[2]["content"]["type"] not in SILENT_TYPES)
    ]
    same_day = any(_utc_day(entry[0]) == _utc_day(at) for entry in evented)
    if same_day and at >= entries[0][0] + SECOND:
        return at
    before = [entry for entry in evented if entry[0] <= at]
    if not before:  # the first item is still going on at the horizon: so is the activity
        return entries[0][1] + MINUTE
    start, end, _ = max(before, key=lambda entry: entry[0])
    after = end + MINUTE
    return after if _utc_day(after) == _utc_day(start) else start + SECOND


# ---------------------------------------------------------------- conversations


class _Thread:
    """One conversation's items, planned in time order before `now` cuts them off."""

    def __init__(self, builder: _AccountBuilder, customer_id: str, channel: str, start: int):
        self.builder = builder
        self.rng = builder.rng
        self.id = new_id(self.rng)
        self.customer_id = customer_id
        self.customer = {"id": customer_id, "type": "CUSTOMER"}
        self.channel = channel
        self.agent: dict | None = None  # the assignee's initiator dict
        self.assigned_at: int | None = None
        self.assigned_reason = ""  # for the CONVERSATION_ASSIGNEE/UPDATED event
        self.chat_session = new_id(self.rng)
        self.subject = self.rng.choice(SUBJECTS)
        self.entries: list[tuple[int, int, dict]] = []  # (timestamp ms, end ms, item)
        self.ms = start
        self.text = ""
        self.move_to(start)

    def move_to(self, ms: int) -> None:
        """Set the clock for the next item, choosing how its timestamp will be printed."""
        self.ms, self.text = styled_timestamp(self.rng, ms, NANO_TIMESTAMP_SHARE)

    def wait(self, low_ms: int, high_ms: int) -> None:
        """Move the clock on after the previous item ends, by a delay in [low, high]."""
        last_end = self.entries[-1][1] if self.entries else self.ms
        self.move_to(max(last_end, self.ms) + _log_uniform(self.rng, low_ms, high_ms))

    def add(
        self,
        initiator: dict,
        content: dict,
        *,
        item_id: str | None = None,
        session: str | None = None,
        responder: dict | None = None,
        duration: int = 0,
    ) -> str:
        """Append an item at the clock's time; `duration` is how long it lasts (calls)."""
        item = {
            "id": item_id or new_id(self.rng),
            "conversationId": self.id,
            "customerId": self.customer_id,
        }
        if session:
            item["sessionId"] = session
        item["timestamp"] = self.text
        item["initiator"] = initiator
        if responder:
            item["responder"] = responder
        item["content"] = content
        self.entries.append((self.ms, self.ms + duration, item))
        if self.agent and self.assigned_at is None and self.agent in (initiator, responder):
            self.assigned_at = self.ms
            # An agent's own first message takes the conversation; a call is routed to them.
            outbound = initiator == self.agent
            self.assigned_reason = "MESSAGE_OUTBOUND" if outbound else "AUTOMATED_ASSIGNMENT"
        return item["id"]

    def insert(self, initiator: dict, content: dict, ms: int, text: str) -> None:
        """Slot an item in between the ones already planned."""
        item = {
            "id": new_id(self.rng),
            "conversationId": self.id,
            "customerId": self.customer_id,
            "timestamp": text,
            "initiator": initiator,
            "content": content,
        }
        self.entries.append((ms, ms, item))
        self.entries.sort(key=lambda entry: entry[0])


class _AccountBuilder:
    """Generates customers, conversations and their items in chronological order.

    Time runs from `start` to `horizon` (`now`, plus any future days); nothing is cut at `now`
    here, the views of `_History` hide what has not happened yet.
    """

    def __init__(
        self, cfg: EmulatorConfig, start: int, horizon: int, reference: dict, rng: random.Random
    ):
        self.cfg = cfg
        self.horizon = horizon
        self.start = start
        self.rng = rng
        self.zone = ZoneInfo(cfg.org_timezone)
        self.agents = [{"id": agent["id"], "type": "AGENT"} for agent in reference["agents"][:-1]]
        self.api_user = {"id": reference["agents"][-1]["id"], "type": "API"}
        self.automation = {"id": new_id(rng), "type": "AUTOMATION"}
        self.inboxes = {inbox["name"]: inbox["id"] for inbox in reference["inboxes"]}
        self.leaf_topics = [t["id"] for t in reference["topics"] if "parentId" in t]
        self.attribute_ids = [new_id(rng) for _ in range(3)]
        self.customers: dict[str, dict] = {}
        self.former_profiles: dict[str, dict] = {}
        self.merges: list[_Merge] = []
        self.plans: dict[str, _ConversationPlan] = {}
        self.profile_times: dict[str, tuple[int, int | None]] = {}
        self.planned: list[tuple[int, int, int, dict]] = []  # (timestamp, sequence, end, item)
        self.touched: dict[str, list[int]] = {}  # customer id -> [created ms, last touched ms]
        self.free_at: dict[str, int | None] = {}  # when the customer's last conversation closes
        self.social_ids: dict[str, str] = {}
        self.recent: list[str] = []  # customer ids in order of creation
        self.used: set[str] = set()  # emails and phone numbers already taken

    def build(self) -> None:
        forced = ["TWITTER", "VOICE_AI"]  # rare kinds that even a tiny dataset should show
        for start in self._conversation_starts():
            self._conversation(start, forced.pop(0) if forced else None)
        if self.cfg.big_conversation_items > 0:
            self._big_conversation(self.cfg.big_conversation_items)
        self._merge_customers()
        for customer_id, profile in [*self.customers.items(), *self.former_profiles.items()]:
            self._stamp_profile(customer_id, profile)

    def _conversation_starts(self) -> Iterator[int]:
        """Start times, hour by hour, following local office hours and weekdays."""
        per_hour = self.cfg.conversations_per_day / 24 / (sum(HOUR_WEIGHTS) / 24)
        for slot in range(self.start, self.horizon, HOUR):
            local = from_ms(slot).astimezone(self.zone)
            expected = per_hour * HOUR_WEIGHTS[local.hour] * WEEKDAY_WEIGHTS[local.weekday()]
            count = int(expected + self.rng.random())
            span = min(HOUR, self.horizon - slot)
            yield from sorted(slot + self.rng.randrange(span) for _ in range(count))

    # ------------------------------------------------------------ customers

    def _customer_for(self, channel: str, start: int) -> str:
        """A returning customer who is free and reachable on the channel, or a new one."""
        if self.recent and self.rng.random() < 0.3:
            ids = self.recent[-400:]
            for _ in range(3):
                candidate = self.rng.choice(ids)
                free = self.free_at.get(candidate, start)
                if free is not None and free < start and self._reachable(candidate, channel):
                    return candidate
        return self._new_customer(channel, start)

    def _reachable(self, customer_id: str, channel: str) -> bool:
        profile = self.customers[customer_id]
        if channel == "EMAIL":
            return "emails" in profile
        if channel in ("PHONE", "VOICE_AI", "SMS", "WHATSAPP"):
            return "phones" in profile
        return True

    def _new_customer(self, channel: str, first_contact: int) -> str:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        profile: dict = {"id": new_id(rng)}
        if rng.random() < 0.97:
            profile["name"] = f"{first} {last}"
        if rng.random() < 0.1:
            profile["image"] = f"https://cdn.acme-outfitters.example/avatars/{profile['id']}.png"
        if rng.random() < 0.7:
            profile["address"] = self._address()
        if channel == "EMAIL" or rng.random() < 0.9:
            profile["emails"] = [self._email(first, last)]
        if channel in ("PHONE", "VOICE_AI", "SMS", "WHATSAPP") or rng.random() < 0.75:
            profile["phones"] = [self._phone(primary=True)]
        self._external_ids(profile)
        if rng.random() < 0.85:
            profile["customAttributes"] = self._custom_attributes()
        created = first_contact - rng.choice(
            [rng.randrange(5, 60) * SECOND, rng.randrange(1, 900) * DAY]
        )
        self.customers[profile["id"]] = profile
        self.recent.append(profile["id"])
        self.touched[profile["id"]] = [created, first_contact]
        return profile["id"]

    def _address(self) -> str:
        city, state, zip_prefix = self.rng.choice(CITIES)
        street = f"{self.rng.randrange(1, 9999)} {self.rng.choice(STREETS)} St"
        return f"{street}, {city}, {state} {zip_prefix}{self.rng.randrange(10, 99)}"

    def _email(self, first: str, last: str) -> dict:
        domain = self.rng.choice(EMAIL_DOMAINS)
        address = f"{first}.{last}@{domain}"
        while address.lower() in self.used:
            address = f"{first}.{last}{self.rng.randrange(1, 9999)}@{domain}"
        self.used.add(address.lower())
        original = address if self.rng.random() < 0.1 else address.lower()
        return {"original": original, "normalized": address.lower(), "primary": True}

    def _phone(self, primary: bool) -> dict:
        number = SUPPORT_PHONE
        while number in self.used or number == SUPPORT_PHONE:
            number = f"+1555{self.rng.randrange(2_000_000, 10_000_000)}"
        self.used.add(number)
        digits = number[2:]
        pretty = f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
        phone = {
            "original": pretty if self.rng.random() < 0.3 else number,
            "normalized": number,
            "regionCode": "US",
            "primary": primary,
            "smsPreference": self.rng.choice(["ON", "ON", "OFF"]),
        }
        roll = self.rng.random()
        phone["type"] = (
            ""
            if roll < PHONE_WITH_BLANK_TYPE_SHARE
            else self.rng.choice(["MOBILE", "MOBILE", "HOME", "OFFICE"])
        )
        return phone

    def _external_ids(self, profile: dict) -> None:
        roll = self.rng.random()
        if roll < 0.05:
            profile["externalCustomerId"] = f"c-{self.rng.randrange(10_000, 99_999)}"
        elif roll < 0.3:
            profile["externalCustomerIds"] = {"shopify": str(self.rng.randrange(10**9, 10**10))}

    def _custom_attributes(self) -> dict:
        attributes = {
            "loyaltyTier": self.rng.choice(TIERS),
            "lifetimeValue": f"{self.rng.uniform(20, 5000):.2f}",
        }
        if self.rng.random() < 0.4:
            attributes["preferredLanguage"] = self.rng.choice(["en", "en", "es", "fr"])
        return attributes

    def _stamp_profile(self, customer_id: str, profile: dict) -> None:
        created, touched = self.touched[customer_id]
        created, profile["createdAt"] = styled_timestamp(self.rng, created, PROFILE_NANO_SHARE)
        updated = None
        if self.rng.random() >= PROFILE_WITHOUT_UPDATED_AT_SHARE:
            updated = min(touched + self.rng.randrange(SECOND, HOUR), self.horizon)
            updated, profile["updatedAt"] = styled_timestamp(self.rng, updated, PROFILE_NANO_SHARE)
        self.profile_times[customer_id] = (created, updated)

    def _merge_customers(self) -> None:
        """Merge a share of customers into others; their old ids answer 301 from then on."""
        share = self.cfg.merged_customer_share
        horizon = self.horizon
        idle = [cid for cid, free in self.free_at.items() if free is not None and free < horizon]
        count = min(len(idle) // 2, max(1, round(len(self.customers) * share))) if share else 0
        olds = self.rng.sample(idle, count)
        leaving = dict.fromkeys(olds)
        survivors = [cid for cid in self.customers if cid not in leaving]
        for old in olds:
            self._merge(old, self.rng.choice(survivors))

    def _merge(self, old: str, new: str) -> None:
        """Fold `old` into `new`; conversation records follow (in views), items keep `old`."""
        profile, survivor = self.customers.pop(old), self.customers[new]
        last_seen = self.touched[old][1]
        merged_at = self.rng.randrange(last_seen, max(self.horizon, last_seen + 1))
        gained: dict[str, set[str]] = {"emails": set(), "phones": set()}
        for key in ("emails", "phones"):
            known = {entry["normalized"] for entry in survivor.get(key, [])}
            for entry in profile.get(key, []):
                if entry["normalized"] not in known:
                    survivor.setdefault(key, []).append({**entry, "primary": False})
                    gained[key].add(entry["normalized"])
        self.touched[new][1] = max(self.touched[new][1], merged_at)
        self.former_profiles[old] = profile
        emails, phones = frozenset(gained["emails"]), frozenset(gained["phones"])
        # The survivor is drawn from every customer, some created after `merged_at`: the merge
        # takes effect once both exist (a later instant, so the records above stay as they were).
        effective = max(merged_at, self.touched[new][0])
        self.merges.append(_Merge(effective, old, new, emails, phones))

    # ------------------------------------------------------------ one conversation

    def _conversation(self, start: int, forced: str | None) -> None:
        rng = self.rng
        channel = forced or _pick_channel(rng)
        if channel == "PHONE" and rng.random() < 0.2:
            channel = "VOICE_AI"  # a voice-AI session answers before an agent picks up
        customer_id = self._customer_for(channel, start)
        thread = _Thread(self, customer_id, channel, start)
        ai_resolved = channel == "CHAT" and rng.random() < 0.05
        unassigned = not ai_resolved and rng.random() < 0.04
        if not (ai_resolved or unassigned):
            thread.agent = rng.choice(self.agents)
        topics = self._topic_plan()
        self._open(thread, ai_resolved)
        if thread.agent:
            self._work(thread, topics, target=self._length(channel))
        if rng.random() < 0.98:  # the rest stay open as a backlog
            self._close(thread, ai_resolved)
            if rng.random() < 0.06 and thread.agent:
                self._reopen(thread)
        if rng.random() < ACTIVITY_IN_CONVERSATION_SHARE:
            self._activity_within(thread)
        if rng.random() < STANDALONE_ACTIVITY_SHARE:
            self._standalone_activity(customer_id, start)
        self._finish(thread)

    def _length(self, channel: str) -> int:
        """How many items the conversation aims for: chats run long, calls short."""
        shape, scale = CONVERSATION_LENGTHS.get(channel, (2.0, 4.0))
        return max(2, min(40, int(self.rng.gammavariate(shape, scale))))

    def _topic_plan(self) -> list[str]:
        if self.rng.random() < CONVERSATION_WITHOUT_TOPICS_SHARE:
            return []
        return self.rng.sample(self.leaf_topics, self.rng.choice([1, 1, 1, 2]))

    def _open(self, thread: _Thread, ai_resolved: bool) -> None:
        """The customer's first contact, with any AI or voice-AI session before an agent."""
        rng = self.rng
        if thread.channel == "CHAT" and (ai_resolved or rng.random() < 0.12):
            session = new_id(rng)
            for _ in range(rng.randint(1, 3)):
                thread.add(thread.customer, self._chat(thread, CUSTOMER_LINES), session=session)
                thread.wait(2 * SECOND, 8 * SECOND)
                thread.add(SIDEKICK, self._chat(thread, AI_LINES), session=session)
                thread.wait(10 * SECOND, 3 * MINUTE)
            if ai_resolved:
                return
        if thread.channel == "VOICE_AI":
            self._voice_ai(thread)
        if thread.channel in ("PHONE", "VOICE_AI") and rng.random() < 0.15:
            missed, ended = self._call(thread, inbound=True, answered=False)
            thread.add(thread.customer, missed, duration=ended - thread.ms)
            thread.wait(2 * SECOND, 5 * SECOND)
            voicemail_id = new_id(rng)
            thread.add(
                thread.customer,
                self._voicemail(thread, voicemail_id),
                item_id=voicemail_id,
                duration=MINUTE,
            )
            return
        self._message(thread, inbound=True)

    def _voice_ai(self, thread: _Thread) -> None:
        session = new_id(self.rng)
        customer_number = self._phone_of(thread.customer_id)
        for body in self.rng.sample(AI_LINES, self.rng.randint(2, 3)):
            content = {
                "type": "VOICE_AI_MESSAGE",
                "companyNumber": SUPPORT_PHONE,
                "body": body,
                "customerNumber": customer_number,
                "status": self.rng.choice(["PLAYED", "PLAYED", "INTERRUPTED"]),
            }
            thread.add(SIDEKICK, content, session=session, duration=5 * SECOND)
            thread.wait(2 * SECOND, 20 * SECOND)

    def _work(self, thread: _Thread, topics: list[str], target: int) -> None:
        """The agent replies and tags topics, then both take turns up to about `target` items."""
        rng = self.rng
        self._agent_turn(thread)
        if topics:
            thread.wait(5 * SECOND, 2 * MINUTE)
            self._topic_change(thread, topics)
        while len(thread.entries) < target:
            if rng.random() < 0.06:  # the customer answers a day or two later
                thread.wait(18 * HOUR, 40 * HOUR)
            else:
                thread.wait(*self._customer_delay(thread.channel))
            self._message(thread, inbound=True)
            self._agent_turn(thread)

    def _agent_turn(self, thread: _Thread) -> None:
        rng = self.rng
        thread.wait(*self._agent_delay(thread.channel))
        if thread.channel != "CHAT" or rng.random() >= 0.08:
            self._message(thread, inbound=False)
        else:
            self._quick_reply(thread)
        if rng.random() < 0.15:
            thread.wait(20 * SECOND, 10 * MINUTE)
            thread.add(thread.agent, {"type": "CONVERSATION_NOTE", "body": rng.choice(NOTE_BODIES)})

    def _agent_delay(self, channel: str) -> tuple[int, int]:
        if channel == "CHAT":
            return 10 * SECOND, 4 * MINUTE
        if channel == "EMAIL":
            return 10 * MINUTE, 20 * HOUR
        return 2 * MINUTE, 3 * HOUR

    def _customer_delay(self, channel: str) -> tuple[int, int]:
        if channel == "CHAT":
            return 15 * SECOND, 5 * MINUTE
        if channel == "EMAIL":
            return 30 * MINUTE, 30 * HOUR
        return 2 * MINUTE, 6 * HOUR

    def _topic_change(self, thread: _Thread, topics: list[str]) -> None:
        initiator = thread.agent if self.rng.random() < 0.8 else self.automation
        content: dict = {"type": "TOPIC_CHANGE", "addedTopicIds": list(topics)}
        if self.rng.random() < 0.1:  # a wrong topic added first, corrected here
            wrong = self.rng.choice([t for t in self.leaf_topics if t not in topics])
            thread.add(initiator, {"type": "TOPIC_CHANGE", "addedTopicIds": [wrong]})
            thread.wait(30 * SECOND, 20 * MINUTE)
            content["removedTopicIds"] = [wrong]
        thread.add(initiator, content)

    def _close(self, thread: _Thread, ai_resolved: bool) -> None:
        if ai_resolved:  # Gladly AI sessions close after two idle hours
            thread.wait(2 * HOUR, 2 * HOUR + 5 * MINUTE)
            closer = SIDEKICK
        elif thread.agent is None:
            thread.wait(MINUTE, 2 * HOUR)
            closer = self.automation
        else:
            thread.wait(30 * SECOND, 45 * MINUTE)
            closer = thread.agent
        thread.add(closer, {"type": "CONVERSATION_STATUS_CHANGE", "status": "CLOSED"})

    def _reopen(self, thread: _Thread) -> None:
        """The customer writes back a day or more later and the conversation reopens."""
        thread.wait(20 * HOUR, 44 * HOUR)
        self._message(thread, inbound=True)
        thread.wait(SECOND, 3 * SECOND)
        thread.add(thread.customer, {"type": "CONVERSATION_STATUS_CHANGE", "status": "OPEN"})
        self._agent_turn(thread)
        if self.rng.random() < 0.8:
            self._close(thread, ai_resolved=False)

    def _activity_within(self, thread: _Thread) -> None:
        """A CUSTOMER_ACTIVITY posted by an integration during the conversation."""
        at = self.rng.randrange(thread.entries[0][0], thread.entries[-1][0] + 1)
        at = _beside_evented(thread.entries, at, self.horizon)
        ms, text = styled_timestamp(self.rng, at, NANO_TIMESTAMP_SHARE)
        thread.insert(self.api_user, self._activity_content(ms), ms, text)

    def _standalone_activity(self, customer_id: str, before: int) -> None:
        """A CUSTOMER_ACTIVITY not tied to any conversation: no `conversationId`."""
        at = self.rng.randrange(max(self.start, before - 3 * DAY), before + 1)
        ms, text = styled_timestamp(self.rng, at, NANO_TIMESTAMP_SHARE)
        item = {
            "id": new_id(self.rng),
            "customerId": customer_id,
            "timestamp": text,
            "initiator": self.api_user,
            "content": self._activity_content(ms),
        }
        if ms <= self.horizon:
            self.planned.append((ms, len(self.planned), ms, item))

    def _activity_content(self, ms: int) -> dict:
        activity_type, title, source = self.rng.choice(ACTIVITIES)
        content = {
            "type": "CUSTOMER_ACTIVITY",
            "activityType": activity_type,
            "title": title,
            "body": f"<p>{title} (ref {self.rng.randrange(10_000, 99_999)})</p>",
            "sourceName": source,
        }
        if self.rng.random() < 0.3:
            content["link"] = {
                "url": "https://shop.acme-outfitters.example/orders",
                "text": "View order",
            }
        if self.rng.random() < 0.5:
            content["occurredAt"] = format_ms(ms - self.rng.randrange(SECOND, 10 * MINUTE))
        return content

    def _finish(self, thread: _Thread) -> None:
        """Drop what has not happened by the horizon, then plan the conversation and its items."""
        kept = [entry for entry in thread.entries if entry[1] <= self.horizon]
        if not kept:
            return
        plan = _ConversationPlan(
            id=thread.id,
            customer_id=thread.customer_id,
            inbox_id=self._inbox(thread),
            entries=kept,
            agent=thread.agent,
            assigned_at=thread.assigned_at,
            assigned_reason=thread.assigned_reason,
        )
        if self.rng.random() < 0.08:
            plan.custom_attributes = self._conversation_attributes()
        self.plans[thread.id] = plan
        for ms, end, item in kept:
            self.planned.append((ms, len(self.planned), end, item))
        touched = self.touched[thread.customer_id]
        touched[1] = max(touched[1], kept[-1][0])
        closed = _status(kept)[0] == "CLOSED"
        self.free_at[thread.customer_id] = thread.entries[-1][0] if closed else None

    def _inbox(self, thread: _Thread) -> str:
        roll = self.rng.random()
        tier = self.customers[thread.customer_id].get("customAttributes", {}).get("loyaltyTier")
        if roll < 0.02:
            name = "Legacy Email"
        elif tier == "Platinum" and roll < 0.5:
            name = "VIP"
        elif thread.channel == "EMAIL":
            name = self.rng.choice(["Support", "Billing", "Returns"])
        else:
            name = "Support" if roll < 0.85 else "Returns"
        return self.inboxes[name]

    def _conversation_attributes(self) -> list[dict]:
        attribute = self.rng.choice(self.attribute_ids)
        values = [{"id": attribute, "value": f"ORD-{self.rng.randrange(100_000, 999_999)}"}]
        if self.rng.random() < 0.3:  # one id can carry several values
            values.append({"id": attribute, "value": f"ORD-{self.rng.randrange(100_000, 999_999)}"})
        return values

    def _big_conversation(self, count: int) -> None:
        """One long-running chat with `count` items spread over the history (tests the cap)."""
        customer_id = self._new_customer("CHAT", self.start + HOUR)
        thread = _Thread(self, customer_id, "CHAT", self.start + HOUR)
        thread.agent = self.agents[0]
        mean_gap = (self.horizon - self.start - 3 * HOUR) // count
        for index in range(count):
            inbound = index % 2 == 0
            lines = CUSTOMER_LINES if inbound else AGENT_LINES
            thread.add(thread.customer if inbound else thread.agent, self._chat(thread, lines))
            gap = self.rng.randrange(max(mean_gap // 2, 2 * SECOND), max(mean_gap, 3 * SECOND))
            thread.move_to(thread.ms + gap)
        self._finish(thread)

    # ------------------------------------------------------------ item contents

    def _message(self, thread: _Thread, inbound: bool) -> None:
        """One message on the conversation's channel, from the customer or the agent."""
        who = thread.customer if inbound else thread.agent
        channel = thread.channel
        if channel in ("PHONE", "VOICE_AI"):
            self._phone_turn(thread, inbound)
        elif channel == "CHAT":
            thread.add(who, self._chat(thread, CUSTOMER_LINES if inbound else AGENT_LINES))
        elif channel == "EMAIL":
            thread.add(self._email_author(inbound, thread), self._email_content(thread, inbound))
        else:
            thread.add(who, self._social(thread, inbound))

    def _phone_turn(self, thread: _Thread, inbound: bool) -> None:
        if not inbound and self.rng.random() < 0.6:  # the agent follows up by text
            thread.add(thread.agent, self._social(thread, inbound=False, channel="SMS"))
            return
        item_id = new_id(self.rng)
        content, ended = self._call(thread, inbound=inbound, answered=True, item_id=item_id)
        responder = thread.agent if inbound else None
        duration = ended - thread.ms
        thread.add(
            thread.customer if inbound else thread.agent,
            content,
            item_id=item_id,
            responder=responder,
            duration=duration,
        )

    def _chat(self, thread: _Thread, lines: list[str]) -> dict:
        content = {
            "type": "CHAT_MESSAGE",
            "sessionId": thread.chat_session,
            "content": self.rng.choice(lines),
        }
        if self.rng.random() >= CHAT_WITHOUT_MESSAGE_TYPE_SHARE:
            content["messageType"] = "TEXT"
        return content

    def _quick_reply(self, thread: _Thread) -> None:
        options = [
            {"id": new_id(self.rng), "label": label}
            for label in ("Track my order", "Start a return", "Something else")
        ]
        request = {
            "type": "CHAT_MESSAGE",
            "sessionId": thread.chat_session,
            "content": "What can I help you with?",
            "messageType": "QUICK_REPLY_REQUEST",
            "messageData": {"options": options},
        }
        request_id = thread.add(thread.agent, request)
        thread.wait(5 * SECOND, 2 * MINUTE)
        chosen = self.rng.choice(options)
        response = {
            "type": "CHAT_MESSAGE",
            "sessionId": thread.chat_session,
            "content": chosen["label"],
            "messageType": "QUICK_REPLY_RESPONSE",
            "messageData": {
                "quickReplyRequest": {"options": options},
                "selectedOptionId": chosen["id"],
                "requestMessageId": request_id,
            },
        }
        thread.add(thread.customer, response)

    def _email_author(self, inbound: bool, thread: _Thread) -> dict:
        if inbound and self.rng.random() < 0.02:  # a third party on the thread replies
            return {"id": new_id(self.rng), "type": self.rng.choice(["INTERNAL", "EXTERNAL"])}
        return thread.customer if inbound else thread.agent

    def _email_content(self, thread: _Thread, inbound: bool) -> dict:
        customer_email = self._email_of(thread.customer_id)
        content: dict = {
            "type": "EMAIL",
            "from": customer_email if inbound else SUPPORT_EMAIL,
            "to": [SUPPORT_EMAIL if inbound else customer_email],
        }
        if self.rng.random() < 0.08:
            content["cc"] = [f"orders@{self.rng.choice(EMAIL_DOMAINS)}"]
        if self.rng.random() >= EMAIL_WITHOUT_SUBJECT_SHARE:
            first = not thread.entries
            content["subject"] = thread.subject if first else f"Re: {thread.subject}"
        content["content"] = self.rng.choice(CUSTOMER_LINES if inbound else AGENT_LINES)
        return content

    def _social(self, thread: _Thread, inbound: bool, channel: str | None = None) -> dict:
        channel = channel or thread.channel
        text = self.rng.choice(CUSTOMER_LINES if inbound else AGENT_LINES)
        if channel == "SMS":
            customer = self._phone_of(thread.customer_id)
            return {
                "type": "SMS",
                "from": customer if inbound else SUPPORT_PHONE,
                "to": SUPPORT_PHONE if inbound else customer,
                "content": text,
            }
        if channel == "FACEBOOK":
            user_id = self.social_ids.setdefault(
                thread.customer_id, str(self.rng.randrange(10**15, 10**16))
            )
            return {
                "type": "FACEBOOK_MESSAGE",
                "pageId": FACEBOOK_PAGE_ID,
                "userId": user_id,
                "content": text,
            }
        content_type = {
            "WHATSAPP": "WHATSAPP",
            "INSTAGRAM": "INSTAGRAM_DIRECT",
            "TWITTER": "TWITTER",
        }[channel]
        return {"type": content_type, "content": text}

    def _call(
        self, thread: _Thread, inbound: bool, answered: bool, item_id: str | None = None
    ) -> tuple[dict, int]:
        """A PHONE_CALL content and when the call ended."""
        customer = self._phone_of(thread.customer_id)
        started = thread.ms
        content: dict = {
            "type": "PHONE_CALL",
            "from": customer if inbound else SUPPORT_PHONE,
            "to": SUPPORT_PHONE if inbound else customer,
            "startedAt": format_ms(started),
        }
        if not answered:
            content["completedAt"] = format_ms(started + 30 * SECOND)
            return content, started + 30 * SECOND
        answered_at = started + self.rng.randrange(4, 90) * SECOND
        completed = answered_at + self.rng.randrange(60, 1200) * SECOND + self.rng.randrange(1000)
        content["answeredAt"] = format_ms(answered_at)
        content["completedAt"] = format_ms(completed)
        status = self.rng.choices(["AVAILABLE", "DELETED", "ERROR"], weights=[85, 10, 5])[0]
        content["recordingStatus"] = status
        if status == "AVAILABLE":
            self._recording(content, item_id, (completed - answered_at) // SECOND)
        return content, completed

    def _recording(self, content: dict, item_id: str | None, seconds: int) -> None:
        content["recordingUrl"] = f"/api/v1/conversation-items/{item_id}/media/recording"
        as_text = self.rng.random() < STRING_RECORDING_DURATION_SHARE
        content["recordingDuration"] = str(seconds) if as_text else seconds
        if self.rng.random() < 0.3:
            content["recordingSummary"] = {
                "status": "READY",
                "language": "en-US",
                "summary": self.rng.choice(RECORDING_SUMMARIES),
            }

    def _voicemail(self, thread: _Thread, item_id: str) -> dict:
        return {
            "type": "VOICEMAIL",
            "startedAt": format_ms(thread.ms),
            "recordingStatus": "AVAILABLE",
            "recordingUrl": f"/api/v1/conversation-items/{item_id}/media/recording",
            "recordingDuration": self.rng.randrange(8, 90),
        }

    def _email_of(self, customer_id: str) -> str:
        return self.customers[customer_id]["emails"][0]["original"]

    def _phone_of(self, customer_id: str) -> str:
        profile = self.customers[customer_id]
        if "phones" not in profile:
            profile["phones"] = [self._phone(primary=True)]
        return profile["phones"][0]["normalized"]


# ---------------------------------------------------------------- events


class _EventLog:
    """Collects Events API events (envelope of reference §12.8), each with a fresh id."""

    def __init__(self, rng: random.Random, horizon: int):
        self.rng = rng
        self.horizon = horizon
        # Who acts when no item names anyone: Gladly itself, creating and updating profiles.
        self.system = {"id": new_id(rng), "type": "SYSTEM"}
        self.entries: list[tuple[int, int, dict]] = []  # (timestamp ms, sequence, event)

    def add(self, ms: int, kind: str, initiator: dict, content: dict) -> None:
        if ms > self.horizon:
            return
        event = {
            "id": new_id(self.rng),
            "type": kind,
            "timestamp": format_ms(ms),  # events always carry milliseconds
            "initiator": dict(initiator),
            "content": content,
        }
        self.entries.append((ms, len(self.entries), event))

    def in_order(self) -> list[tuple[int, dict]]:
        """Ascending by timestamp; ties keep the order they happened in."""
        self.entries.sort(key=lambda entry: (entry[0], entry[1]))
        return [(ms, event) for ms, _, event in self.entries]


def _events(rng: random.Random, history: _History, reference: dict) -> list[tuple[int, dict]]:
    """Every event of the generated account, derived from its records, ascending."""
    log = _EventLog(rng, history.horizon)
    for plan in history.plans.values():
        _ConversationEvents(log, plan).replay()
    _profile_events(log, history)
    agents = [{"id": agent["id"], "type": "AGENT"} for agent in reference["agents"][:-1]]
    _merge_events(log, history, agents)
    return log.in_order()


class _ConversationEvents:
    """Replays one conversation's items as the CONVERSATION and CONTACT events they imply.

    Events carry the item's start, while an item that lasts (a call, a voicemail) is listed
    once it is over; so a clock in between shows CONTACT/STARTED (and, for a conversation
    that opens with that call, CONVERSATION/CREATED) before the item and its conversation.
    """

    def __init__(self, log: _EventLog, plan: _ConversationPlan):
        self.log = log
        self.plan = plan
        self.assigned = False
        self.closed = False
        self.closes = 0  # a reopened conversation starts new contacts
        self.contacts: dict[tuple[str, int], str] = {}

    def replay(self) -> None:
        for index, (ms, _, item) in enumerate(self.plan.entries):
            if index == 0:
                self._conversation(ms, "CREATED", item["initiator"])
            self._assign_by(ms)
            self._item(ms, item)
        self._assign_by(self.log.horizon)  # assigned by a call that had not ended yet

    def _ids(self) -> dict:
        return {"customerId": self.plan.customer_id, "conversationId": self.plan.id}

    def _assignee(self) -> dict:
        assignee = {"inboxId": self.plan.inbox_id}
        if self.assigned and self.plan.agent:
            assignee["agentId"] = self.plan.agent["id"]
        return assignee

    def _conversation(self, ms: int, action: str, initiator: dict, **extra: str) -> None:
        content = {**self._ids(), **extra, "context": {"assignee": self._assignee()}}
        self.log.add(ms, f"CONVERSATION/{action}", initiator, content)

    def _assign_by(self, ms: int) -> None:
        """CONVERSATION_ASSIGNEE/UPDATED once the agent has taken the conversation."""
        plan = self.plan
        if self.assigned or not plan.agent or plan.assigned_at is None or plan.assigned_at > ms:
            return
        before = self._assignee()
        self.assigned = True
        content = {
            **self._ids(),
            "reason": plan.assigned_reason,
            "assignee": self._assignee(),
            "context": {"assignee": before},
        }
        outbound = plan.assigned_reason == "MESSAGE_OUTBOUND"
        initiator = plan.agent if outbound else self.log.system
        self.log.add(plan.assigned_at, "CONVERSATION_ASSIGNEE/UPDATED", initiator, content)

    def _item(self, ms: int, item: dict) -> None:
        content = item["content"]
        kind = content["type"]
        if kind in MESSAGE_CHANNELS:
            self._message(ms, item)
        elif kind == "PHONE_CALL":
            self._call(ms, item)
        elif kind == "CONVERSATION_NOTE":
            note = {"noteId": item["id"], **self._ids()}
            self.log.add(ms, "CONVERSATION/NOTE_CREATED", item["initiator"], note)
        elif kind == "CONVERSATION_STATUS_CHANGE":
            self._status_change(ms, item)
        elif kind == "TOPIC_CHANGE":
            for topic_id in content.get("addedTopicIds", []):
                self._conversation(ms, "TOPIC_ADDED", item["initiator"], topicId=topic_id)
            for topic_id in content.get("removedTopicIds", []):
                self._conversation(ms, "TOPIC_REMOVED", item["initiator"], topicId=topic_id)

    def _status_change(self, ms: int, item: dict) -> None:
        status = item["content"]["status"]
        if status == "CLOSED" and not self.closed:
            self.closed, self.closes = True, self.closes + 1
            self._conversation(ms, "CLOSED", item["initiator"])
        elif status == "OPEN" and self.closed:
            self.closed = False
            self._conversation(ms, "REOPENED", item["initiator"])

    def _contact(self, channel: str, content: dict) -> dict:
        """CONTACT content; one contact per channel between closes (a call is its own)."""
        key = (channel, self.closes)
        if channel == "PHONE_CALL" or key not in self.contacts:
            self.contacts[key] = new_id(self.log.rng)
        return {
            "channel": channel,
            "contactId": self.contacts[key],
            **self._ids(),
            **content,
            "context": {"assignee": self._assignee()},
        }

    def _message(self, ms: int, item: dict) -> None:
        channel = MESSAGE_CHANNELS[item["content"]["type"]]
        inbound = item["initiator"]["type"] in INBOUND_INITIATORS
        if not inbound and channel == "VOICEMAIL":
            return  # MESSAGE_SENT has no VOICEMAIL channel
        action = "MESSAGE_RECEIVED" if inbound else "MESSAGE_SENT"
        content = self._contact(channel, {"messageId": item["id"]})
        self.log.add(ms, f"CONTACT/{action}", item["initiator"], content)

    def _call(self, ms: int, item: dict) -> None:
        """STARTED and ENDED. Gladly documents no messageId here: clients find the call item
        through the conversation's items."""
        content = self._contact("PHONE_CALL", {})
        self.log.add(ms, "CONTACT/STARTED", item["initiator"], content)
        completed = item["content"].get("completedAt")
        if completed:
            ended = to_ms(parse_timestamp(completed))
            self.log.add(ended, "CONTACT/ENDED", item["initiator"], dict(content))


def _profile_events(log: _EventLog, history: _History) -> None:
    """CUSTOMER_PROFILE/CREATED at createdAt and /UPDATED at a later updatedAt."""
    merged_at = {merge.old: merge.ms for merge in history.merges}
    for customer_id, (created, updated) in history.profile_times.items():
        log.add(created, "CUSTOMER_PROFILE/CREATED", log.system, {"customerId": customer_id})
        # A profile merged away is gone; an updatedAt stamped after that is not an update.
        before_merge = updated is not None and updated < merged_at.get(customer_id, updated + 1)
        if before_merge and updated != created:
            log.add(updated, "CUSTOMER_PROFILE/UPDATED", log.system, {"customerId": customer_id})


def _merge_events(log: _EventLog, history: _History, agents: list[dict]) -> None:
    """CUSTOMER/MERGED, naming each side's latest conversation at the merge when it has one."""
    started: dict[str, list[tuple[int, str]]] = {}
    for plan in history.plans.values():
        started.setdefault(plan.customer_id, []).append((plan.entries[0][0], plan.id))
    for merge in history.merges:
        content = {"destinationCustomerId": merge.new}
        destination = _latest(started.get(merge.new, []), merge.ms)
        if destination:
            content["destinationConversationId"] = destination
        content["sourceCustomerId"] = merge.old
        source = _latest(started.get(merge.old, []), merge.ms)
        if source:
            content["sourceConversationId"] = source
        log.add(merge.ms, "CUSTOMER/MERGED", log.rng.choice(agents), content)


def _latest(started: list[tuple[int, str]], ms: int) -> str | None:
    """The id of the last conversation started by `ms`, from (start ms, id) pairs."""
    before = [entry for entry in started if entry[0] <= ms]
    return max(before)[1] if before else None


# ---------------------------------------------------------------- export jobs


def _export_jobs(
    rng: random.Random, cfg: EmulatorConfig, first: datetime, horizon: datetime
) -> tuple[dict, list[tuple[int, dict]], list[int]]:
    """The schedule, every job finished by the horizon as (updatedAt ms, job) ascending, and
    the window boundaries in ms (views derive the schedule's nextStartAt from them)."""
    frequency = "HOURLY" if cfg.schedule == "hourly" else "DAILY"
    horizon_ms = to_ms(horizon)
    boundaries = list(_boundaries(cfg, first, horizon))
    windows = list(itertools.pairwise(boundaries))
    schedule = {
        "id": new_id(rng),
        "frequency": frequency,
        "type": "CONVERSATIONS",
        "nextStartAt": format_ms(to_ms(windows[-1][1]) if windows else horizon_ms),
        "updatedAt": format_ms(horizon_ms - 200 * DAY - rng.randrange(DAY)),
    }
    jobs = []
    # The last window is still running at the horizon (it gives nextStartAt), so it gets no job.
    for start, end in windows[:-1]:
        finished, text = styled_timestamp(rng, to_ms(end) + _job_lag(rng, frequency), 0.2)
        if finished <= horizon_ms:
            jobs.append((finished, _job(rng, schedule, start, end, text, "COMPLETED")))
    if cfg.failed_job and len(jobs) >= 3:
        start, end = windows[len(jobs) - 3]
        finished = to_ms(end) + rng.randrange(40 * MINUTE, 90 * MINUTE)
        jobs.append((finished, _job(rng, schedule, start, end, format_ms(finished), "FAILED")))
    jobs.sort(key=lambda entry: entry[0])
    return schedule, jobs, [to_ms(boundary) for boundary in boundaries]


def _job_lag(rng: random.Random, frequency: str) -> int:
    """How long after its window ends a job is COMPLETED: ~2 h hourly, 2-4 h daily."""
    if frequency == "HOURLY":
        return rng.randrange(105 * MINUTE, 135 * MINUTE)
    return rng.randrange(2 * HOUR, 4 * HOUR)


def _job(
    rng: random.Random, schedule: dict, start: datetime, end: datetime, updated: str, status: str
) -> dict:
    return {
        "id": new_id(rng),
        "scheduleId": schedule["id"],
        "status": status,
        "updatedAt": updated,
        "parameters": {
            "type": "CONVERSATIONS",
            "startAt": format_ms(to_ms(start)),
            "endAt": format_ms(to_ms(end)),
        },
        "files": list(EXPORT_FILES) if status == "COMPLETED" else [],
    }


def _boundaries(cfg: EmulatorConfig, first: datetime, now: datetime) -> Iterator[datetime]:
    if cfg.schedule == "hourly":
        moment = first.replace(minute=0, second=0, microsecond=0)
        while moment <= now:
            yield moment
            moment += timedelta(hours=1)
        yield moment
        return
    zone = ZoneInfo(cfg.org_timezone) if cfg.schedule == "daily-local" else UTC
    day = first.astimezone(zone).date()
    while _midnight(day, zone) <= now:
        yield _midnight(day, zone)
        day += timedelta(days=1)
    yield _midnight(day, zone)


def _midnight(day: date, zone: ZoneInfo | timezone) -> datetime:
    """Midnight of `day` in `zone`, in UTC; computed per day so DST days are 23 or 25 hours."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
