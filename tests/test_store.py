import os

import pyarrow as pa
import pytest

from blast_ray.store import MANIFEST_NAME, ArtifactStore, StageOutput, latest_output


def _roundtrip(store: ArtifactStore):
    store.write_json({"a": 1}, "ds", "x.json")
    assert store.read_json("ds", "x.json") == {"a": 1}
    t = pa.table({"user_idx": [0, 1, 2], "item_idx": [5, 6, 7]})
    store.write_table(t, "ds", "tbl", "part-0.parquet")
    store.write_table(t, "ds", "tbl", "part-1.parquet")
    back = store.read_table("ds", "tbl")
    assert back.num_rows == 6 and back.column_names == ["user_idx", "item_idx"]
    assert store.list_dir("ds") == ["tbl", "x.json"]
    assert store.list_files("ds", "tbl") == ["part-0.parquet", "part-1.parquet"]
    store.delete_dir("ds", "tbl")
    assert not store.exists("ds", "tbl")


def _commit_protocol(store: ArtifactStore):
    cfg = {"etl": {"kcore": 5}}
    out = StageOutput.open(store, "ds", "etl", config=cfg, inputs={"raw": "abc"})
    assert not out.done
    out.begin()
    store.write_text("partial", *out.parts, "data.txt")
    # interrupted here: no manifest -> not committed, and the next attempt wipes the leftovers
    again = StageOutput.open(store, "ds", "etl", config=cfg, inputs={"raw": "abc"})
    assert again.fingerprint == out.fingerprint and not again.done
    assert latest_output(store, "ds", "etl") is None
    again.begin()
    assert not store.exists(*again.parts, "data.txt")
    store.write_text("full", *again.parts, "data.txt")
    m = again.commit(row_counts={"rows": 3})
    assert m["row_counts"] == {"rows": 3} and m["files"] == ["data.txt"]
    assert StageOutput.open(store, "ds", "etl", config=cfg, inputs={"raw": "abc"}).done
    assert store.exists(*again.parts, MANIFEST_NAME)
    assert latest_output(store, "ds", "etl").fingerprint == again.fingerprint
    # a different input or config is a different output
    assert StageOutput.open(store, "ds", "etl", config=cfg, inputs={"raw": "abd"}).fingerprint != out.fingerprint
    assert StageOutput.open(store, "ds", "etl", config={"etl": {"kcore": 3}}, inputs={"raw": "abc"}).fingerprint != out.fingerprint
    with pytest.raises(RuntimeError, match="immutable"):
        again.begin()


def test_local_store_roundtrip(tmp_path):
    _roundtrip(ArtifactStore(tmp_path / "store"))


def test_local_commit_protocol(tmp_path):
    _commit_protocol(ArtifactStore(tmp_path / "store"))


def test_local_write_is_atomic_no_temp_left(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_bytes(b"x" * 1000, "a", "b.bin")
    assert os.listdir(tmp_path / "a") == ["b.bin"]


def test_s3_store_roundtrip(s3_bucket):
    store = ArtifactStore(f"{s3_bucket}/prefix")
    assert store.uri("a", "b").startswith("s3://")
    _roundtrip(store)


def test_s3_commit_protocol(s3_bucket):
    _commit_protocol(ArtifactStore(f"{s3_bucket}/prefix"))


def test_s3_store_is_real_http(s3_bucket, s3_server):
    import boto3

    store = ArtifactStore(s3_bucket)
    store.write_text("hello", "k.txt")
    body = boto3.client("s3", endpoint_url=s3_server).get_object(Bucket=s3_bucket[5:], Key="k.txt")["Body"].read()
    assert body == b"hello"


def test_bad_store_uri():
    with pytest.raises(ValueError, match="only local paths"):
        ArtifactStore("gs://bucket/x")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_file_streams_a_local_file_in_chunks_and_upload_dir_uses_it(where, tmp_path, request):
    """write_file copies a local file chunk by chunk (here 4 KiB chunks of a 1 MiB file) to the
    store, byte for byte, with no temp file left; upload_dir / download_dir round-trip a Spark-like
    folder (its .crc side files skipped) on the local store and on a real S3 server."""
    root = str(tmp_path / "store") if where == "local" else f"{request.getfixturevalue('s3_bucket')}/p"
    store = ArtifactStore(root)
    src = tmp_path / "part-00000.parquet"
    data = os.urandom(1 << 20)
    src.write_bytes(data)
    store.write_file(str(src), "out", "one.bin", chunk_bytes=4096)
    assert store.read_bytes("out", "one.bin") == data
    assert store.list_files("out") == ["one.bin"]
    spark_dir = tmp_path / "spark"
    spark_dir.mkdir()
    (spark_dir / "part-00000.parquet").write_bytes(data[:1000])
    (spark_dir / ".part-00000.parquet.crc").write_bytes(b"crc")
    assert store.upload_dir(str(spark_dir), "table") == 1
    back = tmp_path / "back"
    assert store.download_dir(str(back), "table") == 1
    assert (back / "part-00000.parquet").read_bytes() == data[:1000]
