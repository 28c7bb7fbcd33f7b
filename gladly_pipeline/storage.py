"""Where tables live under the data root, and how files are replaced atomically.

Layout (hive style, so pyarrow.dataset, DuckDB, Polars, pandas and Spark read a whole
table with one call):

    <root>/raw/<table>/date=YYYY-MM-DD/part-0.parquet    daily raw extractions
    <root>/raw/<table>/part-0.parquet                     unpartitioned reference tables
    <root>/analytics/<table>/part-0.parquet               analysis-ready tables

A file is written under a hidden temporary name in its final folder and renamed over
the old one, so readers see the previous version or the new one, never a partial file.
"""

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"
# The hive partition key of the daily raw tables: date=YYYY-MM-DD.
PARTITION_COLUMN = "date"
COMPRESSION = "zstd"


class TableStore:
    """The data root: paths of raw and analytics tables and atomic writes to them."""

    def __init__(self, root: os.PathLike):
        self.root = Path(root)

    def raw_partition(self, table: str, day: str) -> Path:
        return self.root / "raw" / table / f"date={day}" / PART_FILE

    def raw_table_dir(self, table: str) -> Path:
        return self.root / "raw" / table

    def reference(self, table: str) -> Path:
        return self.root / "raw" / table / PART_FILE

    def analytics(self, table: str) -> Path:
        return self.root / "analytics" / table / PART_FILE

    def write(self, path: Path, table: pa.Table) -> None:
        with self.writer(path, table.schema) as writer:
            writer.write_table(table)

    @contextmanager
    def writer(self, path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """Yields a Parquet writer whose file replaces `path` only if the block succeeds."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        # Hidden and without the .parquet suffix: no reader's glob or dataset picks it up.
        temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        writer = pq.ParquetWriter(temp, schema, compression=COMPRESSION)
        try:
            yield writer
            writer.close()
            _fsync(temp)
            os.replace(temp, path)
            _fsync_dir(path.parent)
        finally:
            if writer.is_open:
                writer.close()
            temp.unlink(missing_ok=True)

    def staging(self, path: Path) -> Path:
        """A hidden path beside `path` for a file that is not ready to be read."""
        return path.parent / f".{path.name}.{uuid.uuid4().hex}.staging"

    def replace(self, source: Path, path: Path) -> None:
        """Atomically puts a finished file (e.g. a staging file) in place of `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _fsync(source)
        os.replace(source, path)
        _fsync_dir(path.parent)

    def read(self, path: Path, schema: pa.Schema) -> pa.Table:
        return pq.read_table(path, schema=schema)

    def raw_files(self, table: str) -> list:
        """The Parquet files of every partition of a raw table, oldest day first.

        For readers that scan files themselves (DuckDB's read_parquet in the analytics
        rebuild): local paths as strings; hidden temporary files are not among them.
        """
        folder = self.raw_table_dir(table)
        return sorted(str(path) for path in folder.glob(f"{PARTITION_COLUMN}=*/{PART_FILE}"))


# A run killed outright (SIGKILL, OOM, a lost pod) leaves its hidden temporary files
# behind. They are invisible to readers; one older than this cannot belong to a live
# write (a day's file is written in seconds to minutes), so the next write removes it.
STALE_TEMPORARY_SECONDS = 3600


def _remove_stale_temporaries(folder: Path) -> None:
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for leftover in folder.glob(".*"):
        if leftover.suffix not in (".tmp", ".staging"):
            continue
        with contextlib.suppress(FileNotFoundError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
