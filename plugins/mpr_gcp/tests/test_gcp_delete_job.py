"""Deleting a gcp job removes its scratch objects in MEDIA_OUT (``_mpr/gcp/<job id>/``), and only those."""

from __future__ import annotations

import uuid

from mpr import service
from mpr.models import AssetKind, JobStatus, MediaAsset, TranscodeJob


async def _job(status: JobStatus) -> TranscodeJob:
    asset = await MediaAsset.get_or_none(path="clip.mp4") or await MediaAsset.create(
        path="clip.mp4", filename="clip.mp4", kind=AssetKind.VIDEO, size=10
    )
    return await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        output_path=f"clip-{uuid.uuid4().hex[:6]}.mp4",
        executor="gcp",
        status=status,
        chunked=True,
        preset_snapshot={"name": "h264-720p"},
    )


async def test_delete_job_removes_its_scratch_objects(db, gcs, cloud_run, moto_server) -> None:
    s3 = moto_server.client("s3")
    failed, other = await _job(JobStatus.FAILED), await _job(JobStatus.CANCELLED)
    for job in (failed, other):
        for name in ("chunk-00000.mp4", "failed.json"):
            s3.put_object(Bucket=gcs.bucket, Key=f"out/_mpr/gcp/{job.id}/{name}", Body=b"x")

    await service.delete_job(failed.id)

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=gcs.bucket).get("Contents", []))
    assert keys == [f"out/_mpr/gcp/{other.id}/chunk-00000.mp4", f"out/_mpr/gcp/{other.id}/failed.json"]
    assert not await TranscodeJob.exists(id=failed.id) and await TranscodeJob.exists(id=other.id)
