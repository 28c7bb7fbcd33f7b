"""An s3:// data root against a local S3-compatible server (moto, on 127.0.0.1).

The assets materialize into the bucket, readers find whole tables and nothing else, a
failed write leaves the previous object, bad settings give clear errors, and neither the
credentials nor any connection leave this machine.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid

import boto3
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from dagster import AssetSelection, AssetSpec, materialize
from moto.server import ThreadedMotoServer

from gladly_pipeline import storage
from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.checks import build_checks
from gladly_pipeline.definitions import data_root_settings
from gladly_pipeline.resources import DataRoot, GladlyResource
from gladly_pipeline.storage import (
    DataRootError,
    S3Settings,
    TableStore,
    open_store,
)

from .conftest import NOW, TOKEN, USERNAME, make_resources

# No code path of these tests may ask the EC2 metadata service for anything.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

ACCESS_KEY = "AKIAGLADLYTEST0001"
SECRET_KEY = "s3-secret-" + uuid.uuid4().hex
REGION = "us-east-1"
RAW_DAILY = [messages, conversations, contacts]
REFERENCE = [agents, inboxes, topics]
DAYS = ["2026-03-06", "2026-03-07"]
TABLE = pa.schema([("id", pa.string()), ("n", pa.int64())])


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint):
    """An independent view of the bucket (boto3), to see every key and pending upload."""
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(s3_client):
    name = f"gladly-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def s3_data_root(endpoint: str, bucket: str, **settings) -> DataRoot:
    return DataRoot(
        path=f"s3://{bucket}/gladly",
        s3_endpoint_url=endpoint,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        **settings,
    )


def s3_resources(emu, endpoint, bucket, tmp_path, **gladly_settings) -> dict:
    # The budget ledger cannot live in the bucket: a local SQLite file stands in for
    # the PostgreSQL database a deployment would use.
    tmp_path.mkdir(parents=True, exist_ok=True)
    gladly_settings.setdefault("budget_ledger_url", f"sqlite:///{tmp_path}/budget.sqlite3")
    resources = make_resources(emu, tmp_path / "unused", **gladly_settings)
    resources["data_root"] = s3_data_root(endpoint, bucket)
    return resources


def keys(client, bucket: str) -> set:
    """Every object key in the bucket, less folder markers (keys ending in '/')."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    found = {item["Key"] for page in pages for item in page.get("Contents", [])}
    return {key for key in found if not key.endswith("/")}


def pending_uploads(client, bucket: str) -> list:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def check_outcomes(data_root: DataRoot) -> dict:
    """{"asset:check": passed} for every asset check run on the tables of `data_root`."""
    checks = build_checks(clock=lambda: NOW)
    tables = {key.asset_key for group in checks for key in group.check_keys}
    result = materialize([*(AssetSpec(key) for key in tables), *checks],
                         selection=AssetSelection.all_asset_checks(),
                         resources={"data_root": data_root})
    assert result.success
    return {e.asset_check_key.to_user_string(): e.passed
            for e in result.get_asset_check_evaluations()}


def small_table(*ids: str) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "n": n} for n, i in enumerate(ids)], schema=TABLE)


# The pipeline end to end.


