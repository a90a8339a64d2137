"""Settings of the S3 storage plugin, read from its own ``MPR_S3_*`` / ``MPR_GS_*`` variables.

The endpoint for ``s3://`` roots comes from the core setting
``MPR_S3_ENDPOINT_URL`` (MinIO, GCS's S3 API, any S3-compatible service).
``gs://`` roots talk to the S3 API of Google Cloud Storage
(``https://storage.googleapis.com`` unless ``MPR_GS_ENDPOINT_URL`` says
otherwise) with HMAC keys from ``MPR_GS_ACCESS_KEY_ID`` /
``MPR_GS_SECRET_ACCESS_KEY`` (else the usual AWS credential chain).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mpr.errors import ConfigError

GCS_ENDPOINT = "https://storage.googleapis.com"
MIN_PART = 5 * 1024 * 1024  # S3's smallest multipart part (except the last)


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    mult = units.get(raw[-1].upper(), 1)
    number = raw[:-1] if raw[-1].upper() in units else raw
    try:
        value = int(float(number) * mult)
    except ValueError:
        raise ConfigError(f"{name} must be a size in bytes (e.g. 8388608 or 8M), got {raw!r}") from None
    if value < MIN_PART:
        raise ConfigError(f"{name} must be at least 5M (S3's smallest multipart part), got {raw!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be a URL starting with http:// or https://, got {raw!r}")
    return raw


@dataclass(frozen=True)
class S3Settings:
    """What the S3 backend reads from the environment."""

    region: str = "us-east-1"
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 16 * 1024 * 1024
    max_concurrency: int = 4
    gs_endpoint_url: str = GCS_ENDPOINT
    gs_access_key_id: str | None = None
    gs_secret_access_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Build from ``env`` (default ``os.environ``); raise ConfigError naming a bad variable."""
        env = os.environ if env is None else env
        concurrency_raw = (env.get("MPR_S3_MAX_CONCURRENCY") or "4").strip()
        if not concurrency_raw.isdigit() or int(concurrency_raw) < 1:
            raise ConfigError(f"MPR_S3_MAX_CONCURRENCY must be a positive integer, got {concurrency_raw!r}")
        return cls(
            region=(env.get("MPR_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"),
            multipart_threshold=_size(env, "MPR_S3_MULTIPART_THRESHOLD", cls.multipart_threshold),
            multipart_chunksize=_size(env, "MPR_S3_MULTIPART_CHUNKSIZE", cls.multipart_chunksize),
            max_concurrency=int(concurrency_raw),
            gs_endpoint_url=_url(env, "MPR_GS_ENDPOINT_URL", GCS_ENDPOINT),
            gs_access_key_id=(env.get("MPR_GS_ACCESS_KEY_ID") or None),
            gs_secret_access_key=(env.get("MPR_GS_SECRET_ACCESS_KEY") or None),
        )
