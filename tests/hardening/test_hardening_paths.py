"""Path safety: hostile keys on every storage backend, output names, callbacks and query parameters.

(``/media/in|out`` traversal in URLs is covered by tests/api/test_api_media.py
and each backend's own test; here every *registered* backend is checked with
the same list, and the places where a user names a path: ``outputName`` and a
callback's ``output_key``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest

from mpr.callbacks import sign_headers
from mpr.errors import StorageError
from mpr.models import JobStatus, TranscodeJob
from testkit import free_port

from .conftest import db_digest, put

pytestmark = pytest.mark.timeout(120)

HOSTILE_KEYS = [
    "../escape.mp4",
    "a/../../escape.mp4",
    "/etc/passwd",
    "//etc/passwd",
    "%2e%2e/escape.mp4",
    "%2e%2e%2fescape.mp4",
    "%252e%252e%252fescape.mp4",
    "..%5cescape.mp4",
    "a\\..\\..\\escape.mp4",
    "x\x00.mp4",
    "%00x.mp4",
    "C:/windows/system32",
    "..",
    "",
]
CREATE = (
    "mutation($a: ID!, $p: ID, $o: String) { createJob(input: {sourceAssetId: $a, presetId: $p, outputName: $o})"
    " { id outputPath } }"
)


def _check_every_method(store, key: str, local: Path) -> None:
    calls = {
        "stat": lambda: store.stat(key),
        "exists": lambda: store.exists(key),
        "open_read": lambda: store.open_read(key, 0, None).close(),
        "put": lambda: store.put(key, local),
        "delete": lambda: store.delete(key),
        "url": lambda: store.url(key),
        "local_path": lambda: store.local_path(key),
        "local_copy": lambda: store.local_copy(key).__enter__(),
        "list": lambda: list(store.list(key)) and None,
    }
    for name, call in calls.items():
        if name == "list" and key == "":
            continue  # list("") is the whole root, by design
        try:
            call()
        except StorageError:
            continue
        raise AssertionError(f"{type(store).__name__}.{name}({key!r}) did not raise StorageError")


@pytest.fixture
def s3_root(monkeypatch):
    """A bucket on a private moto server, when the S3 plugin and moto are installed."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    from mpr.plugins import load_plugins

    if "s3" not in load_plugins().storage_backends:
        return None
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("MPR_S3_ENDPOINT_URL", endpoint),
    ):
        monkeypatch.setenv(name, value)
    from mpr.settings import get_settings

    get_settings.cache_clear()
    bucket = f"hard-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/media/"
    server.stop()
    get_settings.cache_clear()


def test_every_storage_backend_refuses_hostile_keys_in_every_method(media, tmp_path, s3_root):
    from mpr.plugins import load_plugins
    from mpr.settings import get_settings

    local = tmp_path / "payload.mp4"
    local.write_bytes(b"payload")
    registry = load_plugins()
    (tmp_path / "root").mkdir()
    stores = {"file": registry.storage_backends["file"](str(tmp_path / "root"), get_settings())}
    if s3_root:
        stores["s3"] = registry.storage_backends["s3"](s3_root, get_settings())
    for store in stores.values():
        for key in HOSTILE_KEYS:
            _check_every_method(store, key, local)
    assert not (tmp_path / "escape.mp4").exists()
    assert list(stores["file"].list("")) == []
    if s3_root:
        assert list(stores["s3"].list("")) == []
    print("checked backends:", sorted(stores))