def test_raw_and_analytics_assets_materialize_into_the_bucket(
    emulator, s3_endpoint, s3_client, bucket, tmp_path, caplog, capfd
):
    resources = s3_resources(emulator, s3_endpoint, bucket, tmp_path / "s3")
    local = make_resources(emulator, tmp_path / "local")
    events = []
    for day in DAYS:
        for run_resources in (resources, local):
            result = materialize(RAW_DAILY, partition_key=day, resources=run_resources)
            assert result.success
            events.extend(result.all_events)
    for run_resources in (resources, local):
        result = materialize(REFERENCE + [analytics_tables], resources=run_resources)
        assert result.success
        events.extend(result.all_events)

    expected = {f"gladly/raw/{name}/date={day}/part-0.parquet"
                for name in ("messages", "conversations", "contacts") for day in DAYS}
    expected |= {f"gladly/raw/{name}/part-0.parquet" for name in ("agents", "inboxes", "topics")}
    expected |= {f"gladly/analytics/{name}/part-0.parquet"
                 for name in ("messages", "conversations", "contacts")}
    # Exactly the table files: no temporary or staging object left anywhere.
    assert keys(s3_client, bucket) == expected
    assert pending_uploads(s3_client, bucket) == []

    s3_store = resources["data_root"].store()
    local_store = TableStore(tmp_path / "local")
    for name in ("messages", "conversations", "contacts"):
        from_s3 = s3_store.read(s3_store.analytics(name))
        from_disk = local_store.read(local_store.analytics(name))
        assert from_s3.num_rows == from_disk.num_rows > 0, name
        assert from_s3.schema.equals(from_disk.schema), name
        key = from_s3.column_names[0]
        assert sorted(from_s3.column(key).to_pylist()) == sorted(
            from_disk.column(key).to_pylist()
        ), name

    # The data checks list and read the bucket as they do a folder, with the same verdicts.
    on_s3 = check_outcomes(resources["data_root"])
    assert on_s3 == check_outcomes(local["data_root"])
    assert sum(on_s3.values()) > len(on_s3) // 2

    paths = [
        str(event.event_specific_data.materialization.metadata["path"].value)
        for event in events if event.is_step_materialization
    ]
    assert f"s3://{bucket}/gladly/raw/messages/date={DAYS[0]}/part-0.parquet" in paths

    # The credentials appear in no log line, printed output or Dagster event.
    shown = caplog.text + "".join(capfd.readouterr()) + "".join(
        str(event.message) for event in events
    )
    assert SECRET_KEY not in shown and ACCESS_KEY not in shown


