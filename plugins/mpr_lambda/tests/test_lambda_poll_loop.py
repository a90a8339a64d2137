"""The poll loop of ``mpr serve`` (mpr.polling) finishing lambda jobs whose execution never calls back.

A real app runs (testkit.run_app) with MPR_POLL_INTERVAL=0.2 against moto's Step Functions; nothing runs
``mpr lambda-poll``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mpr import callbacks
from mpr.executors import get_executor
from mpr.models import AssetKind, JobStatus, MediaAsset, TranscodeJob
from mpr.polling import poll_once
from mpr.settings import get_settings
from testkit import free_port, make_clip, run_app, stop_app

sys.path.insert(0, str(Path(__file__).parent))
from sfn_helpers import deploy, queue_results, wait

SECRET = "poll-loop-callback-secret"


@pytest.fixture
async def app(moto_server, s3_bucket, sqlite_db, media, monkeypatch):
    """The app serving on this loop, lambda executor, media in the bucket, polling every 0.2 s."""
    port = free_port()
    env = {
        "MPR_EXECUTOR": "lambda",
        "MEDIA_IN": f"s3://{s3_bucket}/in/",
        "MEDIA_OUT": f"s3://{s3_bucket}/out/",
        "MPR_S3_ENDPOINT_URL": moto_server.url,
        "MPR_SFN_ENDPOINT_URL": moto_server.url,
        "MPR_CALLBACK_SECRET": SECRET,
        "MPR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MPR_GRPC_PORT": "0",
        "MPR_POLL_INTERVAL": "0.2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    server, task, http, url = await run_app(get_settings(), port=port, timeout=60)
    try:
        yield http
    finally:
        await stop_app(server, task, http)


async def use_machine(moto_server, asl: dict, monkeypatch, *, execute: bool) -> None:
    arns = await asyncio.to_thread(lambda: deploy(moto_server, asl, execute=execute))
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", arns["arn"])
    get_settings.cache_clear()
    from mpr.executors import reset_executors

    reset_executors()  # the executor reads the ARN when it is built


async def submitted_job(name: str) -> TranscodeJob:
    """A lambda job handed to the executor (PROCESSING, its execution ARN as external id)."""
    asset = await MediaAsset.create(path=f"{name}.mp4", filename=f"{name}.mp4", kind=AssetKind.VIDEO, size=10)
    job = await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        preset_snapshot={"name": "h264-720p", "container": "mp4", "video_codec": "libx264", "crf": 23},
        output_path=f"{name}-720p.mp4",
        executor="lambda",
        chunked=True,
        chunk_seconds=4.0,
    )
    await get_executor("lambda").submit(job)
    job = await TranscodeJob.get(id=job.id)
    assert job.status == JobStatus.PROCESSING and job.external_id.startswith("arn:aws:states:")
    return job


async def wait_status(job_id: Any, want: JobStatus, deadline: float = 60.0) -> TranscodeJob:
    end = time.monotonic() + deadline
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status == want or time.monotonic() > end:
            return job
        await asyncio.sleep(0.1)


async def test_an_execution_stopped_outside_mpr_fails_its_job_through_the_poll_loop(
    app, moto_server, asl, monkeypatch
) -> None:
    await use_machine(moto_server, asl, monkeypatch, execute=False)  # executions stay RUNNING until stopped
    job = await submitted_job("stopped")
    sfn = moto_server.client("stepfunctions")
    await asyncio.to_thread(
        sfn.stop_execution, executionArn=job.external_id, error="Ops.Stopped", cause="stopped from the AWS console"
    )
    job = await wait_status(job.id, JobStatus.FAILED)
    assert job.status == JobStatus.FAILED
    # (AWS adds the stop's error and cause to the reason; moto's DescribeExecution does not return them)
    assert job.error.startswith("Step Functions execution aborted without calling back ("), job.error


async def test_an_execution_that_fails_before_its_callback_fails_the_job_through_the_poll_loop(
    app, moto_server, asl, monkeypatch
) -> None:
    await use_machine(moto_server, asl, monkeypatch, execute=True)
    await asyncio.to_thread(queue_results, moto_server, "x" * 6_000_100)  # the Plan Lambda crashes
    job = await submitted_job("crashed")
    info = await asyncio.to_thread(wait, moto_server, job.external_id)
    assert info["status"] == "FAILED"  # NotifyFailure ran, but its (echo) Lambda called nobody back
    job = await wait_status(job.id, JobStatus.FAILED)
    assert job.status == JobStatus.FAILED
    assert "failed without calling back" in job.error and "MPR.JobFailed" in job.error, job.error


async def test_a_job_that_got_its_callback_is_not_touched_by_the_poll_loop(
    app, moto_server, s3_bucket, asl, monkeypatch, tmp_path
) -> None:
    await use_machine(moto_server, asl, monkeypatch, execute=False)
    done = await submitted_job("called-back")
    sentinel = await submitted_job("sentinel")
    # the run's output and its signed completion callback, as the NotifySuccess Lambda sends it
    clip = make_clip(tmp_path / "out.mp4", seconds=1.0)
    s3 = moto_server.client("s3")
    await asyncio.to_thread(s3.upload_file, str(clip), s3_bucket, f"out/{done.output_path}")
    body = json.dumps({"status": "completed", "output_key": done.output_path}).encode()
    r = await app.post(
        f"/api/jobs/{done.id}/callback",
        content=body,
        headers={"content-type": "application/json", **callbacks.sign_headers(body, SECRET)},
    )
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    # then both executions end without a callback (stopped): only the job still running may change
    sfn = moto_server.client("stepfunctions")
    for job in (done, sentinel):
        await asyncio.to_thread(sfn.stop_execution, executionArn=job.external_id, error="Ops.Stopped", cause="x")
    assert (await wait_status(sentinel.id, JobStatus.FAILED)).status == JobStatus.FAILED  # the loop has run
    await poll_once()  # and one more full pass, to be sure
    job = await TranscodeJob.get(id=done.id)
    assert job.status == JobStatus.COMPLETED and job.error is None and job.output_size > 0
