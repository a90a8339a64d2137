"""The job state machine on SQLite and PostgreSQL: legal moves, illegal ones, and races."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mpr import jobs
from mpr.errors import InvalidTransition, NotFound, ValidationError
from mpr.models import JobStatus, MediaAsset, TranscodeJob
from mpr.plugins import register_plugin, unregister_plugin
from tests.core_helpers import CollectSink


@pytest.fixture
def sink(media):
    s = CollectSink()
    register_plugin(s, name="collect-sink")
    try:
        yield s
    finally:
        unregister_plugin(s)


async def new_job(**fields) -> TranscodeJob:
    asset = await MediaAsset.create(path=f"{uuid.uuid4().hex}.mp4", filename="x.mp4", kind="video")
    return await TranscodeJob.create(
        source_asset=asset, source_path=asset.path, output_path=f"{uuid.uuid4().hex}.mp4", **fields
    )


async def test_happy_path_sets_timestamps_and_emits_events(db, sink) -> None:
    job = await new_job()
    running = await jobs.transition(job.id, JobStatus.PROCESSING)
    assert running.status is JobStatus.PROCESSING and running.started_at and running.heartbeat_at
    assert await jobs.update_progress(job.id, 42.0, speed=2.0, eta=3.0)
    done = await jobs.transition(job.id, "completed", progress=100.0)
    assert done.status is JobStatus.COMPLETED and done.finished_at and done.progress == 100.0
    assert sink.statuses(job.id) == ["processing", "completed"]
    assert any(e.type == "progress" and e.progress == 42.0 for e in sink.events)


ILLEGAL = [
    ([], JobStatus.COMPLETED),  # pending -> completed
    ([JobStatus.PROCESSING, JobStatus.COMPLETED], JobStatus.CANCELLED),
    ([JobStatus.PROCESSING, JobStatus.COMPLETED], JobStatus.PENDING),  # completed jobs are not retried
    ([], JobStatus.PENDING),
    ([JobStatus.CANCELLED], JobStatus.PROCESSING),
]


async def test_illegal_transitions_are_refused_with_the_current_status(db) -> None:
    for path, illegal in ILLEGAL:
        job = await new_job()
        for step in path:
            await jobs.transition(job.id, step)
        before = await TranscodeJob.get(id=job.id)
        with pytest.raises(InvalidTransition, match=f"is {before.status.value}; it cannot become {illegal.value}"):
            await jobs.transition(job.id, illegal)
        assert (await TranscodeJob.get(id=job.id)).status is before.status


async def test_retry_moves_failed_and_cancelled_back_to_pending(db) -> None:
    job = await new_job()
    await jobs.transition(job.id, JobStatus.PROCESSING)
    await jobs.transition(job.id, JobStatus.FAILED, error="boom")
    again = await jobs.transition(job.id, JobStatus.PENDING)
    assert again.status is JobStatus.PENDING and again.error is None and again.finished_at is None
    await jobs.transition(job.id, JobStatus.CANCELLED)
    assert (await jobs.transition(job.id, JobStatus.PENDING)).status is JobStatus.PENDING


async def test_two_workers_race_to_start_exactly_one_wins(db) -> None:
    for _ in range(3):
        job = await new_job()
        results = await asyncio.gather(
            *(jobs.transition(job.id, JobStatus.PROCESSING, worker=f"w{i}") for i in range(4)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, TranscodeJob)]
        assert len(winners) == 1
        assert all(isinstance(r, InvalidTransition) for r in results if r not in winners)
        assert (await TranscodeJob.get(id=job.id)).worker == winners[0].worker


async def test_cancel_races_completion_exactly_one_wins(db) -> None:
    job = await new_job()
    await jobs.transition(job.id, JobStatus.PROCESSING)
    results = await asyncio.gather(
        jobs.transition(job.id, JobStatus.COMPLETED),
        jobs.transition(job.id, JobStatus.CANCELLED),
        return_exceptions=True,
    )
    assert sum(isinstance(r, TranscodeJob) for r in results) == 1
    final = (await TranscodeJob.get(id=job.id)).status
    assert final in (JobStatus.COMPLETED, JobStatus.CANCELLED)


async def test_races_from_threads_through_the_portal(db) -> None:
    from mpr.db import run_sync

    job = await new_job()

    def attempt(i: int):
        try:
            return run_sync(jobs.transition(job.id, JobStatus.PROCESSING, worker=f"t{i}"))
        except InvalidTransition as exc:
            return exc

    results = await asyncio.gather(*(asyncio.to_thread(attempt, i) for i in range(4)))
    assert sum(isinstance(r, TranscodeJob) for r in results) == 1


async def test_update_progress_reports_a_cancelled_job(db) -> None:
    job = await new_job()
    await jobs.transition(job.id, JobStatus.PROCESSING)
    assert await jobs.update_progress(job.id, 150.0) is True
    assert (await TranscodeJob.get(id=job.id)).progress == 100.0  # clamped
    await jobs.transition(job.id, JobStatus.CANCELLED)
    assert await jobs.update_progress(job.id, 50.0) is False


async def test_unknown_and_malformed_ids(db) -> None:
    with pytest.raises(NotFound):
        await jobs.transition(uuid.uuid4(), JobStatus.CANCELLED)
    with pytest.raises(ValidationError, match="not a valid job id"):
        await jobs.get_job("../etc/passwd")


async def test_a_stalled_worker_cannot_finish_a_run_that_was_retried_elsewhere(db) -> None:
    """Worker A stalls, its run is reaped and retried; B runs it. A's late finish must not touch B's run."""
    job = await new_job()
    a = await jobs.transition(job.id, JobStatus.PROCESSING, worker="a:1", attempts=1)
    await jobs.transition(job.id, JobStatus.FAILED, error="worker lost")
    await jobs.transition(job.id, JobStatus.PENDING)
    await jobs.transition(job.id, JobStatus.PROCESSING, worker="b:2", attempts=2)
    with pytest.raises(InvalidTransition, match="another worker"):
        await jobs.transition(job.id, JobStatus.CANCELLED, expect={"worker": a.worker, "attempts": a.attempts})
    current = await TranscodeJob.get(id=job.id)
    assert (current.status, current.worker, current.attempts) == (JobStatus.PROCESSING, "b:2", 2)
    done = await jobs.transition(job.id, JobStatus.COMPLETED, expect={"worker": "b:2", "attempts": 2})
    assert done.status is JobStatus.COMPLETED
