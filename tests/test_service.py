"""The business rules behind the API and the CLI: job creation, cancel/retry, assets, presets."""

from __future__ import annotations

import uuid

import pytest

from mpr import jobs, service
from mpr.errors import ExecutorError, InvalidTransition, NotFound, PluginError, ValidationError
from mpr.models import JobStatus, MediaAsset, TranscodeJob, TranscodePreset
from tests.core_helpers import fake_executor, ready_asset, synced  # noqa: F401 (fixture `fake`)


async def preset_id(name: str) -> uuid.UUID:
    return (await TranscodePreset.get(name=name)).id


async def test_create_job_submits_with_a_unique_output(db, media, clips, fake) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"], "shows/ep1.mp4")
    job = await service.create_job(asset.id, await preset_id("h264-720p"), priority=5)
    assert job.status is JobStatus.PENDING and job.executor == "fake"
    assert job.output_path == "shows/ep1_h264-720p.mp4" and job.external_id == f"ext-{job.id}"
    assert job.preset_snapshot["video_codec"] == "libx264" and job.priority == 5
    assert fake.submitted == [str(job.id)]
    # a second job never reuses the name; neither does it take a file already in MEDIA_OUT
    (media["out"] / "shows").mkdir(parents=True)
    (media["out"] / "shows" / "ep1_h264-720p-1.mp4").write_bytes(b"someone else's")
    second = await service.create_job(asset.id, "h264-720p")  # by name too
    assert second.output_path == "shows/ep1_h264-720p-2.mp4"
    named = await service.create_job(asset.id, None, output_name="My Cut.mp4", trim_start=1, trim_end=2)
    assert named.output_path == "My Cut.mp4" and named.preset_id is None
    assert named.preset_snapshot["video_codec"] == "copy" and (named.trim_start, named.trim_end) == (1.0, 2.0)


