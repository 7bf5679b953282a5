"""Datasets in object storage: a real S3-compatible server (moto's) on 127.0.0.1, started by the tests, read through pyarrow's S3 filesystem."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from conftest import cache_dirs, with_broken_shard

import extmem
from extmem._stores import GCS_RETRY_SECONDS, resolve
from extmem.encode._blocks import Encoder
from extmem.encode._pages import read_pages
from extmem.read._discover import discover_shards
from extmem.read._reader import read_batches
from extmem.read._selection import select_dataset
from extmem.score._model import as_model

BUCKET = "extmem-test"
SECRET = "extmem-test-secret-never-logged"


class Store:
    """A running S3-compatible server and a client to fill it."""

    def __init__(self, server: object, endpoint: str) -> None:
        self.server = server
        self.endpoint = endpoint
        self.client = pafs.S3FileSystem(
            endpoint_override=endpoint, allow_bucket_creation=True, access_key="k", secret_key=SECRET, region="us-east-1"
        )

    def upload(self, folder: Path, prefix: str) -> str:
        for shard in discover_shards([str(folder)]):
            with open(shard, "rb") as source, self.client.open_output_stream(f"{BUCKET}/{prefix}/{Path(shard).name}") as target:
                target.write(source.read())
        return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in extmem's [test] extra")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as environment:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            environment.setenv(name, value)
        store = Store(server, endpoint)
        store.client.create_dir(BUCKET)
        yield store
    server.stop()


@pytest.fixture(scope="module")
def remote_synth(store: Store, small_synth: Path) -> str:
    return store.upload(small_synth, "small")


def _booster_bytes(folder: Path) -> bytes:
    return bytes(xgb.Booster(model_file=str(folder / "model.ubj")).save_raw("ubj"))


def test_training_from_s3_equals_training_from_the_local_copy(remote_synth: str, small_synth: Path, tmp_path: Path) -> None:
    local = extmem.train(small_synth, preset="splice-sites", out=tmp_path / "local", rounds=5, valid_fraction=0.2, cache_dir=tmp_path)
    remote = extmem.train(remote_synth, preset="splice-sites", out=tmp_path / "remote", rounds=5, valid_fraction=0.2, cache_dir=tmp_path)
    assert _booster_bytes(tmp_path / "local") == _booster_bytes(tmp_path / "remote")
    assert remote.report["rows"] == local.report["rows"] and remote.report["config"]["data"]["path"] == [remote_synth]
    assert SECRET not in (tmp_path / "remote" / "report.json").read_text()  # credentials come from the environment, never into reports
    assert cache_dirs(tmp_path) == []


def test_predict_explain_and_prune_from_s3_equal_the_local_results(remote_synth: str, small_synth: Path, tmp_path: Path) -> None:
    extmem.train(small_synth, preset="splice-sites", out=tmp_path / "m", rounds=5)
    for source, name in ((small_synth, "local"), (remote_synth, "remote")):
        extmem.predict(tmp_path / "m", source, tmp_path / f"{name}.parquet", keep="gene_id")
        extmem.explain(tmp_path / "m", source, tmp_path / f"why-{name}", top=3, filter="position > 0")
        extmem.prune(source, tmp_path / f"pruned-{name}", label="splice_type")
    assert pq.read_table(tmp_path / "local.parquet").equals(pq.read_table(tmp_path / "remote.parquet"))
    assert pq.read_table(tmp_path / "why-local" / "contributions.parquet").equals(
        pq.read_table(tmp_path / "why-remote" / "contributions.parquet")
    )
    for shard in sorted((tmp_path / "pruned-local").glob("*.parquet")):
        assert pq.read_table(shard).equals(pq.read_table(tmp_path / "pruned-remote" / shard.name))


def test_globs_prefixes_and_missing_objects(store: Store, remote_synth: str) -> None:
    every = discover_shards([remote_synth])
    assert len(every) == 3 and all(shard.startswith(f"{remote_synth}/") and shard.endswith(".parquet") for shard in every)
    assert discover_shards([f"{remote_synth}/*.parquet"]) == every
    assert discover_shards([every[1]]) == [every[1]]
    odd = f"{remote_synth}-odd/run[1].parquet"  # an object named with glob characters is itself
    store.client.copy_file(every[0].removeprefix("s3://"), odd.removeprefix("s3://"))
    assert discover_shards([odd]) == [odd]
    with pytest.raises(extmem.InputPathError, match="does not exist"):
        discover_shards([f"{remote_synth}/nothing.parquet"])
    with pytest.raises(extmem.InputPathError, match="no-such-bucket"):
        discover_shards(["s3://no-such-bucket/data/"])
    with pytest.raises(extmem.InputPathError, match="more than once"):
        discover_shards([remote_synth, every[0]])


def test_a_partitioned_dataset_in_object_storage(store: Store, tmp_path: Path) -> None:
    """key=value prefixes are read as columns, as from a local folder; a filter on them skips the other objects."""
    for chrom, rows in (("chr1", [1.0, 2.0]), ("chr2", [3.0, 4.0, 5.0])):
        pq.write_table(
            pa.table({"x": rows, "y": [0, 1, 0][: len(rows)]}), f"{BUCKET}/parts/chrom={chrom}/p.parquet", filesystem=store.client
        )
    uri = f"s3://{BUCKET}/parts"
    assert [shard.rpartition("/parts/")[2] for shard in discover_shards([uri])] == ["chrom=chr1/p.parquet", "chrom=chr2/p.parquet"]
    result = extmem.train(uri, label="y", filter="chrom == 'chr2'", rounds=1, cache_dir=tmp_path)
    assert result.report["rows"] == 3 and result.report["data"]["train"]["row_groups_skipped"] == 1
    pq.write_table(pa.table({"x": [6.0], "y": [1]}), f"{BUCKET}/parts/own.parquet", filesystem=store.client)
    with pytest.raises(extmem.InputPathError, match="holds shards of its own .* and in partition folders"):
        discover_shards([uri])


def test_object_keys_with_uri_characters_and_escaped_partition_values(store: Store, small_synth: Path, tmp_path: Path) -> None:
    """Keys holding ``#``, ``?``, ``%`` or spaces are read as listed (not cut at a URI's fragment or query); a partition value
    escaped by its writer (Spark writes ``:`` as ``%3A``) reads as the local folder's does."""
    table = pa.table({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    local = tmp_path / "local"
    for key in ("odd/a#b?.parquet", "odd/100% c.parquet", "parts/t=00%3A30/p.parquet", "parts/t=01%3A00/p.parquet"):
        pq.write_table(table, f"{BUCKET}/keys/{key}", filesystem=store.client)
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, local / key)
    shards = discover_shards([f"s3://{BUCKET}/keys/odd"])
    assert len(shards) == 2 and extmem.train(f"s3://{BUCKET}/keys/odd", label="y", rounds=1, cache_dir=tmp_path).report["rows"] == 6
    assert [resolve(shard)[1] for shard in shards] == [f"{BUCKET}/keys/odd/100% c.parquet", f"{BUCKET}/keys/odd/a#b?.parquet"]
    extmem.pack(f"s3://{BUCKET}/keys/odd", tmp_path / "packed", block_pattern="^x$")  # rewrites keep the objects' names
    assert sorted(path.name for path in (tmp_path / "packed").glob("*.parquet")) == ["100% c.parquet", "a#b?.parquet"]
    for parts in (f"s3://{BUCKET}/keys/parts", str(local / "parts")):
        rows = extmem.train(parts, label="y", filter="t == '01:00'", rounds=1, cache_dir=tmp_path).report["rows"]
        assert rows == 3, parts


def test_outputs_that_would_become_their_own_input_in_the_store_are_refused(store: Store, remote_synth: str, tmp_path: Path) -> None:
    """As for local folders: predictions written among the shards they score, a pruned dataset replacing its own shards."""
    extmem.train(remote_synth, preset="splice-sites", out=tmp_path / "m", rounds=1)
    with pytest.raises(extmem.OptionError, match="would lie among the shards it scores"):
        extmem.predict(tmp_path / "m", remote_synth, f"{remote_synth}/preds.parquet")
    pruned = f"s3://{BUCKET}/self-pruned"
    extmem.prune(remote_synth, pruned, label="splice_type")
    before = _objects(store, "self-pruned")
    with pytest.raises(extmem.OptionError, match="holds the shard .* it is written from"):
        extmem.prune(pruned, pruned, label="splice_type", overwrite=True)  # a folder extmem wrote, so only this check stops it
    assert _objects(store, "self-pruned") == before
    run = subprocess.run(
        [sys.executable, "-m", "extmem", "train", remote_synth, "--out", f"s3://{BUCKET}/cli-model", "--rounds", "1", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"model: s3://{BUCKET}/cli-model/model.ubj; report: s3://{BUCKET}/cli-model/report.json" in run.stdout


def _object(store: Store, uri: str) -> bytes:
    with store.client.open_input_stream(uri.removeprefix("s3://")) as stream:
        return bytes(stream.read())


def _objects(store: Store, prefix: str) -> list[str]:
    listed = store.client.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", allow_not_found=True, recursive=True))
    return sorted(info.path[len(f"{BUCKET}/{prefix}/") :] for info in listed if info.is_file)


def test_outputs_go_to_the_store_complete_or_not_at_all(store: Store, remote_synth: str, small_synth: Path, tmp_path: Path) -> None:
    """Models, predictions, explanations and pruned datasets written to s3:// equal the local ones; the overwrite rule holds there too."""
    out = f"s3://{BUCKET}/out"
    local = extmem.train(small_synth, preset="splice-sites", out=tmp_path / "m", rounds=3)
    remote = extmem.train(remote_synth, preset="splice-sites", out=f"{out}/model", rounds=3)
    assert _object(store, f"{out}/model/model.ubj") == (tmp_path / "m" / "model.ubj").read_bytes()
    assert remote.report["files"] == local.report["files"] and _objects(store, "out/model") == ["model.ubj", "report.json"]
    np.testing.assert_array_equal(
        extmem.Model.load(f"{out}/model").predict_proba(small_synth), extmem.Model.load(tmp_path / "m").predict_proba(small_synth)
    )
    extmem.predict(f"{out}/model", remote_synth, tmp_path / "from-remote-model.parquet", keep="gene_id")
    extmem.predict(tmp_path / "m", remote_synth, f"{out}/preds.parquet", keep="gene_id")
    assert pq.read_table(tmp_path / "from-remote-model.parquet").equals(
        pq.read_table(pa.BufferReader(_object(store, f"{out}/preds.parquet")))
    )
    linear = extmem.train_incremental(remote_synth, preset="splice-sites", algorithm="sgd_logistic", epochs=1, out=f"{out}/linear").model
    np.testing.assert_array_equal(as_model(f"{out}/linear").predict_proba(small_synth), linear.predict_proba(small_synth))
    with pytest.raises(extmem.OptionError, match="No model at"):
        extmem.Model.load(f"{out}/nothing-here")
    extmem.predict(tmp_path / "m", small_synth, tmp_path / "preds.parquet", keep="gene_id")
    assert _object(store, f"{out}/preds.parquet") == (tmp_path / "preds.parquet").read_bytes()
    extmem.predict(tmp_path / "m", remote_synth, f"{out}/preds.csv", keep="gene_id")
    extmem.predict(tmp_path / "m", small_synth, tmp_path / "preds.csv", keep="gene_id")
    assert _object(store, f"{out}/preds.csv") == (tmp_path / "preds.csv").read_bytes()
    extmem.explain(tmp_path / "m", remote_synth, f"{out}/why", top=3)
    assert _objects(store, "out/why") == ["contributions.parquet", "importance.json", "importance.parquet", "kmers.parquet"]
    extmem.prune(remote_synth, f"{out}/pruned", label="splice_type")
    extmem.prune(small_synth, tmp_path / "pruned", label="splice_type")
    assert _objects(store, "out/pruned") == sorted(p.name for p in (tmp_path / "pruned").iterdir())
    retrained = extmem.train(f"{out}/pruned", preset="splice-sites", rounds=2).report
    assert retrained["rows"] == 3000
    extmem.pack(remote_synth, f"{out}/packed")
    extmem.pack(small_synth, tmp_path / "packed")
    for name in sorted(p.name for p in (tmp_path / "packed").glob("*.parquet")):
        assert pq.read_table(pa.BufferReader(_object(store, f"{out}/packed/{name}"))).equals(pq.read_table(tmp_path / "packed" / name))
    shards = extmem.synth(f"{out}/synth", extmem.SynthOptions(rows=300, shards=2, k=3, seq_len=40))
    assert shards == [f"{out}/synth/batch_00001.parquet", f"{out}/synth/batch_00002.parquet"]
    assert discover_shards([f"{out}/synth"]) == shards
    with pytest.raises(extmem.OptionError, match="already exists"):
        extmem.predict(tmp_path / "m", remote_synth, f"{out}/preds.parquet")
    with pytest.raises(extmem.OptionError, match="not empty"):
        extmem.prune(remote_synth, f"{out}/pruned", label="splice_type")
    extmem.prune(remote_synth, f"{out}/pruned", label="splice_type", overwrite=True, options=extmem.PruneOptions(corr_threshold=0.5))
    assert _objects(store, "out/pruned") == sorted(json.loads(_object(store, f"{out}/pruned/_manifest.json"))["files"] + ["_manifest.json"])
    with pytest.raises(extmem.OptionError, match="did not write"):
        extmem.explain(tmp_path / "m", remote_synth, f"s3://{BUCKET}/small", overwrite=True)  # the shards are not explain's files
    with pytest.raises(extmem.OptionError, match="'out'.*no-such-bucket.*does not exist"):
        extmem.predict(tmp_path / "m", remote_synth, "s3://no-such-bucket/p.parquet")
    with pytest.raises(extmem.OptionError, match="'out'.*no-such-bucket.*does not exist"):
        extmem.explain(tmp_path / "m", remote_synth, "s3://no-such-bucket/why")
    with pytest.raises(extmem.OptionError, match="local output folder"):
        extmem.train(remote_synth, preset="splice-sites", out=f"{out}/checkpointed", rounds=2, checkpoint_every=1)


def test_a_failed_run_leaves_no_object(store: Store, remote_synth: str, small_synth: Path, tmp_path: Path) -> None:
    data = with_broken_shard(small_synth, tmp_path / "data")
    extmem.train(small_synth, preset="splice-sites", out=tmp_path / "m", rounds=2)
    command = [sys.executable, "-m", "extmem", "predict", str(tmp_path / "m"), str(data), "--out", f"s3://{BUCKET}/failed/p.parquet"]
    run = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "zz_broken.parquet" in run.stderr
    assert _objects(store, "failed") == []


def test_a_store_that_goes_away_mid_read_is_one_clear_error_and_leaves_no_cache(store: Store, small_synth: Path, tmp_path: Path) -> None:
    """The dataset is scanned, then its objects vanish: the read names the object and row group; the cache is gone."""
    uri = store.upload(small_synth, "vanishing")
    script = (
        "import sys, extmem, pyarrow.fs as fs\n"
        "from extmem.read._selection import select_dataset\n"
        "from extmem.read._reader import read_batches\n"
        f"selection = select_dataset(extmem.Dataset({uri!r}, label='splice_type'))\n"
        f"store = fs.S3FileSystem(endpoint_override={store.endpoint!r}, access_key='k', secret_key={SECRET!r}, region='us-east-1')\n"
        "batches = read_batches(selection, 100)\n"
        "next(batches)\n"
        f"store.delete_dir_contents({(BUCKET + '/vanishing')!r})\n"
        "try:\n"
        "    list(batches)\n"
        "except extmem.ShardReadError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "row group" in run.stdout and uri in run.stdout, run.stdout
    command = [sys.executable, "-m", "extmem", "train", uri, "--out", str(tmp_path / "m"), "--cache-dir", str(tmp_path), "--no-progress"]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 2 and uri in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert cache_dirs(tmp_path) == [] and not (tmp_path / "m").exists()


def test_matrices_from_s3_hold_the_same_rows(remote_synth: str, small_synth: Path) -> None:
    local = extmem.dmatrix(small_synth, preset="splice-sites", cache="memory")
    remote = extmem.dmatrix(remote_synth, preset="splice-sites", cache="memory")
    assert (remote.num_row(), remote.num_col()) == (local.num_row(), local.num_col())
    np.testing.assert_array_equal(remote.get_label(), local.get_label())


def test_wide_row_groups_from_s3_come_whole_and_equal_the_local_ones(store: Store, wide_synth: Path) -> None:
    """4,122 columns in 1,000-row groups: read whole, in column parts (each a ranged request), the same pages as from local disk."""
    remote = store.upload(wide_synth, "wide")
    pages = {}
    for source in (str(wide_synth), remote):
        selection = select_dataset(extmem.Dataset(source, preset="splice-sites"))
        whole = [
            batch.parts is not None and sum(part.num_columns for part in batch.parts()) > 0
            for batch in read_batches(selection, 256, whole_rows=2048)
        ]
        assert whole and all(whole)
        pages[source] = list(read_pages(selection, Encoder(selection.layout), 256, 4096))
    for got, expected in zip(pages[remote], pages[str(wide_synth)], strict=True):
        assert (got.X != expected.X).nnz == 0 and np.array_equal(got.label, expected.label)


@pytest.mark.slow
def test_a_local_cluster_trains_from_the_store_without_a_local_copy(remote_synth: str, small_synth: Path, tmp_path: Path) -> None:
    """Workers open the URIs themselves (the client sends URIs and shard assignments): the model equals the local cluster's."""
    distributed = pytest.importorskip("distributed")
    options = {"preset": "splice-sites", "rounds": 4, "features": "4mer_*", "cache_dir": tmp_path}
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = extmem.train_distributed(client, remote_synth, **options)
        local = extmem.train_distributed(client, small_synth, **options)
    assert remote.report["rows"] == local.report["rows"] == 3000
    assert sum(worker["shards"] for worker in remote.report["details"]["workers"]) == 3
    assert bytes(remote.booster.save_raw("ubj")) == bytes(local.booster.save_raw("ubj"))
    assert cache_dirs(tmp_path) == []


def test_a_server_stopped_mid_read_is_one_clear_error(small_synth: Path) -> None:
    """The store's client retries a bounded number of times, then the read fails naming the object and the row group."""
    pytest.importorskip("moto.server")
    script = f"""
import logging, os
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
endpoint = "http://%s:%d" % server.get_host_and_port()
os.environ.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
import pyarrow as pa
import pyarrow.fs as pafs
store = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True, access_key="k", secret_key="s", region="us-east-1")
store.create_dir("stopping")
for name in sorted(os.listdir({str(small_synth)!r})):
    if name.endswith(".parquet"):
        with open(os.path.join({str(small_synth)!r}, name), "rb") as source, store.open_output_stream("stopping/d/" + name) as target:
            target.write(source.read())
import extmem
from extmem.read._reader import read_batches
from extmem.read._selection import select_dataset
batches = read_batches(select_dataset(extmem.Dataset("s3://stopping/d/", label="splice_type")), 100)
next(batches)
server.stop()
try:
    list(batches)
except extmem.ShardReadError as exc:
    print(exc)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "row group" in run.stdout and "s3://stopping/d/batch_00001.parquet" in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("uri", "seconds"), [("gs://bucket/data/", GCS_RETRY_SECONDS), ("gs://bucket/data/?retry_limit_seconds=5", 5)], ids=["default", "given"]
)
def test_an_unreachable_store_is_retried_for_a_minute_not_fifteen(uri: str, seconds: int) -> None:
    filesystem, _ = resolve(uri)
    assert isinstance(filesystem, pafs.GcsFileSystem)
    assert filesystem.__reduce__()[1][0]["retry_time_limit"].total_seconds() == seconds
