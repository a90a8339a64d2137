"""The job state machine. Job status changes only through :func:`transition`.

Each transition is one conditional UPDATE (``WHERE status IN (allowed)``),
so two workers, a late callback and a cancel can race without corrupting a
job: exactly one of them wins, the others get InvalidTransition.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from mpr import events
from mpr.errors import InvalidTransition, NotFound, ValidationError
from mpr.models import FINAL_STATUSES, JobStatus, TranscodeJob

# target status -> statuses it may be entered from
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.FAILED, JobStatus.CANCELLED}),  # retry
    JobStatus.PROCESSING: frozenset({JobStatus.PENDING}),
    JobStatus.COMPLETED: frozenset({JobStatus.PROCESSING}),
    JobStatus.FAILED: frozenset({JobStatus.PENDING, JobStatus.PROCESSING}),
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING, JobStatus.PROCESSING}),
}

__all__ = ["FINAL_STATUSES", "TRANSITIONS", "JobStatus", "get_job", "now", "parse_job_id", "transition"]


def now() -> dt.datetime:
    """Timezone-aware UTC now (what every timestamp column stores)."""
    return dt.datetime.now(dt.UTC)


def parse_job_id(job_id: str | uuid.UUID) -> uuid.UUID:
    """``job_id`` as a UUID, or ValidationError with a clear message."""
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise ValidationError(f"{job_id!r} is not a valid job id (expected a UUID)") from None


async def get_job(job_id: str | uuid.UUID) -> TranscodeJob:
    """The job with ``job_id``, or NotFound."""
    job = await TranscodeJob.get_or_none(id=parse_job_id(job_id))
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


async def transition(
    job_id: str | uuid.UUID,
    to: JobStatus | str,
    *,
    allowed_from: frozenset[JobStatus] | None = None,
    expect: dict[str, Any] | None = None,
    message: str = "",
    **fields: Any,
) -> TranscodeJob:
    """Move a job to status ``to`` atomically, set ``fields``, emit a status JobEvent, return the job.

    ``allowed_from`` narrows the statuses the move is legal from (default
    ``TRANSITIONS[to]``); ``expect`` adds equality conditions (a worker
    finishing its run passes ``{"worker": ..., "attempts": ...}`` so a stalled
    worker cannot finish a run that was reaped and retried elsewhere). Raises NotFound for an unknown job and
    InvalidTransition, naming the current status, when the job is not in an
    allowed status (another actor won the race, or the move is illegal).
    Timestamps: PROCESSING sets ``started_at``; final statuses set ``finished_at``.
    """
    to = JobStatus(to)
    jid = parse_job_id(job_id)
    allowed = TRANSITIONS[to] if allowed_from is None else allowed_from & TRANSITIONS[to]
    values: dict[str, Any] = {"status": to, "updated_at": now(), **fields}
    if to is JobStatus.PROCESSING:
        values.setdefault("started_at", now())
        values.setdefault("heartbeat_at", now())
    if to in FINAL_STATUSES:
        values.setdefault("finished_at", now())
    if to is JobStatus.PENDING:
        values.setdefault("finished_at", None)
        values.setdefault("error", None)
    updated = await TranscodeJob.filter(id=jid, status__in=list(allowed), **(expect or {})).update(**values)
    if not updated:
        current = await TranscodeJob.get_or_none(id=jid).values_list("status", flat=True)
        if current is None:
            raise NotFound(f"job {jid} does not exist")
        if expect and JobStatus(current) in allowed:
            raise InvalidTransition(f"job {jid} is now run by another worker; this run cannot make it {to.value}")
        raise InvalidTransition(f"job {jid} is {JobStatus(current).value}; it cannot become {to.value}")
    job = await TranscodeJob.get(id=jid)
    await events.emit(
        events.JobEvent(
            job_id=str(jid),
            type=events.STATUS,
            status=to.value,
            progress=job.progress,
            message=message or (job.error or "" if to is JobStatus.FAILED else ""),
        )
    )
    return job


async def update_progress(
    job_id: str | uuid.UUID, progress: float, speed: float | None = None, eta: float | None = None, fps: float = 0.0
) -> bool:
    """Record progress (and the heartbeat) of a PROCESSING job and emit a progress event.

    Returns False (and emits nothing) when the job is no longer PROCESSING,
    which is how a running worker learns it was cancelled.
    """
    jid = parse_job_id(job_id)
    progress = max(0.0, min(100.0, progress))
    updated = await TranscodeJob.filter(id=jid, status=JobStatus.PROCESSING).update(
        progress=progress, speed=speed, eta=eta, heartbeat_at=now()
    )
    if updated:
        await events.emit(
            events.JobEvent(
                job_id=str(jid),
                type=events.PROGRESS,
                status=JobStatus.PROCESSING.value,
                progress=progress,
                speed=speed or 0.0,
                eta=eta or 0.0,
                fps=fps,
            )
        )
    return bool(updated)
