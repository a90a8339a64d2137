"""LambdaExecutor against moto's Step Functions: submit, input contents, cancel (StopExecution), poll."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from pathlib import Path

import pytest
from mpr_lambda.executor import LambdaExecutor

from mpr import jobs
from mpr.errors import ConfigError, ExecutorError
from mpr.executors import get_executor
from mpr.models import AssetKind, JobStatus, MediaAsset, TranscodeJob
from mpr.settings import get_settings

sys.path.insert(0, str(Path(__file__).parent))
from sfn_helpers import deploy, entered, history, queue_results, wait

SECRET = "s3cr3t-callback-key-never-in-input"
PLAN_ONE = {"items": [{"kind": "video", "index": 0, "start": 0.0, "end": 3.0, "frames": 75}], "info": {"ext": "mp4"}}


@pytest.fixture
def lambda_env(moto_server, media, monkeypatch) -> dict:
    """Settings for MPR_EXECUTOR=lambda with both media roots in a moto bucket."""
    env = {
        "MPR_EXECUTOR": "lambda",
        "MEDIA_IN": "s3://mpr-media/in/",
        "MEDIA_OUT": "s3://mpr-media/out",
        "MPR_S3_ENDPOINT_URL": moto_server.url,
        "MPR_SFN_ENDPOINT_URL": moto_server.url,
        "MPR_CALLBACK_SECRET": SECRET,
        "MPR_PUBLIC_URL": "https://mpr.example.com",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return env


async def make_job(path: str = "shows/clip one.mp4", **fields) -> TranscodeJob:
    asset = await MediaAsset.create(path=path, filename=path.rsplit("/", 1)[-1], kind=AssetKind.VIDEO, size=10)
    defaults = {
        "source_asset": asset,
        "source_path": path,
        "preset_snapshot": {"name": "h264-720p", "container": "mp4", "video_codec": "libx264", "crf": 23},
        "output_path": "shows/clip one-720p.mp4",
        "executor": "lambda",
        "chunked": True,
        "chunk_seconds": 4.0,
    }
    return await TranscodeJob.create(**{**defaults, **fields})


def test_register_executors_hook_registers_lambda_and_the_poll_command(media) -> None:
    import click
    import mpr_lambda

    from mpr.plugins import load_plugins

    registered: dict = {}
    mpr_lambda.register_executors(register=lambda name, cls: registered.setdefault(name, cls))
    assert registered == {"lambda": LambdaExecutor}
    registry = load_plugins()  # through the `mpr` entry point
    assert registry.executors["lambda"] is LambdaExecutor
    assert registry.owners[("executor", "lambda")] in ("mpr-lambda", "mpr_lambda")
    group = click.Group()
    mpr_lambda.register_commands(cli=group)
    assert list(group.commands) == ["lambda-poll"]


async def test_submit_starts_an_execution_with_a_complete_input_and_no_secret(
    moto_server, asl, lambda_env, sqlite_db, monkeypatch
) -> None:
    arns = await asyncio.to_thread(deploy, moto_server, asl)
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", arns["arn"])
    get_settings.cache_clear()
    executor = get_executor("lambda")  # registered by the plugin's entry point
    assert isinstance(executor, LambdaExecutor)
    job = await make_job()
    await asyncio.to_thread(queue_results, moto_server, PLAN_ONE)
    execution_arn = await executor.submit(job)

    fresh = await TranscodeJob.get(id=job.id)
    assert fresh.status == JobStatus.PROCESSING and fresh.external_id == execution_arn
    sfn = moto_server.client("stepfunctions")
    described = await asyncio.to_thread(sfn.describe_execution, executionArn=execution_arn)
    raw = described["input"]
    assert SECRET not in raw
    data = json.loads(raw)
    assert data["job_id"] == str(job.id)
    assert data["source_url"] == "s3://mpr-media/in/shows/clip one.mp4"
    assert data["output_url"] == "s3://mpr-media/out/shows/clip one-720p.mp4"
    assert data["output_key"] == "shows/clip one-720p.mp4"
    assert data["work_url"] == f"s3://mpr-media/mpr-work/{job.id}/0/"
    assert data["preset"]["video_codec"] == "libx264" and data["chunk_seconds"] == 4.0
    assert data["callback_url"] == f"https://mpr.example.com/api/jobs/{job.id}/callback"
    info = await asyncio.to_thread(wait, moto_server, execution_arn)
    assert info["status"] == "SUCCEEDED"


async def test_submit_refuses_local_media_roots(lambda_env, sqlite_db, monkeypatch, media) -> None:
    monkeypatch.setenv("MEDIA_IN", str(media["in"]))
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:x")
    get_settings.cache_clear()
    job = await make_job()
    with pytest.raises(ExecutorError, match="MEDIA_IN in a bucket"):
        await LambdaExecutor(get_settings()).submit(job)
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.PENDING


async def test_submit_without_state_machine_arn_is_a_config_error(lambda_env, sqlite_db, monkeypatch) -> None:
    monkeypatch.delenv("MPR_SFN_STATE_MACHINE_ARN", raising=False)
    job = await make_job()
    with pytest.raises(ConfigError, match="MPR_SFN_STATE_MACHINE_ARN"):
        await LambdaExecutor(get_settings()).submit(job)
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", "not-an-arn")
    from mpr_lambda.settings import LambdaSettings

    with pytest.raises(ConfigError, match="MPR_SFN_STATE_MACHINE_ARN"):
        LambdaSettings.from_env()


async def test_submit_reports_sdk_errors_as_executor_errors(lambda_env, sqlite_db, monkeypatch) -> None:
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:missing")
    job = await make_job()
    with pytest.raises(ExecutorError, match="StateMachineDoesNotExist"):
        await LambdaExecutor(get_settings()).submit(job)
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.PENDING


async def test_cancel_stops_the_execution(moto_server, asl, lambda_env, sqlite_db, monkeypatch) -> None:
    # The Plan step is "throttled" once and waits 10 s before its retry: cancel arrives while it
    # waits (10 s: room for a loaded machine between seeing the failure and the stop).
    # (moto mishandles a stop inside a Map iteration, so the wait is in Plan.)
    variant = copy.deepcopy(asl)
    task = variant["States"]["Plan"]
    retrier = next(r for r in task["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"])
    retrier.update(IntervalSeconds=10, JitterStrategy="NONE")
    retrier["ErrorEquals"].append("Function.ResponseSizeTooLarge")
    arns = await asyncio.to_thread(deploy, moto_server, variant)
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", arns["arn"])
    executor = LambdaExecutor(get_settings())
    job = await make_job()
    await asyncio.to_thread(queue_results, moto_server, "x" * 6_000_100)
    arn = await executor.submit(job)
    deadline = time.monotonic() + 60
    while not any(e["type"] == "TaskFailed" for e in await asyncio.to_thread(history, moto_server, arn)):
        assert time.monotonic() < deadline, "the Plan step never failed"
        await asyncio.sleep(0.2)
    job = await jobs.transition(job.id, JobStatus.CANCELLED)  # what cancel_job does first
    await executor.cancel(job)
    # moto applies the stop when the interpreter wakes from the retry wait (AWS: at once)
    info = await asyncio.to_thread(wait, moto_server, arn, 40)
    assert info["status"] == "ABORTED"
    await executor.cancel(job)  # a second cancel of a stopped execution is fine
    events = await asyncio.to_thread(history, moto_server, arn)
    assert events[-1]["type"] == "ExecutionAborted"
    assert sum(1 for e in events if e["type"] == "TaskScheduled") == 1  # the retry never ran
    names = entered(events)
    assert "Encode" not in names and "NotifySuccess" not in names and "NotifyFailure" not in names
    from mpr.polling import apply_result

    result = await executor.poll(job)
    assert result.state == "ABORTED" and result.status == "failed"
    assert await apply_result(job.id, result) is False  # what the poll loop does with it: nothing
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.CANCELLED  # poll never revives it


async def test_poll_fails_a_job_whose_execution_died_without_calling_back(
    moto_server, asl, lambda_env, sqlite_db, monkeypatch
) -> None:
    arns = await asyncio.to_thread(deploy, moto_server, asl)
    monkeypatch.setenv("MPR_SFN_STATE_MACHINE_ARN", arns["arn"])
    executor = LambdaExecutor(get_settings())
    job = await make_job()
    assert await executor.poll(job) is None  # never submitted
    await asyncio.to_thread(queue_results, moto_server, "x" * 6_000_100)  # the Plan Lambda crashes
    arn = await executor.submit(job)
    info = await asyncio.to_thread(wait, moto_server, arn)
    assert info["status"] == "FAILED"
    job = await TranscodeJob.get(id=job.id)
    assert job.status == JobStatus.PROCESSING  # the failure callback (an echo here) reached nobody
    from click.testing import CliRunner

    from mpr.cli import cli, load_plugin_commands

    load_plugin_commands()  # what `mpr` does before parsing: the plugin adds `lambda-poll`
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["lambda-poll"])  # what cron would run
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{job.id} FAILED"
    job = await TranscodeJob.get(id=job.id)
    assert job.status == JobStatus.FAILED
    assert "without calling back" in job.error and "MPR.JobFailed" in job.error
