"""Reference assets: agents, inboxes and topics, small lists replaced whole on each run."""

from datetime import datetime

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..records import reference_row
from ..resources import DataRoot, GladlyResource
from ..schemas import RAW_REFERENCE
from ..timeutil import UTC
from .raw import GLADLY_POOL

GROUP = "gladly_raw"
# Fetched when missing (also on a fresh install, which Dagster's on_missing() skips), then
# once a day: names change rarely and cost one request each. After a failed fetch it waits
# for the daily tick instead of retrying every minute.
REFRESH_DAILY = (
    AutomationCondition.missing()
    & ~AutomationCondition.in_progress()
    & ~AutomationCondition.execution_failed()
).with_label("missing") | AutomationCondition.on_cron("0 5 * * *")

_DESCRIPTIONS = {
    "agents": "Gladly agents (id, name, email), to name who handled a conversation.",
    "inboxes": "Gladly inboxes (id, name, disabled), to name where a conversation sits.",
    "topics": "Gladly topics (id, name, parent, disabled); names are not unique in Gladly.",
}


def reference_asset(name: str) -> AssetsDefinition:
    @asset(
        name=name,
        key_prefix=["raw"],
        group_name=GROUP,
        kinds={"parquet"},
        pool=GLADLY_POOL,
        automation_condition=REFRESH_DAILY,
        description=_DESCRIPTIONS[name],
    )
    def _reference(
        context: AssetExecutionContext, gladly: GladlyResource, data_root: DataRoot
    ) -> MaterializeResult:
        client = gladly.get_client()
        try:
            records = getattr(client, name)()
        finally:
            client.close()
        fetched_at = datetime.now(UTC)
        rows = [reference_row(r, fetched_at) for r in records if isinstance(r, dict)]
        store = data_root.store()
        path = store.reference(name)
        store.write(path, pa.Table.from_pylist(rows, schema=RAW_REFERENCE))
        context.log.info("Wrote %d %s", len(rows), name)
        return MaterializeResult(
            metadata={
                "dagster/row_count": len(rows),
                "gladly_requests": client.stats.requests,
                "path": MetadataValue.path(store.uri(path)),
            }
        )

    return _reference


agents = reference_asset("agents")
inboxes = reference_asset("inboxes")
topics = reference_asset("topics")
