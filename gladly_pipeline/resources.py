"""Dagster resources: the Gladly account (client, rate, budget) and the data root."""

import os
from datetime import datetime
from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from .budget import BillingPeriod, BudgetLedger, billing_period
from .client import GladlyClient, RetryPolicy, resolve_base_url
from .privacy import Pseudonymizer
from .storage import (
    DEFAULT_S3_REGION,
    DataRootError,
    S3Settings,
    TableStore,
    open_store,
    parse_s3_uri,
)
from .tables import RebuildLimits

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
    budget_ledger_url: Optional[str] = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the budget ledger. Unset: the Dagster instance's PostgreSQL "
            "database when DAGSTER_PG_URL is set, else SQLite under a local data root "
            "(an s3:// data root needs one of the two)."
        ),
    )
    full_contact_profiles: bool = Field(
        default=False,
        description=(
            "Off: an exported day's contacts are the reduced profiles of the export's "
            "customers.jsonl (one download per day; no custom attributes, createdAt or "
            "updatedAt). On: every profile is fetched with GET customer-profiles/{id}, "
            "about one request per new conversation (most customers are new), reused "
            "within `contact_refresh_hours`."
        ),
    )
    contact_refresh_hours: int = Field(
        # Over a day: the daily runs come about 24 hours apart, give or take the export's
        # publication time, and a 24-hour window would miss the previous day by minutes.
        default=36,
        ge=0,
        description=(
            "A customer profile fetched with GET this recently (for any day) is reused "
            "instead of asked for again; 0 fetches every such profile every time."
        ),
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


    def open_ledger(self, store: TableStore) -> BudgetLedger:
        # Resolved at run time: the run's environment says where the instance lives.
        url = self.budget_ledger_url or os.environ.get("DAGSTER_PG_URL")
        if url:
            ledger = BudgetLedger.from_url(url)
        else:
            state = store.local_state_dir()
            if state is None:
                # SQLite needs a file with locks; an object store offers neither.
                raise DataRootError(
                    f"The data root {store.describe()} is object storage, where the "
                    "volume-budget ledger (a SQLite file) cannot live. Set DAGSTER_PG_URL "
                    "(the Dagster instance's PostgreSQL) or GLADLY_BUDGET_LEDGER_URL "
                    "(e.g. sqlite:////var/lib/gladly/budget.sqlite3 on a disk every run "
                    "process shares)"
                )
            ledger = BudgetLedger.for_sqlite_file(state / "budget.sqlite3")
        ledger.ensure_schema()
        return ledger

    def period(self, now: datetime) -> BillingPeriod:
        return billing_period(now, self.billing_period_start_day)

    def budget_block_reason(self, ledger: BudgetLedger, now: datetime) -> Optional[str]:
        """Why no new conversation may be ingested now, or None when some may."""
        limit = self.conversations_per_period
        if limit is None:
            return None
        period = self.period(now)
        used = ledger.usage(period)
        if used < limit:
            return None
        return (
            f"Volume budget spent: {used} of {limit} conversations ingested in billing "
            f"period {period.label} ({period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}); "
            f"ingestion resumes on {period.end:%Y-%m-%d}"
        )


class DataRoot(ConfigurableResource):
    """Where the Parquet tables are written."""

    path: Optional[str] = Field(
        default=None,
        description=(
            "Folder of the tables, or an S3-compatible prefix `s3://bucket/prefix`; unset "
            "means $GLADLY_DATA_ROOT, else ./data."
        ),
    )
    s3_endpoint_url: Optional[str] = Field(
        default=None,
        description=(
            "Endpoint of an S3-compatible store (MinIO, Ceph, R2 ...): "
            "`https://host[:port]`. Unset means AWS S3 itself."
        ),
    )
    s3_region: str = Field(
        default=DEFAULT_S3_REGION,
        description="Region requests are signed for; AWS buckets need their own region.",
    )
    s3_access_key_id: Optional[str] = Field(
        default=None, description="Access key id for an s3:// data root; pass it as an EnvVar."
    )
    s3_secret_access_key: Optional[str] = Field(
        default=None, description="Secret access key for an s3:// data root; an EnvVar."
    )
    s3_session_token: Optional[str] = Field(
        default=None, description="Session token of temporary S3 credentials; an EnvVar."
    )

    hash_personal_data: bool = Field(
        default=False,
        description=(
            "Replace names, email addresses and phone numbers in the analysis-ready tables "
            "with salted hashes (raw tables keep Gladly's data as sent)."
        ),
    )
    personal_data_salt: Optional[str] = Field(
        default=None,
        description="Secret salt of those hashes; pass it as an EnvVar (GLADLY_PII_SALT).",
    )

    rebuild_memory_limit: str = Field(
        default="512MB",
        pattern=r"(?i)^\d+(\.\d+)?\s*([KMGT]i?B)$",  # DuckDB takes 512mb too
        description=(
            "Memory the analytics rebuild's DuckDB may use for its data (e.g. 512MB, 2GB); "
            "past it, it spills to `rebuild_temp_directory`. The process uses some "
            "hundred MB more (Python, Dagster, one record batch in flight)."
        ),
    )
    rebuild_threads: Optional[int] = Field(
        default=None, ge=1, description="Threads of the rebuild; unset means one per core."
    )
    rebuild_temp_directory: Optional[str] = Field(
        default=None,
        description=(
            "Local folder the rebuild spills to when over its memory limit; unset means a "
            "fresh folder under the system's temp, removed after the rebuild."
        ),
    )

    def rebuild_limits(self) -> RebuildLimits:
        return RebuildLimits(
            memory_limit=self.rebuild_memory_limit,
            threads=self.rebuild_threads,
            temp_directory=self.rebuild_temp_directory,
        )

    def pseudonymizer(self) -> Optional[Pseudonymizer]:
        if not self.hash_personal_data:
            return None
        return Pseudonymizer(self.personal_data_salt or "")

    def store(self) -> TableStore:
        # Resolved when a run starts, not at import, so the env of the run process counts.
        root = self.path or os.environ.get("GLADLY_DATA_ROOT") or DEFAULT_DATA_ROOT
        if not root.strip().lower().startswith("s3://"):
            return open_store(root)
        return open_store(root, self._s3_settings(root))

    def _s3_settings(self, root: str) -> S3Settings:
        missing = [
            name for name, value in (
                ("GLADLY_S3_ACCESS_KEY_ID", self.s3_access_key_id),
                ("GLADLY_S3_SECRET_ACCESS_KEY", self.s3_secret_access_key),
            ) if not value
        ]
        if missing:
            bucket, _ = parse_s3_uri(root)
            raise DataRootError(
                f"The data root is in bucket {bucket!r} on S3 but has no credentials: "
                f"set {' and '.join(missing)}"
            )
        return S3Settings(
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            session_token=self.s3_session_token,
            region=self.s3_region,
            endpoint_url=self.s3_endpoint_url,
        )
