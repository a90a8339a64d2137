"""End-to-end local jobs: real ffmpeg, real huey consumers in threads, SQLite/PostgreSQL, SQLite/Redis queues."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import pytest

from mpr import service
from mpr.bus import get_bus
from mpr.errors import InvalidTransition, ValidationError
from mpr.models import JobStatus, TranscodeJob
from testkit import realtime_ffmpeg

pytestmark = pytest.mark.timeout(120)


async def wait_for(job_id, *statuses: JobStatus, timeout: float = 60.0, progress: float | None = None) -> TranscodeJob:
    """Poll the job until it is in one of ``statuses`` (and past ``progress`` percent, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in statuses and (progress is None or job.progress >= progress):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job is {job.status.value} at {job.progress:.0f}% ({job.error}), wanted {statuses}")
        await asyncio.sleep(0.05)


async def all_events(job_id: str, timeout: float = 5.0) -> list:
    """The job's events up to its final status event (the row changes a moment before the event is out)."""
    events: list = []
    deadline = time.monotonic() + timeout
    while not any(e.final for e in events) and time.monotonic() < deadline:
        events += await get_bus().fetch(job_id, events[-1].seq if events else 0, wait=0.5)
    return events


def ffmpeg_pids(marker: str) -> list[int]:
    """Pids of ffmpeg processes whose command line mentions ``marker`` (the job's temp output name)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"ffmpeg") and any(marker.encode() in arg for arg in cmdline):
            pids.append(int(entry.name))
    return pids


def snapshot(job: TranscodeJob) -> dict:
    return {f: getattr(job, f) for f in ("status", "attempts", "error", "updated_at", "finished_at", "output_path")}


async def test_job_goes_pending_processing_completed_with_output_and_events(db, workers, library, media, monkeypatch):
    from mpr import jobs

    # when the runner decides to write progress (its call, not the event's time stamp: that one comes
    # after a database write whose duration varies with the machine's load)
    writes: list[tuple[float, float]] = []
    real_update = jobs.update_progress

    def recording_update(job_id, percent, *args, **kwargs):
        writes.append((time.monotonic(), percent))
        return real_update(job_id, percent, *args, **kwargs)

    monkeypatch.setattr(jobs, "update_progress", recording_update)
    asset = await library.add()
    job = await service.create_job(asset.id, "h264-720p")
    assert job.status is JobStatus.PENDING and job.external_id  # the huey task id
    await workers.start()

    job = await wait_for(job.id, JobStatus.COMPLETED, JobStatus.FAILED)
    assert job.status is JobStatus.COMPLETED, job.error
    output = media["out"] / job.output_path
    assert output.is_file() and job.output_size == output.stat().st_size
    assert job.output_duration == pytest.approx(3.0, abs=0.2) and job.output_probe
    assert job.progress == 100 and job.attempts == 1
    assert job.worker.split(":")[1] == str(os.getpid()) and job.started_at <= job.finished_at

    events = await all_events(str(job.id))
    statuses = [e.status for e in events if e.type == "status"]
    assert statuses == ["processing", "completed"]
    progress = [e for e in events if e.type == "progress"]
    assert len(progress) == len(writes) > 0  # one event per write
    gaps = [b - a for (a, _), (b, p) in itertools.pairwise(writes) if p < 100]
    assert all(gap >= 0.49 for gap in gaps), gaps  # written at most every 500 ms


async def test_failed_ffmpeg_marks_job_failed_with_stderr_tail(sqlite_db, workers, library, media, clips):
    asset = await library.add()
    job = await service.create_job(asset.id, "h264-720p")
    # the file goes bad after it was probed: ffmpeg itself must fail
    (media["in"] / "sample.mp4").write_bytes(clips["truncated"].read_bytes())
    await workers.start()

    job = await wait_for(job.id, JobStatus.COMPLETED, JobStatus.FAILED)
    assert job.status is JobStatus.FAILED
    assert "ffmpeg" in job.error.lower() and "moov atom not found" in job.error
    assert not (media["out"] / job.output_path).exists()
    assert not list(media["out"].rglob("*.mp4"))


async def test_cancelled_pending_job_never_starts(sqlite_db, workers, library, media):
    asset = await library.add()
    cancelled = await service.create_job(asset.id, "copy")
    await service.cancel_job(cancelled.id)
    later = await service.create_job(asset.id, "copy", priority=-1)  # queued behind the cancelled one
    await workers.start()

    await wait_for(later.id, JobStatus.COMPLETED)
    job = await TranscodeJob.get(id=cancelled.id)
    assert job.status is JobStatus.CANCELLED
    assert job.started_at is None and job.attempts == 0 and job.worker is None
    assert not (media["out"] / job.output_path).exists()


async def test_cancel_kills_ffmpeg_mid_encode_and_removes_partial_output(
    db, workers, library, media, long_clip, tmp_path, monkeypatch
):
    from mpr.settings import get_settings

    # at native speed the encode cannot end before 20 s, however fast the machine: ffmpeg gone well
    # before that means the cancel killed it (its 2 s bound is tests/test_ffmpeg.py's, without a worker)
    monkeypatch.setenv("MPR_FFMPEG", str(realtime_ffmpeg(tmp_path / "ffmpeg-realtime")))
    get_settings.cache_clear()
    asset = await library.add("long.mp4", long_clip)
    job = await service.create_job(asset.id, "h264-720p")
    await workers.start()
    running = await wait_for(job.id, JobStatus.PROCESSING, progress=1.0, timeout=60)
    could_end = running.started_at.timestamp() + 19.5  # ffmpeg started after this, and reads 20 s at 1x
    marker = job.id.hex
    pids = ffmpeg_pids(marker)
    assert len(pids) == 1
    partial = [p for p in media["out"].rglob("*") if marker in p.name]
    assert partial and partial[0].stat().st_size > 0  # ffmpeg is writing

    job = await service.cancel_job(job.id)
    assert job.status is JobStatus.CANCELLED
    while ffmpeg_pids(marker):
        assert time.time() < could_end, "ffmpeg was not stopped before its encode could have ended"
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + 30
    while files := [p for p in media["out"].rglob("*") if p.is_file()]:  # the runner's cleanup
        assert time.monotonic() < deadline, files
        await asyncio.sleep(0.05)
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.CANCELLED and job.progress < 100


async def test_retry_failed_and_cancelled_jobs_runs_them_again_in_place(sqlite_db, workers, library, media):
    asset = await library.add()
    source = media["in"] / "sample.mp4"
    kept = source.read_bytes()
    failed = await service.create_job(asset.id, "copy")
    cancelled = await service.create_job(asset.id, "copy")
    await service.cancel_job(cancelled.id)
    source.unlink()  # the first run fails: file vanished
    await workers.start()
    failed = await wait_for(failed.id, JobStatus.FAILED)
    assert failed.attempts == 1

    source.write_bytes(kept)
    for job, attempts in ((failed, 2), (cancelled, 1)):
        retried = await service.retry_job(job.id)
        assert retried.status in (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED)
        assert retried.error is None and retried.output_path == job.output_path
        done = await wait_for(job.id, JobStatus.COMPLETED, JobStatus.FAILED)
        assert done.status is JobStatus.COMPLETED, done.error
        assert done.attempts == attempts
        assert (media["out"] / job.output_path).is_file()
    assert failed.output_path != cancelled.output_path


async def test_refused_cancel_and_retry_change_nothing(sqlite_db, workers, library):
    asset = await library.add()
    done = await service.create_job(asset.id, "copy")
    await workers.start()
    done = await wait_for(done.id, JobStatus.COMPLETED)
    before = snapshot(done)
    with pytest.raises(InvalidTransition, match="is completed; it cannot become cancelled"):
        await service.cancel_job(done.id)
    with pytest.raises(InvalidTransition, match="only failed or cancelled jobs can be retried"):
        await service.retry_job(done.id)
    assert snapshot(await TranscodeJob.get(id=done.id)) == before

    # a job cancelled twice: the second cancel is refused and changes nothing
    for handle in workers.handles:
        await asyncio.to_thread(handle.stop, 10)
    workers.handles.clear()
    job = await service.create_job(asset.id, "copy")
    job = await service.cancel_job(job.id)
    before = snapshot(job)
    with pytest.raises(InvalidTransition, match="is cancelled; it cannot become cancelled"):
        await service.cancel_job(job.id)
    assert snapshot(await TranscodeJob.get(id=job.id)) == before


async def test_vanished_source_file_fails_with_clear_message(sqlite_db, workers, library, media):
    asset = await library.add()
    job = await service.create_job(asset.id, "copy")
    (media["in"] / "sample.mp4").unlink()
    await workers.start()
    job = await wait_for(job.id, JobStatus.COMPLETED, JobStatus.FAILED)
    assert job.status is JobStatus.FAILED
    assert job.error == "the source file sample.mp4 no longer exists in MEDIA_IN"


async def test_deleted_asset_is_refused_while_queued_and_its_failed_job_cannot_be_retried(
    sqlite_db, workers, library, media
):
    asset = await library.add()
    job = await service.create_job(asset.id, "copy")
    with pytest.raises(ValidationError, match="1 pending or running job"):
        await service.delete_asset(asset.id)
    (media["in"] / "sample.mp4").unlink()
    await workers.start()
    job = await wait_for(job.id, JobStatus.FAILED)

    await service.delete_asset(asset.id)
    job = await TranscodeJob.get(id=job.id)
    before = snapshot(job)
    with pytest.raises(ValidationError, match="source asset was deleted"):
        await service.retry_job(job.id)
    assert snapshot(await TranscodeJob.get(id=job.id)) == before


async def test_submitted_jobs_are_queued_by_priority_then_age(sqlite_db, queue_kind, library):
    from mpr_local.queue import get_queue

    from mpr.settings import get_settings

    asset = await library.add()
    jobs = [await service.create_job(asset.id, "copy", priority=p) for p in (0, 5, -3, 5, 100)]
    queue = get_queue(get_settings())
    items = await asyncio.to_thread(queue.huey.storage.enqueued_items)
    order = [queue.huey.deserialize_task(data).args[0] for data in items]
    expected = [jobs[i] for i in (4, 1, 3, 0, 2)]
    assert order == [str(j.id) for j in expected]
    assert all(j.external_id for j in jobs)  # the huey task ids
