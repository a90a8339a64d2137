"""The ``local`` executor: jobs go onto a huey queue and run in ``mpr worker`` processes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mpr.errors import ExecutorError
from mpr_local.queue import JobQueue, get_queue
from mpr_local.worker import cancel_local

if TYPE_CHECKING:
    from mpr.models import TranscodeJob
    from mpr.settings import Settings


class LocalExecutor:
    """Enqueues ``run_job(job_id)`` with the job's priority; workers do the rest.

    Cancel needs no message to the worker: a PENDING job is refused by the
    state machine when its task is dequeued, and the worker running a
    PROCESSING job sees the status change on its next heartbeat (at most
    ``MPR_LOCAL_HEARTBEAT_INTERVAL`` later) and kills ffmpeg.
    """

    name = "local"
    chunked_trim = True  # its workers run the local chunker, which plans and encodes only the trim

    def __init__(self, settings: Settings, queue: JobQueue | None = None) -> None:
        self.settings = settings
        self._queue = queue

    @property
    def queue(self) -> JobQueue:
        """The huey queue (built on first use, so constructing the executor touches no storage)."""
        if self._queue is None:
            self._queue = get_queue(self.settings)
        return self._queue

    async def submit(self, job: TranscodeJob) -> str | None:
        """Enqueue the job; return the huey task id. Raises ExecutorError when the queue is unreachable."""
        try:
            return await asyncio.to_thread(self.queue.enqueue, str(job.id), int(job.priority or 0))
        except Exception as exc:
            where = "Redis at MPR_REDIS_URL" if self.settings.redis_url else "the SQLite queue in MPR_VAR_DIR"
            raise ExecutorError(f"could not queue job {job.id}: {where} is not usable ({exc})") from exc

    async def cancel(self, job: TranscodeJob) -> None:
        """Stop the job at once if this process runs it; other workers notice on their heartbeat."""
        cancel_local(str(job.id))
