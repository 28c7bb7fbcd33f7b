"""Profile changes a test makes while the emulator runs: merges and deletions.

A merge behaves as Gladly documents it (reference §4, §15.3): the old id answers 301 with
`meta.old`/`meta.new` (profile and conversation list), search finds the survivor, which gains
the old profile's emails and phones, and the old profile's conversations name the survivor.
Items keep the old id, as the generated merges do. A deletion makes the profile and its
conversation list answer 404 and drops it from search; its conversations stay readable
(whether Gladly deletes them with the profile is not documented).

Both add the event Gladly would send (CUSTOMER/MERGED, CUSTOMER_PROFILE/DELETED). Changes are
stamped with the emulator's `now` and replayed onto every later view of the account.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable
from dataclasses import dataclass

from gladly_pipeline.emulator.data import Dataset, format_ms, new_id


@dataclass(frozen=True)
class ProfileChange:
    """`customer_id` merged into `merged_into` at `ms`, or deleted when that is None."""

    ms: int
    customer_id: str
    merged_into: str | None = None


def check(data: Dataset, change: ProfileChange) -> None:
    """Refuse a change the account cannot take, before it is recorded."""
    if change.customer_id not in data.customers:
        raise KeyError(f"no live customer profile {change.customer_id}")
    if change.merged_into is None:
        return
    if change.merged_into not in data.customers:
        raise KeyError(f"no live customer profile {change.merged_into} to merge into")
    if change.merged_into == change.customer_id:
        raise ValueError("a customer cannot be merged into itself")


def apply_changes(data: Dataset, changes: Iterable[ProfileChange]) -> None:
    """Replay `changes` onto a freshly built view; ones it can no longer take are skipped.

    A generated merge that has since taken the same id away wins: it is already in the view.
    """
    for change in changes:
        try:
            check(data, change)
        except (KeyError, ValueError):
            continue
        if change.merged_into is None:
            _delete(data, change)
        else:
            _merge(data, change)
    data.reindex()


def _merge(data: Dataset, change: ProfileChange) -> None:
    old, new = change.customer_id, change.merged_into
    profile = data.customers.pop(old)
    # Profiles are shared between views: the survivor is rebuilt, never edited in place.
    survivor = dict(data.customers[new])
    for key in ("emails", "phones"):
        known = {entry["normalized"] for entry in survivor.get(key, [])}
        gained = [
            {**entry, "primary": False}
            for entry in profile.get(key, [])
            if entry["normalized"] not in known
        ]
        if gained:
            survivor[key] = [*survivor.get(key, []), *gained]
    survivor["updatedAt"] = format_ms(change.ms)
    data.customers[new] = survivor
    data.merged[old] = new
    data.former_profiles[old] = profile
    for conversation_id, conversation in data.conversations.items():
        if conversation["customerId"] == old:
            data.conversations[conversation_id] = {**conversation, "customerId": new}
    content = {"destinationCustomerId": new, "sourceCustomerId": old}
    _add_event(data, change, "CUSTOMER/MERGED", content)


def _delete(data: Dataset, change: ProfileChange) -> None:
    # Export files written before the deletion still name the customer; they read it here.
    data.former_profiles[change.customer_id] = data.customers.pop(change.customer_id)
    _add_event(data, change, "CUSTOMER_PROFILE/DELETED", {"customerId": change.customer_id})


def _add_event(data: Dataset, change: ProfileChange, kind: str, content: dict) -> None:
    """Insert the change's event in timestamp order, with an id derived from the change."""
    rng = random.Random(f"{kind}/{change.customer_id}/{change.ms}")
    event = {
        "id": new_id(rng),
        "type": kind,
        "timestamp": format_ms(change.ms),
        # An agent made the change in Gladly's UI.
        "initiator": {"id": data.agents[0]["id"], "type": "AGENT"},
        "content": content,
    }
    index = bisect.bisect_right(data.event_times, change.ms)
    data.events.insert(index, event)
    data.event_times.insert(index, change.ms)
