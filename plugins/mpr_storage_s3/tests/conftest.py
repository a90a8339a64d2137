"""Fixtures for the S3 storage plugin tests: the moto server (shared helper)."""

from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401