async def test_output_names_cannot_escape_media_out_or_take_another_jobs_output(serve, media, clips):
    api = await serve()
    put(media, clips["video"], "src.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }")
    asset = (await api.ok("{ assets { id } }"))["assets"][0]["id"]
    presets = {p["name"]: p["id"] for p in (await api.ok("{ presets { id name } }"))["presets"]}
    db_file = media["var"] / "mpr.db"

    for name in [
        "../escape",
        "../../etc/cron.d/x",
        "/abs/path",
        "a/b",
        "%2e%2e%2fx",
        "..",
        "x\x00y",
        "a\\..\\b",
        "~/.ssh/x",
        "$(touch /tmp/pwn)",
        "x" * 300,
    ]:
        before = db_digest(db_file)
        body = await api.gql(CREATE, {"a": asset, "p": presets["copy"], "o": name})
        assert body.get("errors") and body["data"] is None, (name, body)
        message = body["errors"][0]["message"]
        assert "output name" in message or "NUL" in message, (name, body)
        assert db_digest(db_file) == before, name
    assert not (media["out"].parent / "escape.mp4").exists()

    # two jobs asking for the same name, and a foreign file already there: nobody overwrites anybody
    (media["out"] / "taken.mp4").write_bytes(b"someone else's file")
    first = (await api.ok(CREATE, {"a": asset, "p": presets["copy"], "o": "taken"}))["createJob"]
    second = (await api.ok(CREATE, {"a": asset, "p": presets["copy"], "o": "taken.mp4"}))["createJob"]
    paths = {first["outputPath"], second["outputPath"], "taken.mp4"}
    assert len(paths) == 3, paths
    # a file that appears at a job's output path after the job was created is not overwritten either
    (media["out"] / second["outputPath"]).write_bytes(b"appeared meanwhile")
    from mpr.execute import run_job

    await asyncio.to_thread(run_job, uuid.UUID(first["id"]))
    await asyncio.to_thread(run_job, uuid.UUID(second["id"]))
    one = await TranscodeJob.get(id=first["id"])
    two = await TranscodeJob.get(id=second["id"])
    assert one.status is JobStatus.COMPLETED, one.error
    assert two.status is JobStatus.FAILED and "not overwriting" in two.error, (two.status, two.error)
    assert (media["out"] / "taken.mp4").read_bytes() == b"someone else's file"
    assert (media["out"] / second["outputPath"]).read_bytes() == b"appeared meanwhile"
    assert [p.name for p in media["out"].iterdir() if p.name.startswith(".")] == []  # no temp files left


async def test_callback_output_keys_cannot_escape_or_claim_another_jobs_output(serve, media, clips):
    from mpr.models import MediaAsset

    secret = "cb-secret-paths-0123456789"
    api = await serve(MPR_CALLBACK_SECRET=secret)
    put(media, clips["video"], "src.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }")
    asset = await MediaAsset.get(path="src.mp4")
    (media["out"] / "a.mp4").write_bytes(clips["video"].read_bytes())
    owner = await TranscodeJob.create(
        source_asset=asset,
        source_path="src.mp4",
        output_path="a.mp4",
        executor="lambda",
        preset_snapshot={},
        status=JobStatus.COMPLETED,
    )
    victim = await TranscodeJob.create(
        source_asset=asset,
        source_path="src.mp4",
        output_path="b.mp4",
        executor="lambda",
        preset_snapshot={},
        status=JobStatus.PROCESSING,
    )
    db_file = media["var"] / "mpr.db"

    async def post(job_id, payload):
        body = json.dumps(payload).encode()
        return await api.http.post(f"/api/jobs/{job_id}/callback", content=body, headers=sign_headers(body, secret))

    (media["in"] / "secret.mp4").write_bytes(b"x")
    for key in ["../in/src.mp4", "/etc/passwd", "%2e%2e/in/src.mp4", "a/../../x", "x\x00", "..\\x"]:
        before = db_digest(db_file)
        r = await post(victim.id, {"status": "completed", "output_key": key})
        assert r.status_code == 400, (key, r.status_code, r.text)
        assert "Traceback" not in r.text
        assert db_digest(db_file) == before, key
    # claiming another job's output file: refused without a 500, and the other job keeps its output
    r = await post(victim.id, {"status": "completed", "output_key": "a.mp4"})
    assert r.status_code < 500, r.text
    assert (await TranscodeJob.get(id=owner.id)).output_path == "a.mp4"
    after = await TranscodeJob.get(id=victim.id)
    assert after.output_path != "a.mp4", after.output_path


async def test_thumbnail_and_media_query_parameters_are_clamped_not_crashing(serve, media, clips):
    api = await serve()
    put(media, clips["video"], "t.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }")
    asset = (await api.ok("{ assets { id } }"))["assets"][0]["id"]
    for query in [
        "t=nan",
        "t=inf",
        "t=-inf",
        "t=-5",
        "t=1e308",
        "w=-1",
        "w=0",
        "w=99999999",
        "w=abc",
        "t=abc",
        "w=1e3",
        "t=0&w=17",
    ]:
        r = await api.http.get(f"/api/assets/{asset}/thumbnail?{query}")
        assert r.status_code < 500, (query, r.status_code, r.text[:200])
        if r.status_code == 200:
            assert r.headers["content-type"] == "image/jpeg"
    for bad in ["../../etc/passwd", "%2e%2e%2f", str(uuid.uuid4()), "x" * 5000]:
        r = await api.http.get(f"/api/assets/{bad}/thumbnail")
        assert r.status_code in (400, 404), (bad, r.status_code)
    thumbs = media["var"] / "thumbs"
    if thumbs.exists():
        for path in thumbs.rglob("*"):
            assert path.resolve().is_relative_to(thumbs.resolve()), path
    assert os.listdir(media["in"]) == ["t.mp4"]
