"""Trimmed chunked jobs on Cloud Run, and chunk tasks that read the source through a presigned URL.

- A trimmed chunked job through the fake Cloud Run API (real task processes, moto "GCS", signed
  callback) has exactly the frames of the local trimmed single pass.
- A chunk task reads only its byte ranges of the source (counting proxy in front of moto),
  and encodes the same chunk as from a local copy; a local-folder MEDIA_IN falls back to the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import signal
import sys
from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.chunker.plan import plan_chunks
from mpr.errors import ExecutorError, NotFound
from mpr.models import ChunkStatus, JobChunk, JobStatus
from testkit import CountingProxy, make_clip

from .conftest import FAST, reset_caches
from .test_gcp_executor import seed_job, wait_final

pytestmark = pytest.mark.timeout(240)


def _chunkcheck():
    # tests/chunker/chunkcheck.py by path: this package is also called "tests"
    spec = importlib.util.spec_from_file_location(
        "mpr_chunkcheck", Path(__file__).resolve().parents[3] / "tests" / "chunker" / "chunkcheck.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


chunkcheck = _chunkcheck()
inspect = chunkcheck.inspect


assert_like_single_pass = chunkcheck.assert_like_single_pass


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """task.main() installs its SIGTERM handler in this process: put pytest's back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def clip4(tmp_path_factory) -> Path:
    """4 s 320x240 + AAC with a keyframe every second."""
    return make_clip(tmp_path_factory.mktemp("gcp-trim") / "clip.mp4", seconds=4.0, gop=25)


@pytest.fixture(scope="module")
def clip20(tmp_path_factory) -> Path:
    """20 s 640x360 + AAC with a keyframe every second: 20 one-second chunks."""
    return make_clip(tmp_path_factory.mktemp("gcp-stream") / "long.mp4", seconds=20.0, size="640x360", gop=25)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("start", "end", "chunks"), [(0.53, 3.47, 3), (1.01, None, 2)])
async def test_trimmed_chunked_job_on_cloud_run_has_the_frames_of_the_trimmed_single_pass(
    mpr_app, cloud_run, gcs, clip4, tmp_path, start, end, chunks
):
    from mpr.executors import get_executor

    assert get_executor("gcp").chunked_trim is True  # mpr.service lets trimmed chunked jobs through
    job = await seed_job(clip4, output="trimmed.mp4", trim=(start, end))
    name = await get_executor("gcp").submit(job)
    body = cloud_run.requests[0][2]
    assert body["overrides"]["taskCount"] == chunks + 1
    env = {e["name"]: e["value"] for e in body["overrides"]["containerOverrides"][0]["env"]}
    assert env["MPR_GCP_TRIM"] == f"[{start}, {'null' if end is None else end}]"

    done = await wait_final(job.id)
    assert done.status == JobStatus.COMPLETED, (done.error, cloud_run.task_log(name))
    rows = await JobChunk.filter(job_id=job.id).order_by("index")
    assert len(rows) == chunks and rows[0].start == pytest.approx(start) and rows[-1].end == pytest.approx(end or 4.0)
    assert all(r.status == ChunkStatus.DONE for r in rows)

    out, ref = tmp_path / "gcp.mp4", tmp_path / "single.mp4"
    gcs.storage("out").download("trimmed.mp4", out)
    await asyncio.to_thread(ffmpeg.run, ffmpeg.build_command(clip4, ref, FAST, start=start, end=end))
    got, want = inspect(out), inspect(ref)
    assert len(got.pts) == len(want.pts) > 0
    assert_like_single_pass(got, want, inspect(clip4), start, frame=1 / 25)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_trims_that_cannot_be_chunked(mpr_app, gcs, clip4):
    from mpr_gcp.executor import GcpExecutor

    from mpr.executors import get_executor

    executor: GcpExecutor = get_executor("gcp")
    job = await seed_job(clip4, output="empty.mp4", trim=(9.0, 10.0))
    with pytest.raises(ExecutorError, match="holds no video frame"):
        await executor.submit(job)
    assert (await JobChunk.filter(job_id=job.id).count()) == 0
    job.preset_snapshot = dataclasses.replace(FAST, fps=15).to_dict()
    job.trim_start, job.trim_end = 0.5, 3.0
    assert await asyncio.to_thread(executor.plan, job) == ([], 0.0)  # a frame-rate change: one single-pass task
    job.trim_start = job.trim_end = None
    assert len((await asyncio.to_thread(executor.plan, job))[0]) == 4  # untrimmed it is chunked
    job.preset_snapshot = FAST.to_dict()
    job.trim_start, job.trim_end = 0.53, 3.47
    chunks, _ = await asyncio.to_thread(executor.plan, job)
    assert [(c.start, c.end) for c in chunks] == [(0.53, 2.0), (2.0, 3.0), (3.0, 3.47)]


