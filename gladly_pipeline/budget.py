"""Volume budget: a transactional ledger of the conversations counted per billing period.

One conversation ingested in a billing period costs one unit, however often it is extracted
in that period (reruns, backfills, the intraday path). Spending is two-phase, so a run killed
mid-way leaves no unit counted for data it never wrote:

    reserve()  the run claims units for new ids, in the caller's priority order;
    commit()   after its data is written, the run's reservations become counted;
    release()  when the run fails, its reservations are dropped.

A reservation older than the TTL belongs to a run that died without releasing: it neither
counts nor blocks, and the next reserve() of its period deletes it.

The ledger is one table in SQLite (a file, the default) or PostgreSQL (the Dagster
instance's database in production); every name starts with `gladly_budget_` so it can sit
next to Dagster's own tables. Each reserve() is one transaction serialised with every other
reserve() of the period, so runs in separate processes never overspend.
"""

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from os import PathLike
from pathlib import Path
from typing import Optional, Union

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

UTC = UTC

# Days 29 to 31 are missing from some months; a period must start on the same day each month.
MAX_START_DAY = 28
DEFAULT_RESERVATION_TTL = timedelta(hours=6)
# How long a SQLite transaction waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# Ids per IN-list: under the 999 bound variables of SQLite builds before 3.32.
IN_CHUNK_SIZE = 500

SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
# Plain `postgresql` means psycopg 3 to SQLAlchemy 2.1, which we do not install.
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2")
POSTGRES_DRIVER = "postgresql+psycopg2"

RESERVED = "reserved"
COUNTED = "counted"

_metadata = sa.MetaData()

units = sa.Table(
    "gladly_budget_units",
    _metadata,
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("conversation_id", sa.String(255), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    # The run that reserved the unit; kept once counted, to tell which run spent it.
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"state IN ('{RESERVED}', '{COUNTED}')", name="gladly_budget_units_state"),
    sa.Index("gladly_budget_units_run_id", "run_id"),
)


@dataclass(frozen=True)
class BillingPeriod:
    """A billing period in UTC, half-open: [start, end)."""

    label: str
    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def billing_period(moment: datetime, start_day: int = 1) -> BillingPeriod:
    """The billing period holding `moment`; periods start at 00:00 UTC on `start_day`.

    Labelled `YYYY-MM` when periods follow calendar months, else `YYYY-MM-DD` of the start.
    """
    _check_start_day(start_day)
    moment = _as_utc(moment, "moment")

    year, month = moment.year, moment.month
    if moment.day < start_day:
        year, month = _shift_month(year, month, -1)
    end_year, end_month = _shift_month(year, month, 1)

    start = datetime(year, month, start_day, tzinfo=UTC)
    end = datetime(end_year, end_month, start_day, tzinfo=UTC)
    label = f"{year:04d}-{month:02d}" if start_day == 1 else f"{start:%Y-%m-%d}"
    return BillingPeriod(label=label, start=start, end=end)


@dataclass(frozen=True)
class Reservation:
    """What reserve() decided, lists in the caller's order.

    `used` and `left` are the period's figures right after this reservation: counted units
    plus live reservations of every run. `left` is None when the budget is unlimited.
    """

    admitted: list[str]
    deferred: list[str]
    newly_reserved: list[str]
    used: int
    left: Optional[int]


