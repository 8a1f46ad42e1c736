"""Both artifact stores behave alike: streamed, hashed, validated keys; S3 against a real server."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
import urllib.request
from pathlib import Path

import pytest

from service.artifacts import ArtifactStore, LocalStore, S3Store, store_from_settings
from service.errors import InvalidArgument, NotFound, StorageUnavailable
from service.settings import Settings

SIZE = 20 << 20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """20 MB of random bytes on disk and their sha256."""
    path = tmp_path_factory.mktemp("big") / "blob.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(SIZE >> 20):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest()


def test_stream_a_large_file_round_trip(artifact_store: ArtifactStore, big_file: tuple[Path, str]) -> None:
    path, expected = big_file
    with path.open("rb") as source:
        assert artifact_store.put_stream("jobs/j1/model.onnx", source) == (SIZE, expected)
    assert artifact_store.size("jobs/j1/model.onnx") == SIZE
    digest, total = hashlib.sha256(), 0
    for chunk in artifact_store.open_stream("jobs/j1/model.onnx"):
        digest.update(chunk)
        total += len(chunk)
    assert (total, digest.hexdigest()) == (SIZE, expected)


def test_exists_list_delete(artifact_store: ArtifactStore) -> None:
    for key in ("jobs/a/x.bin", "jobs/a/y.bin", "jobs/b/z.bin", "datasets/d.npz"):
        artifact_store.put_stream(key, io.BytesIO(key.encode()))
    assert artifact_store.exists("jobs/a/x.bin")
    assert not artifact_store.exists("jobs/a/nope.bin")
    assert list(artifact_store.list("jobs/a/")) == ["jobs/a/x.bin", "jobs/a/y.bin"]
    assert list(artifact_store.list("jobs/")) == ["jobs/a/x.bin", "jobs/a/y.bin", "jobs/b/z.bin"]
    assert list(artifact_store.list()) == ["datasets/d.npz", "jobs/a/x.bin", "jobs/a/y.bin", "jobs/b/z.bin"]
    assert list(artifact_store.list("nothing/")) == []
    artifact_store.delete("jobs/a/x.bin")
    artifact_store.delete("jobs/a/x.bin")  # deleting twice is fine
    assert not artifact_store.exists("jobs/a/x.bin")
    assert b"".join(artifact_store.open_stream("jobs/a/y.bin")) == b"jobs/a/y.bin"


def test_a_local_store_leaves_no_empty_folder_behind(tmp_path: Path) -> None:
    """Like S3, which has no folders: deleting a job's last file leaves nothing under jobs/."""
    store = LocalStore(tmp_path / "artifacts")
    store.put_stream("jobs/j/attempt-1/checkpoints/epoch-0001.pt", io.BytesIO(b"c"))
    store.put_stream("jobs/k/model.pt2", io.BytesIO(b"m"))
    store.delete("jobs/j/attempt-1/checkpoints/epoch-0001.pt")
    assert sorted(path.name for path in (tmp_path / "artifacts" / "jobs").iterdir()) == ["k"]
    store.put_stream("jobs/j/attempt-1/checkpoints/epoch-0002.pt", io.BytesIO(b"again"))
    assert store.exists("jobs/j/attempt-1/checkpoints/epoch-0002.pt"), "a pruned folder is made again"


def test_overwrite_and_empty_object(artifact_store: ArtifactStore) -> None:
    artifact_store.put_stream("k/file", io.BytesIO(b"first version"))
    assert artifact_store.put_stream("k/file", io.BytesIO(b"")) == (0, hashlib.sha256(b"").hexdigest())
    assert b"".join(artifact_store.open_stream("k/file")) == b""
    assert artifact_store.size("k/file") == 0


def test_missing_objects_are_not_found(artifact_store: ArtifactStore) -> None:
    with pytest.raises(NotFound) as info:
        artifact_store.open_stream("jobs/none/model.onnx")
    assert (info.value.code, info.value.field) == ("NOT_FOUND", "key")
    with pytest.raises(NotFound):
        artifact_store.size("jobs/none/model.onnx")


UNSAFE_KEYS = ["", "../escape", "/etc/passwd", "a//b", "a/./b", "a/../b", "a\\b", "sp ace", "~partial-x", "x" * 901]


def test_unsafe_keys_are_refused(artifact_store: ArtifactStore) -> None:
    for key in UNSAFE_KEYS:
        with pytest.raises(InvalidArgument) as info:
            artifact_store.put_stream(key, io.BytesIO(b"x"))
        assert info.value.field == "key"
        for operation in (artifact_store.open_stream, artifact_store.exists, artifact_store.delete):
            with pytest.raises(InvalidArgument):
                operation(key)
    with pytest.raises(InvalidArgument):
        list(artifact_store.list("../"))


def test_local_store_streams_in_bounded_memory(tmp_path: Path, big_file: tuple[Path, str]) -> None:
    local = LocalStore(tmp_path / "store")
    path, _ = big_file
    tracemalloc.start()
    try:
        with path.open("rb") as source:
            local.put_stream("big.bin", source)
        for _ in local.open_stream("big.bin"):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes for a {SIZE} byte file"
    assert list(local.list()) == ["big.bin"]  # no partial files left behind
    assert local.presigned_url("big.bin", 60) is None


def test_s3_presigned_get_works_without_credentials(s3_endpoint: str, s3_bucket: str) -> None:
    s3 = S3Store(s3_bucket, "pre/fix", s3_endpoint)
    s3.put_stream("jobs/j/report.json", io.BytesIO(b'{"ok": true}'))
    url = s3.presigned_url("jobs/j/report.json", 300)
    assert url is not None and "X-Amz-Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b'{"ok": true}'


def test_s3_prefix_places_objects_under_it(s3_endpoint: str, s3_bucket: str) -> None:
    s3 = S3Store(s3_bucket, "/team-store/", s3_endpoint)
    s3.put_stream("a/b.bin", io.BytesIO(b"123"))
    head = s3.client.head_object(Bucket=s3_bucket, Key="team-store/a/b.bin")
    assert head["ContentLength"] == 3
    assert list(s3.list()) == ["a/b.bin"]


def test_s3_missing_bucket_is_unavailable(s3_endpoint: str) -> None:
    s3 = S3Store("no-such-bucket", "", s3_endpoint)
    with pytest.raises(StorageUnavailable) as info:
        s3.put_stream("k", io.BytesIO(b"x"))
    assert info.value.code == "STORAGE_UNAVAILABLE"
    with pytest.raises(StorageUnavailable):
        s3.open_stream("k")


def test_store_from_settings(tmp_path: Path, s3_endpoint: str) -> None:
    local = store_from_settings(Settings.from_env({"QAT_ARTIFACTS": "arts"}, cwd=tmp_path))
    assert isinstance(local, LocalStore) and local.root == tmp_path.resolve() / "arts"
    env = {"QAT_ARTIFACTS": "s3://my-bucket/some/prefix", "QAT_S3_ENDPOINT_URL": s3_endpoint}
    s3 = store_from_settings(Settings.from_env(env, cwd=tmp_path))
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.client.meta.endpoint_url) == ("my-bucket", "some/prefix/", s3_endpoint)
