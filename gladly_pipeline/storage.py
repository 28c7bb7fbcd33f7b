"""Where tables live under the data root, and how files are replaced atomically.

The data root is a local folder or an S3-compatible prefix (`s3://bucket/prefix`: AWS S3,
MinIO, Ceph, R2 ...). Layout (hive style, so pyarrow.dataset, DuckDB, Polars, pandas and
Spark read a whole table with one call):

    <root>/raw/<table>/date=YYYY-MM-DD/part-0.parquet    daily raw extractions
    <root>/raw/<table>/part-0.parquet                     unpartitioned reference tables
    <root>/analytics/<table>/part-0.parquet               analysis-ready tables

Readers see the previous version of a file or the new one, never a partial file, and no
temporary file under a table's folder ever matches `*.parquet`:
- Local folder: a file is written under a hidden temporary name in its final folder and
  renamed over the old one (`os.replace`, atomic on POSIX).
- S3: there is no rename. See `S3TableStore` for how the same guarantee is kept.
"""

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Optional
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"
# The hive partition key of the daily raw tables: date=YYYY-MM-DD.
PARTITION_COLUMN = "date"
COMPRESSION = "zstd"
# Where S3 temporaries live: outside every table's folder, and skipped by pyarrow.dataset
# and Spark (leading underscore) should anyone read the whole root.
S3_TEMPORARY_FOLDER = "_tmp"
# The region the AWS SDK signs requests for when none is configured; MinIO, Ceph and R2
# accept it. A real AWS bucket in another region needs its own region set.
DEFAULT_S3_REGION = "us-east-1"

# A run killed outright (SIGKILL, OOM, a lost pod) leaves its hidden temporary files
# behind. They are invisible to readers; one older than this cannot belong to a live
# write (a day's file is written in seconds to minutes), so the next write removes it.
STALE_TEMPORARY_SECONDS = 3600

# Paths handed out by a store: a pathlib.Path under a local root (so callers and tests may
# treat it as a local file), a PurePosixPath `bucket/key` on S3 (which has no exists() or
# unlink(): ask the store). Path is a PurePosixPath on POSIX, so one annotation fits both.
StorePath = PurePosixPath


class DataRootError(ValueError):
    """The data root or its S3 settings cannot be used; the message says why."""


class StoredPartition(NamedTuple):
    day: str
    path: StorePath
    modified: datetime


