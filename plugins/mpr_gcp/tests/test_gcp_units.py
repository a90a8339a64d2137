"""The gcp executor's pieces: settings, the task env contract, the RunJobRequest, poll, registration, errors."""

from __future__ import annotations

import sys

import pytest

from mpr.chunker.plan import Chunk
from mpr.errors import ConfigError, ExecutorError
from mpr.models import JobStatus, MediaAsset, TranscodeJob

from .conftest import FAST, JOB

pytestmark = pytest.mark.timeout(120)


def test_settings_read_the_job_endpoint_and_retries():
    from mpr_gcp.settings import GcpSettings

    s = GcpSettings.from_env(
        {
            "MPR_GCP_JOB": JOB,
            "MPR_GCP_API_ENDPOINT": "http://127.0.0.1:8123/",
            "MPR_GCP_MAX_RETRIES": "2",
            "MPR_GCP_TASK_TIMEOUT": "900",
        }
    )
    assert s.job == JOB and s.location == "projects/mpr-test/locations/europe-west1"
    assert s.api_endpoint == "http://127.0.0.1:8123" and s.endpoint_is_local
    assert s.max_retries == 2 and s.task_timeout == 900
    assert not GcpSettings.from_env({"MPR_GCP_API_ENDPOINT": "europe-west1-run.googleapis.com"}).endpoint_is_local
    assert not GcpSettings.from_env({}).endpoint_is_local


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MPR_GCP_JOB": "my-job"}, "MPR_GCP_JOB"),
        ({"MPR_GCP_JOB": "projects/p/locations/r/services/s"}, "MPR_GCP_JOB"),
        ({"MPR_GCP_MAX_RETRIES": "three"}, "MPR_GCP_MAX_RETRIES"),
        ({"MPR_GCP_API_ENDPOINT": "http://localhost:1/v2"}, "MPR_GCP_API_ENDPOINT"),
        ({"MPR_GCP_WORK_PREFIX": "../up"}, "MPR_GCP_WORK_PREFIX"),
        ({"MPR_GCP_CALLBACK_GRACE": "-1"}, "MPR_GCP_CALLBACK_GRACE"),
    ],
)
def test_bad_settings_name_the_variable(env, names):
    from mpr_gcp.settings import GcpSettings

    with pytest.raises(ConfigError, match=names):
        GcpSettings.from_env(env)


def test_task_spec_round_trips_through_the_environment():
    from mpr_gcp.spec import TaskSpec

    chunks = (Chunk(0, 0.0, 1.04, 26), Chunk(1, 1.04, 2.5, 36))
    spec = TaskSpec(
        job_id="0b7e",
        source_key="shows/a b.mp4",
        output_key="a b-h264.mp4",
        preset=FAST.to_dict(),
        callback_url="https://mpr.example/api/jobs/0b7e/callback",
        chunks=chunks,
        video_start=0.023,
        max_retries=2,
        media={"MEDIA_IN": "gs://b/in", "MEDIA_OUT": "gs://b/out"},
    )
    env = spec.to_env()
    assert all(isinstance(v, str) for v in env.values())
    back = TaskSpec.from_env(env)
    assert back.chunks == chunks and back.preset == FAST.to_dict() and back.video_start == 0.023
    assert back.task_count == 3 and back.max_retries == 2
    assert back.fingerprint == spec.fingerprint
    assert spec.chunk_key(1, "mp4") == f"_mpr/gcp/0b7e/{spec.fingerprint}/chunk-00001.mp4"
    other = TaskSpec(**{**spec.__dict__, "chunks": chunks[:1]})
    assert other.fingerprint != spec.fingerprint  # a different plan never reuses these chunks


def test_task_spec_refuses_keys_that_escape_the_media_root():
    from mpr_gcp.spec import TaskSpec

    env = TaskSpec(job_id="j", source_key="a.mp4", output_key="b.mp4", preset={}, callback_url="http://x").to_env()
    with pytest.raises(Exception, match="'\\.\\.'"):
        TaskSpec.from_env({**env, "MPR_GCP_SOURCE_KEY": "../../etc/passwd"})
    with pytest.raises(ConfigError, match="MPR_JOB_ID"):
        TaskSpec.from_env({k: v for k, v in env.items() if k != "MPR_JOB_ID"})


