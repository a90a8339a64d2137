"""Crash recovery with real ``mpr worker`` processes sharing the database and the queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mpr import service
from mpr.models import JobStatus, TranscodeJob
from testkit import REDIS_URL, _open_db, _reset_caches, realtime_ffmpeg, redis_available, require

pytestmark = pytest.mark.timeout(180)

MPR = str(Path(sys.executable).parent / "mpr")


@pytest.fixture(
    params=[("sqlite", "sqlite"), ("postgres", "redis")], ids=["sqlite-db-sqlite-queue", "postgres-db-redis-queue"]
)
async def deployment(request: pytest.FixtureRequest, media, monkeypatch: pytest.MonkeyPatch):
    """The two usual set-ups: all SQLite on one machine, or PostgreSQL + Redis shared by many machines."""
    from mpr_local.queue import get_queue, reset_queues

    db_kind, queue_kind = request.param
    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprt_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("MPR_HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("MPR_LOCAL_REAPER_INTERVAL", "0.5")
    if queue_kind == "redis":
        require("Redis", redis_available(), "127.0.0.1:6379")
        monkeypatch.setenv("MPR_REDIS_URL", REDIS_URL)
    _reset_caches()
    reset_queues()
    async for _ in _open_db(db_kind, media, monkeypatch):
        try:
            yield request.param
        finally:
            from mpr.settings import get_settings

            get_queue(get_settings()).huey.flush()
            reset_queues()


class WorkerProcess:
    """An ``mpr worker`` subprocess with the test's environment; its log is kept for failure messages."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        env = {**os.environ, "MPR_WORKERS": "1", "MPR_LOG_LEVEL": "INFO", "MPR_LOCAL_HEARTBEAT_INTERVAL": "0.5"}
        self.log = log.open("ab")
        self.proc = subprocess.Popen([MPR, "worker"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


async def wait_for(job_id, *statuses: JobStatus, timeout: float, progress: float | None = None, why=None):
    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in statuses and (progress is None or job.progress >= progress):
            return job
        if time.monotonic() > deadline:
            extra = f"\n--- worker log ---\n{why()}" if why else ""
            raise AssertionError(f"job is {job.status.value} at {job.progress:.0f}% ({job.error}){extra}")
        await asyncio.sleep(0.1)


def kill_orphans(marker: str) -> None:
    """A safety net: ffmpeg dies with its SIGKILLed worker (tests/test_orphans.py checks that)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ffmpeg" in cmdline.split(b"\0")[0] and marker.encode() in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


async def test_sigkilled_worker_job_is_reaped_and_queued_job_is_not_lost(
    deployment, library, media, long_clip, tmp_path, monkeypatch
):
    # the long encode takes the clip's 20 s on any machine (the workers get MPR_FFMPEG): it is
    # still running when the worker is killed; the short copy runs at full speed
    monkeypatch.setenv("MPR_FFMPEG", str(realtime_ffmpeg(tmp_path / "ffmpeg-realtime", only="long.mp4")))
    _reset_caches()
    long_asset = await library.add("long.mp4", long_clip)
    short_asset = await library.add("sample.mp4")
    lost = await service.create_job(long_asset.id, "h264-720p")
    queued = await service.create_job(short_asset.id, "copy", priority=-1)

    first = WorkerProcess(tmp_path / "worker-1.log")
    second = None
    try:
        job = await wait_for(lost.id, JobStatus.PROCESSING, timeout=60, progress=1.0, why=first.text)
        assert job.worker.split(":")[1] == str(first.pid)
        assert (await TranscodeJob.get(id=queued.id)).status is JobStatus.PENDING

        os.kill(first.pid, signal.SIGKILL)
        first.kill()
        kill_orphans(lost.id.hex)
        assert (await TranscodeJob.get(id=lost.id)).status is JobStatus.PROCESSING  # nobody told the database

        second = WorkerProcess(tmp_path / "worker-2.log")
        job = await wait_for(lost.id, JobStatus.FAILED, timeout=60, why=second.text)
        assert job.error.startswith(f"worker lost: no heartbeat from {job.worker} for 3 s")
        # not before the heartbeat timed out: the last beat (the killed worker's) and the reaping,
        # both stamped by the database clock
        assert (job.finished_at - job.heartbeat_at).total_seconds() >= 3, (job.heartbeat_at, job.finished_at)
        done = await wait_for(queued.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=60, why=second.text)
        assert done.status is JobStatus.COMPLETED, done.error
        assert done.worker.split(":")[1] == str(second.pid)
        assert (media["out"] / done.output_path).is_file()
        assert not (media["out"] / job.output_path).exists()
        # no partial file left: the reaper removes it right after marking the job FAILED, so wait for it
        # (the queued copy may well have completed before the reaping)
        deadline = time.monotonic() + 30
        while partial := [p.name for p in media["out"].rglob("*") if lost.id.hex in p.name]:
            assert time.monotonic() < deadline, (partial, second.text())
            await asyncio.sleep(0.1)

        # the lost job can be run again
        await service.retry_job(lost.id)
        assert (await TranscodeJob.get(id=lost.id)).status in (JobStatus.PENDING, JobStatus.PROCESSING)
        await service.cancel_job(lost.id)

        second.proc.send_signal(signal.SIGINT)  # graceful stop
        assert second.proc.wait(20) == 0, second.text()
    finally:
        first.kill()
        if second is not None:
            second.kill()
        kill_orphans(lost.id.hex)


async def test_sigterm_stops_worker_now_and_fails_its_running_job(sqlite_db, monkeypatch, library, long_clip, tmp_path):
    from mpr_local.queue import get_queue, reset_queues

    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprt_{uuid.uuid4().hex[:12]}")
    # the worker encodes at native speed: still running when SIGTERM comes, on any machine
    monkeypatch.setenv("MPR_FFMPEG", str(realtime_ffmpeg(tmp_path / "ffmpeg-realtime")))
    _reset_caches()
    reset_queues()
    asset = await library.add("long.mp4", long_clip)
    job = await service.create_job(asset.id, "h264-720p")
    worker = WorkerProcess(tmp_path / "worker.log")
    try:
        await wait_for(job.id, JobStatus.PROCESSING, timeout=60, progress=1.0, why=worker.text)
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)  # (the rest of the 20 s encode is not waited for: the job ends FAILED, not COMPLETED)
        job = await TranscodeJob.get(id=job.id)
        assert job.status is JobStatus.FAILED, worker.text()
        assert job.error == "worker stopped while the job was running; retry the job to run it again"
        assert job.progress < 100
        # the worker removed the partial output before it exited
        assert not [p for p in Path(os.environ["MEDIA_OUT"]).rglob("*") if p.is_file()], worker.text()
    finally:
        worker.kill()
        kill_orphans(job.id.hex)
        from mpr.settings import get_settings

        get_queue(get_settings()).huey.flush()
        reset_queues()