def test_budget_deferral_filters_the_staged_day_in_the_bucket(
    emulator, s3_endpoint, s3_client, bucket, tmp_path
):
    # Deferred conversations make `publish` re-read the staged day from the bucket.
    resources = s3_resources(
        emulator, s3_endpoint, bucket, tmp_path, conversations_per_period=2
    )
    result = materialize([messages], partition_key=DAYS[0], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("raw__messages")[0].metadata
    assert metadata["deferred_conversations"].value > 0

    store = resources["data_root"].store()
    table = store.read(store.raw_partition("messages", DAYS[0]))
    kept = set(table.column("conversation_id").drop_null().to_pylist())
    assert len(kept) == 2
    assert keys(s3_client, bucket) == {f"gladly/raw/messages/date={DAYS[0]}/part-0.parquet"}


def test_env_vars_wired_by_the_definitions_reach_the_bucket(
    emulator, s3_endpoint, s3_client, bucket, tmp_path, monkeypatch
):
    monkeypatch.setenv("GLADLY_DATA_ROOT", f"s3://{bucket}/from-env")
    monkeypatch.setenv("GLADLY_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("GLADLY_S3_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("GLADLY_S3_SECRET_ACCESS_KEY", SECRET_KEY)
    settings = data_root_settings()
    # The UI shows which variable holds a secret, never its value.
    assert "GLADLY_S3_SECRET_ACCESS_KEY" in repr(settings["s3_secret_access_key"])
    assert SECRET_KEY not in repr(settings)

    resources = make_resources(emulator, tmp_path)
    resources["data_root"] = DataRoot(**settings)
    assert materialize(REFERENCE, resources=resources).success
    assert keys(s3_client, bucket) == {
        f"from-env/raw/{name}/part-0.parquet" for name in ("agents", "inboxes", "topics")
    }


# Readers.


def test_readers_see_whole_tables_and_never_a_temporary(s3_endpoint, bucket):
    store = s3_data_root(s3_endpoint, bucket).store()
    for day, ids in (("2026-03-06", ["a", "b"]), ("2026-03-07", ["c"])):
        store.write(store.raw_partition("things", day), small_table(*ids))
    # What a run killed mid-write leaves behind: a staged day and an upload temporary.
    leftover = store.staging(store.raw_partition("things", "2026-03-08"))
    store.write(leftover, small_table("x", "y", "z"))

    dataset = ds.dataset(
        f"{bucket}/gladly/raw/things", format="parquet", partitioning="hive",
        filesystem=store.fs,
    )
    assert sorted(dataset.to_table().column("id").to_pylist()) == ["a", "b", "c"]

    # DuckDB's own s3:// reader is an extension it would download; it scans the pyarrow
    # dataset instead, with nothing to download.
    duck = duckdb.connect()
    duck.register("things", dataset)
    per_day = duck.execute("SELECT date, count(*) FROM things GROUP BY 1 ORDER BY 1").fetchall()
    assert per_day == [("2026-03-06", 2), ("2026-03-07", 1)]

    polars = pl.scan_parquet(
        f"s3://{bucket}/gladly/raw/things/**/*.parquet",
        hive_partitioning=True,
        storage_options={
            "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION, "aws_endpoint_url": s3_endpoint, "aws_allow_http": "true",
        },
    ).collect()
    assert sorted(polars["id"].to_list()) == ["a", "b", "c"]
    assert sorted(str(day) for day in polars["date"].unique()) == ["2026-03-06", "2026-03-07"]

    assert [p.day for p in store.raw_partitions("things")] == ["2026-03-06", "2026-03-07"]
    files = store.raw_files("things")
    assert len(files) == 2 and all(f.endswith("/part-0.parquet") for f in files)
    assert store.dataset(files, TABLE, partitioned=True).to_table().num_rows == 3


# Atomic replace.


def test_a_write_that_fails_midway_leaves_the_previous_object(
    s3_endpoint, s3_client, bucket
):
    store = s3_data_root(s3_endpoint, bucket).store()
    path = store.analytics("things")
    store.write(path, small_table("old-1", "old-2"))
    before = s3_client.head_object(Bucket=bucket, Key="gladly/analytics/things/part-0.parquet")

    with pytest.raises(RuntimeError, match="extraction broke"), store.writer(path, TABLE) as w:
        w.write_table(small_table("new-1"))
        raise RuntimeError("extraction broke")

    after = s3_client.head_object(Bucket=bucket, Key="gladly/analytics/things/part-0.parquet")
    assert after["ETag"] == before["ETag"]
    assert store.read(path).column("id").to_pylist() == ["old-1", "old-2"]
    assert keys(s3_client, bucket) == {"gladly/analytics/things/part-0.parquet"}
    assert pending_uploads(s3_client, bucket) == []


def _short_upload(source, destination, *, source_filesystem, destination_filesystem):
    # What an abandoned output stream leaves: an upload completed with part of the data.
    with source_filesystem.open_input_file(source) as src:
        data = src.read()
    with destination_filesystem.open_output_stream(destination) as out:
        out.write(data[: len(data) // 2])


def _failed_upload(source, destination, **filesystems):
    raise OSError("connection reset by peer")


@pytest.mark.parametrize("upload", [_short_upload, _failed_upload], ids=["short", "failed"])
def test_a_broken_upload_leaves_the_previous_object(
    s3_endpoint, s3_client, bucket, monkeypatch, upload
):
    store = s3_data_root(s3_endpoint, bucket).store()
    path = store.raw_partition("things", "2026-03-07")
    store.write(path, small_table("old"))

    monkeypatch.setattr(storage.pafs, "copy_files", upload)
    with pytest.raises(OSError, match="stored|connection reset"):
        store.write(path, small_table("new-1", "new-2", "new-3"))

    assert store.read(path).column("id").to_pylist() == ["old"]
    assert keys(s3_client, bucket) == {"gladly/raw/things/date=2026-03-07/part-0.parquet"}


def test_a_failed_server_side_copy_leaves_the_previous_object(
    s3_endpoint, s3_client, bucket, monkeypatch
):
    store = s3_data_root(s3_endpoint, bucket).store()
    path = store.analytics("things")
    store.write(path, small_table("old"))
    upload = type(store)._upload_checked

    def upload_then_lose(self, local, key):
        upload(self, local, key)
        # The temporary vanishes before the copy (e.g. removed by a lifecycle rule):
        # the store itself then refuses the CopyObject.
        s3_client.delete_object(Bucket=bucket, Key=str(key).removeprefix(f"{bucket}/"))

    monkeypatch.setattr(type(store), "_upload_checked", upload_then_lose)
    with pytest.raises(OSError):
        store.write(path, small_table("new"))

    assert store.read(path).column("id").to_pylist() == ["old"]
    assert keys(s3_client, bucket) == {"gladly/analytics/things/part-0.parquet"}


def test_staged_file_is_published_whole_and_then_removed(s3_endpoint, s3_client, bucket):
    store = s3_data_root(s3_endpoint, bucket).store()
    path = store.raw_partition("things", "2026-03-07")
    stage = store.staging(path)
    assert not str(stage).endswith(".parquet")
    with store.writer(stage, TABLE) as writer:
        writer.write_table(small_table("a", "b"))
    assert not store.exists(path)
    assert [b.num_rows for b in store.iter_batches(stage, batch_size=1)] == [1, 1]

    store.replace(stage, path)
    store.delete(stage)  # what write_day's cleanup does; a missing key is fine

    assert store.exists(path) and not store.exists(stage)
    assert keys(s3_client, bucket) == {"gladly/raw/things/date=2026-03-07/part-0.parquet"}


def test_stale_temporaries_are_removed_and_fresh_ones_kept(
    s3_endpoint, s3_client, bucket, monkeypatch
):
    store = s3_data_root(s3_endpoint, bucket).store()
    leftover = store.staging(store.raw_partition("things", "2026-03-07"))
    store.write(leftover, small_table("x"))

    store.write(store.analytics("things"), small_table("a"))
    # Seconds old: it may belong to a write still running elsewhere.
    assert f"{leftover}".removeprefix(f"{bucket}/") in keys(s3_client, bucket)

    monkeypatch.setattr(storage, "STALE_TEMPORARY_SECONDS", -60)
    store.write(store.analytics("things"), small_table("b"))
    assert keys(s3_client, bucket) == {"gladly/analytics/things/part-0.parquet"}


# Settings and their errors.


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bad_Bucket/x", "not a valid bucket name"),
        ("s3://ab/x", "not a valid bucket name"),
        ("s3://bucket/a//b", "empty, '.' or '..' part"),
        ("s3://bucket/a/../b", "empty, '.' or '..' part"),
        ("s3://bucket/x?region=eu-west-1", "GLADLY_S3_"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3a://bucket/x", "unsupported scheme 's3a'"),
        ("file://host/x", "absolute path"),
        ("s3:/bucket/x", "looks like a URI without '//'"),
        ("s3:bucket/x", "looks like a URI without '//'"),
        ("S3:/bucket/x", "looks like a URI without '//'"),
        ("   ", "empty"),
    ],
)
def test_a_bad_data_root_says_what_is_wrong(s3_endpoint, root, message):
    with pytest.raises(DataRootError, match=re.escape(message)):
        s3_data_root(s3_endpoint, "unused").model_copy(update={"path": root}).store()


def test_credentials_in_the_uri_are_refused_without_echoing_them(s3_endpoint):
    root = f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/x"
    with pytest.raises(DataRootError, match="GLADLY_S3_ACCESS_KEY_ID") as error:
        open_store(root, S3Settings(ACCESS_KEY, SECRET_KEY, endpoint_url=s3_endpoint))
    assert SECRET_KEY not in str(error.value) and ACCESS_KEY not in str(error.value)


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("127.0.0.1:9000", "https://host[:port]"),
        ("ftp://127.0.0.1:9000", "https://host[:port]"),
        ("http://127.0.0.1:9000/minio", "no path"),
        ("http://127.0.0.1:99999", "invalid port"),
    ],
)
def test_a_bad_endpoint_says_what_is_wrong(endpoint, message):
    with pytest.raises(DataRootError, match=re.escape(message)):
        open_store("s3://bucket/x", S3Settings(ACCESS_KEY, SECRET_KEY, endpoint_url=endpoint))


def test_missing_credentials_name_the_variables_to_set(s3_endpoint):
    root = DataRoot(path="s3://bucket/x", s3_endpoint_url=s3_endpoint,
                    s3_access_key_id=ACCESS_KEY)
    with pytest.raises(DataRootError, match="set GLADLY_S3_SECRET_ACCESS_KEY$"):
        root.store()


def test_the_settings_never_show_the_secrets():
    shown = repr(S3Settings(ACCESS_KEY, SECRET_KEY, session_token="token-123"))
    assert SECRET_KEY not in shown and ACCESS_KEY not in shown and "token-123" not in shown


def test_a_missing_bucket_fails_when_the_store_opens_naming_it(s3_endpoint):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DataRootError, match=f"Bucket '{missing}' at .* does not exist") as error:
        s3_data_root(s3_endpoint, missing).store()
    assert SECRET_KEY not in str(error.value)