def test_run_request_sets_task_count_env_container_and_timeout():
    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings
    from mpr_gcp.spec import TaskSpec

    from mpr.settings import Settings

    gcp = GcpSettings(job=JOB, container="mpr-task", task_timeout=1200)
    executor = GcpExecutor(Settings(), gcp)
    spec = TaskSpec(
        job_id="j1",
        source_key="a.mp4",
        output_key="b.mp4",
        preset=FAST.to_dict(),
        callback_url="http://x/cb",
        chunks=(Chunk(0, 0, 1, 25), Chunk(1, 1, 2, 25)),
    )
    request = executor.run_request(spec)
    assert request.name == JOB
    assert request.overrides.task_count == 3
    (container,) = request.overrides.container_overrides
    assert container.name == "mpr-task"
    env = {e.name: e.value for e in container.env}
    assert env == spec.to_env()
    assert request.overrides.timeout.seconds == 1200


def test_gcp_executor_is_registered_by_the_plugin(media):
    from mpr_gcp.executor import GcpExecutor

    from mpr.plugins import load_plugins

    registry = load_plugins()
    assert registry.executors["gcp"] is GcpExecutor
    assert registry.owners[("executor", "gcp")] == "mpr-gcp"


async def _job(tmp_path) -> TranscodeJob:
    asset = await MediaAsset.create(path="a.mp4", filename="a.mp4", kind="video", status="ready")
    return await TranscodeJob.create(
        source_asset=asset, source_path="a.mp4", preset_snapshot=FAST.to_dict(), output_path="a-out.mp4", executor="gcp"
    )


async def test_submit_without_a_configured_job_is_a_clear_error(sqlite_db, monkeypatch, tmp_path):
    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings

    from mpr.settings import get_settings

    job = await _job(tmp_path)
    with pytest.raises(ConfigError, match="MPR_GCP_JOB"):
        await GcpExecutor(get_settings(), GcpSettings()).submit(job)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_unknown_cloud_run_job_raises_executor_error(db, cloud_run):
    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings

    from mpr.settings import get_settings

    job = await _job(None)
    gcp = GcpSettings(job=JOB.replace("mpr-transcode", "nope"), api_endpoint=cloud_run.url)
    with pytest.raises(ExecutorError, match="was not found"):
        await GcpExecutor(get_settings(), gcp).submit(job)
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.PENDING


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("raise SystemExit(3)", "Cloud Run execution failed: Task"),
        ("pass", "never called back"),
    ],
)
async def test_poll_fails_a_job_whose_execution_ended_without_a_callback(db, cloud_run, monkeypatch, code, expected):
    """A task killed before it could call back (OOM, timeout, a lost network): poll() notices."""
    import asyncio
    import dataclasses

    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings

    from mpr import jobs
    from mpr.settings import get_settings

    cloud_run.command = [sys.executable, "-c", code]
    job = await _job(None)
    executor = GcpExecutor(get_settings(), dataclasses.replace(GcpSettings.from_env(), callback_grace=0.0))
    await jobs.transition(job.id, JobStatus.PROCESSING)
    op = await asyncio.to_thread(
        executor.jobs_client.run_job, request=executor.run_request(executor.task_spec(job, []))
    )
    name = op.metadata.name
    await TranscodeJob.filter(id=job.id).update(external_id=name)
    job = await TranscodeJob.get(id=job.id)
    await asyncio.to_thread(cloud_run.wait, name)
    state = await executor.poll(job)
    assert state == (JobStatus.FAILED if "SystemExit" in code else JobStatus.COMPLETED)
    failed = await TranscodeJob.get(id=job.id)
    assert failed.status == JobStatus.FAILED and expected in failed.error
    # the execution is over: cancelling it again is harmless
    await executor.cancel(failed)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_gcp_poll_fails_only_running_gcp_jobs_whose_execution_is_over(db, cloud_run):
    """``mpr gcp-poll``'s work: a dead execution fails its job; a running one is left alone."""
    import asyncio

    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.watch import poll_processing

    from mpr import jobs
    from mpr.settings import get_settings

    executor = GcpExecutor(get_settings())
    names = {}
    for code in ("raise SystemExit(7)", "import time; time.sleep(30)"):
        cloud_run.command = [sys.executable, "-c", code]
        job = (
            await _job(None)
            if not names
            else await TranscodeJob.create(
                source_asset=None,
                source_path="a.mp4",
                preset_snapshot=FAST.to_dict(),
                output_path="b-out.mp4",
                executor="gcp",
            )
        )
        await jobs.transition(job.id, JobStatus.PROCESSING)
        op = await asyncio.to_thread(
            executor.jobs_client.run_job, request=executor.run_request(executor.task_spec(job, []))
        )
        await TranscodeJob.filter(id=job.id).update(external_id=op.metadata.name)
        names[code] = (job.id, op.metadata.name)
    dead_id, dead_name = names["raise SystemExit(7)"]
    live_id, live_name = names["import time; time.sleep(30)"]
    await asyncio.to_thread(cloud_run.wait, dead_name)

    states = await poll_processing(executor)
    assert states == {str(dead_id): "failed", str(live_id): "processing"}
    dead = await TranscodeJob.get(id=dead_id)
    assert dead.status == JobStatus.FAILED and "exit code 7" in dead.error
    assert (await TranscodeJob.get(id=live_id)).status == JobStatus.PROCESSING
    await executor.cancel(await TranscodeJob.get(id=live_id))
    await asyncio.to_thread(cloud_run.wait, live_name, 30)


