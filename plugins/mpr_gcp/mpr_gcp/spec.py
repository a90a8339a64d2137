"""What the executor tells a Cloud Run task: the environment contract between ``submit`` and ``mpr_gcp.task``.

One execution runs one MPR job. With a chunk plan of N chunks the execution
has N + 1 tasks: task ``i < N`` encodes video chunk ``i``; task ``N`` (the
last, so Cloud Run starts it after every chunk task has started) encodes the
audio once, waits for the N chunk objects, concatenates, stores the output
and sends the signed callback. A trimmed job's plan covers only the trim
(``MPR_GCP_TRIM`` reaches every task). Without a plan (not chunked, audio
only, stream copy, a trim with a frame-rate change) there is one task that
encodes in a single pass.

Secrets (``MPR_CALLBACK_SECRET``, the HMAC keys) are not part of this: they
come from the Cloud Run Job's own environment (Secret Manager), because
execution overrides are readable by anyone who can list executions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mpr.chunker.plan import Chunk
from mpr.errors import ConfigError
from mpr.storage import safe_key

ENV_JOB_ID = "MPR_JOB_ID"
ENV_SOURCE = "MPR_GCP_SOURCE_KEY"
ENV_OUTPUT = "MPR_GCP_OUTPUT_KEY"
ENV_PRESET = "MPR_GCP_PRESET"
ENV_CHUNKS = "MPR_GCP_CHUNKS"
ENV_TRIM = "MPR_GCP_TRIM"
ENV_CALLBACK = "MPR_GCP_CALLBACK_URL"
ENV_PREFIX = "MPR_GCP_WORK_PREFIX"
ENV_RETRIES = "MPR_GCP_MAX_RETRIES"
ENV_POLL = "MPR_GCP_POLL_SECONDS"
ENV_WAIT = "MPR_GCP_WAIT_TIMEOUT"
ENV_VIDEO_START = "MPR_GCP_VIDEO_START"


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs besides secrets and the media roots (MEDIA_IN / MEDIA_OUT)."""

    job_id: str
    source_key: str
    output_key: str
    preset: dict[str, Any]
    callback_url: str
    chunks: tuple[Chunk, ...] = ()
    video_start: float = 0.0
    trim_start: float | None = None
    trim_end: float | None = None
    work_prefix: str = "_mpr/gcp"
    max_retries: int = 3
    poll_seconds: float = 1.0
    wait_timeout: float = 6 * 3600.0
    media: dict[str, str] = field(default_factory=dict)

    @property
    def task_count(self) -> int:
        """Tasks the execution must run: one per chunk plus the concat task, or one single-pass task."""
        return len(self.chunks) + 1 if self.chunks else 1

    # --- scratch objects under MEDIA_OUT ---------------------------------

    @property
    def fingerprint(self) -> str:
        """Short hash of what the chunks depend on: a retry reuses chunks only from the same plan and preset.

        A trim is part of it (a trimmed chunk's timestamps count from the trim start).
        """
        parts: list[Any] = [self.source_key, self.preset, [[c.start, c.end, c.frames] for c in self.chunks]]
        if self.trim_start is not None or self.trim_end is not None:
            parts.append([self.trim_start, self.trim_end])
        data = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()[:12]

    @property
    def job_scratch(self) -> str:
        """Key prefix (under MEDIA_OUT) of everything this job's executions store while running."""
        return f"{self.work_prefix}/{self.job_id}"

    @property
    def scratch(self) -> str:
        """Key prefix for this plan's chunk outputs and markers (inside :attr:`job_scratch`)."""
        return f"{self.job_scratch}/{self.fingerprint}"

    def chunk_key(self, index: int, ext: str) -> str:
        """Where chunk ``index``'s encoded video is stored."""
        return f"{self.scratch}/chunk-{index:05d}.{ext}"

    def audio_key(self, ext: str) -> str:
        """Where the once-encoded audio stream is stored."""
        return f"{self.scratch}/audio.{ext}"

    @property
    def failed_key(self) -> str:
        """Marker a task writes when it failed for good, so the concat task stops waiting."""
        return f"{self.scratch}/failed.json"

    # --- environment ----------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """The container env overrides (strings only; the chunk plan is compact JSON)."""
        env = {
            ENV_JOB_ID: self.job_id,
            ENV_SOURCE: self.source_key,
            ENV_OUTPUT: self.output_key,
            ENV_PRESET: json.dumps(self.preset, separators=(",", ":"), sort_keys=True),
            ENV_CHUNKS: json.dumps([[c.start, c.end, c.frames] for c in self.chunks], separators=(",", ":")),
            ENV_CALLBACK: self.callback_url,
            ENV_PREFIX: self.work_prefix,
            ENV_RETRIES: str(self.max_retries),
            ENV_POLL: str(self.poll_seconds),
            ENV_WAIT: str(self.wait_timeout),
            ENV_VIDEO_START: repr(self.video_start),
            **self.media,
        }
        if self.trim_start is not None or self.trim_end is not None:
            env[ENV_TRIM] = json.dumps([self.trim_start, self.trim_end])
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TaskSpec:
        """Read the spec a task was started with; ConfigError naming the variable when one is missing or bad."""
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name)
            if not value:
                raise ConfigError(f"{name} is not set: this process must be started by the gcp executor")
            return value

        try:
            preset = json.loads(need(ENV_PRESET))
            raw_chunks = json.loads(env.get(ENV_CHUNKS) or "[]")
            chunks = tuple(
                Chunk(index=i, start=float(c[0]), end=float(c[1]), frames=int(c[2]) if len(c) > 2 else 0)
                for i, c in enumerate(raw_chunks)
            )
            trim = json.loads(env[ENV_TRIM]) if env.get(ENV_TRIM) else [None, None]
            retries = int(env.get(ENV_RETRIES) or 3)
            poll = float(env.get(ENV_POLL) or 1.0)
            wait = float(env.get(ENV_WAIT) or 6 * 3600.0)
            video_start = float(env.get(ENV_VIDEO_START) or 0.0)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ConfigError(f"bad gcp task environment: {exc}") from None
        if not isinstance(preset, dict):
            raise ConfigError(f"{ENV_PRESET} must be a JSON object")
        return cls(
            job_id=need(ENV_JOB_ID),
            source_key=safe_key(need(ENV_SOURCE)),
            output_key=safe_key(need(ENV_OUTPUT)),
            preset=preset,
            callback_url=need(ENV_CALLBACK),
            chunks=chunks,
            video_start=video_start,
            trim_start=trim[0],
            trim_end=trim[1],
            work_prefix=safe_key(env.get(ENV_PREFIX) or "_mpr/gcp"),
            max_retries=retries,
            poll_seconds=poll,
            wait_timeout=wait,
        )
