"""The gcp executor end to end: fake Cloud Run API → real task processes → moto "GCS" → signed callback → MPR app."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import pytest

from mpr.models import ChunkStatus, JobChunk, JobStatus, MediaAsset, TranscodeJob, TranscodePreset
from mpr.presets import Preset

from .conftest import FAST, JOB, ffmpeg_wrapper

pytestmark = pytest.mark.timeout(240)
# the end-to-end path runs on both databases in the first tests; failure paths on SQLite only (CPU time)
SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def video_pts(path: Path) -> list[float]:
    """Presentation times (s) of every video packet, in display order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None)


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


async def seed_job(
    clip: Path,
    *,
    preset: Preset = FAST,
    chunked: bool = True,
    output: str = "clip-gcp.mp4",
    trim: tuple[float | None, float | None] = (None, None),
) -> TranscodeJob:
    """The asset, preset and job rows createJob would make, with the clip uploaded to MEDIA_IN."""
    from mpr.storage import media_in

    await asyncio.to_thread(media_in().put, "clip.mp4", clip)
    asset = await MediaAsset.create(
        path="clip.mp4", filename="clip.mp4", kind="video", status="ready", size=clip.stat().st_size, duration=3.0
    )
    row = await TranscodePreset.get_or_none(name=preset.name) or await TranscodePreset.create(**preset.to_dict())
    return await TranscodeJob.create(
        source_asset=asset,
        source_path="clip.mp4",
        preset=row,
        preset_snapshot=preset.to_dict(),
        output_path=output,
        executor="gcp",
        chunked=chunked,
        chunk_seconds=1.0,
        trim_start=trim[0],
        trim_end=trim[1],
    )


async def wait_final(job_id, timeout: float = 120.0) -> TranscodeJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job.status.value} after {timeout} s")
        await asyncio.sleep(0.2)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_chunked_job_runs_one_task_per_chunk_and_completes_frame_exact(mpr_app, cloud_run, gcs, gop_clip):
    from mpr.executors import get_executor

    job = await seed_job(gop_clip)
    executor = get_executor("gcp")
    name = await executor.submit(job)

    assert name.startswith(JOB + "/executions/")
    method, path, body = cloud_run.requests[0]
    assert (method, path) == ("POST", f"/v2/{JOB}:run")
    assert body["overrides"]["taskCount"] == 4  # three 1 s chunks + the concat task
    env = {e["name"]: e["value"] for e in body["overrides"]["containerOverrides"][0]["env"]}
    assert env["MPR_JOB_ID"] == str(job.id)
    assert env["MEDIA_IN"] == f"gs://{gcs.bucket}/in" and env["MEDIA_OUT"] == f"gs://{gcs.bucket}/out"
    assert env["MPR_GCP_CALLBACK_URL"] == f"{mpr_app.recorder.url}/api/jobs/{job.id}/callback"
    assert json.loads(env["MPR_GCP_PRESET"])["video_codec"] == "libx264"
    assert [c[:2] for c in json.loads(env["MPR_GCP_CHUNKS"])] == [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]
    assert "MPR_CALLBACK_SECRET" not in env  # secrets come from the job definition, never from overrides

    processing = await TranscodeJob.get(id=job.id)
    assert processing.external_id == name

    done = await wait_final(job.id)
    execution = await asyncio.to_thread(cloud_run.wait, name)
    assert done.status == JobStatus.COMPLETED, (done.error, cloud_run.task_log(name))
    assert execution.to_json()["succeededCount"] == 4
    assert max(len(t.exit_codes) for t in execution.tasks) == 1  # no retries were needed
    assert execution.peak_running == 2  # the job's parallelism
    assert done.output_size and done.output_size > 0
    assert await executor.poll(done) == JobStatus.COMPLETED
    rows = await JobChunk.filter(job_id=job.id).order_by("index")
    assert [(r.index, r.start, r.end) for r in rows] == [(0, 0.0, 1.0), (1, 1.0, 2.0), (2, 2.0, 3.0)]

    out = gcs.storage("out")
    with out.local_copy("clip-gcp.mp4") as result:
        got, want = video_pts(result), video_pts(gop_clip)
        assert len(got) == len(want) == 75
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 0.002
        assert abs(audio_seconds(result) - 3.0) < 0.1
    assert not [o.key for o in out.list("_mpr/")], "scratch chunk objects are removed after the concat"

    # the task's own callback, replayed byte for byte, is refused and changes nothing
    path, headers, body, status = mpr_app.recorder.calls[-1]
    assert status == 200 and json.loads(body)["status"] == "completed"
    code, answer = await asyncio.to_thread(post, mpr_app.url + path, body, headers)
    assert code == 401 and "replay" in answer["error"]
    assert (await TranscodeJob.get(id=job.id)).status == JobStatus.COMPLETED


