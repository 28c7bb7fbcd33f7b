"""Dagster resources: the Gladly account (client, rate, budget) and the data root."""

import os
from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from .client import GladlyClient, RetryPolicy, resolve_base_url
from .storage import TableStore

DEFAULT_DATA_ROOT = "data"


class GladlyResource(ConfigurableResource):
    """A Gladly organisation, reached with an API user's email and API token."""

    subdomain: Optional[str] = Field(
        default=None,
        description="Organisation subdomain: `acme` for https://acme.gladly.com.",
    )
    base_url: Optional[str] = Field(
        default=None,
        description=(
            "Full base URL instead of a subdomain: region hosts "
            "(https://acme.us-1.gladly.com), sandboxes (https://acme.gladly.qa) or the "
            "local emulator. Wins over `subdomain`."
        ),
    )
    username: str = Field(description="Email of the Gladly user with the API User permission.")
    api_token: str = Field(description="Gladly API token; pass it as an EnvVar, never inline.")
    requests_per_second: float = Field(
        default=8.0,
        gt=0,
        description="Client-side pace. Gladly allows 10/s for the whole organisation.",
    )
    max_parallel_requests: int = Field(
        default=4, ge=1, description="Requests in flight at once during per-id fan-out."
    )
    request_timeout_seconds: float = Field(default=60.0, gt=0)
    conversations_per_period: Optional[int] = Field(
        default=None,
        ge=0,
        description=(
            "Volume budget: the most conversations ingested per billing period "
            "(one conversation = one unit). None means unlimited."
        ),
    )
    billing_period_start_day: int = Field(
        default=1, ge=1, le=28, description="Day of the month on which a billing period starts."
    )
    first_run_lookback_days: int = Field(
        default=7,
        ge=1,
        le=14,
        description="Days the export sensor requests on its first tick (Gladly keeps 14).",
    )
    intraday_refresh_minutes: int = Field(
        default=60,
        ge=5,
        description="How often today (and yesterday until exported) is refreshed from events.",
    )

    def get_client(self) -> GladlyClient:
        return GladlyClient(
            resolve_base_url(subdomain=self.subdomain, base_url=self.base_url),
            self.username,
            self.api_token,
            requests_per_second=self.requests_per_second,
            read_timeout=self.request_timeout_seconds,
            retry=RetryPolicy(),
            pool_size=self.max_parallel_requests,
        )


class DataRoot(ConfigurableResource):
    """Where the Parquet tables are written."""

    path: Optional[str] = Field(
        default=None,
        description="Folder of the tables; unset means $GLADLY_DATA_ROOT, else ./data.",
    )

    def store(self) -> TableStore:
        # Resolved when a run starts, not at import, so the env of the run process counts.
        root = self.path or os.environ.get("GLADLY_DATA_ROOT") or DEFAULT_DATA_ROOT
        return TableStore(os.path.abspath(root))