@pytest.mark.parametrize(
    ("secret", "public_url", "message"),
    [
        (None, "https://mpr.example.com", "MPR_CALLBACK_SECRET"),
        ("s3cret", "http://127.0.0.1:8702", "Cloud Run tasks cannot reach"),
        ("s3cret", "http://localhost:8702", "Cloud Run tasks cannot reach"),
    ],
)
async def test_submit_refuses_when_the_tasks_could_not_call_back(sqlite_db, secret, public_url, message):
    import dataclasses

    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings

    from mpr.settings import get_settings

    job = await _job(None)
    settings = dataclasses.replace(get_settings(), callback_secret=secret, public_url=public_url)
    with pytest.raises(ConfigError, match=message):
        await GcpExecutor(settings, GcpSettings(job=JOB)).submit(job)
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.PENDING


async def test_long_sources_get_longer_chunks_to_stay_within_max_chunks(sqlite_db, media, gop_clip):
    import shutil

    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings

    from mpr.settings import get_settings

    shutil.copy(gop_clip, media["in"] / "a.mp4")
    job = await _job(None)
    job.chunked, job.chunk_seconds = True, 1.0
    chunks, _ = GcpExecutor(get_settings(), GcpSettings(job=JOB)).plan(job)
    assert [(c.start, c.end) for c in chunks] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    chunks, _ = GcpExecutor(get_settings(), GcpSettings(job=JOB, max_chunks=2)).plan(job)
    assert [(c.start, c.end) for c in chunks] == [(0.0, 2.0), (2.0, 3.0)]
    assert sum(c.frames for c in chunks) == 75


def test_fake_cloud_run_answers_like_the_real_api(tmp_path):
    """The real client's long-running operation, execution and error handling work against the fake."""
    from google.api_core import exceptions as gexc
    from mpr_gcp.executor import GcpExecutor
    from mpr_gcp.settings import GcpSettings
    from mpr_gcp.testing.fake_cloud_run import FakeCloudRun

    from mpr.settings import Settings

    code = "import os, sys; sys.exit(3 if os.environ['CLOUD_RUN_TASK_INDEX'] == '1' else 0)"
    with FakeCloudRun([JOB], command=[sys.executable, "-c", code], max_retries=2, log_dir=tmp_path) as api:
        executor = GcpExecutor(Settings(), GcpSettings(job=JOB, api_endpoint=api.url))
        request = executor.run_request(
            executor.task_spec(
                TranscodeJob(id="00000000-0000-0000-0000-000000000001", source_path="a.mp4", output_path="b.mp4"),
                [Chunk(0, 0, 1, 25), Chunk(1, 1, 2, 25)],
            )
        )
        operation = executor.jobs_client.run_job(request=request)
        name = operation.metadata.name
        with pytest.raises(gexc.GoogleAPICallError, match="Task .*-task1 failed"):
            operation.result(timeout=60)  # polls GET /v2/{operation} until done
        execution = executor.executions_client.get_execution(name=name)
        assert (execution.task_count, execution.succeeded_count, execution.failed_count) == (3, 2, 1)
        assert execution.retried_count == 2 and execution.completion_time
        assert api.executions[name].tasks[1].exit_codes == [3, 3, 3]
        with pytest.raises(gexc.BadRequest, match="already completed"):
            executor.executions_client.cancel_execution(name=name)
        with pytest.raises(gexc.NotFound):
            executor.executions_client.get_execution(name=name + "x")