@SQLITE_ONLY
async def test_task_failing_every_attempt_fails_the_job_with_its_error(mpr_app, cloud_run, gcs, gop_clip, tmp_path):
    from mpr.executors import get_executor

    broken = ffmpeg_wrapper(
        tmp_path / "ffmpeg-breaks-task-1",
        'if [ "$CLOUD_RUN_TASK_INDEX" = "1" ]; then echo "chunk-1.mp4: Invalid data found in test" >&2; exit 1; fi',
    )
    cloud_run.env["MPR_FFMPEG"] = str(broken)
    job = await seed_job(gop_clip)
    name = await get_executor("gcp").submit(job)

    failed = await wait_final(job.id)
    execution = await asyncio.to_thread(cloud_run.wait, name)
    assert failed.status == JobStatus.FAILED, cloud_run.task_log(name)
    assert "task 1 (chunk 1 (1.000-2.000 s))" in failed.error
    assert "after 2 attempt(s)" in failed.error and "Invalid data found in test" in failed.error
    task1 = execution.tasks[1]
    assert task1.state == "failed" and task1.exit_codes == [1, 1]  # first attempt + max_retries=1
    assert execution.to_json()["failedCount"] >= 1
    assert not await asyncio.to_thread(gcs.storage("out").exists, "clip-gcp.mp4")


@SQLITE_ONLY
async def test_cancel_mid_run_stops_tasks_and_job_is_cancelled(mpr_app, cloud_run, gcs, gop_clip, tmp_path):
    from mpr import jobs
    from mpr.executors import get_executor

    record = tmp_path / "ffmpeg-starts.txt"
    slow = ffmpeg_wrapper(tmp_path / "ffmpeg-slow", f'echo "$CLOUD_RUN_TASK_INDEX" >> "{record}"; sleep 60')
    cloud_run.env["MPR_FFMPEG"] = str(slow)
    job = await seed_job(gop_clip)
    executor = get_executor("gcp")
    name = await executor.submit(job)
    execution = cloud_run.executions[name]
    deadline = time.monotonic() + 60
    # both slots busy in "ffmpeg": the tasks are past their imports (their SIGTERM handler is installed)
    while not record.exists() or set(record.read_text().split()) != {"0", "1"}:
        assert time.monotonic() < deadline, cloud_run.task_log(name)
        await asyncio.sleep(0.1)
    running = [t.proc for t in execution.tasks if t.state == "running"]
    assert len(running) == 2

    cancelled = await jobs.transition(job.id, JobStatus.CANCELLED)
    await executor.cancel(cancelled)
    await asyncio.to_thread(cloud_run.wait, name, 30)  # well before the 60 s "encodes" could end
    assert all(p.poll() is not None for p in running)
    assert all(p.returncode == 143 for p in running), cloud_run.task_log(name)  # stopped by SIGTERM, not killed
    data = execution.to_json()
    assert data["succeededCount"] == 0 and data["cancelledCount"] == 4
    assert await executor.poll(cancelled) == JobStatus.CANCELLED

    final = await TranscodeJob.get(id=job.id)
    assert final.status == JobStatus.CANCELLED
    assert not [c for c in mpr_app.recorder.calls if json.loads(c[2])["status"] == "completed"]
    assert not await asyncio.to_thread(gcs.storage("out").exists, "clip-gcp.mp4")


@SQLITE_ONLY
async def test_single_pass_job_runs_one_task(mpr_app, cloud_run, gcs, gop_clip):
    from mpr.executors import get_executor

    job = await seed_job(gop_clip, chunked=False, output="trimmed.mp4", trim=(0.4, 2.0))
    name = await get_executor("gcp").submit(job)
    assert cloud_run.requests[0][2]["overrides"]["taskCount"] == 1

    done = await wait_final(job.id)
    assert done.status == JobStatus.COMPLETED, (done.error, cloud_run.task_log(name))
    with gcs.storage("out").local_copy("trimmed.mp4") as result:
        assert len(video_pts(result)) == 40  # 1.6 s at 25 fps, frame-accurate


async def graphql(app, query: str, **variables) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(app.url + "/graphql", json={"query": query, "variables": variables})
    data = response.json()
    assert not data.get("errors"), data["errors"]
    return data["data"]


