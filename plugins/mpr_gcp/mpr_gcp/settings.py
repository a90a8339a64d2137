"""Settings of the gcp executor, read from ``MPR_GCP_*`` environment variables.

Like core settings: one frozen dataclass, read once, a bad value raises
ConfigError naming the variable and what was expected.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from mpr.errors import ConfigError
from mpr.settings import env_float as _float
from mpr.settings import env_int as _int

JOB_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/jobs/[^/]+$")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class GcpSettings:
    """Where and how the gcp executor runs jobs (see README, "GCP (Cloud Run Jobs)")."""

    job: str | None = None
    """``projects/P/locations/R/jobs/J``: the Cloud Run Job whose executions run MPR jobs."""
    api_endpoint: str | None = None
    """Cloud Run Admin API endpoint; default Google's. A local URL (tests) uses anonymous credentials."""
    container: str | None = None
    """Name of the container to override when the job has several (default: the only one)."""
    max_retries: int = 3
    """Retries per task; must match the job's ``maxRetries`` so a task knows its last attempt."""
    task_timeout: int | None = None
    """Per-task timeout override in seconds (default: the job's own)."""
    work_prefix: str = "_mpr/gcp"
    """Key prefix under MEDIA_OUT for chunk outputs and markers while a job runs."""
    poll_seconds: float = 1.0
    """How often the concat task looks for finished chunks."""
    callback_grace: float = 60.0
    """``poll``: an execution finished this long ago whose job is not final never called back."""
    max_chunks: int = 1000
    """At most this many chunk tasks per execution; longer sources get longer chunks."""
    watch_seconds: float = 5.0
    """How often the server checks a running job (chunk rows, progress, dead executions); 0 = never."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GcpSettings:
        """Read ``MPR_GCP_*`` from ``env`` (default ``os.environ``); raise ConfigError on a bad value."""
        env = os.environ if env is None else env
        job = (env.get("MPR_GCP_JOB") or "").strip() or None
        if job is not None and not JOB_NAME.match(job):
            raise ConfigError(f"MPR_GCP_JOB must look like projects/PROJECT/locations/REGION/jobs/JOB, got {job!r}")
        endpoint = (env.get("MPR_GCP_API_ENDPOINT") or "").strip().rstrip("/") or None
        if endpoint is not None and ("/" in endpoint.split("://", 1)[-1] or " " in endpoint):
            raise ConfigError(
                f"MPR_GCP_API_ENDPOINT must be a host or scheme://host[:port] with no path, got {endpoint!r}"
            )
        prefix = (env.get("MPR_GCP_WORK_PREFIX") or cls.work_prefix).strip().strip("/")
        if not prefix or ".." in prefix.split("/"):
            raise ConfigError(f"MPR_GCP_WORK_PREFIX must be a relative key prefix, got {prefix!r}")
        timeout = _int(env, "MPR_GCP_TASK_TIMEOUT", 0, minimum=0)
        poll = _float(env, "MPR_GCP_POLL_SECONDS", cls.poll_seconds)
        grace = _float(env, "MPR_GCP_CALLBACK_GRACE", cls.callback_grace)
        return cls(
            job=job,
            api_endpoint=endpoint,
            container=(env.get("MPR_GCP_CONTAINER") or "").strip() or None,
            max_retries=_int(env, "MPR_GCP_MAX_RETRIES", cls.max_retries, minimum=0),
            task_timeout=timeout or None,
            work_prefix=prefix,
            poll_seconds=max(0.05, poll),
            callback_grace=grace,
            max_chunks=_int(env, "MPR_GCP_MAX_CHUNKS", cls.max_chunks, minimum=1),
            watch_seconds=_float(env, "MPR_GCP_WATCH_SECONDS", cls.watch_seconds),
        )

    @property
    def location(self) -> str:
        """``projects/P/locations/R`` of the configured job."""
        return self.require_job().rsplit("/jobs/", 1)[0]

    def require_job(self) -> str:
        """The job name, or ConfigError when MPR_GCP_JOB is unset."""
        if not self.job:
            raise ConfigError("MPR_EXECUTOR=gcp needs MPR_GCP_JOB=projects/PROJECT/locations/REGION/jobs/JOB")
        return self.job

    @property
    def endpoint_is_local(self) -> bool:
        """True when the API endpoint is a local server (a fake): use anonymous credentials."""
        if not self.api_endpoint:
            return False
        url = self.api_endpoint if "://" in self.api_endpoint else "https://" + self.api_endpoint
        return urlsplit(url).hostname in LOCAL_HOSTS


@functools.lru_cache(maxsize=1)
def get_gcp_settings() -> GcpSettings:
    """The process-wide gcp settings, read once (tests call ``get_gcp_settings.cache_clear()``)."""
    return GcpSettings.from_env()
