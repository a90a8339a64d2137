"""One job, one preset, the same database rows: it completes the same under local, lambda and gcp.

For each executor the test starts the real MPR app (uvicorn, this test's loop)
with MPR_EXECUTOR set, media in one S3 bucket (the moto server), and goes
through GraphQL only: scanMediaFolder registers the asset, createPreset the
preset, createJob the chunked job. What runs it differs and is all real
except the cloud control planes:

- local: the app's embedded huey worker (SQLite queue) runs the chunker;
- lambda: a Step Functions execution on moto; its states are played with the
  real Lambda handlers (plugins/mpr_lambda/tests/asl_player.py), which call back;
- gcp: the fake Cloud Run Admin API launches real ``python -m mpr_gcp.task``
  processes, which call back.

Every executor must leave the same rows (asset, preset, job fields) and an
output with exactly the source's 75 frames at the source's timestamps.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import av
import httpx
import pytest
from mpr_storage_s3.testing import AWS_TEST_ENV, moto_server, s3_bucket  # noqa: F401

from testkit import free_port, make_clip, run_app, stop_app

ROOT = Path(__file__).resolve().parents[1]
SECRET = "parity-callback-secret"
GCP_JOB = "projects/mpr-test/locations/europe-west1/jobs/mpr-transcode"

pytestmark = pytest.mark.timeout(300)

PRESET = """mutation { createPreset(input: {name: "parity-h264", container: "mp4", videoCodec: "libx264",
  crf: 28, speedPreset: "ultrafast", audioCodec: "aac", audioBitrate: "96k"}) { id name } }"""
CREATE = """mutation($asset: ID!, $preset: ID) { createJob(input: {sourceAssetId: $asset, presetId: $preset,
  chunked: true, chunkSeconds: 1, outputName: "parity.mp4"}) { id status executor externalId outputPath } }"""
JOB = """query($id: ID!) { job(id: $id) { status error progress executor outputPath chunked chunkSeconds
  presetSnapshot sourcePath output { path size duration } } }"""


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    """3 s 320x240 H.264 + AAC, a keyframe every second: three 1 s chunks."""
    return make_clip(tmp_path_factory.mktemp("parity") / "clip.mp4", seconds=3.0, gop=25)


def video_pts(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None)


class Backend:
    """What runs the jobs of one executor; ``run(job)`` drives it when the control plane is a test stand-in."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.app_worker = name == "local"
        self.cloud_run = None
        self.lambda_asl: dict | None = None

    async def run(self, job: dict, stack: Stack) -> None:
        if self.name == "lambda":
            sys.path.insert(0, str(ROOT / "plugins" / "mpr_lambda" / "tests"))
            from asl_player import Player, handlers_from_template

            arn = job["externalId"]
            sfn = stack.moto.client("stepfunctions")
            data = json.loads((await asyncio.to_thread(sfn.describe_execution, executionArn=arn))["input"])
            player = Player(
                self.lambda_asl,
                handlers_from_template(ROOT / "deploy" / "aws" / "template.yaml"),
                is_running=lambda: True,
            )
            result = await asyncio.to_thread(player.run, data, arn)
            assert result.status == "SUCCEEDED", result


class Stack:
    def __init__(self, moto, bucket: str, http: httpx.AsyncClient) -> None:
        self.moto, self.bucket, self.http = moto, bucket, http

    async def gql(self, query: str, **variables) -> dict:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        body = response.json()
        assert response.status_code == 200 and not body.get("errors"), body
        return body["data"]


