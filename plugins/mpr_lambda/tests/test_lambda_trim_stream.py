"""Trimmed chunked jobs on Lambda, and chunk encoders that read the source through a presigned URL.

- A trimmed chunked job through the real state machine (GraphQL createJob → ASL played with the
  real handlers against moto S3 → signed callback) has exactly the frames of the local trimmed
  single pass.
- A chunk encoder reads only its byte ranges of the source: measured with a counting proxy in
  front of moto for a 20-chunk clip, URL against download, with the same encoded chunks.
- The plan, a single-pass (whole) encode and the audio encode read the URL too: no copy of the
  source lands in the Lambda's /tmp, and the output is the download path's.
- A presigned URL's signature never reaches an error message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from mpr_lambda import handler

from mpr import ffmpeg
from mpr.chunker.plan import Chunk
from mpr.presets import Preset
from testkit import CountingProxy, copies_on_disk, make_clip

sys.path.insert(0, str(Path(__file__).parent))
from test_lambda_e2e import PRESET, serve_stack

# tests/chunker/chunkcheck.py by path: run together with mpr_gcp's tests, "tests" is that package
_spec = importlib.util.spec_from_file_location(
    "mpr_chunkcheck", Path(__file__).resolve().parents[3] / "tests" / "chunker" / "chunkcheck.py"
)
chunkcheck = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = chunkcheck  # its dataclasses look their module up
    _spec.loader.exec_module(chunkcheck)
assert_like_single_pass, assert_same_frames, inspect = (
    chunkcheck.assert_like_single_pass,
    chunkcheck.assert_same_frames,
    chunkcheck.inspect,
)

CREATE_TRIMMED = """mutation($asset: ID!, $preset: ID, $start: Float, $end: Float) { createJob(input: {
  sourceAssetId: $asset, presetId: $preset, chunked: true, chunkSeconds: 1.0, trimStart: $start, trimEnd: $end })
  { id status executor externalId outputPath } }"""

CHUNKS = "query($id: ID!) { job(id: $id) { chunks { index start end status } } }"

FAST = {
    "name": "stream-test",
    "container": "mp4",
    "video_codec": "libx264",
    "crf": 30,
    "speed_preset": "ultrafast",
    "audio_codec": "aac",
    "audio_bitrate": "96k",
}


@pytest.fixture(scope="module")
def clip4(tmp_path_factory) -> Path:
    """4 s 320x240 + AAC with a keyframe every second."""
    return make_clip(tmp_path_factory.mktemp("lambda-trim") / "clip.mp4", seconds=4.0, gop=25)


@pytest.fixture(scope="module")
def clip20(tmp_path_factory) -> Path:
    """20 s 640x360 + AAC with a keyframe every second: 20 one-second chunks."""
    return make_clip(tmp_path_factory.mktemp("lambda-stream") / "long.mp4", seconds=20.0, size="640x360", gop=25)


@pytest.mark.parametrize(
    ("start", "end", "chunks"),
    [(0.53, 3.47, 3), (None, 2.5, 3), (1.01, None, 2)],
)
async def test_trimmed_chunked_job_on_lambda_has_the_frames_of_the_trimmed_single_pass(
    moto_server, s3_bucket, sqlite_db, monkeypatch, clip4, asl, tmp_path, start, end, chunks
) -> None:
    async with serve_stack(moto_server, s3_bucket, monkeypatch, clip4, asl) as stack:
        await stack.gql("mutation { scanMediaFolder { found registered } }")
        asset = next(a for a in (await stack.gql("{ assets { id path } }"))["assets"] if a["path"] == "shows/clip.mp4")
        preset = (await stack.gql(PRESET))["createPreset"]["id"]
        job = (await stack.gql(CREATE_TRIMMED, asset=asset["id"], preset=preset, start=start, end=end))["createJob"]
        assert job["executor"] == "lambda" and job["status"] == "processing", job  # not refused any more
        data = await asyncio.to_thread(stack.execution_input, job["externalId"])
        assert (data["trim_start"], data["trim_end"]) == (start, end)
        run = await asyncio.to_thread(stack.player(job["externalId"], asl).run, data, job["externalId"])
        assert run.status == "SUCCEEDED", run
        names = [name for name, what in run.trace if what == "ok"]
        assert names.count("EncodeChunk") == chunks + 1  # the trim's video chunks and the audio
        final = await stack.job(job["id"])
        assert final["status"] == "completed", final
        rows = (await stack.gql(CHUNKS, id=job["id"]))["job"]["chunks"]  # from the live progress reports
        assert [r["status"] for r in rows] == ["done"] * chunks
        assert rows[0]["start"] == pytest.approx(start or 0.0) and rows[-1]["end"] == pytest.approx(end or 4.0)
        out = tmp_path / "lambda.mp4"
        await asyncio.to_thread(stack.s3.download_file, stack.bucket, f"out/{final['outputPath']}", str(out))
        assert stack.keys("mpr-work/") == []

    ref = tmp_path / "single.mp4"
    preset_obj = Preset.from_dict(data["preset"])
    await asyncio.to_thread(ffmpeg.run, ffmpeg.build_command(clip4, ref, preset_obj, start=start, end=end))
    got, want = inspect(out), inspect(ref)
    assert len(got.pts) == len(want.pts) > 0
    assert_like_single_pass(got, want, inspect(clip4), start, frame=1 / 25)


def test_plan_of_a_trim_without_video_frames_fails_with_the_reason(
    moto_server, s3_bucket, tmp_path, monkeypatch, clip4
):
    monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp_path / "t"))
    moto_server.client("s3").upload_file(str(clip4), s3_bucket, "in/clip.mp4")
    job = _job(s3_bucket, "in/clip.mp4", "nothing") | {"trim_start": 9.0, "trim_end": 10.0}
    with pytest.raises(handler.StepFailed, match="holds no video frame"):
        handler.plan({"job": job})


def test_trim_with_a_frame_rate_change_is_one_whole_item(moto_server, s3_bucket, tmp_path, monkeypatch, clip4):
    monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp_path / "t"))
    moto_server.client("s3").upload_file(str(clip4), s3_bucket, "in/clip.mp4")
    job = _job(s3_bucket, "in/clip.mp4", "fps") | {"trim_start": 0.5, "trim_end": 3.0}
    job["preset"] = {**FAST, "fps": 15}
    assert handler.plan({"job": job})["items"] == [{"kind": "whole"}]
    job["preset"] = FAST
    out = handler.plan({"job": job})
    assert [i["kind"] for i in out["items"]] == ["video", "video", "audio"]
    assert out["items"][0]["start"] == 0.5 and out["items"][1]["end"] == 3.0
    assert out["info"]["trimmed"] is True


def _job(bucket: str, source_key: str, name: str) -> dict:
    job_id = f"{name}-{uuid.uuid4().hex[:6]}"
    return {
        "job_id": job_id,
        "attempt": 0,
        "source_url": f"s3://{bucket}/{source_key}",
        "output_url": f"s3://{bucket}/out/{job_id}.mp4",
        "output_key": f"{job_id}.mp4",
        "work_url": f"s3://{bucket}/mpr-work/{job_id}/0/",
        "preset": FAST,
        "trim_start": None,
        "trim_end": None,
        "chunk_seconds": 1.0,
        "callback_url": "",
    }


def _encode_all(job: dict, items: list[dict], proxy: CountingProxy, streaming: bool) -> list[int]:
    """Run EncodeChunk for every video item; the bytes each read from S3 (through the proxy)."""
    read = []
    for item in items:
        proxy.reset()
        result = handler.encode_chunk({"job": job, "item": item})
        assert result["reused"] is False
        count, requests = proxy.reset()
        read.append(count)
        ranged = [r for r in requests if r.startswith("Range:")]
        assert bool(ranged) == streaming, requests  # ffmpeg seeks with Range requests; a download has none
    return read


def test_chunk_encoders_read_only_their_part_of_the_source(
    moto_server, s3_bucket, tmp_path, monkeypatch, clip20
) -> None:
    from mpr_storage_s3.storage import S3Storage

    s3 = moto_server.client("s3")
    s3.upload_file(str(clip20), s3_bucket, "in/long.mp4")
    size = clip20.stat().st_size
    proxy = CountingProxy(moto_server.port)
    try:
        monkeypatch.setenv("MPR_S3_ENDPOINT_URL", proxy.url)  # the handlers (and their presigned URLs) use it
        monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp_path / "t"))
        handler._stores.clear()
        streamed = _job(s3_bucket, "in/long.mp4", "url")
        plan = handler.plan({"job": streamed})
        videos = [i for i in plan["items"] if i["kind"] == "video"]
        assert len(videos) == 20

        after = _encode_all(streamed, videos, proxy, streaming=True)
        with monkeypatch.context() as m:
            m.setattr(S3Storage, "url", lambda self, key, expires=3600: None)  # no URL: the download fallback
            downloaded = _job(s3_bucket, "in/long.mp4", "download")
            before = _encode_all(downloaded, videos, proxy, streaming=False)
        print(
            f"\nsource {size} B, 20 chunks: download {sum(before)} B (max {max(before)} per chunk), "
            f"URL {sum(after)} B (max {max(after)} per chunk, min {min(after)}), "
            f"{sum(before) / sum(after):.1f}x less"
        )
        assert all(b >= size for b in before)  # every encoder downloaded the whole source
        # ffmpeg's abandoned read-ahead (its receive buffer, not ours) adds a timing-dependent few hundred KB
        # to some chunks: measured 7.7x less in all and at most a quarter of the source per chunk, asserted with room
        assert sum(after) < sum(before) / 3
        assert max(after) < size / 2

        # the same encoded chunks either way, and the same output
        for i, v in enumerate(videos):
            name = handler.chunk_object_name(Chunk.from_dict(v), "mp4")
            a = s3.get_object(Bucket=s3_bucket, Key=f"mpr-work/{streamed['job_id']}/0/{name}")["Body"].read()
            b = s3.get_object(Bucket=s3_bucket, Key=f"mpr-work/{downloaded['job_id']}/0/{name}")["Body"].read()
            assert a == b, f"chunk {i} differs"
        outs = []
        for job in (streamed, downloaded):
            encoded = [
                {
                    "kind": "video",
                    "index": v["index"],
                    "duration": v["end"] - v["start"],
                    "url": handler._work_url(job, handler.chunk_object_name(Chunk.from_dict(v), "mp4")),
                }
                for v in videos
            ]
            handler.concat({"job": job, "plan": plan, "encoded": encoded})
            local = tmp_path / f"{job['job_id']}.mp4"
            s3.download_file(s3_bucket, f"out/{job['output_key']}", str(local))
            outs.append(inspect(local))
        assert len(outs[0].pts) == 500
        assert_same_frames(outs[0], outs[1])
        assert_same_frames(outs[0], inspect(clip20))
    finally:
        handler._stores.clear()
        proxy.close()


class TmpWatch:
    """What the Lambda's /tmp holds when ffmpeg finishes and when the plan's keyframe scan does.

    Looked at just before the step empties its scratch dir, so a downloaded
    source is still there; the calls themselves run unchanged.
    """

    def __init__(self, monkeypatch, root: Path, source: Path) -> None:
        self.root, self.source, self.seen = root, source, []
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(root))
        monkeypatch.setattr(tempfile, "tempdir", str(root))  # anything else ffmpeg's caller writes: there too
        real_run, real_index = ffmpeg.run, handler.index_video

        def run(argv, **kwargs):
            try:
                return real_run(argv, **kwargs)
            finally:
                self.seen.append(copies_on_disk(root, source))

        def index_video(src):
            try:
                return real_index(src)
            finally:
                self.seen.append(copies_on_disk(root, source))

        monkeypatch.setattr(ffmpeg, "run", run)
        monkeypatch.setattr(handler, "index_video", index_video)

    def take(self) -> tuple[int, int]:
        """(most copies of the source, most bytes) seen since the last take."""
        seen, self.seen = self.seen, []
        assert seen, "the step neither scanned nor ran ffmpeg"
        return max(c for c, _ in seen), max(b for _, b in seen)


def _run_steps(job: dict, items: list[dict], proxy: CountingProxy, watch: TmpWatch) -> dict:
    """Plan, then EncodeChunk for ``items`` (by kind); bytes read from S3 and /tmp seen, per step."""
    proxy.reset()
    plan = handler.plan({"job": job})
    seen = {"plan": (proxy.reset()[0], *watch.take())}
    for item in items:
        assert handler.encode_chunk({"job": job, "item": item})["reused"] is False
        seen[item["kind"]] = (proxy.reset()[0], *watch.take())
    assert not list(watch.root.iterdir())  # every step emptied its scratch
    return {"planned": plan, **seen}


@pytest.mark.parametrize("kind", ["whole", "audio"])
def test_plan_single_pass_and_audio_stream_the_source_without_a_copy_in_tmp(
    moto_server, s3_bucket, tmp_path, monkeypatch, clip20, kind
) -> None:
    from mpr_storage_s3.storage import S3Storage

    s3 = moto_server.client("s3")
    s3.upload_file(str(clip20), s3_bucket, "in/long.mp4")
    size = clip20.stat().st_size
    proxy = CountingProxy(moto_server.port)
    try:
        monkeypatch.setenv("MPR_S3_ENDPOINT_URL", proxy.url)
        handler._stores.clear()
        watch = TmpWatch(monkeypatch, tmp_path / "lambda-tmp", clip20)

        def job(name: str) -> dict:
            j = _job(s3_bucket, "in/long.mp4", name) | {"trim_start": 1.5, "trim_end": 18.5}
            # a trim with a frame rate change is encoded in one pass; otherwise chunks and one audio item
            return j | {"preset": {**FAST, "fps": 25}} if kind == "whole" else j

        jobs = [job("url"), job("download")]
        streamed = _run_steps(jobs[0], [{"kind": kind}], proxy, watch)
        with monkeypatch.context() as m:
            m.setattr(S3Storage, "url", lambda self, key, expires=3600: None)  # no URL: the download fallback
            downloaded = _run_steps(jobs[1], [{"kind": kind}], proxy, watch)
        for step in ("plan", kind):
            print(
                f"\n{step} of a {size} B source: download read {downloaded[step][0]} B, /tmp held "
                f"{downloaded[step][2]} B ({downloaded[step][1]} source copy); URL read {streamed[step][0]} B, "
                f"/tmp held {streamed[step][2]} B ({streamed[step][1]} source copy)"
            )
            assert downloaded[step][1] == 1 and downloaded[step][2] >= size  # the download path's copy is seen
            assert streamed[step][1] == 0  # the URL path leaves none: only the step's own output, if any
            assert streamed[step][2] < downloaded[step][2] - size / 2
            assert downloaded[step][0] >= size and streamed[step][0] > 0
        assert streamed["planned"] == downloaded["planned"]
        if kind == "whole":
            assert streamed["planned"]["items"] == [{"kind": "whole"}]
        else:
            assert streamed["planned"]["items"][-1] == {"kind": "audio"}
        assert streamed[kind][0] < downloaded[kind][0] * 3  # reading through the URL is no detour

        # the same output either way (frames and their times, duration, audio)
        got = []
        for j in jobs:
            local = tmp_path / f"{j['job_id']}.mp4"
            s3.download_file(s3_bucket, f"mpr-work/{j['job_id']}/0/{kind}.mp4", str(local))
            got.append(inspect(local))
        a, b = got
        assert a.duration == pytest.approx(b.duration, abs=1e-3)
        assert a.audio_seconds == pytest.approx(b.audio_seconds, abs=1e-3) and a.audio_seconds > 16
        if kind == "whole":
            assert len(a.pts) == 425  # 17 s at 25 fps
            assert_same_frames(a, b)
        else:
            assert a.pts == b.pts == []
    finally:
        handler._stores.clear()
        proxy.close()


def test_a_presigned_url_signature_never_reaches_the_error(moto_server, s3_bucket, tmp_path, monkeypatch, clip4):
    from mpr_storage_s3.storage import S3Storage

    moto_server.client("s3").upload_file(str(clip4), s3_bucket, "in/clip.mp4")
    monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp_path / "t"))
    job = _job(s3_bucket, "in/clip.mp4", "redact")
    real_url = S3Storage.url

    def vanishing(self, key, expires=3600):  # the object is gone by the time ffmpeg asks for it (404)
        return real_url(self, key, expires).replace("/clip.mp4?", "/gone.mp4?")

    monkeypatch.setattr(S3Storage, "url", vanishing)
    item = {"kind": "video", "index": 1, "start": 1.0, "end": 2.0, "frames": 25}
    with pytest.raises(handler.StepFailed) as caught:
        handler.encode_chunk({"job": job, "item": item})
    message = str(caught.value)
    assert "encode chunk 1 (1.000-2.000 s) failed" in message
    assert "404" in message and "gone.mp4?<redacted>" in message
    assert "Signature" not in message and "Credential" not in message

    with pytest.raises(handler.StepFailed) as trimmed:  # a trimmed chunk also opens the URL with PyAV
        handler.encode_chunk({"job": job | {"trim_start": 0.5}, "item": item})
    assert "gone.mp4?<redacted>" in str(trimmed.value) and "Signature" not in str(trimmed.value)

    for step in (  # the plan (PyAV), the audio and a single pass (ffmpeg) read the URL too
        lambda: handler.plan({"job": job}),
        lambda: handler.encode_chunk({"job": job, "item": {"kind": "audio"}}),
        lambda: handler.encode_chunk({"job": job, "item": {"kind": "whole"}}),
    ):
        with pytest.raises(handler.StepFailed) as other:
            step()
        assert "gone.mp4?<redacted>" in str(other.value), other.value
        assert "Signature" not in str(other.value) and "Credential" not in str(other.value)


def test_a_source_deleted_before_its_chunk_is_reported_missing(moto_server, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp_path / "t"))
    job = _job(s3_bucket, "in/gone.mp4", "gone")
    item = {"kind": "video", "index": 0, "start": 0.0, "end": 1.0, "frames": 25}
    with pytest.raises(handler.SourceMissing, match="in/gone.mp4 does not exist"):
        handler.encode_chunk({"job": job, "item": item})
