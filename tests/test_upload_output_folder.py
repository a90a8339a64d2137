"""Uploads and MEDIA_OUT inside (or equal to) MEDIA_IN: an upload never becomes, or takes the place of, a job output."""

from __future__ import annotations

import pytest

from mpr.errors import ValidationError
from mpr.models import JobStatus, MediaAsset, TranscodeJob
from testkit import _reset_caches


async def chunks(data: bytes):
    yield data


async def test_upload_into_a_media_out_folder_inside_media_in_is_refused(db, media, clips, monkeypatch) -> None:
    from mpr.scan import scan
    from mpr.upload import upload

    out = media["in"] / "out"
    out.mkdir()
    monkeypatch.setenv("MEDIA_OUT", str(out))
    _reset_caches()
    data = clips["video"].read_bytes()
    for name in ("out/clip.mp4", "out/sub/clip.mp4"):
        with pytest.raises(ValidationError, match="inside MEDIA_OUT"):
            await upload(name, chunks(data))
    assert not any(out.rglob("*.mp4"))  # nothing stored
    assert await MediaAsset.all().count() == 0
    # next to it, not in it: a source like any other
    asset, renamed = await upload("outtakes/clip.mp4", chunks(data))
    assert (asset.path, renamed) == ("outtakes/clip.mp4", False)
    assert (await scan()).registered == 0  # the scan agrees: it was registered, nothing under out/ is


async def test_upload_in_the_same_folder_never_takes_a_reserved_output_name(db, media, clips, monkeypatch) -> None:
    from mpr.upload import upload

    monkeypatch.setenv("MEDIA_OUT", str(media["in"]))
    _reset_caches()
    data = clips["video"].read_bytes()
    source, _ = await upload("a.mp4", chunks(data))
    await TranscodeJob.create(
        source_asset_id=source.id, source_path="a.mp4", output_path="a_h264-720p.mp4", executor="local",
        preset_snapshot={"name": "h264-720p"}, status=JobStatus.PENDING,
    )  # fmt: skip
    asset, renamed = await upload("a_h264-720p.mp4", chunks(data))
    assert (asset.path, renamed) == ("a_h264-720p (1).mp4", True)
    assert not (media["in"] / "a_h264-720p.mp4").exists()