class TableStore:
    """The data root in a local folder: paths of tables and atomic writes to them."""

    # Whether readers that open files themselves (DuckDB's read_parquet in the analytics
    # rebuild) can open this store's paths; if not, they scan `dataset(...)` instead.
    files_are_local = True

    def __init__(self, root: os.PathLike):
        self.root = Path(root)
        self.fs: pafs.FileSystem = pafs.LocalFileSystem()

    # Where tables live.

    def raw_partition(self, table: str, day: str) -> StorePath:
        return self.root / "raw" / table / f"date={day}" / PART_FILE

    def raw_table_dir(self, table: str) -> StorePath:
        return self.root / "raw" / table

    def reference(self, table: str) -> StorePath:
        return self.root / "raw" / table / PART_FILE

    def analytics(self, table: str) -> StorePath:
        return self.root / "analytics" / table / PART_FILE

    def uri(self, path: StorePath) -> str:
        """How an operator finds `path` (run metadata, log lines)."""
        return str(path)

    def describe(self) -> str:
        return str(self.root)

    # Reading: shared by both kinds of store through pyarrow's filesystem layer.

    def exists(self, path: StorePath) -> bool:
        return self.fs.get_file_info(str(path)).type == pafs.FileType.File

    def read(
        self, path: StorePath, schema: Optional[pa.Schema] = None, columns: Optional[list] = None
    ) -> pa.Table:
        return pq.read_table(str(path), schema=schema, columns=columns, filesystem=self.fs)

    def iter_batches(self, path: StorePath, batch_size: int) -> Iterator[pa.RecordBatch]:
        with self.fs.open_input_file(str(path)) as source:
            yield from pq.ParquetFile(source).iter_batches(batch_size=batch_size)

    def raw_partitions(self, table: str) -> list:
        """Every `date=` partition file of a raw table, oldest day first."""
        selector = pafs.FileSelector(
            str(self.raw_table_dir(table)), recursive=True, allow_not_found=True
        )
        found = []
        for info in self.fs.get_file_info(selector):
            parts = PurePosixPath(info.path).parts
            if info.type != pafs.FileType.File or len(parts) < 2 or parts[-1] != PART_FILE:
                continue
            if not parts[-2].startswith("date="):
                continue
            day = parts[-2].removeprefix("date=")
            found.append(StoredPartition(day, self.raw_partition(table, day), info.mtime))
        return sorted(found)

    def raw_files(self, table: str) -> list:
        """Every partition file of a raw table as a path string, oldest day first.

        For readers that open files themselves (DuckDB's read_parquet in the analytics
        rebuild) when `files_are_local`; hidden temporary files are never among them.
        """
        return [str(stored.path) for stored in self.raw_partitions(table)]

    def dataset(self, files: list, schema: pa.Schema, partitioned: bool) -> ds.Dataset:
        """A pyarrow dataset of `files` (from raw_files, or one table file) with the
        declared `schema`, plus the `date` of the partition folders when `partitioned`.

        DuckDB scans it with no extension to download, reading only the columns a query
        uses; a column missing from an older file reads as null.
        """
        options = {}
        if partitioned and files:
            options["partitioning"] = ds.partitioning(
                pa.schema([(PARTITION_COLUMN, pa.string())]), flavor="hive"
            )
            # Every file is <table folder>/date=.../part-0.parquet.
            options["partition_base_dir"] = str(PurePosixPath(files[0]).parent.parent)
            schema = schema.append(pa.field(PARTITION_COLUMN, pa.string()))
        return ds.dataset(
            files, schema=schema, format="parquet", filesystem=self.fs, **options
        )

    # Writing.

    def write(self, path: StorePath, table: pa.Table) -> None:
        with self.writer(path, table.schema) as writer:
            writer.write_table(table)

    @contextmanager
    def writer(self, path: StorePath, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
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

    def staging(self, path: StorePath) -> StorePath:
        """A hidden path beside `path` for a file that is not ready to be read."""
        return path.parent / f".{path.name}.{uuid.uuid4().hex}.staging"

    def replace(self, source: StorePath, path: StorePath) -> None:
        """Atomically puts a finished file (e.g. a staging file) in place of `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _fsync(source)
        os.replace(source, path)
        _fsync_dir(path.parent)

    def delete(self, path: StorePath) -> None:
        """Removes a file if it is there (e.g. a staging file after publishing)."""
        Path(path).unlink(missing_ok=True)

    def local_state_dir(self) -> Optional[Path]:
        """A local folder for state files (the SQLite budget ledger); None on S3."""
        return self.root / "_state"


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store. Secrets stay out of repr (and so of logs)."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str = DEFAULT_S3_REGION
    # `https://minio.internal:9000`; None means AWS S3 itself.
    endpoint_url: Optional[str] = None
    session_token: Optional[str] = field(default=None, repr=False)


class S3TableStore(TableStore):
    """The data root under `s3://bucket/prefix`.

    S3 has no rename, but a single PUT, a completed multipart upload and a server-side
    CopyObject each make the new object visible whole or not at all. A writer therefore
    1. writes the Parquet file to a local temporary file (the data-producing code may
       still fail: nothing has reached the bucket yet);
    2. uploads that finished file to a temporary key under `<root>/_tmp/`, outside every
       table's folder, and checks that the stored size is the file's size (pyarrow's
       output stream closes, and so completes, an upload even when it is abandoned; a
       short object here harms no reader);
    3. copies it server-side onto the final key (CopyObject: atomic), then deletes the
       temporary key.
    A failure at any step leaves the previous object as it was. A run killed between 2
    and 3 leaves a temporary key under `_tmp/`, removed by a later write once it is stale;
    one killed during 2 leaves an incomplete multipart upload, which no listing shows (an
    AbortIncompleteMultipartUpload lifecycle rule on the bucket reclaims its storage).
    Deleting the last temporary makes pyarrow keep an empty `_tmp/` folder marker, which
    lies outside every table too.

    Known limit: CopyObject copies at most 5 GiB in one request, so one table file may be
    at most that large (a day of messages is megabytes; analytics tables grow with
    history).
    """

    files_are_local = False

    def __init__(self, uri: str, settings: S3Settings):
        bucket, prefix = parse_s3_uri(uri)
        self.root = PurePosixPath(bucket, *prefix.split("/")) if prefix else PurePosixPath(bucket)
        self.fs = _s3_filesystem(settings)
        self.endpoint_url = settings.endpoint_url
        self._check_bucket(bucket)

    def _check_bucket(self, bucket: str) -> None:
        """Fails now, naming the bucket, rather than at the first upload (after Gladly's
        export has been downloaded for nothing)."""
        info = self.fs.get_file_info(bucket)
        if info.type == pafs.FileType.NotFound:
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise DataRootError(
                f"Bucket {bucket!r}{where} does not exist (or these credentials cannot see "
                "it): create it first; the pipeline does not create buckets"
            )

    def uri(self, path: StorePath) -> str:
        return f"s3://{path}"

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.root}{where}"

    def local_state_dir(self) -> Optional[Path]:
        return None

    @contextmanager
    def writer(self, path: StorePath, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """Yields a Parquet writer whose file replaces `path` only if the block succeeds."""
        self._remove_stale_temporaries()
        handle, local = tempfile.mkstemp(prefix="gladly-", suffix=".parquet.tmp")
        os.close(handle)
        writer = pq.ParquetWriter(local, schema, compression=COMPRESSION)
        try:
            yield writer
            writer.close()
            if self._is_temporary(path):
                # A staging key: never read as a table, so it needs no copy step.
                self._upload_checked(local, path)
            else:
                temp = self._temporary_key(path, "tmp")
                try:
                    self._upload_checked(local, temp)
                    self.fs.copy_file(str(temp), str(path))
                finally:
                    self._discard(temp)
        finally:
            if writer.is_open:
                writer.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)

    def staging(self, path: StorePath) -> StorePath:
        return self._temporary_key(path, "staging")

    def replace(self, source: StorePath, path: StorePath) -> None:
        # Server-side copy (atomic), then the staging key goes.
        self.fs.copy_file(str(source), str(path))
        self.delete(source)

    def delete(self, path: StorePath) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(str(path))

    def _discard(self, path: StorePath) -> None:
        # Best effort: a failure here must not hide the error that got us here, and a
        # leftover temporary is removed by a later write once it is stale.
        with contextlib.suppress(OSError):
            self.delete(path)

    def _temporary_key(self, path: StorePath, kind: str) -> StorePath:
        # Named after the table file it belongs to, so a leftover says where it came from.
        origin = "-".join(path.relative_to(self.root).parts)
        return self.root / S3_TEMPORARY_FOLDER / f"{origin}.{uuid.uuid4().hex}.{kind}"

    def _is_temporary(self, path: StorePath) -> bool:
        return path.parent == self.root / S3_TEMPORARY_FOLDER

    def _upload_checked(self, local: str, key: StorePath) -> None:
        size = os.path.getsize(local)
        pafs.copy_files(
            local, str(key),
            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs,
        )
        stored = self.fs.get_file_info(str(key)).size
        if stored != size:
            raise OSError(
                f"Upload to {self.uri(key)} stored {stored} bytes of {size}; nothing was "
                "published"
            )

    def _remove_stale_temporaries(self) -> None:
        selector = pafs.FileSelector(
            str(self.root / S3_TEMPORARY_FOLDER), allow_not_found=True
        )
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.path.endswith((".tmp", ".staging")):
                continue
            if info.mtime is not None and info.mtime.timestamp() < cutoff:
                self._discard(StorePath(info.path))


def open_store(root: str, s3: Optional[S3Settings] = None) -> TableStore:
    """The store for a data root given as a local path, `file://` or `s3://` URI."""
    root = root.strip()
    if not root:
        raise DataRootError("The data root is empty: give a local folder or an s3:// URI")
    if "://" not in root:
        if URI_LIKE.match(root):
            # `s3:/bucket` or `s3:bucket` would otherwise become a local folder named
            # "s3:", and the tables would quietly land on this machine's disk.
            raise DataRootError(
                f"Data root {_redacted(root)} looks like a URI without '//': write "
                "s3://bucket/prefix for S3, or ./name for a local folder of that name"
            )
        return TableStore(os.path.abspath(root))
    scheme = root.split("://", 1)[0].lower()
    if scheme == "file":
        parts = urlsplit(root)
        bad_host = parts.netloc not in ("", "localhost")
        if bad_host or not parts.path.startswith("/") or parts.query or parts.fragment:
            raise DataRootError(
                f"Data root {root!r}: a file:// URI takes an absolute path and nothing else"
            )
        return TableStore(unquote(parts.path))
    if scheme == "s3":
        if s3 is None:
            raise DataRootError(f"Data root {_redacted(root)} is on S3 but no S3 settings given")
        return S3TableStore(root, s3)
    raise DataRootError(
        f"Data root {_redacted(root)}: unsupported scheme {scheme!r}; use a local folder or "
        "s3://bucket/prefix (any S3-compatible store, with its endpoint set)"
    )


# A scheme (two letters or more, so a Windows drive letter is not one) and a colon.
URI_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")

# AWS's rules for bucket names; MinIO, Ceph and R2 apply the same or looser ones.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_s3_uri(uri: str) -> tuple:
    """(bucket, prefix) of `s3://bucket/prefix`; a DataRootError says what is wrong."""
    shown = _redacted(uri)
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "s3":
        raise DataRootError(f"Data root {shown} is not an s3:// URI")
    if "@" in parts.netloc:
        raise DataRootError(
            f"Data root {shown} carries credentials; give them as GLADLY_S3_ACCESS_KEY_ID "
            "and GLADLY_S3_SECRET_ACCESS_KEY instead"
        )
    if parts.query or parts.fragment:
        raise DataRootError(
            f"Data root {shown} has a query or fragment; S3 settings (endpoint, region) "
            "go in the GLADLY_S3_* variables"
        )
    bucket = parts.netloc
    if not bucket:
        raise DataRootError(f"Data root {shown} names no bucket: use s3://bucket/prefix")
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise DataRootError(
            f"Data root {shown}: {bucket!r} is not a valid bucket name (3-63 lowercase "
            "letters, digits, dots and hyphens)"
        )
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise DataRootError(
            f"Data root {shown}: the prefix has an empty, '.' or '..' part"
        )
    return bucket, prefix


def parse_endpoint(endpoint_url: str) -> tuple:
    """(scheme, host[:port]) of an S3 endpoint URL such as `http://127.0.0.1:9000`."""
    parts = urlsplit(endpoint_url.strip())
    shown = _redacted(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataRootError(
            f"S3 endpoint {shown} must look like https://host[:port] (or http://)"
        )
    if "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise DataRootError(
            f"S3 endpoint {shown} must be scheme, host and port only (no path, query or "
            "credentials)"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise DataRootError(f"S3 endpoint {shown} has an invalid port") from None
    return parts.scheme, parts.netloc


def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    # The AWS SDK looks for credentials and the region in the EC2 instance metadata
    # service (169.254.169.254) when they are not given; we always give both, and turn
    # the lookup off for the whole process in case any code path still tries it.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    if not settings.access_key_id or not settings.secret_access_key:
        raise DataRootError("S3 access key id and secret access key are both required")
    if not settings.region:
        raise DataRootError("The S3 region is empty")
    options = {}
    if settings.endpoint_url:
        options["scheme"], options["endpoint_override"] = parse_endpoint(settings.endpoint_url)
    return pafs.S3FileSystem(
        access_key=settings.access_key_id,
        secret_key=settings.secret_access_key,
        session_token=settings.session_token or None,
        region=settings.region,
        # The bucket is the operator's to create, with the policies they want.
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
        **options,
    )


def _redacted(uri: str) -> str:
    """`uri` fit for an error message: any user:password@ part is masked."""
    parts = urlsplit(uri.strip())
    if "@" not in parts.netloc:
        return repr(uri)
    host = parts.netloc.rsplit("@", 1)[1]
    return repr(parts._replace(netloc=f"***@{host}").geturl())


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
