"""A day's conversation and contact rows held as Arrow batches rather than Python dicts.

A row dict with its raw_json costs 2-3 KB of Python objects; the same row in Arrow costs
about its bytes. At 100k conversations a week a day has ~20k conversations and ~20k
profiles, so holding them as dicts until the table is built was most of what the
conversations and contacts assets' memory grew by (issue 5).
"""

from collections.abc import Iterable, Iterator, Mapping
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

# Row dicts are turned into a record batch this many at a time: about 3 MB of dicts.
ROWS_PER_BATCH = 1_000


class RowBatches:
    """Rows of one schema gathered as Arrow; `table()` gives them sorted by id."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.rows: list = []
        self.tables: list = []
        self.count = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= ROWS_PER_BATCH:
            self._convert()

    def add_table(self, table: pa.Table) -> None:
        self._convert()
        self.tables.append(table)
        self.count += table.num_rows

    def __len__(self) -> int:
        return self.count

    def table(self) -> pa.Table:
        """All rows, ordered by id (stable: as `sorted` orders the ids' code points)."""
        table = self.unsorted()
        if table.num_rows < 2:
            return table
        return table.take(pc.sort_indices(table["id"]))

    def unsorted(self) -> pa.Table:
        """All rows, in the order they were added."""
        self._convert()
        table = pa.concat_tables(self.tables) if self.tables else self.schema.empty_table()
        self.tables = []
        return table

    def _convert(self) -> None:
        if self.rows:
            self.tables.append(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []


class RowsById(Mapping):
    """Rows with distinct ids kept as one Arrow table, found by id.

    As a Mapping a lookup gives the row as a dict (as `table.to_pylist()` would);
    `take` gives rows as a table without making dicts.
    """

    def __init__(self, table: pa.Table):
        self.table = table
        self.index = {row_id: n for n, row_id in enumerate(table["id"].to_pylist())}
        if len(self.index) != table.num_rows:
            raise ValueError("RowsById needs distinct ids")

    @classmethod
    def from_rows(cls, rows: Iterable, schema: pa.Schema) -> "RowsById":
        batches = RowBatches(schema)
        for row in rows:
            batches.add(row)
        return cls(batches.unsorted())

    def __getitem__(self, row_id: str) -> dict:
        return self.table.slice(self.index[row_id], 1).to_pylist()[0]

    def __contains__(self, row_id) -> bool:
        return row_id in self.index

    def __iter__(self) -> Iterator:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def take(self, ids: list) -> pa.Table:
        return self.table.take(pa.array([self.index[i] for i in ids], pa.int64()))

    def without(self, ids: Iterable) -> "RowsById":
        """The same rows less those of `ids`."""
        dropped = {self.index[i] for i in ids if i in self.index}
        if not dropped:
            return self
        kept = [n for n in range(self.table.num_rows) if n not in dropped]
        return RowsById(self.table.take(pa.array(kept, pa.int64())))


def as_rows_by_id(rows: Optional[Mapping], schema: pa.Schema) -> RowsById:
    """`rows` (id -> row dict, or a RowsById already) as a RowsById."""
    if isinstance(rows, RowsById):
        return rows
    return RowsById.from_rows((rows or {}).values(), schema)
