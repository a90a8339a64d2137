"""Deleting a lambda job removes the chunk files its runs left under the work URL, and only those."""

from __future__ import annotations

import uuid

from mpr import service
from mpr.models import AssetKind, JobStatus, MediaAsset, TranscodeJob
from mpr.settings import get_settings


async def _job(status: JobStatus) -> TranscodeJob:
    asset = await MediaAsset.get_or_none(path="clip.mp4") or await MediaAsset.create(
        path="clip.mp4", filename="clip.mp4", kind=AssetKind.VIDEO, size=10
    )
    return await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        output_path=f"clip-{uuid.uuid4().hex[:6]}.mp4",
        executor="lambda",
        status=status,
        chunked=True,
        preset_snapshot={"name": "h264-720p"},
    )


async def test_delete_job_removes_its_work_files(moto_server, s3_bucket, db, monkeypatch) -> None:
    monkeypatch.setenv("MEDIA_IN", f"s3://{s3_bucket}/in/")
    monkeypatch.setenv("MEDIA_OUT", f"s3://{s3_bucket}/out/")
    monkeypatch.setenv("MPR_SFN_ENDPOINT_URL", moto_server.url)
    get_settings.cache_clear()
    s3 = moto_server.client("s3")
    failed, other = await _job(JobStatus.FAILED), await _job(JobStatus.CANCELLED)
    for job in (failed, other):
        for attempt in (0, 1):
            s3.put_object(Bucket=s3_bucket, Key=f"mpr-work/{job.id}/{attempt}/chunk-00000.mp4", Body=b"x")
        s3.put_object(Bucket=s3_bucket, Key=f"out/{job.output_path}", Body=b"output")

    await service.delete_job(failed.id, delete_output=True)

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == sorted(
        [f"mpr-work/{other.id}/0/chunk-00000.mp4", f"mpr-work/{other.id}/1/chunk-00000.mp4", f"out/{other.output_path}"]
    )
    assert not await TranscodeJob.exists(id=failed.id) and await TranscodeJob.exists(id=other.id)