@pytest.fixture(params=["local", "lambda", "gcp"])
async def stack(request, moto_server, s3_bucket, sqlite_db, monkeypatch, gop_clip, tmp_path):  # noqa: F811
    from mpr.executors import reset_executors
    from mpr.settings import get_settings
    from mpr.storage import reset_storage

    backend = Backend(request.param)
    port = free_port()
    env = {
        "MPR_EXECUTOR": backend.name,
        "MEDIA_IN": f"s3://{s3_bucket}/in/",
        "MEDIA_OUT": f"s3://{s3_bucket}/out/",
        "MPR_S3_ENDPOINT_URL": moto_server.url,
        "MPR_CALLBACK_SECRET": SECRET,
        "MPR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MPR_GRPC_PORT": "0",
        "MPR_LOCAL_QUEUE": f"parity_{uuid.uuid4().hex[:10]}",
    }
    cloud_run = None
    if backend.name == "lambda":
        sys.path.insert(0, str(ROOT / "plugins" / "mpr_lambda" / "tests"))
        import sfn_helpers

        # the handlers run in this test (Player); moto only records the execution. moto keeps
        # state machines per mode, so create it with execution already off.
        monkeypatch.setattr(
            sfn_helpers, "MOTO_CONFIG", {**sfn_helpers.MOTO_CONFIG, "stepfunctions": {"execute_state_machine": False}}
        )
        backend.lambda_asl = json.loads((ROOT / "deploy" / "aws" / "statemachine.asl.json").read_text())
        arns = await asyncio.to_thread(sfn_helpers.deploy, moto_server, backend.lambda_asl)
        env.update(
            MPR_SFN_ENDPOINT_URL=moto_server.url,
            MPR_SFN_STATE_MACHINE_ARN=arns["arn"],
            MPR_LAMBDA_TMP_DIR=str(tmp_path / "lambda-tmp"),
        )
    if backend.name == "gcp":
        from mpr_gcp.testing.fake_cloud_run import FakeCloudRun

        task_env = {
            **AWS_TEST_ENV,
            "MPR_S3_ENDPOINT_URL": moto_server.url,
            "MPR_CALLBACK_SECRET": SECRET,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        cloud_run = FakeCloudRun(
            [GCP_JOB], env=task_env, parallelism=2, max_retries=1, log_dir=tmp_path / "cloud-run"
        ).start()
        backend.cloud_run = cloud_run
        env.update(
            MPR_GCP_JOB=GCP_JOB,
            MPR_GCP_API_ENDPOINT=cloud_run.url,
            MPR_GCP_MAX_RETRIES="1",
            MPR_GCP_POLL_SECONDS="0.2",
            MPR_GCP_WATCH_SECONDS="0.5",
        )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    reset_storage()
    reset_executors()
    try:
        from mpr_gcp.settings import get_gcp_settings

        get_gcp_settings.cache_clear()
    except ImportError:
        pass
    s3 = moto_server.client("s3")
    await asyncio.to_thread(s3.upload_file, str(gop_clip), s3_bucket, "in/shows/clip.mp4")

    server, serving, http, _ = await run_app(get_settings(), worker=backend.app_worker, port=port, timeout=60)
    try:
        yield backend, Stack(moto_server, s3_bucket, http)
    finally:
        await stop_app(server, serving, http)
        if cloud_run is not None:
            cloud_run.stop()
        reset_executors()


async def test_same_job_preset_and_rows_complete_frame_exact_under_every_executor(stack, gop_clip, tmp_path):
    backend, st = stack
    scanned = await st.gql("mutation { scanMediaFolder { found registered } }")
    assert scanned["scanMediaFolder"]["registered"] == 1
    (asset,) = (await st.gql("{ assets { id path status kind } }"))["assets"]
    assert (asset["path"], asset["status"], asset["kind"]) == ("shows/clip.mp4", "ready", "video")
    preset = (await st.gql(PRESET))["createPreset"]

    job = (await st.gql(CREATE, asset=asset["id"], preset=preset["id"]))["createJob"]
    assert job["executor"] == backend.name
    assert job["outputPath"] == "parity.mp4"
    await backend.run(job, st)

    deadline = time.monotonic() + 180
    while True:
        final = (await st.gql(JOB, id=job["id"]))["job"]
        if final["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    logs = backend.cloud_run.task_log(job["externalId"]) if backend.cloud_run and job["externalId"] else ""
    assert final["status"] == "completed", (final, logs)

    # the same rows, whatever ran the job
    assert final["executor"] == backend.name
    assert final["sourcePath"] == "shows/clip.mp4" and final["chunked"] and final["chunkSeconds"] == 1.0
    assert final["presetSnapshot"]["name"] == "parity-h264" and final["presetSnapshot"]["crf"] == 28
    assert final["progress"] == 100.0
    assert final["output"]["path"] == "parity.mp4" and final["output"]["size"] > 0
    assert abs(final["output"]["duration"] - 3.0) < 0.15

    # and the same frames
    local = tmp_path / "out.mp4"
    s3 = st.moto.client("s3")
    await asyncio.to_thread(s3.download_file, st.bucket, "out/parity.mp4", str(local))
    got, want = video_pts(local), video_pts(gop_clip)
    assert len(got) == len(want) == 75
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 0.002
    with av.open(str(local)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
