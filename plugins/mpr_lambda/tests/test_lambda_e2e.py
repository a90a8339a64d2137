"""MPR_EXECUTOR=lambda end to end: GraphQL createJob → Step Functions execution on moto → the
state machine's steps played with the real handlers (real ffmpeg, moto S3) → signed callback
to the running app → job COMPLETED with a correct output in the bucket.

The steps, their payloads, Retry and Catch are read from deploy/aws/statemachine.asl.json and
the handler of each step from deploy/aws/template.yaml (see asl_player.py). moto keeps the
execution RUNNING (execute_state_machine off) so StopExecution by cancel is observable.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import av
import httpx
import pytest

from mpr.settings import get_settings
from testkit import free_port, make_clip, run_app, stop_app

sys.path.insert(0, str(Path(__file__).parent))
from asl_player import Player, handlers_from_template
from sfn_helpers import deploy

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "aws"
SECRET = "e2e-callback-secret"

PRESET = """mutation { createPreset(input: {name: "lambda-e2e", container: "mp4", videoCodec: "libx264",
  crf: 30, speedPreset: "ultrafast", audioCodec: "aac", audioBitrate: "96k"}) { id } }"""
CREATE = """mutation($asset: ID!, $preset: ID, $seconds: Float) { createJob(input: {sourceAssetId: $asset,
  presetId: $preset, chunked: true, chunkSeconds: $seconds}) { id status executor externalId outputPath } }"""
JOB = "query($id: ID!) { job(id: $id) { status error progress outputPath externalId } }"


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    """3 s 320x240 + AAC with a keyframe every second: three 1 s chunks."""
    return make_clip(tmp_path_factory.mktemp("lambda") / "clip.mp4", seconds=3.0, gop=25)


class Stack:
    """The running pieces of one test: moto (S3 + SFN), the bucket, the app, the state machine."""

    def __init__(self, moto, bucket: str, url: str, http: httpx.AsyncClient, machine_arn: str) -> None:
        self.moto, self.bucket, self.url, self.http, self.machine_arn = moto, bucket, url, http, machine_arn
        self.s3 = moto.client("s3")
        self.sfn = moto.client("stepfunctions")

    async def gql(self, query: str, **variables) -> dict:
        r = await self.http.post("/graphql", json={"query": query, "variables": variables})
        body = r.json()
        assert r.status_code == 200 and not body.get("errors"), body
        return body["data"]

    async def job(self, job_id: str) -> dict:
        return (await self.gql(JOB, id=job_id))["job"]

    def execution_input(self, arn: str) -> dict:
        return json.loads(self.sfn.describe_execution(executionArn=arn)["input"])

    def player(self, arn: str, asl: dict, functions=None) -> Player:
        def running() -> bool:
            return self.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"

        return Player(asl, functions or handlers_from_template(DEPLOY / "template.yaml"), is_running=running)

    def keys(self, prefix: str) -> list[str]:
        page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in page.get("Contents", [])]


@pytest.fixture
async def stack(moto_server, s3_bucket, sqlite_db, monkeypatch, gop_clip, asl):
    async with serve_stack(moto_server, s3_bucket, monkeypatch, gop_clip, asl) as running:
        yield running


@asynccontextmanager
async def serve_stack(moto_server, s3_bucket, monkeypatch, gop_clip, asl) -> AsyncIterator[Stack]:
    """The app (executor lambda, media in the bucket) serving on this loop, the clip uploaded, the machine deployed."""
    # the handlers really run here: moto only records the execution (RUNNING until stopped)
    arns = await asyncio.to_thread(lambda: deploy(moto_server, asl, execute=False))
    port = free_port()
    env = {
        "MPR_EXECUTOR": "lambda",
        "MEDIA_IN": f"s3://{s3_bucket}/in/",
        "MEDIA_OUT": f"s3://{s3_bucket}/out/",
        "MPR_S3_ENDPOINT_URL": moto_server.url,
        "MPR_SFN_ENDPOINT_URL": moto_server.url,
        "MPR_SFN_STATE_MACHINE_ARN": arns["arn"],
        "MPR_CALLBACK_SECRET": SECRET,
        "MPR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MPR_GRPC_PORT": "0",
        "MPR_LAMBDA_TMP_DIR": str(Path(str(gop_clip)).parent / f"tmp-{uuid.uuid4().hex[:6]}"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    s3 = moto_server.client("s3")
    await asyncio.to_thread(s3.upload_file, str(gop_clip), s3_bucket, "in/shows/clip.mp4")
    server, task, http, url = await run_app(get_settings(), port=port, timeout=60)
    try:
        yield Stack(moto_server, s3_bucket, url, http, arns["arn"])
    finally:
        await stop_app(server, task, http)


async def submit(stack: Stack, chunk_seconds: float = 1.0) -> tuple[dict, dict]:
    scanned = await stack.gql("mutation { scanMediaFolder { found registered } }")
    assert scanned["scanMediaFolder"]["registered"] == 1
    assets = await stack.gql("{ assets { id path status } }")
    asset = next(a for a in assets["assets"] if a["path"] == "shows/clip.mp4")
    assert asset["status"] == "ready"
    preset = (await stack.gql(PRESET))["createPreset"]["id"]
    job = (await stack.gql(CREATE, asset=asset["id"], preset=preset, seconds=chunk_seconds))["createJob"]
    assert job["executor"] == "lambda" and job["status"] == "processing", job
    assert job["externalId"].startswith("arn:aws:states:")
    return job, await asyncio.to_thread(stack.execution_input, job["externalId"])


def frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.demux(c.streams.video[0]) if _.size)


async def test_create_job_runs_on_lambda_and_completes_by_signed_callback(stack, asl, gop_clip, tmp_path) -> None:
    job, data = await submit(stack)
    assert SECRET not in json.dumps(data)
    run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
    assert run.status == "SUCCEEDED", run
    names = [name for name, what in run.trace if what == "ok"]
    assert names[0] == "Plan" and names.count("EncodeChunk") == 4 and names[-2:] == ["Concat", "NotifySuccess"]
    assert run.output["status_code"] == 200 and run.output["response"]["changed"] is True

    final = await stack.job(job["id"])
    assert final["status"] == "completed" and final["progress"] == 100.0, final
    key = f"out/{final['outputPath']}"
    assert stack.keys(key) == [key]
    local = tmp_path / "out.mp4"
    await asyncio.to_thread(stack.s3.download_file, stack.bucket, key, str(local))
    with av.open(str(local)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        assert abs(c.duration / 1e6 - 3.0) < 0.15
    assert frames(local) == frames(gop_clip) == 75  # no frame lost or doubled at the seams
    assert stack.keys("mpr-work/") == []  # chunk objects deleted by Concat


async def test_missing_source_object_fails_the_job_with_a_clear_error(stack, asl) -> None:
    job, data = await submit(stack, chunk_seconds=3.0)
    await asyncio.to_thread(stack.s3.delete_object, Bucket=stack.bucket, Key="in/shows/clip.mp4")
    run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
    assert run.status == "FAILED" and run.error == "MPR.JobFailed"
    assert ("Plan", "caught:SourceMissing") in run.trace
    final = await stack.job(job["id"])
    assert final["status"] == "failed"
    assert "shows/clip.mp4 does not exist" in final["error"]


async def test_ffmpeg_error_in_one_chunk_fails_the_job_with_the_ffmpeg_message(stack, asl, monkeypatch) -> None:
    from mpr_lambda import handler

    real = handler.encode_video_chunk

    def broken_for_chunk_1(source, chunk, preset, out, **kw):
        if chunk.index == 1:  # a real ffmpeg failure: this Lambda's copy of the source is corrupt
            source = Path(out).with_name("corrupt.mp4")
            source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
        return real(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", broken_for_chunk_1)
    job, data = await submit(stack)
    run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
    assert run.status == "FAILED"
    assert ("Encode", "caught:StepFailed") in run.trace and "Concat" not in [n for n, _ in run.trace]
    final = await stack.job(job["id"])
    assert final["status"] == "failed"
    assert "encode chunk 1 (1.000-2.000 s) failed" in final["error"]
    assert "ffmpeg" in final["error"].lower()  # ffmpeg's own words reach the user


async def test_callback_with_bad_signature_is_rejected_and_the_job_is_not_completed(stack, asl, monkeypatch) -> None:
    job, data = await submit(stack, chunk_seconds=3.0)  # one chunk: quick to reach the callback
    monkeypatch.setenv("MPR_CALLBACK_SECRET", "not-the-secret")  # the Lambdas' secret is wrong
    run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
    assert run.status == "FAILED"
    assert json.loads(run.cause)["errorType"] == "CallbackRejected"
    assert "HTTP 401" in json.loads(run.cause)["errorMessage"]
    retries = sum(1 for name, what in run.trace if name == "NotifySuccess" and what.startswith("retry"))
    assert retries == asl["States"]["NotifySuccess"]["Retry"][0]["MaxAttempts"]
    final = await stack.job(job["id"])
    assert final["status"] == "processing" and final["error"] is None  # never completed by a forged call


async def test_cancel_stops_the_execution_and_a_late_callback_is_ignored(stack, asl) -> None:
    from mpr_lambda import handler

    job, data = await submit(stack, chunk_seconds=3.0)
    cancelled = await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job["id"])
    assert cancelled["cancelJob"]["status"] == "cancelled"
    described = await asyncio.to_thread(stack.sfn.describe_execution, executionArn=job["externalId"])
    assert described["status"] == "ABORTED"  # StopExecution reached Step Functions
    run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
    assert run.status == "ABORTED" and run.trace == []  # no step starts after the stop

    # a Lambda that was already running when the stop came calls back late: ignored
    late = await asyncio.to_thread(
        handler.callback, {"job": data, "result": {"output_key": data["output_key"]}, "execution": "x"}
    )
    assert late["response"] == {"ok": True, "changed": False, "status": "cancelled"}
    assert (await stack.job(job["id"]))["status"] == "cancelled"
