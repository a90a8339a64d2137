"""Catch Cloud Run executions that ended without calling back: ``mpr gcp-poll``.

A task killed by an OOM, a timeout or a lost network never sends its
callback; the job would stay PROCESSING. :func:`poll_processing` asks Cloud
Run about every PROCESSING gcp job (``GcpExecutor.poll``) and fails or
cancels the ones whose execution is over. Run it from cron, or with
``--every`` as a small sidecar.
"""

from __future__ import annotations

import logging

from mpr.errors import MprError
from mpr.models import JobStatus, TranscodeJob

log = logging.getLogger(__name__)


async def poll_processing(executor=None) -> dict[str, str]:
    """Poll every PROCESSING gcp job with an execution; return ``{job id: execution state}``."""
    from mpr.executors import get_executor

    executor = executor or get_executor("gcp")
    states: dict[str, str] = {}
    running = await TranscodeJob.filter(status=JobStatus.PROCESSING, executor="gcp", external_id__isnull=False)
    for job in running:
        try:
            state = await executor.poll(job)
        except MprError as exc:
            log.warning("job %s: %s", job.id, exc)
            states[str(job.id)] = f"error: {exc}"
            continue
        states[str(job.id)] = state.value if state else "unknown"
    return states
