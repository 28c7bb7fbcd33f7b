"""Every table reads back alike in pyarrow.dataset, DuckDB and Polars, as the README says."""

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from dagster import materialize

from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.schemas import (
    ANALYTICS_CONTACTS,
    ANALYTICS_CONVERSATIONS,
    ANALYTICS_MESSAGES,
    RAW_CONTACTS,
    RAW_CONVERSATIONS,
    RAW_MESSAGES,
    RAW_REFERENCE,
    TS,
)

from .conftest import make_resources

DAYS = ["2026-03-06", "2026-03-07", "2026-03-08"]
# (folder under the data root, declared schema, partitioned by day)
TABLES = {
    "raw/messages": (RAW_MESSAGES, True),
    "raw/conversations": (RAW_CONVERSATIONS, True),
    "raw/contacts": (RAW_CONTACTS, True),
    "raw/agents": (RAW_REFERENCE, False),
    "raw/inboxes": (RAW_REFERENCE, False),
    "raw/topics": (RAW_REFERENCE, False),
    "analytics/messages": (ANALYTICS_MESSAGES, False),
    "analytics/conversations": (ANALYTICS_CONVERSATIONS, False),
    "analytics/contacts": (ANALYTICS_CONTACTS, False),
}
# What each Arrow type of our schemas is called in DuckDB and in Polars.
TYPE_NAMES = [
    (TS, "TIMESTAMP WITH TIME ZONE", pl.Datetime("us", "UTC")),
    (pa.string(), "VARCHAR", pl.String()),
    (pa.list_(pa.string()), "VARCHAR[]", pl.List(pl.String())),
    (pa.int64(), "BIGINT", pl.Int64()),
    (pa.int32(), "INTEGER", pl.Int32()),
    (pa.float64(), "DOUBLE", pl.Float64()),
    (pa.bool_(), "BOOLEAN", pl.Boolean()),
    (pa.date32(), "DATE", pl.Date()),
]


def expected_types(arrow_type: pa.DataType) -> tuple:
    for arrow, duck, polars in TYPE_NAMES:
        if arrow_type.equals(arrow):
            return duck, polars
    raise AssertionError(f"no reader mapping declared for {arrow_type}")


@pytest.fixture(scope="module")
def extracted(emulator, tmp_path_factory):
    """Three days, the reference lists and the analysis tables, once for the module."""
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(emulator, root)
    for day in DAYS:
        assert materialize([messages, conversations, contacts], partition_key=day,
                           resources=resources).success
    assert materialize([agents, inboxes, topics, analytics_tables], resources=resources).success
    return root


def read_three_ways(folder, partitioned: bool):
    """The table as pyarrow.dataset, DuckDB and Polars each see it (hive partitioning on)."""
    arrow = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    pattern = str(folder / ("*/*.parquet" if partitioned else "*.parquet"))
    duck = duckdb.connect().execute(
        "SELECT * FROM read_parquet(?, hive_partitioning=true)", [pattern]
    )
    duck_types = {column[0]: column[1] for column in duck.description}
    duck_rows = duck.fetchall()
    polars = pl.scan_parquet(folder, hive_partitioning=True).collect()
    return arrow, (duck_types, duck_rows), polars


@pytest.mark.parametrize("name", list(TABLES))
def test_table_reads_alike_in_pyarrow_duckdb_and_polars(extracted, name):
    schema, partitioned = TABLES[name]
    arrow, (duck_types, duck_rows), polars = read_three_ways(extracted / name, partitioned)

    assert arrow.num_rows > 0
    assert arrow.num_rows == len(duck_rows) == polars.height

    declared = [field.name for field in schema]
    partition_columns = ["date"] if partitioned else []
    assert arrow.column_names == declared + partition_columns
    assert list(polars.columns) == declared + partition_columns
    assert list(duck_types) == declared + partition_columns

    for field in schema:
        duck_type, polars_type = expected_types(field.type)
        assert arrow.schema.field(field.name).type.equals(field.type), field.name
        assert str(duck_types[field.name]) == duck_type, field.name
        assert polars.schema[field.name] == polars_type, field.name


@pytest.mark.parametrize("name", [name for name, (_, daily) in TABLES.items() if daily])
def test_partitioned_table_shows_the_same_days_in_every_reader(extracted, name):
    arrow, (duck_types, duck_rows), polars = read_three_ways(extracted / name, True)
    date_index = list(duck_types).index("date")

    assert sorted(set(arrow.column("date").to_pylist())) == DAYS
    assert sorted({str(row[date_index]) for row in duck_rows}) == DAYS
    assert sorted(str(day) for day in polars["date"].unique()) == DAYS


@pytest.mark.parametrize("name", [name for name, (schema, _) in TABLES.items()
                                  if TS in [field.type for field in schema]])
def test_timestamps_mean_the_same_instant_in_every_reader(extracted, name):
    # A reader that took microseconds for another unit, or dropped the UTC marker, would
    # shift every instant; the newest value of the first timestamp column must agree.
    schema, partitioned = TABLES[name]
    column = next(field.name for field in schema if field.type.equals(TS))
    arrow, (duck_types, duck_rows), polars = read_three_ways(extracted / name, partitioned)
    index = list(duck_types).index(column)

    newest = max(value for value in arrow.column(column).to_pylist() if value is not None)
    assert max(row[index] for row in duck_rows if row[index] is not None) == newest
    assert polars[column].max() == newest