async def test_create_job_through_graphql_runs_on_cloud_run(mpr_app, cloud_run, gcs, gop_clip):
    """MPR_EXECUTOR=gcp: scan the gs:// MEDIA_IN, createJob, and the job completes through the fake API."""
    from mpr.storage import media_in

    await asyncio.to_thread(media_in().put, "shows/clip.mp4", gop_clip)
    await TranscodePreset.create(**FAST.to_dict())
    scan = await graphql(mpr_app, "mutation { scanMediaFolder { found registered } }")
    assert scan["scanMediaFolder"]["registered"] == 1
    assets = await graphql(mpr_app, "{ assets { id path status } }")
    (asset,) = assets["assets"]
    presets = await graphql(mpr_app, "{ presets { id name } }")
    preset_id = next(p["id"] for p in presets["presets"] if p["name"] == FAST.name)

    created = await graphql(
        mpr_app,
        """mutation($a: ID!, $p: ID!) {
             createJob(input: {sourceAssetId: $a, presetId: $p, chunked: true, chunkSeconds: 1}) {
               id status executor externalId } }""",
        a=asset["id"],
        p=preset_id,
    )
    job = created["createJob"]
    assert job["executor"] == "gcp" and job["externalId"].startswith(JOB + "/executions/")
    assert cloud_run.executions[job["externalId"]].task_count == 4

    deadline = time.monotonic() + 120
    while True:
        got = await graphql(
            mpr_app, "query($id: ID!) { job(id: $id) { status error output { path size } } }", id=job["id"]
        )
        if got["job"]["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert got["job"]["status"] == "completed", (got, cloud_run.task_log(job["externalId"]))
    assert got["job"]["output"]["size"] > 0
    with gcs.storage("out").local_copy(got["job"]["output"]["path"]) as result:
        assert len(video_pts(result)) == 75


@SQLITE_ONLY
async def test_retry_after_a_failed_chunk_reruns_only_that_chunk(mpr_app, cloud_run, gcs, gop_clip, tmp_path):
    from mpr import service

    cloud_run.env["MPR_FFMPEG"] = str(
        ffmpeg_wrapper(
            tmp_path / "ffmpeg-breaks-task-2", '[ "$CLOUD_RUN_TASK_INDEX" = "2" ] && { echo "broken" >&2; exit 1; }'
        )
    )
    job = await seed_job(gop_clip)
    await service._submit(job)
    assert (await wait_final(job.id)).status == JobStatus.FAILED
    first = (await TranscodeJob.get(id=job.id)).external_id
    await asyncio.to_thread(cloud_run.wait, first)

    cloud_run.env.pop("MPR_FFMPEG")
    retried = await service.retry_job(job.id)
    assert retried.external_id and retried.external_id != first
    done = await wait_final(job.id)
    log = cloud_run.task_log(retried.external_id)
    assert done.status == JobStatus.COMPLETED, (done.error, log)
    assert "chunk 0 already stored" in log and "chunk 1 already stored" in log
    assert "chunk 2 (2.000-3.000 s" in log  # encoded again this time
    with gcs.storage("out").local_copy("clip-gcp.mp4") as result:
        assert len(video_pts(result)) == 75


@SQLITE_ONLY
async def test_server_watch_marks_chunks_done_and_reports_progress(mpr_app, cloud_run, gcs, gop_clip, tmp_path):
    """The chunk rows and the progress bar follow the execution (the concat task is held back until 95 %)."""
    from mpr.executors import get_executor

    gate = tmp_path / "concat-may-run"
    cloud_run.env["MPR_FFMPEG"] = str(
        ffmpeg_wrapper(
            tmp_path / "ffmpeg-held-concat",
            f'if [ "$CLOUD_RUN_TASK_INDEX" = "3" ]; then while [ ! -e "{gate}" ]; do sleep 0.1; done; fi',
        )
    )
    job = await seed_job(gop_clip)
    name = await get_executor("gcp").submit(job)
    seen: list[float] = []
    deadline = time.monotonic() + 120
    while (row := await TranscodeJob.get(id=job.id)).status == JobStatus.PROCESSING:
        seen.append(row.progress)
        if row.progress >= 95.0:
            gate.touch()  # every chunk seen done: let the concat task's ffmpeg run
        assert time.monotonic() < deadline, (seen, cloud_run.task_log(name))
        await asyncio.sleep(0.2)
    assert row.status == JobStatus.COMPLETED, (row.error, cloud_run.task_log(name))
    assert 95.0 in seen and seen == sorted(seen)  # every chunk seen done before the concat finished
    rows = await JobChunk.filter(job_id=job.id).order_by("index")
    assert [r.status for r in rows] == [ChunkStatus.DONE] * 3
    assert all(r.worker == "cloud-run" and r.finished_at for r in rows)
