"""run_job: a job from PENDING to a playable output (or a clean failure or cancel)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import ClassVar

import pytest

from mpr import hookimpl, service
from mpr.execute import run_job
from mpr.models import JobStatus, TranscodeJob, TranscodePreset
from mpr.plugins import register_plugin, unregister_plugin
from mpr.probe import probe
from mpr.settings import get_settings
from mpr.storage import ObjectInfo, reset_storage
from testkit import make_clip
from tests.core_helpers import CollectSink, ready_asset, synced

FRAME = 1 / 25


@pytest.fixture
def sink(media):
    s = CollectSink()
    register_plugin(s, name="collect-sink")
    try:
        yield s
    finally:
        unregister_plugin(s)


async def inline_job(asset, preset: str | None, **kw) -> TranscodeJob:
    pid = (await TranscodePreset.get(name=preset)).id if preset else None
    return await service.create_job(asset.id, pid, executor="inline", submit=False, **kw)


def out_files(media) -> list[str]:
    return sorted(p.relative_to(media["out"]).as_posix() for p in media["out"].rglob("*") if p.is_file())


async def test_job_completes_with_a_probed_playable_output(db, media, clips, sink) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"])
    job = await inline_job(asset, "h264-720p")
    await asyncio.to_thread(run_job, job.id)
    done = await TranscodeJob.get(id=job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert (done.progress, done.attempts, done.error) == (100.0, 1, None)
    assert done.output_duration == pytest.approx(asset.duration, abs=FRAME)
    assert done.output_size == (media["out"] / done.output_path).stat().st_size
    assert done.output_probe["streams"] and done.started_at and done.finished_at and done.worker
    assert out_files(media) == ["clip_h264-720p.mp4"]
    assert sink.statuses(job.id) == ["processing", "completed"]


async def test_trim_and_audio_only(sqlite_db, media, clips) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"])
    trim = await inline_job(asset, "h264-720p", trim_start=0.5, trim_end=2.0)
    audio = await inline_job(asset, "aac-audio", trim_start=1.0)
    for job in (trim, audio):
        await asyncio.to_thread(run_job, job.id)
    trim, audio = await TranscodeJob.get(id=trim.id), await TranscodeJob.get(id=audio.id)
    assert trim.status is JobStatus.COMPLETED and audio.status is JobStatus.COMPLETED
    assert trim.output_duration == pytest.approx(1.5, abs=FRAME + 0.03)
    a = probe(media["out"] / audio.output_path)
    assert (a.kind, a.video_codec, a.audio_codec) == ("audio", None, "aac")
    assert a.duration == pytest.approx(2.0, abs=0.05)


async def test_ffmpeg_failure_is_recorded_and_leaves_no_partial_output(sqlite_db, media, clips) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"])
    job = await inline_job(asset, "h264-720p")
    (media["in"] / "clip.mp4").write_bytes(clips["garbage"].read_bytes())  # the file went bad after the scan
    await asyncio.to_thread(run_job, job.id)
    failed = await TranscodeJob.get(id=job.id)
    assert failed.status is JobStatus.FAILED
    assert "ffmpeg failed" in failed.error and "Invalid data" in failed.error
    assert out_files(media) == []


async def test_source_removed_before_the_run(sqlite_db, media, clips) -> None:
    asset = await ready_asset(media, clips["video"])
    job = await inline_job(asset, None)
    (media["in"] / "clip.mp4").unlink()
    await asyncio.to_thread(run_job, job.id)
    failed = await TranscodeJob.get(id=job.id)
    assert failed.status is JobStatus.FAILED and "no longer exists in MEDIA_IN" in failed.error


async def test_cancel_kills_a_running_job_and_removes_partial_output(sqlite_db, media, clips) -> None:
    # AV1 at its slowest setting takes minutes for this clip: surely still running when cancelled
    slow = await service.create_preset(
        {"name": "glacial", "container": "mkv", "video_codec": "libaom-av1", "speed_preset": "0", "crf": 5}
    )
    asset = await ready_asset(media, clips["video"])
    job = await service.create_job(asset.id, slow.id, executor="inline", submit=False)
    runner = asyncio.create_task(asyncio.to_thread(run_job, job.id))
    deadline = time.monotonic() + 60  # ffmpeg start-up on a busy machine
    while (await TranscodeJob.get(id=job.id)).status is not JobStatus.PROCESSING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    while not any(p.name.startswith(".mpr-tmp-") for p in media["out"].iterdir()):  # ffmpeg is writing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    await service.cancel_job(job.id)
    # the encode takes minutes: only the kill ends it this soon (about 0.5 s when idle; generous for busy CI)
    await asyncio.wait_for(runner, 30)
    final = await TranscodeJob.get(id=job.id)
    assert final.status is JobStatus.CANCELLED
    assert out_files(media) == []


async def test_only_pending_jobs_run_and_only_once(sqlite_db, media, clips) -> None:
    asset = await ready_asset(media, clips["video"])
    job = await inline_job(asset, None)
    # two workers get the same job: exactly one runs it
    await asyncio.gather(asyncio.to_thread(run_job, job.id), asyncio.to_thread(run_job, job.id))
    done = await TranscodeJob.get(id=job.id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 1
    assert out_files(media) == ["clip_copy.mp4"]
    cancelled = await inline_job(asset, None)
    await service.cancel_job(cancelled.id)
    await asyncio.to_thread(run_job, cancelled.id)
    assert (await TranscodeJob.get(id=cancelled.id)).status is JobStatus.CANCELLED
    assert out_files(media) == ["clip_copy.mp4"]


async def test_chunked_job_runs_through_the_chunker(sqlite_db, media, tmp_path) -> None:
    await synced()
    clip = make_clip(tmp_path / "gop.mp4", seconds=3.0, gop=25)
    asset = await ready_asset(media, clip, "gop.mp4")
    job = await inline_job(asset, "h264-720p", chunked=True, chunk_seconds=1.0, chunk_workers=2)
    await asyncio.to_thread(run_job, job.id)
    done = await TranscodeJob.get(id=job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.output_duration == pytest.approx(3.0, abs=FRAME + 0.03)


class MemoryOut:
    """A remote-style MEDIA_OUT (no local paths): outputs are uploaded with put()."""

    objects: ClassVar[dict[str, bytes]] = {}

    def __init__(self, root: str, settings) -> None:
        self.root = root

    def exists(self, key: str) -> bool:
        return key in self.objects

    def put(self, key: str, local_file: Path) -> ObjectInfo:
        self.objects[key] = Path(local_file).read_bytes()
        return ObjectInfo(key=key, size=len(self.objects[key]))

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def local_path(self, key: str) -> None:
        return None


class MemoryOutPlugin:
    @hookimpl
    def register_storage_backends(self, register):
        register("memout", MemoryOut)


async def test_output_to_a_remote_backend_is_uploaded(sqlite_db, media, clips, monkeypatch, tmp_path) -> None:
    asset = await ready_asset(media, clips["video"])
    job = await inline_job(asset, None, trim_end=2.0)
    plugin = MemoryOutPlugin()
    register_plugin(plugin, name="mpr-memout")
    monkeypatch.setenv("MEDIA_OUT", "memout://bucket/out/")
    get_settings.cache_clear()
    reset_storage()
    MemoryOut.objects = {}
    try:
        await asyncio.to_thread(run_job, job.id)
    finally:
        unregister_plugin(plugin)
    done = await TranscodeJob.get(id=job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    local = tmp_path / "downloaded.mp4"
    local.write_bytes(MemoryOut.objects["clip_copy.mp4"])
    assert probe(local).duration == pytest.approx(2.0, abs=0.1)
    assert done.output_size == local.stat().st_size
    assert not list((media["var"] / "tmp").rglob("*.mp4"))  # the temp copy is gone
