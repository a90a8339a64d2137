"""MPR plugin: media roots in S3 buckets (``s3://``) and in GCS through its S3 API (``gs://``)."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_storage_backends(register):
    """Register :class:`~mpr_storage_s3.storage.S3Storage` for ``s3://`` and ``gs://`` roots."""
    from mpr_storage_s3.storage import S3Storage

    register("s3", S3Storage)
    register("gs", S3Storage)
