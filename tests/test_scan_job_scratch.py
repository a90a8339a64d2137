"""A cloud executor's chunk files listed in MEDIA_IN (its work area inside it) are never registered as sources."""

from __future__ import annotations

import uuid

import pytest

from mpr.models import JobStatus, MediaAsset, TranscodeJob
from testkit import _reset_caches
from tests.core_helpers import put_media


@pytest.mark.parametrize(
    ("layout", "scratch"),
    [
        ("same-folder", "_mpr/gcp/{job}/3f9a0c1d2e4b/chunk-00000.mp4"),  # GCP: under MEDIA_OUT
        ("separate", "mpr-work/{job}/1/chunk-00001.mp4"),  # Lambda: the output bucket's root
    ],
)
async def test_chunk_files_of_a_job_are_not_sources(layout, scratch, db, media, clips, monkeypatch) -> None:
    from mpr.scan import scan

    if layout == "same-folder":
        monkeypatch.setenv("MEDIA_OUT", str(media["in"]))
        _reset_caches()
    put_media(media, clips["video"], "a.mp4")
    assert (await scan()).registered == 1
    source = await MediaAsset.get(path="a.mp4")
    # a chunked job that failed keeps its chunks for a retry
    job = await TranscodeJob.create(
        source_asset_id=source.id, source_path="a.mp4", output_path="a_h264-720p.mp4", executor="gcp",
        preset_snapshot={"name": "h264-720p"}, status=JobStatus.FAILED, chunked=True,
    )  # fmt: skip
    put_media(media, clips["video"], scratch.format(job=job.id))
    put_media(media, clips["audio"], scratch.format(job=job.id).rsplit("/", 1)[0] + "/audio.m4a")
    stranger = f"shows/{uuid.uuid4()}/episode.mp4"  # a folder named like an id no job has: a source
    put_media(media, clips["video"], stranger)
    for _ in range(2):
        await scan()
        assert sorted(await MediaAsset.all().values_list("path", flat=True)) == ["a.mp4", stranger]