def _spec(gcs, clip, output: str, **kw):
    from mpr_gcp.spec import TaskSpec

    return TaskSpec(
        job_id="j-stream",
        source_key="long.mp4",
        output_key=output,
        preset=FAST.to_dict(),
        callback_url="http://127.0.0.1:9/api/jobs/j-stream/callback",
        chunks=tuple(plan_chunks(clip, 1.0, start=kw.get("trim_start"), end=kw.get("trim_end"))),
        max_retries=0,
        media={"MEDIA_IN": f"gs://{gcs.bucket}/in", "MEDIA_OUT": f"gs://{gcs.bucket}/out"},
        **kw,
    )


def _run_chunks(spec, proxy: CountingProxy) -> list[int]:
    from mpr_gcp import task

    read = []
    for i in range(len(spec.chunks)):
        proxy.reset()
        env = {**spec.to_env(), "CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": str(spec.task_count)}
        assert task.main(env) == 0
        read.append(proxy.reset()[0])
    return read


def test_chunk_tasks_read_only_their_part_of_the_source(gcs, moto_server, clip20, monkeypatch, capsys):
    from mpr_storage_s3.storage import S3Storage

    from mpr.storage import media_in, media_out

    media_in().put("long.mp4", clip20)
    size = clip20.stat().st_size
    proxy = CountingProxy(moto_server.port)
    try:
        monkeypatch.setenv("MPR_GS_ENDPOINT_URL", proxy.url)
        reset_caches()
        streamed = _spec(gcs, clip20, "a.mp4", trim_end=19.5)  # trimmed: chunks after the first also probe the URL
        assert len(streamed.chunks) == 20
        after = _run_chunks(streamed, proxy)
        with monkeypatch.context() as m:
            m.setattr(S3Storage, "url", lambda self, key, expires=3600: None)  # no URL: a local copy
            copied = dataclasses.replace(streamed, job_id="j-copy")
            before = _run_chunks(copied, proxy)
        with capsys.disabled():
            print(
                f"\ngcp chunk tasks, {size} B source, 20 trimmed chunks: local copy {sum(before)} B "
                f"(max {max(before)}), URL {sum(after)} B (max {max(after)}, min {min(after)})"
            )
        assert all(b >= size for b in before)
        assert sum(after) < sum(before) / 4 and max(after) < size / 4
        out = media_out()
        for c in streamed.chunks:  # the same encoded chunk either way
            with (
                out.local_copy(streamed.chunk_key(c.index, "mp4")) as a,
                out.local_copy(copied.chunk_key(c.index, "mp4")) as b,
            ):
                assert a.read_bytes() == b.read_bytes(), f"chunk {c.index} differs"
    finally:
        proxy.close()
        reset_caches()


def test_a_local_media_in_falls_back_to_the_file(gcs, clip4, tmp_path, monkeypatch):
    from mpr_gcp.task import TaskRunner

    from mpr.settings import get_settings
    from mpr.storage import media_in

    media_in().put("long.mp4", clip4)
    spec = _spec(gcs, clip4, "x.mp4")
    streaming = TaskRunner(spec, get_settings(), 0)
    with streaming.source_input() as source:
        assert isinstance(source, str) and source.startswith("http://") and "/in/long.mp4?" in source

    folder = tmp_path / "media-in"
    folder.mkdir()
    (folder / "long.mp4").write_bytes(clip4.read_bytes())
    monkeypatch.setenv("MEDIA_IN", str(folder))
    reset_caches()
    local = TaskRunner(spec, get_settings(), 0)
    with local.source_input() as source:
        assert Path(source).read_bytes() == clip4.read_bytes()
    (folder / "long.mp4").unlink()
    with pytest.raises(NotFound), local.source_input():
        pass