async def test_create_job_bad_input(db, media, clips, fake) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"])
    audio = await ready_asset(media, clips["audio"], "tone.mp3")
    bad = await ready_asset(media, clips["truncated"], "bad.mp4")
    h264 = await preset_id("h264-720p")
    cases = [
        (dict(source_asset_id=uuid.uuid4(), preset_id=h264), NotFound, "asset"),
        (dict(source_asset_id="not-a-uuid", preset_id=h264), ValidationError, "not a valid asset id"),
        (dict(source_asset_id=asset.id, preset_id=uuid.uuid4()), NotFound, "preset"),
        (dict(source_asset_id=bad.id, preset_id=h264), ValidationError, "not ready"),
        (dict(source_asset_id=audio.id, preset_id=h264), ValidationError, "no video stream"),
        (dict(source_asset_id=asset.id, preset_id=h264, trim_start=2, trim_end=1), ValidationError, "after"),
        (dict(source_asset_id=asset.id, preset_id=h264, trim_start=-1), ValidationError, ">= 0"),
        (dict(source_asset_id=asset.id, preset_id=h264, trim_end=60), ValidationError, "past the end"),
        (dict(source_asset_id=asset.id, preset_id=h264, trim_start=5), ValidationError, "past the end"),
        (dict(source_asset_id=asset.id, preset_id=h264, trim_start="soon"), ValidationError, "number"),
        (dict(source_asset_id=asset.id, preset_id=h264, output_name="../../etc/x"), ValidationError, "output name"),
        (dict(source_asset_id=asset.id, preset_id=h264, output_name="a/b"), ValidationError, "output name"),
        (dict(source_asset_id=asset.id, preset_id=h264, chunked=True, trim_end=1), ValidationError, "chunked"),
        (dict(source_asset_id=audio.id, preset_id=None, chunked=True), ValidationError, "chunked"),
        (dict(source_asset_id=asset.id, preset_id=h264, chunked=True, chunk_seconds=0.1), ValidationError, "chunk"),
        (dict(source_asset_id=asset.id, preset_id=h264, priority="urgent"), ValidationError, "priority"),
        (dict(source_asset_id=asset.id, preset_id=h264, executor="gcp-nope"), PluginError, "no executor"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            await service.create_job(**kwargs)
    assert await TranscodeJob.all().count() == 0
    # trim end at (or a hair past) the duration means "to the end"
    job = await service.create_job(asset.id, h264, trim_end=asset.duration + 0.01)
    assert job.trim_end is None


async def test_job_for_a_deleted_asset_or_file(db, media, clips, fake) -> None:
    asset = await ready_asset(media, clips["video"])
    job = await service.create_job(asset.id, None)
    with pytest.raises(ValidationError, match="pending or running"):
        await service.delete_asset(asset.id)
    await service.cancel_job(job.id)
    await service.delete_asset(asset.id)
    assert (media["in"] / "clip.mp4").exists()  # the user's file is kept
    with pytest.raises(NotFound):
        await service.create_job(asset.id, None)
    with pytest.raises(ValidationError, match="source asset was deleted"):
        await service.retry_job(job.id)
    assert (await TranscodeJob.get(id=job.id)).source_path == "clip.mp4"
    # file removed from MEDIA_IN after registration
    again = await ready_asset(media, clips["video"], "gone.mp4")
    (media["in"] / "gone.mp4").unlink()
    with pytest.raises(ValidationError, match="no longer exists"):
        await service.create_job(again.id, None)


async def test_cancel_and_retry(db, media, clips, fake) -> None:
    asset = await ready_asset(media, clips["video"])
    job = await service.create_job(asset.id, None)
    cancelled = await service.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED and fake.cancelled == [str(job.id)]
    with pytest.raises(InvalidTransition):
        await service.cancel_job(job.id)
    retried = await service.retry_job(job.id)
    assert retried.status is JobStatus.PENDING and fake.submitted == [str(job.id)] * 2
    with pytest.raises(InvalidTransition, match="only failed or cancelled"):
        await service.retry_job(job.id)
    await jobs.transition(job.id, JobStatus.PROCESSING)
    await jobs.transition(job.id, JobStatus.COMPLETED)
    with pytest.raises(InvalidTransition):
        await service.retry_job(job.id)
    with pytest.raises(InvalidTransition):
        await service.cancel_job(job.id)


async def test_executor_refusal_fails_the_job_with_a_message(db, media, clips, fake) -> None:
    asset = await ready_asset(media, clips["video"])
    fake.fail = RuntimeError("queue is full")
    with pytest.raises(ExecutorError, match="queue is full"):
        await service.create_job(asset.id, None)
    job = await TranscodeJob.get(source_asset_id=asset.id)
    assert job.status is JobStatus.FAILED and "queue is full" in job.error


async def test_update_asset_comments(db, media, clips) -> None:
    asset = await ready_asset(media, clips["video"])
    await service.update_asset(asset.id, "keeper")
    assert (await MediaAsset.get(id=asset.id)).comments == "keeper"
    with pytest.raises(ValidationError):
        await service.update_asset(asset.id, "x" * 20_000)
    with pytest.raises(NotFound):
        await service.update_asset(uuid.uuid4(), "x")


async def test_preset_crud_and_protection(db, media) -> None:
    await synced()
    mine = await service.create_preset(
        {
            "name": "mine",
            "container": "mkv",
            "video_codec": "libx264",
            "crf": 20,
            "audio_codec": "libopus",
            "audio_bitrate": "96k",
        }
    )
    assert mine.source == "user" and not mine.modified
    with pytest.raises(ValidationError, match="already exists"):
        await service.create_preset({"name": "mine", "container": "mp3", "audio_codec": "libmp3lame"})
    with pytest.raises(ValidationError, match="unknown codec"):
        await service.create_preset({"name": "x", "container": "mp4", "video_codec": "h264_evil"})
    with pytest.raises(ValidationError, match="not allowed"):
        await service.create_preset(
            {"name": "x", "container": "mp4", "video_codec": "libx264", "extra": {"filter_complex": "x"}}
        )
    updated = await service.update_preset(mine.id, {"crf": 25})
    assert updated.crf == 25 and updated.source == "user" and not updated.modified
    with pytest.raises(ValidationError, match="already exists"):
        await service.update_preset(mine.id, {"name": "h264-720p"})
    builtin = await TranscodePreset.get(name="h264-720p")
    edited = await service.update_preset(builtin.id, {"crf": 20})
    assert edited.modified and edited.source == "builtin"
    with pytest.raises(ValidationError, match="cannot be deleted"):
        await service.delete_preset(builtin.id)
    await service.delete_preset(mine.id)
    assert not await TranscodePreset.exists(name="mine")