def test_local_roots_keep_their_paths(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert type(store) is TableStore and store.root == tmp_path
    assert store.raw_partition("messages", "2026-03-07").parent.name == "date=2026-03-07"
    assert isinstance(open_store(str(tmp_path / "data")).root, type(tmp_path))


def test_the_ledger_needs_a_database_when_the_data_root_is_on_s3(s3_endpoint, bucket, tmp_path):
    store = s3_data_root(s3_endpoint, bucket).store()
    gladly = GladlyResource(base_url="http://127.0.0.1:1", username=USERNAME, api_token=TOKEN)
    with pytest.raises(DataRootError, match="DAGSTER_PG_URL.*GLADLY_BUDGET_LEDGER_URL"):
        gladly.open_ledger(store)

    url = f"sqlite:///{tmp_path}/budget.sqlite3"
    gladly = GladlyResource(base_url="http://127.0.0.1:1", username=USERNAME, api_token=TOKEN,
                            budget_ledger_url=url)
    ledger = gladly.open_ledger(store)
    ledger.close()
    assert (tmp_path / "budget.sqlite3").exists()


# The network: the AWS SDK under pyarrow connects to the endpoint and nowhere else.

NETWORK_PROBE = textwrap.dedent("""
    import os, sys
    import pyarrow as pa
    from gladly_pipeline.resources import DataRoot

    endpoint, bucket, key, secret = sys.argv[1:5]
    store = DataRoot(path=f"s3://{bucket}/probe", s3_endpoint_url=endpoint,
                     s3_access_key_id=key, s3_secret_access_key=secret).store()
    table = pa.table({"id": ["a", "b"]})
    store.write(store.raw_partition("things", "2026-03-07"), table)
    files = store.raw_files("things")
    assert store.dataset(files, table.schema, partitioned=True).count_rows() == 2
    print("metadata lookup disabled:", os.environ.get("AWS_EC2_METADATA_DISABLED"))
""")
CONNECT_TARGET = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def _target(line: str) -> str:
    found = CONNECT_TARGET.search(line)
    return next(g for g in found.groups() if g) if found else line


def test_s3_traffic_goes_to_the_endpoint_only(s3_endpoint, bucket, tmp_path):
    if shutil.which("strace") is None:
        reason = "needs strace (apt-get install strace); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    trace = tmp_path / "connect.trace"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    completed = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace),
         sys.executable, "-c", NETWORK_PROBE, s3_endpoint, bucket, ACCESS_KEY, SECRET_KEY],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "metadata lookup disabled: true" in completed.stdout

    calls = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    targets = {_target(line) for line in calls}
    port = s3_endpoint.rsplit(":", 1)[1]
    assert any(f"htons({port})" in line for line in calls), "no connection to the endpoint"
    assert targets <= {"127.0.0.1", "::1"}, targets
