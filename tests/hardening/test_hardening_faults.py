"""Faults: Redis restarted mid-job, PostgreSQL restarted under the API, MEDIA_OUT full.

Each uses a PRIVATE service (a redis-server on a free port, a PostgreSQL
cluster in a temp dir, a tiny tmpfs): the machine's shared Redis and
PostgreSQL are never touched. kill -9 of a worker mid-job is covered by
plugins/mpr_local/tests/test_local_crash.py and not repeated here.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mpr import hookimpl
from mpr.models import JobStatus, TranscodeJob
from testkit import RedisServer, _reset_caches, free_port, make_clip, realtime_ffmpeg, require

from .conftest import run_app, stop_app, wait_job

pytestmark = pytest.mark.timeout(240)


# --------------------------------------------------------------------------- private services


class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir on a free port, run as the ``postgres`` user when we are root."""

    def __init__(self, workdir: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(bins[-1]).parent if bins else None
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.workdir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_redis(tmp_path):
    require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def private_pg(tmp_path_factory):
    base = Path("/tmp") / f"mpr-hard-pg-{uuid.uuid4().hex[:8]}"  # short path: the socket name has a length limit
    pg = PrivatePostgres(base)
    require("PostgreSQL server binaries", pg.bin is not None, "apt install postgresql")
    pg.init()
    pg.start()
    yield pg
    try:
        pg.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def medium_clip(tmp_path_factory) -> Path:
    """8 s 640x360: encoding it to 720p takes a few seconds, long enough to break things mid-job."""
    return make_clip(tmp_path_factory.mktemp("medium") / "medium.mp4", seconds=8.0, size="640x360")


# --------------------------------------------------------------------------- Redis restart


async def test_redis_restart_mid_job_worker_and_grpc_stream_recover(
    sqlite_db, media, monkeypatch, private_redis, medium_clip
):
    import grpc
    from mpr_local.queue import reset_queues
    from mpr_local.worker import WorkerHandle

    from mpr import scan, service
    from mpr.grpc import events_pb2, events_pb2_grpc
    from mpr.grpc.server import start as start_grpc
    from mpr.presets import sync_presets
    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_REDIS_URL", private_redis.url)
    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprh_{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("MPR_LOCAL_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("MPR_HEARTBEAT_TIMEOUT", "60")
    # the encode takes the clip's 8 s on any machine: a fast one finished before Redis went down
    monkeypatch.setenv("MPR_FFMPEG", str(realtime_ffmpeg(media["var"] / "ffmpeg-realtime")))
    _reset_caches()
    reset_queues()
    await sync_presets()
    shutil.copyfile(medium_clip, media["in"] / "m.mp4")
    asset, _ = await scan.register("m.mp4")
    from mpr.models import TranscodePreset

    preset = await TranscodePreset.get(name="h264-720p")

    grpc_server = await start_grpc(0, host="127.0.0.1")
    worker = await asyncio.to_thread(WorkerHandle(get_settings()).start)
    try:
        job = await service.create_job(asset.id, preset.id)
        received: list = []

        async def watch() -> None:
            # a client that reconnects with after_sequence whenever its stream breaks, like the browser UI
            last = 0
            while True:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
                    stub = events_pb2_grpc.ChunkerServiceStub(channel)
                    try:
                        async for event in stub.StreamChunkPipeline(
                            events_pb2.StreamRequest(job_id=str(job.id), after_sequence=last)
                        ):
                            received.append(event)
                            last = event.sequence
                            if event.type == "status" and event.status in ("completed", "failed", "cancelled"):
                                return
                        return
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.3)

        watcher = asyncio.create_task(watch())
        deadline = time.monotonic() + 90
        while True:
            row = await TranscodeJob.get(id=job.id)
            if row.status is JobStatus.PROCESSING and row.progress > 5:
                break
            assert row.status in (JobStatus.PENDING, JobStatus.PROCESSING), (row.status, row.error)
            assert time.monotonic() < deadline, "job never got going"
            await asyncio.sleep(0.1)
        killed_at_seq = received[-1].sequence if received else 0
        await asyncio.to_thread(private_redis.kill)
        await asyncio.sleep(1.5)  # the worker keeps encoding; event sinks fail and are logged
        await asyncio.to_thread(private_redis.start)

        done = await wait_job(job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=120)
        assert done.status is JobStatus.COMPLETED, done.error
        await asyncio.wait_for(watcher, 30)
        seqs = [e.sequence for e in received]
        assert seqs == sorted(set(seqs)), "duplicated or out-of-order events after the reconnect"
        assert received[-1].status == "completed", [(e.type, e.status) for e in received[-3:]]
        assert seqs[-1] > killed_at_seq

        # the worker's queue connection recovered: a job queued after the restart runs too
        second = await service.create_job(asset.id, (await TranscodePreset.get(name="copy")).id)
        done = await wait_job(second.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=90)
        assert done.status is JobStatus.COMPLETED, done.error
        assert (await TranscodeJob.get(id=job.id)).attempts <= 1
    finally:
        await asyncio.to_thread(worker.stop, 10)
        await grpc_server.stop(0)
        reset_queues()


# --------------------------------------------------------------------------- PostgreSQL restart


async def test_readyz_is_503_while_postgres_is_down_and_recovers_without_restart(media, monkeypatch, private_pg):
    from tortoise import Tortoise
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.db import Portal, close_db, init_db, set_portal
    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_DATABASE_URL", private_pg.url)
    monkeypatch.setenv("MPR_GRPC_PORT", "0")
    get_settings.cache_clear()
    EXECUTOR_CACHE.clear()
    await init_db()
    await Tortoise.generate_schemas()
    set_portal(Portal(asyncio.get_running_loop()))
    server, task, client, _ = await run_app(get_settings())
    try:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        query = {"query": "{ presets { name } }"}
        assert not (await client.post("/graphql", json=query)).json().get("errors")

        await asyncio.to_thread(private_pg.stop)
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"]["ok"] is False, r.text
        assert r.json()["checks"]["storage"]["ok"] is True
        g = await client.post("/graphql", json=query)
        assert g.status_code < 500 and g.json().get("errors") and "Traceback" not in g.text, g.text[:300]
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

        await asyncio.to_thread(private_pg.start)
        deadline = time.monotonic() + 30
        while (r := await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 15
        while (g := await client.post("/graphql", json=query)).json().get("errors"):
            assert time.monotonic() < deadline, g.text
            await asyncio.sleep(0.5)
        assert len(g.json()["data"]["presets"]) >= 5
    finally:
        await stop_app(server, task, client)
        set_portal(None)
        await close_db()


# --------------------------------------------------------------------------- MEDIA_OUT full


@pytest.fixture
def tiny_media_out(media):
    """MEDIA_OUT on a 64 KiB tmpfs (root can mount; elsewhere this fails under MPR_REQUIRE_SERVICES)."""
    target = media["out"]
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True, check=False
        ).returncode
        == 0
    )
    require("a mountable tmpfs", mounted, "needs root (CAP_SYS_ADMIN)")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


async def test_disk_full_on_media_out_fails_the_job_clearly_and_leaves_no_partial_file(
    sqlite_db, media, clips, tiny_media_out
):
    from mpr import scan, service
    from mpr.execute import run_job
    from mpr.models import TranscodePreset
    from mpr.presets import sync_presets

    await sync_presets()
    shutil.copyfile(clips["video"], media["in"] / "v.mp4")
    asset, _ = await scan.register("v.mp4")
    preset = await TranscodePreset.get(name="h264-720p")
    job = await service.create_job(asset.id, preset.id, executor="inline", submit=False)
    await asyncio.to_thread(run_job, job.id)
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.FAILED, job.status
    assert "space" in job.error.lower() or "disk" in job.error.lower() or "full" in job.error.lower(), job.error
    assert list(tiny_media_out.iterdir()) == [], list(tiny_media_out.iterdir())

    # once there is room again the retried job succeeds
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_media_out)], check=True)  # noqa: ASYNC221
    await service.retry_job(job.id)
    await asyncio.to_thread(run_job, job.id)
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.COMPLETED, job.error


