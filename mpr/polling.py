"""The poll loop: finish remote jobs whose executor learns their fate only by asking.

A remote run that dies without calling back (a Step Functions execution that
timed out or was stopped, a third-party executor that has no callbacks at
all) would leave its job PROCESSING for ever. ``mpr serve`` therefore runs
:func:`poll_loop`: every ``MPR_POLL_INTERVAL`` seconds (default 30, ``0``
turns it off) :func:`poll_once` calls ``await executor.poll(job)`` for each
PROCESSING job, and each PENDING job that already has an external id, of
every executor that implements ``poll``.

``poll`` may return a :class:`~mpr.executors.PollResult`, which is applied
here exactly as a callback with the same body would be (``completed`` probes
the output, ``failed`` stores the error, both through
:func:`mpr.jobs.transition`); ``cancelled`` cancels the job. Anything else it
returns (a status string, None) is only reported, for executors that moved
the job themselves. A job already in a final state is never touched, and a
callback that arrives while a poll is in flight wins: every move is a
conditional UPDATE. Jobs an executor follows itself (``watching(job)`` true,
e.g. the gcp executor's per-job watcher) are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tortoise.expressions import Q

from mpr.errors import InvalidTransition, MprError
from mpr.executors import PollResult, get_executor
from mpr.models import FINAL_STATUSES, JobStatus, TranscodeJob

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["POLL_TIMEOUT", "apply_result", "poll_loop", "poll_once", "pollable_executors"]

POLL_TIMEOUT = 60.0
"""Seconds one ``poll(job)`` may take; one that hangs longer counts as a failed poll of that job."""
POLL_BATCH = 8
"""Jobs polled at once (their results are applied one after the other)."""

_failing: dict[str, str] = {}  # job id -> the error its last poll ended with (logged once, not every pass)


def pollable_executors() -> list[str]:
    """Names of the registered executors whose class implements ``poll``."""
    from mpr.plugins import load_plugins

    return sorted(name for name, cls in load_plugins().executors.items() if callable(getattr(cls, "poll", None)))


async def apply_result(job_id: Any, result: PollResult, settings: Settings | None = None) -> bool:
    """Apply ``result`` to the job like a callback would; True when the job changed.

    ``running`` changes nothing. A job that is final (or becomes final
    meanwhile: a callback or a cancel won the race) is left as it is.
    """
    from mpr import jobs
    from mpr.settings import get_settings

    if result.status == "running":
        return False
    job = await TranscodeJob.get_or_none(id=job_id)
    if job is None or job.status in FINAL_STATUSES:
        return False
    try:
        if result.status == "cancelled":
            await jobs.transition(job.id, JobStatus.CANCELLED, message=result.error or "cancelled by the executor")
        else:
            from mpr.api.callback import apply_report  # one home for what a completed/failed report does

            body = {"status": result.status, "output_key": result.output_key, "error": result.error}
            if result.metrics is not None:
                body["metrics"] = result.metrics
            await apply_report(job, body, settings or get_settings())
    except InvalidTransition:
        return False  # a callback or a cancel got there first: the final state stands
    return True


async def poll_once(
    executors: Iterable[str] | None = None, settings: Settings | None = None, *, timeout: float = POLL_TIMEOUT
) -> dict[str, str]:
    """One pass over the unfinished jobs of ``executors`` (default: every one with ``poll``); ``{job id: state}``.

    The state is what ``poll`` said (a PollResult's ``state``, else its value),
    ``"watched"`` for a job its executor follows itself, or ``"error: ..."``
    when polling it failed, raised anything or took longer than ``timeout``
    seconds (the job is left alone and polled again next pass; the error is
    logged once, not on every pass). Jobs are polled :data:`POLL_BATCH` at a time.
    """
    names = pollable_executors() if executors is None else list(executors)
    states: dict[str, str] = {}
    if not names:
        return states
    unfinished = Q(status=JobStatus.PROCESSING) | Q(status=JobStatus.PENDING, external_id__isnull=False)
    rows = await TranscodeJob.filter(unfinished, executor__in=names).order_by("created_at")

    async def ask(job: TranscodeJob) -> Any:
        executor = get_executor(job.executor, settings)
        watching = getattr(executor, "watching", None)
        if watching is not None and watching(job):
            return "watched"
        try:
            return await asyncio.wait_for(executor.poll(job), timeout)
        except TimeoutError:
            raise MprError(f"the executor did not answer within {timeout:g}s") from None

    for first in range(0, len(rows), POLL_BATCH):
        batch = rows[first : first + POLL_BATCH]
        answers = await asyncio.gather(*(ask(job) for job in batch), return_exceptions=True)
        for job, result in zip(batch, answers, strict=True):
            key = str(job.id)
            try:
                if isinstance(result, BaseException):
                    raise result  # an Exception is caught below; a CancelledError goes on
                if isinstance(result, PollResult):
                    await apply_result(job.id, result, settings)
                    states[key] = result.state or result.status
                else:
                    states[key] = getattr(result, "value", None) or str(result or "unknown")
                if _failing.pop(key, None) is not None:
                    log.info("job %s: polling %s works again", job.id, job.executor)
            except Exception as exc:
                text = str(exc) if isinstance(exc, MprError) else f"{type(exc).__name__}: {exc}"
                if _failing.get(key) != text:
                    log.warning("job %s: polling %s failed: %s", job.id, job.executor, text)
                _failing[key] = text
                states[key] = f"error: {text}"
    for key in set(_failing) - {str(job.id) for job in rows}:
        del _failing[key]  # finished (or deleted) meanwhile
    return states


async def poll_loop(interval: float, settings: Settings | None = None) -> None:
    """Run :func:`poll_once` every ``interval`` seconds until cancelled (first pass after one interval).

    A failing pass (database unreachable, a bug in an executor) is logged and the loop goes on.
    """
    names = pollable_executors()
    if not names:
        return
    log.info("polling jobs of executor(s) %s every %gs (MPR_POLL_INTERVAL)", ", ".join(names), interval)
    failing = 0  # passes failed in a row: the first is logged with its traceback, the others at debug level
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await poll_once(names, settings)
        except Exception as exc:
            failing += 1
            if failing == 1:
                log.exception("poll pass failed; trying again every %gs", interval)
            else:
                log.debug("poll pass failed again (%d in a row): %s", failing, exc)
            continue
        if failing:
            log.info("poll pass works again after %d failed pass(es)", failing)
            failing = 0
        if changed:
            log.debug("polled: %s", changed)