class BudgetLedger:
    """The ledger of units counted and reserved per billing period, in one SQL database."""

    def __init__(
        self,
        engine: Engine,
        *,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        if reservation_ttl <= timedelta(0):
            raise ValueError(f"reservation_ttl must be positive, got {reservation_ttl}")
        self._engine = engine
        self._ttl = reservation_ttl
        self._clock = clock

    @classmethod
    def from_url(cls, url: Union[str, URL], **kwargs) -> "BudgetLedger":
        """A ledger on a SQLAlchemy URL: `sqlite:////abs/path` or `postgresql+psycopg2://…`."""
        return cls(_create_engine(url), **kwargs)

    @classmethod
    def for_sqlite_file(cls, path: Union[str, PathLike], **kwargs) -> "BudgetLedger":
        """A ledger in a SQLite file, created with its folder on first use."""
        path = Path(path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.from_url(URL.create("sqlite", database=str(path)), **kwargs)

    def ensure_schema(self) -> None:
        """Creates the table and index if missing; safe from concurrent processes."""
        with self._engine.begin() as conn:
            # Two PostgreSQL sessions creating one table at once can both pass the existence
            # check; one then fails on the catalog. The lock makes the second wait and see it.
            self._lock(conn, "schema")
            _metadata.create_all(conn)

    def reserve(
        self, period: BillingPeriod, ids: Iterable[str], *, limit: Optional[int], run_id: str
    ) -> Reservation:
        """Admits `ids` in the given order while the period's budget lasts.

        Ids counted in the period or held by a live reservation (of any run) are free. Each
        other id costs a unit while fewer than `limit` are used, else it is deferred. A
        repeated id is considered once. `limit` None means unlimited.
        """
        run_id = _check_run_id(run_id)
        _check_limit(limit)
        wanted = list(dict.fromkeys(ids))
        now = self._now()

        with self._engine.begin() as conn:
            self._lock(conn, f"period:{period.label}")
            self._drop_abandoned(conn, period, now)
            known = _known_ids(conn, period, wanted)
            used = _count(conn, units.c.period == period.label)
            admitted, deferred, new = _allocate(wanted, known, used, limit)
            _insert_reservations(conn, period, new, run_id, now)

        used += len(new)
        left = None if limit is None else max(limit - used, 0)
        return Reservation(admitted, deferred, new, used, left)

    def commit(self, run_id: str) -> int:
        """Turns the run's reservations into counted units; returns how many. Idempotent."""
        run_id = _check_run_id(run_id)
        # A reservation past its TTL but not yet cleaned up is counted too: its data was
        # written, and no reserve() of its period has run since it expired, so none spent it.
        update = (
            units.update()
            .where(units.c.run_id == run_id, units.c.state == RESERVED)
            .values(state=COUNTED)
        )
        with self._engine.begin() as conn:
            return conn.execute(update).rowcount

    def release(self, run_id: str) -> int:
        """Drops the run's reservations (not its counted units); returns how many. Idempotent."""
        run_id = _check_run_id(run_id)
        delete = units.delete().where(units.c.run_id == run_id, units.c.state == RESERVED)
        with self._engine.begin() as conn:
            return conn.execute(delete).rowcount

    def usage(self, period: BillingPeriod) -> int:
        """Units used in the period: counted plus live reservations, whatever the limit."""
        live = sa.or_(units.c.state == COUNTED, units.c.reserved_at >= self._cutoff(self._now()))
        with self._engine.begin() as conn:
            return _count(conn, sa.and_(units.c.period == period.label, live))

    def counted(self, period: BillingPeriod) -> set[str]:
        """Ids counted (committed) in the period."""
        query = sa.select(units.c.conversation_id).where(
            units.c.period == period.label, units.c.state == COUNTED
        )
        with self._engine.begin() as conn:
            return set(conn.execute(query).scalars())

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "BudgetLedger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _now(self) -> datetime:
        return _as_utc(self._clock(), "clock()")

    def _cutoff(self, now: datetime) -> datetime:
        return now - self._ttl

    def _drop_abandoned(self, conn: Connection, period: BillingPeriod, now: datetime) -> None:
        conn.execute(
            units.delete().where(
                units.c.period == period.label,
                units.c.state == RESERVED,
                units.c.reserved_at < self._cutoff(now),
            )
        )

    def _lock(self, conn: Connection, name: str) -> None:
        """Serialises this transaction with every other one taking the same named lock.

        PostgreSQL: a transaction-level advisory lock, chosen over SELECT ... FOR UPDATE on a
        period row because it needs no row to exist first (creating that row would itself
        race) and ends with the transaction, also when the process dies. SQLite: nothing to
        do, every transaction already began with BEGIN IMMEDIATE (see _create_engine).
        """
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(name))))


