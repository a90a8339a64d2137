"""The core poll loop (mpr.polling) with a third-party executor that has no callbacks, only ``poll()``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mpr import hookimpl
from mpr.errors import ConfigError
from mpr.executors import PollResult
from mpr.models import AssetKind, JobStatus, MediaAsset, TranscodeJob
from mpr.plugins import register_plugin, unregister_plugin
from mpr.polling import apply_result, poll_loop, poll_once, pollable_executors
from mpr.settings import Settings
from testkit import make_clip

# what the "remote service" says about each run, by external id
REMOTE: dict[str, PollResult] = {}
POLLED: list[str] = []


class PollOnlyExecutor:
    """A third-party executor without callbacks: it learns how a run ended only by asking (``poll``)."""

    name = "pollonly"

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def submit(self, job: TranscodeJob) -> str:
        return f"run-{job.id}"  # the job stays PENDING: this executor never reports PROCESSING itself

    async def cancel(self, job: TranscodeJob) -> None:
        return None

    async def poll(self, job: TranscodeJob) -> PollResult:
        POLLED.append(str(job.id))
        if job.external_id == "run-broken":  # a bug in the executor (or an SDK error that is no MprError)
            raise KeyError("ExecutionArn")
        if job.external_id == "run-hung":  # a remote service that never answers
            await asyncio.Event().wait()
        return REMOTE.get(job.external_id or "", PollResult("running", state="QUEUED"))


class PollOnlyPlugin:
    @hookimpl
    def register_executors(self, register):
        register("pollonly", PollOnlyExecutor)


@pytest.fixture
def pollonly(sqlite_db):
    plugin = PollOnlyPlugin()
    register_plugin(plugin, name="mpr-pollonly-test")
    REMOTE.clear()
    POLLED.clear()
    try:
        yield
    finally:
        unregister_plugin(plugin)


async def make_job(name: str, status: JobStatus = JobStatus.PENDING, external_id: str | None = None) -> TranscodeJob:
    asset = await MediaAsset.create(path=f"{name}.mp4", filename=f"{name}.mp4", kind=AssetKind.VIDEO, size=10)
    return await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        preset_snapshot={"name": "copy", "container": "mp4", "video_codec": "copy", "audio_codec": "copy"},
        output_path=f"{name}-copy.mp4",
        executor="pollonly",
        status=status,
        external_id=external_id,
    )


async def wait_status(job_id: Any, want: JobStatus, deadline: float = 60.0) -> TranscodeJob:
    end = time.monotonic() + deadline
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status == want or time.monotonic() > end:
            return job
        await asyncio.sleep(0.05)


async def test_poll_loop_finishes_the_jobs_of_an_executor_that_only_polls(pollonly, media) -> None:
    assert "pollonly" in pollable_executors() and "local" not in pollable_executors()
    done = await make_job("done", JobStatus.PENDING, "run-done")  # submitted, never reported PROCESSING
    crashed = await make_job("crashed", JobStatus.PROCESSING, "run-crashed")
    unsubmitted = await make_job("unsubmitted")  # PENDING, no external id: submit may still be in flight
    cancelled = await make_job("cancelled", JobStatus.CANCELLED, "run-cancelled")
    make_clip(media["out"] / done.output_path, seconds=1.0)
    REMOTE["run-done"] = PollResult("completed", state="DONE", metrics={"seconds": 1.5})
    REMOTE["run-crashed"] = PollResult("failed", error="remote run crashed: out of memory", state="CRASHED")
    REMOTE["run-cancelled"] = PollResult("completed", state="DONE")  # it finished anyway: the cancel stands

    loop = asyncio.create_task(poll_loop(0.05))
    try:
        finished = await wait_status(done.id, JobStatus.COMPLETED)
        failed = await wait_status(crashed.id, JobStatus.FAILED)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    # completed exactly as a callback would complete it: output probed, metrics stored
    assert finished.status == JobStatus.COMPLETED, finished.error
    assert finished.progress == 100.0 and finished.output_size > 0 and finished.output_duration
    assert finished.metrics == {"seconds": 1.5} and finished.started_at and finished.finished_at
    assert failed.status == JobStatus.FAILED and failed.error == "remote run crashed: out of memory"
    assert str(unsubmitted.id) not in POLLED and str(cancelled.id) not in POLLED
    assert (await TranscodeJob.get(id=unsubmitted.id)).status == JobStatus.PENDING
    assert (await TranscodeJob.get(id=cancelled.id)).status == JobStatus.CANCELLED


async def test_a_poll_result_never_moves_a_final_job(pollonly, media) -> None:
    job = await make_job("late", JobStatus.PROCESSING, "run-late")
    make_clip(media["out"] / job.output_path, seconds=1.0)
    # the callback came first and completed the job; a poll that saw the run die arrives after it
    assert await apply_result(job.id, PollResult("completed", state="DONE")) is True
    assert await apply_result(job.id, PollResult("failed", error="lost")) is False
    assert await apply_result(job.id, PollResult("cancelled")) is False
    job = await TranscodeJob.get(id=job.id)
    assert job.status == JobStatus.COMPLETED and job.error is None
    # "running" never changes anything
    other = await make_job("other", JobStatus.PROCESSING, "run-other")
    assert await apply_result(other.id, PollResult("running", state="QUEUED")) is False
    assert (await TranscodeJob.get(id=other.id)).status == JobStatus.PROCESSING


def test_poll_interval_setting() -> None:
    assert Settings.from_env({}).poll_interval == 30.0
    assert Settings.from_env({"MPR_POLL_INTERVAL": "0"}).poll_interval == 0.0
    assert Settings.from_env({"MPR_POLL_INTERVAL": "2.5"}).poll_interval == 2.5
    with pytest.raises(ConfigError, match="MPR_POLL_INTERVAL"):
        Settings.from_env({"MPR_POLL_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="MPR_POLL_INTERVAL"):
        Settings.from_env({"MPR_POLL_INTERVAL": "0.01"})


async def test_a_poll_that_raises_or_hangs_does_not_stop_the_other_jobs(pollonly, media) -> None:
    broken = await make_job("broken", JobStatus.PROCESSING, "run-broken")
    hung = await make_job("hung", JobStatus.PROCESSING, "run-hung")
    done = await make_job("done", JobStatus.PROCESSING, "run-done")
    make_clip(media["out"] / done.output_path, seconds=1.0)
    REMOTE["run-done"] = PollResult("completed", state="DONE")
    states = await asyncio.wait_for(poll_once(["pollonly"], timeout=0.5), 120)
    assert states[str(broken.id)].startswith("error: ") and "ExecutionArn" in states[str(broken.id)]
    assert states[str(hung.id)].startswith("error: ") and "did not answer" in states[str(hung.id)]
    assert states[str(done.id)] == "DONE"
    assert (await TranscodeJob.get(id=done.id)).status == JobStatus.COMPLETED
    for job in (broken, hung):  # left alone, polled again next pass
        assert (await TranscodeJob.get(id=job.id)).status == JobStatus.PROCESSING