class _QuotaStorage:
    """A remote-like backend (no local paths) whose uploads fail like a full bucket or quota, after a partial write."""

    def __init__(self, root: str, settings) -> None:
        from mpr.local_storage import LocalStorage

        self.root = root
        self.inner = LocalStorage(root.removeprefix("quota://"), settings)
        self.puts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def local_path(self, key: str):
        from mpr.storage import safe_key

        safe_key(key)

    def url(self, key: str, expires: int = 3600):
        return None

    def put(self, key: str, local_file: Path):
        from mpr.errors import StorageError

        self.puts += 1
        path = self.inner._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Path(local_file).read_bytes()[:100])
        path.unlink()  # an atomic backend removes its partial object before reporting the error
        raise StorageError(f"cannot store {key}: quota exceeded on the output bucket")


class _QuotaPlugin:
    @hookimpl
    def register_storage_backends(self, register):
        register("quota", _QuotaStorage)


async def test_storage_quota_error_at_the_storage_boundary_fails_the_job_and_leaves_no_temp(
    sqlite_db, media, clips, monkeypatch
):
    from mpr import scan, service
    from mpr.execute import run_job
    from mpr.models import TranscodePreset
    from mpr.plugins import register_plugin, unregister_plugin
    from mpr.presets import sync_presets
    from mpr.settings import get_settings
    from mpr.storage import reset_storage

    plugin = _QuotaPlugin()
    register_plugin(plugin)
    try:
        monkeypatch.setenv("MEDIA_OUT", f"quota://{media['out']}")
        get_settings.cache_clear()
        reset_storage()
        await sync_presets()
        shutil.copyfile(clips["video"], media["in"] / "v.mp4")
        asset, _ = await scan.register("v.mp4")
        job = await service.create_job(
            asset.id, (await TranscodePreset.get(name="copy")).id, executor="inline", submit=False
        )
        await asyncio.to_thread(run_job, job.id)
        job = await TranscodeJob.get(id=job.id)
        assert job.status is JobStatus.FAILED and "quota exceeded" in job.error, (job.status, job.error)
        leftovers = (
            [p for p in (media["var"] / "tmp").rglob("*") if p.is_file()] if (media["var"] / "tmp").exists() else []
        )
        assert leftovers == [] and list(media["out"].rglob("*")) == [], leftovers
    finally:
        unregister_plugin(plugin)
        reset_storage()
        get_settings.cache_clear()