def _allocate(
    wanted: Sequence[str], known: set[str], used: int, limit: Optional[int]
) -> tuple[list[str], list[str], list[str]]:
    """Splits ids into admitted, deferred and newly reserved, spending units in order."""
    admitted, deferred, new = [], [], []
    for conversation_id in wanted:
        if conversation_id in known:
            admitted.append(conversation_id)
        elif limit is None or used + len(new) < limit:
            admitted.append(conversation_id)
            new.append(conversation_id)
        else:
            deferred.append(conversation_id)
    return admitted, deferred, new


def _known_ids(conn: Connection, period: BillingPeriod, ids: Sequence[str]) -> set[str]:
    """Those of `ids` with a row in the period: counted, or reserved and still live."""
    # Known gap: an id admitted free on another run's reservation stays uncounted if that
    # run then releases; one row per (period, id) cannot name both runs. Costs at most the
    # ids two runs share in a failure; closes if rows become per (period, id, run).
    known = set()
    for chunk in _chunks(ids):
        query = sa.select(units.c.conversation_id).where(
            units.c.period == period.label, units.c.conversation_id.in_(chunk)
        )
        known.update(conn.execute(query).scalars())
    return known


def _count(conn: Connection, condition) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(units).where(condition)).scalar()


def _insert_reservations(
    conn: Connection, period: BillingPeriod, ids: Sequence[str], run_id: str, now: datetime
) -> None:
    if not ids:
        return
    common = dict(period=period.label, state=RESERVED, run_id=run_id, reserved_at=now)
    # One executemany: SQLAlchemy batches it into multi-row INSERTs where the driver allows.
    conn.execute(units.insert(), [dict(common, conversation_id=i) for i in ids])


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for offset in range(0, len(items), IN_CHUNK_SIZE):
        yield items[offset : offset + IN_CHUNK_SIZE]


def _lock_key(name: str) -> int:
    # Stable across processes (unlike hash()), and signed 64-bit as pg_advisory_xact_lock takes.
    digest = hashlib.blake2b(f"gladly_budget:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _create_engine(url: Union[str, URL]) -> Engine:
    """An engine for a SQLite file or PostgreSQL through psycopg2; other URLs are refused."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError("budget ledger URL could not be parsed as a SQLAlchemy URL") from exc

    if parsed.drivername in SQLITE_SCHEMES:
        return _sqlite_engine(parsed)
    if parsed.drivername in POSTGRES_SCHEMES:
        return sa.create_engine(parsed.set(drivername=POSTGRES_DRIVER), pool_pre_ping=True)
    accepted = ", ".join(f"{scheme}://" for scheme in SQLITE_SCHEMES + POSTGRES_SCHEMES)
    raise ValueError(
        f"budget ledger URL scheme {parsed.drivername!r} is not supported; use one of {accepted}"
    )


def _sqlite_engine(url: URL) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise ValueError("budget ledger on SQLite needs a file path, shared by every process")
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

    # pysqlite would begin a DEFERRED transaction, and only at the first write: two runs could
    # both read the old usage before either writes. Turn its own BEGIN off and emit BEGIN
    # IMMEDIATE, which takes the write lock (waiting up to the busy timeout) before any read.
    @sa.event.listens_for(engine, "connect")
    def _disable_driver_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _check_start_day(start_day: int) -> None:
    if isinstance(start_day, bool) or not isinstance(start_day, int):
        raise ValueError(f"billing_period_start_day must be an integer, got {start_day!r}")
    if not 1 <= start_day <= MAX_START_DAY:
        raise ValueError(
            f"billing_period_start_day must be between 1 and {MAX_START_DAY} (days every month "
            f"has), got {start_day}"
        )


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError("run_id must be a non-empty string")
    return run_id


def _check_limit(limit: Optional[int]) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")


def _as_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(UTC)


def _shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1
