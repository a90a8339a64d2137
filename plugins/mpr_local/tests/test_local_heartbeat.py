"""Heartbeat and reaper against a real database (SQLite and PostgreSQL).

The runner here is a stand-in that moves the job through the state machine
and waits on its cancel event, so the tests are about the worker's own
machinery; the end-to-end tests with ffmpeg are in test_local_jobs.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid

from mpr_local.queue import JobQueue, make_huey
from mpr_local.settings import LocalSettings
from mpr_local.worker import WorkerConsumer, beat, reap

from mpr.db import run_sync
from mpr.jobs import now, transition
from mpr.models import JobStatus, TranscodeJob
from mpr.settings import get_settings


async def make_job(executor: str = "local", **fields) -> TranscodeJob:
    return await TranscodeJob.create(output_path=f"out/{uuid.uuid4().hex}.mp4", executor=executor, **fields)


async def test_reaper_fails_jobs_with_a_stale_heartbeat_and_only_those(db, media, monkeypatch):
    # a timeout far from both ages (fresh: a few ms, however slow the machine; stale: 10 min)
    monkeypatch.setenv("MPR_HEARTBEAT_TIMEOUT", "60")
    get_settings.cache_clear()
    stale, fresh = await make_job(), await make_job()
    remote, pending = await make_job(executor="lambda"), await make_job()
    for job in (stale, fresh, remote):
        await transition(job.id, JobStatus.PROCESSING, worker="host:1:Worker-1")
    old = now() - dt.timedelta(minutes=10)
    await TranscodeJob.filter(id__in=[stale.id, remote.id]).update(heartbeat_at=old)
    partial = media["out"] / stale.output_path
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"partial")

    assert await reap(get_settings()) == [str(stale.id)]

    stale = await TranscodeJob.get(id=stale.id)
    assert stale.status is JobStatus.FAILED
    assert stale.error.startswith("worker lost: no heartbeat from host:1:Worker-1 for 60 s")
    assert stale.finished_at is not None
    assert not partial.exists()
    for job, status in ((fresh, JobStatus.PROCESSING), (remote, JobStatus.PROCESSING), (pending, JobStatus.PENDING)):
        assert (await TranscodeJob.get(id=job.id)).status is status
    assert await reap(get_settings()) == []


async def test_beat_stamps_own_job_and_says_stop_when_cancelled_or_taken_over(db):
    job = await make_job()
    assert await beat(str(job.id), "me") is True  # still PENDING: keep waiting
    await transition(job.id, JobStatus.PROCESSING, worker="me")
    await TranscodeJob.filter(id=job.id).update(heartbeat_at=now() - dt.timedelta(seconds=100))
    assert await beat(str(job.id), "me") is True
    assert (now() - (await TranscodeJob.get(id=job.id)).heartbeat_at).total_seconds() < 5
    assert await beat(str(job.id), "someone-else") is False
    await transition(job.id, JobStatus.CANCELLED)
    assert await beat(str(job.id), "me") is False
    await TranscodeJob.filter(id=job.id).delete()
    assert await beat(str(job.id), "me") is False


async def test_heartbeat_stamps_the_running_job_and_sets_its_cancel_event_on_cancel(db, queue_kind, media):
    job = await make_job()
    started, stopped = threading.Event(), threading.Event()

    def runner(job_id: str, *, cancel: threading.Event, worker: str = "") -> None:
        run_sync(transition(job_id, JobStatus.PROCESSING, worker=worker))
        started.set()
        if cancel.wait(60):
            stopped.set()

    settings = get_settings()
    queue = JobQueue(make_huey(settings), runner=runner)
    consumer = WorkerConsumer(queue, settings, LocalSettings.from_env())
    consumer.start()
    try:
        queue.enqueue(str(job.id), 0)
        assert await asyncio.to_thread(started.wait, 30)
        # the heartbeat (every 0.2 s here) stamps the job again and again while it runs
        stamps: set = set()
        deadline = time.monotonic() + 30
        while len(stamps) < 3:
            assert time.monotonic() < deadline, f"heartbeat_at stamps seen: {sorted(stamps)}"
            beat_at = (await TranscodeJob.get(id=job.id)).heartbeat_at
            if beat_at is not None:
                stamps.add(beat_at)
            await asyncio.sleep(0.1)
        # nothing but the heartbeat reads the job's status: the runner's event is set only through it
        await transition(job.id, JobStatus.CANCELLED)
        assert await asyncio.to_thread(stopped.wait, 30)
    finally:
        await asyncio.to_thread(consumer.stop, True)
        queue.close()


async def test_pending_job_whose_task_was_lost_is_queued_again_and_runs(db, queue_kind, media, monkeypatch):
    from mpr_local.queue import get_queue
    from mpr_local.worker import requeue_lost

    monkeypatch.setenv("MPR_HEARTBEAT_TIMEOUT", "60")
    get_settings.cache_clear()
    settings = get_settings()
    queue = get_queue(settings)
    old = now() - dt.timedelta(minutes=10)
    lost, waiting, young = await make_job(priority=3), await make_job(), await make_job()
    await TranscodeJob.filter(id__in=[lost.id, waiting.id]).update(updated_at=old)
    await asyncio.to_thread(queue.enqueue, str(waiting.id), 0)  # still queued: left alone
    # ``young`` has no task either, but it has not waited longer than the timeout

    assert await requeue_lost(settings, queue) == [str(lost.id)]
    assert await asyncio.to_thread(queue.queued_job_ids) == {str(lost.id), str(waiting.id)}
    assert await requeue_lost(settings, queue) == []
    assert queue.pending() == 2
    assert str(young.id) not in await asyncio.to_thread(queue.queued_job_ids)
