"""S3Storage against moto's S3 server: the Storage contract, pagination, multipart, URLs, key safety."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from mpr_storage_s3.settings import S3Settings
from mpr_storage_s3.storage import S3Storage, parse_root

from mpr.errors import NotFound, StorageError
from mpr.settings import Settings, get_settings
from mpr.storage import get_storage, reset_storage


def make(root: str, **env: str) -> S3Storage:
    settings = Settings.from_env({**os.environ, **env})
    return S3Storage(root, settings)


def test_plugin_registers_s3_and_gs_schemes(s3_bucket: str) -> None:
    import mpr_storage_s3

    registered: dict = {}
    mpr_storage_s3.register_storage_backends(register=lambda scheme, factory: registered.setdefault(scheme, factory))
    assert registered == {"s3": S3Storage, "gs": S3Storage}
    get_settings.cache_clear()
    reset_storage()
    try:
        s3 = get_storage(f"s3://{s3_bucket}/lib/")
        gs = get_storage("gs://some-bucket/media")
        assert isinstance(s3, S3Storage) and s3.bucket == s3_bucket and s3.prefix == "lib/"
        assert isinstance(gs, S3Storage) and gs.endpoint_url == "https://storage.googleapis.com"
    finally:
        reset_storage()


def test_parse_root_normalises_prefix_and_refuses_escapes() -> None:
    assert parse_root("s3://b") == ("s3", "b", "")
    assert parse_root("s3://b/") == ("s3", "b", "")
    assert parse_root("s3://b/a/b/") == ("s3", "b", "a/b/")
    for bad in ("s3://", "s3:///x", "s3://b/../x", "s3://b/a/%2e%2e/x", "file:///tmp"):
        with pytest.raises(StorageError):
            parse_root(bad)


def test_put_stat_read_range_delete_roundtrip(s3_bucket: str, tmp_path: Path) -> None:
    store = make(f"s3://{s3_bucket}/media/in/")
    src = tmp_path / "clip.mp4"
    src.write_bytes(bytes(range(256)) * 40)
    info = store.put("shows/ep 1/clip.mp4", src)
    assert info.key == "shows/ep 1/clip.mp4" and info.size == 10240 and info.mtime > 0
    raw = store.client.head_object(Bucket=s3_bucket, Key="media/in/shows/ep 1/clip.mp4")
    assert raw["ContentType"] == "video/mp4"
    assert store.exists("shows/ep 1/clip.mp4")
    assert store.stat("shows/./ep 1/clip.mp4").size == 10240
    with store.open_read("shows/ep 1/clip.mp4", 10, 19) as body:
        assert body.read() == bytes(range(10, 20))
    assert store.open_read("shows/ep 1/clip.mp4", 10240 - 6).read() == bytes(range(250, 256))
    assert store.open_read("shows/ep 1/clip.mp4").read() == src.read_bytes()
    with store.local_copy("shows/ep 1/clip.mp4") as local:
        assert local.name == "clip.mp4" and local.read_bytes() == src.read_bytes()
        tmpdir = local.parent
    assert not tmpdir.exists()
    assert store.local_path("shows/ep 1/clip.mp4") is None
    store.delete("shows/ep 1/clip.mp4")
    assert not store.exists("shows/ep 1/clip.mp4")
    store.delete("shows/ep 1/clip.mp4")  # idempotent


def test_missing_objects_raise_not_found(s3_bucket: str) -> None:
    store = make(f"s3://{s3_bucket}/")
    with pytest.raises(NotFound):
        store.stat("nope.mp4")
    with pytest.raises(NotFound):
        store.open_read("nope.mp4")
    with pytest.raises(NotFound), store.local_copy("nope.mp4"):
        pass
    assert store.exists("nope.mp4") is False


def test_missing_bucket_is_a_storage_error(moto_server, monkeypatch) -> None:
    monkeypatch.setenv("MPR_S3_ENDPOINT_URL", moto_server.url)
    store = make("s3://no-such-bucket-mpr/")
    with pytest.raises(StorageError, match="no-such-bucket-mpr"):
        list(store.list())


def test_unreachable_endpoint_is_wrapped_in_storage_error(monkeypatch) -> None:
    from testkit import free_port

    monkeypatch.setenv("MPR_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = make("s3://bucket/")
    store.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(StorageError, match="cannot stat"):
        store.stat("a.mp4")


def test_list_is_recursive_paginated_and_scoped_to_the_root(s3_bucket: str, moto_server) -> None:
    from moto.s3.models import s3_backends

    s3 = moto_server.client("s3")
    keys = [f"lib/d{i % 7}/sub/f{i:05d}.mp3" for i in range(1010)]
    # setup straight into the (in-process) moto server's store: 1,010 HTTP PUTs would dominate
    # the test's time; the listing below goes through the real S3 API and its pagination
    backend = s3_backends["123456789012"]["aws"]
    for key in keys:
        backend.put_object(s3_bucket, key, b"x" * (len(key) % 13))
    s3.put_object(Bucket=s3_bucket, Key="other/outside.mp3", Body=b"no")
    s3.put_object(Bucket=s3_bucket, Key="lib/d1/", Body=b"")  # folder marker
    s3.put_object(Bucket=s3_bucket, Key="lib/d1/../../escape.mp3", Body=b"evil")

    store = make(f"s3://{s3_bucket}/lib")
    listed = list(store.list())
    assert len(listed) == 1010  # > 1,000: needs a second ListObjectsV2 page
    assert [o.key for o in listed] == sorted(k[len("lib/") :] for k in keys)
    assert all(o.size == len("lib/" + o.key) % 13 for o in listed)
    sub = list(store.list("d3/"))
    assert len(sub) == len([k for k in keys if k.startswith("lib/d3/")])
    assert all(o.key.startswith("d3/sub/") for o in sub)
    assert list(store.list("d3")) == sub  # a key prefix, as with LocalStorage
    with pytest.raises(StorageError):
        list(store.list("../other"))


def test_large_put_uses_multipart_upload(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Storage(
        f"s3://{s3_bucket}/out/",
        Settings.from_env(),
        S3Settings.from_env({"MPR_S3_MULTIPART_THRESHOLD": "5M", "MPR_S3_MULTIPART_CHUNKSIZE": "5M"}),
    )
    big = tmp_path / "big.mkv"
    big.write_bytes(os.urandom(256 * 1024) * 45)  # 11.25 MiB -> 3 parts
    info = store.put("big.mkv", big)
    assert info.size == big.stat().st_size
    etag = store.client.head_object(Bucket=s3_bucket, Key="out/big.mkv")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # multipart ETags end in -<parts>
    with store.local_copy("big.mkv") as local:
        assert local.read_bytes() == big.read_bytes()


def test_multipart_settings_are_validated() -> None:
    from mpr.errors import ConfigError

    with pytest.raises(ConfigError, match="MPR_S3_MULTIPART_CHUNKSIZE"):
        S3Settings.from_env({"MPR_S3_MULTIPART_CHUNKSIZE": "1M"})
    with pytest.raises(ConfigError, match="MPR_S3_MULTIPART_THRESHOLD"):
        S3Settings.from_env({"MPR_S3_MULTIPART_THRESHOLD": "lots"})
    assert S3Settings.from_env({"MPR_S3_MULTIPART_THRESHOLD": "8M"}).multipart_threshold == 8 * 1024**2


def test_presigned_url_is_fetchable_and_base_urls_win(s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "a b.mp3"
    src.write_bytes(b"ID3" + os.urandom(5000))
    store = make(f"s3://{s3_bucket}/in/")
    store.put("music/a b.mp3", src)
    url = store.url("music/a b.mp3", expires=120)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == src.read_bytes()
    ranged = httpx.get(url, headers={"Range": "bytes=0-2"})
    assert ranged.status_code == 206 and ranged.content == b"ID3"

    root_in, root_out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out"
    env = {
        "MEDIA_IN": root_in,
        "MEDIA_OUT": root_out,
        "MEDIA_BASE_URL": "https://cdn.example.com/in",
        "MEDIA_OUT_BASE_URL": "https://cdn.example.com/out/",
    }
    assert make(root_in, **env).url("music/a b.mp3") == "https://cdn.example.com/in/music/a%20b.mp3"
    assert make(root_out + "/", **env).url("x/y.mp4") == "https://cdn.example.com/out/x/y.mp4"
    assert "X-Amz-Signature=" in make(f"s3://{s3_bucket}/elsewhere/", **env).url("k.mp4")


@pytest.mark.parametrize(
    "key",
    ["../secret", "a/../../secret", "/etc/passwd", "a/%2e%2e/%2E%2E/b", "a\\..\\b", "a\x00b", "C:/x", "", "."],
)
def test_path_escape_keys_are_rejected_by_every_method(s3_bucket: str, tmp_path: Path, key: str) -> None:
    store = make(f"s3://{s3_bucket}/jail/")
    f = tmp_path / "f"
    f.write_bytes(b"x")
    calls = [
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.open_read(key),
        lambda: store.put(key, f),
        lambda: store.delete(key),
        lambda: store.url(key),
        lambda: store.local_path(key),
        lambda: store.local_copy(key).__enter__(),
    ]
    for call in calls:
        with pytest.raises(StorageError):
            call()
    assert store.client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_gs_root_uses_the_gcs_s3_api_and_its_hmac_keys(moto_server, monkeypatch) -> None:
    s3s = S3Settings.from_env(
        {"MPR_GS_ENDPOINT_URL": moto_server.url, "MPR_GS_ACCESS_KEY_ID": "GOOGHMAC", "MPR_GS_SECRET_ACCESS_KEY": "s"}
    )
    moto_server.client("s3").create_bucket(Bucket="mpr-gs-bucket")
    store = S3Storage("gs://mpr-gs-bucket/x/", Settings.from_env(), s3s)
    assert store.client.meta.endpoint_url == moto_server.url
    assert store.client._request_signer._credentials.access_key == "GOOGHMAC"
    assert list(store.list()) == []
