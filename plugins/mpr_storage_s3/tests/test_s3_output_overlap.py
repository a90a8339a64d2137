"""MEDIA_OUT overlapping MEDIA_IN in one bucket: job outputs are never taken for sources (scan and upload)."""

from __future__ import annotations

import pytest

from mpr.models import JobStatus, MediaAsset, TranscodeJob
from mpr.settings import get_settings
from mpr.storage import media_in, reset_storage


async def chunks(data: bytes):
    yield data


def roots(monkeypatch, bucket: str, layout: str) -> str:
    """Point MEDIA_IN (and MEDIA_OUT) at the bucket; the MEDIA_IN key prefix of MEDIA_OUT's root."""
    monkeypatch.setenv("MEDIA_IN", f"s3://{bucket}/media/")
    monkeypatch.setenv("MEDIA_OUT", f"s3://{bucket}/media/" + ("out/" if layout == "out-inside-in" else ""))
    get_settings.cache_clear()
    reset_storage()
    return "out/" if layout == "out-inside-in" else ""


@pytest.mark.parametrize("layout", ["same-prefix", "out-inside-in"])
async def test_upload_never_takes_the_name_a_pending_job_will_write(
    layout, sqlite_db, media, clips, s3_bucket, monkeypatch
) -> None:
    from mpr.upload import upload

    prefix = roots(monkeypatch, s3_bucket, layout)
    data = clips["video"].read_bytes()
    source, _ = await upload("a.mp4", chunks(data))
    # a job reserved its output name; it has not written the file yet
    await TranscodeJob.create(
        source_asset_id=source.id, source_path="a.mp4", output_path="a_h264-720p.mp4", executor="local",
        preset_snapshot={"name": "h264-720p"}, status=JobStatus.PENDING,
    )  # fmt: skip
    if prefix:  # nothing under MEDIA_OUT is a source (a scan never registers it): refused with the reason
        with pytest.raises(Exception, match="MEDIA_OUT"):
            await upload(prefix + "a_h264-720p.mp4", chunks(data))
        assert not media_in().exists(prefix + "a_h264-720p.mp4")
        return
    asset, renamed = await upload("a_h264-720p.mp4", chunks(data))
    # the job would overwrite the upload, and the asset would then hold the job's output
    assert (asset.path, renamed) == ("a_h264-720p (1).mp4", True)
    assert not media_in().exists("a_h264-720p.mp4")


@pytest.mark.parametrize("layout", ["same-prefix", "out-inside-in"])
async def test_scan_of_a_bucket_skips_job_outputs(layout, sqlite_db, media, clips, s3_bucket, monkeypatch) -> None:
    from mpr import service

    prefix = roots(monkeypatch, s3_bucket, layout)
    storage = media_in()
    storage.put("a.mp4", clips["video"])
    assert (await service.scan()).registered == 1
    source = await MediaAsset.get(path="a.mp4")
    await TranscodeJob.create(
        source_asset_id=source.id, source_path="a.mp4", output_path="a_h264-720p.mp4", executor="local",
        preset_snapshot={"name": "h264-720p"}, status=JobStatus.COMPLETED,
    )  # fmt: skip
    storage.put(prefix + "a_h264-720p.mp4", clips["video"])  # the job's output, listed in MEDIA_IN
    result = await service.scan()
    assert (result.found, result.registered) == (1, 0)
    assert await MediaAsset.all().values_list("path", flat=True) == ["a.mp4"]
