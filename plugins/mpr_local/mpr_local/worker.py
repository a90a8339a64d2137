"""Local workers: a huey consumer running jobs in threads, a heartbeat and a reaper.

One worker process (``mpr worker``, or the one ``mpr serve`` embeds) runs
``MPR_WORKERS`` jobs at a time, each in a consumer thread that calls
``mpr.execute.run_job``. Beside them:

- the **heartbeat** thread (one per process) stamps ``heartbeat_at`` of every
  job this process runs, every ``MPR_LOCAL_HEARTBEAT_INTERVAL`` seconds
  (0.5), and notices when a job left PROCESSING under it (cancelled by a
  user, given up by a reaper): it sets the job's cancel event, which makes
  ``run_job`` kill the ffmpeg process group and remove partial output;
- the **reaper** thread (one per worker) marks PROCESSING local jobs whose
  heartbeat is older than ``MPR_HEARTBEAT_TIMEOUT`` as FAILED "worker lost".
  Every worker runs one, so a crashed worker is cleaned up by any survivor
  (or by itself when it restarts). The job is not re-queued automatically:
  a job that killed its worker (out of memory, a crashing decoder) would
  kill the next one too; ``mpr retry ID`` runs it again. Each pass also
  kills this machine's ffmpeg process groups whose worker process is gone
  (``mpr.ffmpeg.kill_orphans``): the kernel's parent-death signal already
  stops an ffmpeg whose worker was SIGKILLed, but not what runs under a
  wrapper script configured as ``MPR_FFMPEG``.

Job status changes only through ``mpr.jobs.transition`` (which emits the
events); the heartbeat writes nothing but ``heartbeat_at``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from huey.consumer import Consumer

from mpr_local.queue import JobQueue, get_queue
from mpr_local.settings import LocalSettings

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger("mpr_local.worker")

EXECUTOR_NAME = "local"
HOST = socket.gethostname()
STOPPED_MESSAGE = "worker stopped while the job was running; retry the job to run it again"


@dataclass
class Running:
    """A job this process is running right now."""

    job_id: str
    worker: str
    queue: str
    cancel: threading.Event = field(default_factory=threading.Event)
    next_beat: float = 0.0


_running: dict[str, Running] = {}
_running_lock = threading.Lock()
_heartbeat: Heartbeat | None = None


def worker_id() -> str:
    """This thread's worker identity, stored on the job: ``host:pid:thread``."""
    return f"{HOST}:{os.getpid()}:{threading.current_thread().name}"[:128]


def running_jobs() -> dict[str, Running]:
    """A snapshot of the jobs this process is running."""
    with _running_lock:
        return dict(_running)


def cancel_local(job_id: str) -> bool:
    """Set the cancel event of ``job_id`` if this process runs it (a fast path; the heartbeat also does it)."""
    with _running_lock:
        entry = _running.get(str(job_id))
    if entry is None:
        return False
    entry.cancel.set()
    return True


def execute_task(queue: JobQueue, job_id: str) -> None:
    """Body of the huey task: run one job with a cancel event watched by the heartbeat.

    A job that is no longer PENDING (cancelled while queued, or already run
    by a duplicate task) is refused by the state machine inside the runner;
    that refusal is logged, not raised, so huey does not retry it.
    """
    from mpr.errors import MprError

    job_id = str(job_id)
    entry = Running(job_id=job_id, worker=worker_id(), queue=queue.name)
    hb = _ensure_heartbeat()
    entry.next_beat = time.monotonic() + hb.interval
    with _running_lock:
        if job_id in _running:
            log.info("job %s is already running in this process; duplicate task ignored", job_id)
            return
        _running[job_id] = entry
    try:
        queue.runner()(job_id, cancel=entry.cancel, worker=entry.worker)
    except MprError as exc:
        log.info("job %s not run: %s", job_id, exc)
    except Exception:
        log.exception("job %s: unexpected error in the runner", job_id)
    finally:
        with _running_lock:
            _running.pop(job_id, None)


# -- heartbeat ---------------------------------------------------------------


async def beat(job_id: str, worker: str) -> bool:
    """Stamp the heartbeat of a job ``worker`` runs; False when the worker must stop it.

    Stop when the job was deleted, left PROCESSING for CANCELLED or FAILED
    (user cancel, reaper), or is now PROCESSING under another worker (it was
    reaped and retried elsewhere while this worker was stalled).
    """
    from tortoise.expressions import Q

    from mpr.jobs import now
    from mpr.models import JobStatus, TranscodeJob

    updated = await TranscodeJob.filter(
        Q(worker=worker) | Q(worker__isnull=True) | Q(worker=""), id=job_id, status=JobStatus.PROCESSING
    ).update(heartbeat_at=now())
    if updated:
        return True
    row = await TranscodeJob.filter(id=job_id).values("status", "worker")
    if not row:
        return False
    status = JobStatus(row[0]["status"])
    if status in (JobStatus.CANCELLED, JobStatus.FAILED):
        return False
    return not (status is JobStatus.PROCESSING and row[0]["worker"] not in (None, "", worker))


class Heartbeat:
    """One thread per process beating for every running job (see :func:`beat`)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mpr-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        from mpr.db import run_sync

        while not self._stop.wait(self.interval / 5):
            now = time.monotonic()
            for entry in running_jobs().values():
                if entry.next_beat > now or entry.cancel.is_set():
                    continue
                entry.next_beat = now + self.interval
                try:
                    keep = run_sync(beat(entry.job_id, entry.worker), timeout=max(5.0, self.interval * 4))
                except Exception as exc:  # noqa: BLE001 - database unreachable: keep running, the reaper decides later
                    log.warning("heartbeat of job %s failed: %s", entry.job_id, exc)
                    continue
                if not keep:
                    log.info("job %s left PROCESSING under worker %s; stopping it", entry.job_id, entry.worker)
                    entry.cancel.set()


def _ensure_heartbeat() -> Heartbeat:
    global _heartbeat
    with _running_lock:
        if _heartbeat is None:
            _heartbeat = Heartbeat(LocalSettings.from_env().heartbeat_interval).start()
        return _heartbeat


def fail_running(queue_name: str, reason: str = STOPPED_MESSAGE) -> list[str]:
    """Mark the jobs this process runs from ``queue_name`` FAILED with ``reason`` and stop their ffmpeg.

    Used when a worker is stopped without waiting for its jobs: the job ends
    FAILED (retryable) instead of being left PROCESSING for the reaper.
    """
    from mpr.db import run_sync
    from mpr.errors import MprError
    from mpr.jobs import transition
    from mpr.models import JobStatus

    failed = []
    for entry in running_jobs().values():
        if entry.queue != queue_name:
            continue
        try:
            run_sync(
                transition(
                    entry.job_id, JobStatus.FAILED, allowed_from=frozenset({JobStatus.PROCESSING}), error=reason
                ),
                timeout=10,
            )
            failed.append(entry.job_id)
        except MprError:
            pass  # not PROCESSING (yet or any more): the cancel event alone stops it
        except Exception as exc:  # noqa: BLE001 - still stop its ffmpeg below
            log.warning("could not mark job %s failed: %s", entry.job_id, exc)
        entry.cancel.set()
    return failed


# -- reaper ------------------------------------------------------------------


async def reap(settings: Settings) -> list[str]:
    """Mark local PROCESSING jobs with a heartbeat older than the timeout FAILED "worker lost".

    Returns the ids of the jobs it failed. Any output (or partial temp file)
    the lost worker left at the job's output path is removed: the path
    belongs to the job, and a retry writes it again.
    """
    from tortoise.expressions import Q

    from mpr.errors import MprError
    from mpr.jobs import now, transition
    from mpr.models import JobStatus, TranscodeJob

    timeout = settings.heartbeat_timeout
    cutoff = now() - dt.timedelta(seconds=timeout)
    stale = await TranscodeJob.filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff),
        status=JobStatus.PROCESSING,
        executor=EXECUTOR_NAME,
    ).values("id", "worker", "output_path")
    reaped = []
    for row in stale:
        who = row["worker"] or "its worker"
        error = f"worker lost: no heartbeat from {who} for {timeout:g} s; retry the job to run it again"
        try:
            await transition(row["id"], JobStatus.FAILED, allowed_from=frozenset({JobStatus.PROCESSING}), error=error)
        except MprError:
            continue  # it finished or was cancelled meanwhile
        reaped.append(str(row["id"]))
        log.warning("job %s: %s", row["id"], error)
        await _remove_output(row["id"], row["output_path"])
    return reaped


async def _remove_output(job_id: uuid.UUID, key: str) -> None:
    import asyncio

    from mpr.local_storage import TMP_PREFIX
    from mpr.storage import media_out

    if not key:
        return
    try:
        storage = media_out()
        if await asyncio.to_thread(storage.exists, key):
            await asyncio.to_thread(storage.delete, key)
        final = storage.local_path(key)
        if final is not None:
            # the runner's hidden temp file beside the output (see mpr.execute); remote temp files
            # live on the lost worker's own disk
            (final.parent / f"{TMP_PREFIX}{job_id.hex}{final.suffix}").unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - cleanup is best effort; the job is failed already
        log.warning("could not remove partial output %s: %s", key, exc)


async def requeue_lost(settings: Settings, queue: JobQueue) -> list[str]:
    """Enqueue again local PENDING jobs waiting longer than the heartbeat timeout with no task in the queue.

    huey removes a task from the queue when a worker takes it; a worker
    killed between taking it and marking the job PROCESSING (milliseconds)
    loses it. A duplicate task is harmless: the state machine lets only one
    run start.
    """
    import asyncio

    from mpr.jobs import now
    from mpr.models import JobStatus, TranscodeJob

    cutoff = now() - dt.timedelta(seconds=settings.heartbeat_timeout)
    waiting = await TranscodeJob.filter(status=JobStatus.PENDING, executor=EXECUTOR_NAME, updated_at__lt=cutoff).values(
        "id", "priority"
    )
    if not waiting:
        return []
    queued = await asyncio.to_thread(queue.queued_job_ids)
    requeued = []
    for row in waiting:
        job_id = str(row["id"])
        if job_id not in queued:
            await asyncio.to_thread(queue.enqueue, job_id, row["priority"])
            requeued.append(job_id)
            log.warning("job %s was pending with no queued task (a worker died taking it); queued again", job_id)
    return requeued


class Reaper:
    """Runs :func:`reap` and :func:`requeue_lost` at start and then every ``interval`` seconds in a thread."""

    def __init__(self, settings: Settings, interval: float, queue: JobQueue | None = None) -> None:
        self.settings = settings
        self.interval = interval
        self.queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mpr-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> list[str]:
        """One reaper pass (from a plain thread); returns the ids of the jobs failed or queued again."""
        from mpr.db import run_sync
        from mpr.ffmpeg import kill_orphans

        try:
            kill_orphans()
        except Exception as exc:  # noqa: BLE001 - /proc unreadable: the jobs are still reaped below
            log.warning("could not look for orphaned ffmpeg processes: %s", exc)
        changed = run_sync(reap(self.settings), timeout=60)
        if self.queue is not None:
            changed += run_sync(requeue_lost(self.settings, self.queue), timeout=60)
        return changed

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a reaper must outlive a database hiccup
                log.warning("reaper pass failed: %s", exc)
            if self._stop.wait(self.interval):
                return


# -- consumer ----------------------------------------------------------------


class WorkerConsumer(Consumer):
    """huey's consumer with thread workers, usable outside the main thread.

    When it stops without waiting for its jobs (second Ctrl-C, SIGTERM, or a
    graceful-stop timeout), the jobs still running are marked FAILED and
    their ffmpeg killed, instead of dying silently with the process.
    """

    def __init__(self, queue: JobQueue, settings: Settings, local: LocalSettings) -> None:
        super().__init__(
            queue.huey,
            workers=settings.workers,
            periodic=False,
            initial_delay=local.poll_interval,
            backoff=1.15,
            max_delay=local.max_poll_interval,
            worker_type="thread",
        )
        self.queue = queue

    def _set_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._set_signal_handlers()

    def _interrupt_workers(self) -> None:
        failed = fail_running(self.queue.name)
        if failed:
            log.warning("stopped with %d running job(s), marked failed: %s", len(failed), ", ".join(failed))
        super()._interrupt_workers()
        # Let the runners kill ffmpeg and remove partial output before the process exits.
        deadline = time.monotonic() + 5
        for _, thread in self.worker_threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class WorkerHandle:
    """A running local worker (consumer threads + reaper); ``stop()`` ends it."""

    def __init__(self, settings: Settings, queue: JobQueue | None = None, local: LocalSettings | None = None) -> None:
        local = local or LocalSettings.from_env()
        self.settings = settings
        self.queue = queue or get_queue(settings, local)
        self.consumer = WorkerConsumer(self.queue, settings, local)
        self.reaper = Reaper(settings, local.reaper_every(settings.heartbeat_timeout), self.queue)

    def describe(self) -> str:
        """One line for the start-up log."""
        where = "Redis" if self.queue.kind == "redis" else f"SQLite {self.settings.var_path / 'queue.db'}"
        return (
            f"local worker {HOST}:{os.getpid()}: {self.settings.workers} concurrent job(s), "
            f"queue {self.queue.name!r} on {where}, heartbeat timeout {self.settings.heartbeat_timeout:g} s"
        )

    def start(self) -> WorkerHandle:
        """Start consumer threads and the reaper; return self."""
        log.info("%s", self.describe())
        self.consumer.start()
        self.reaper.start()
        return self

    def run(self) -> None:
        """Run in the foreground until SIGINT (finish running jobs) or SIGTERM (fail them now)."""
        log.info("%s", self.describe())
        self.reaper.start()
        try:
            self.consumer.run()
        finally:
            self.reaper.stop()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` s (None: forever) for running ones, then fail them."""
        self.reaper.stop()
        self.consumer.shutdown_timeout = timeout
        self.consumer.stop(graceful=True)


def start_embedded_worker(settings: Settings) -> WorkerHandle:
    """Start a worker inside this process (``mpr serve``); the DB portal must already be set."""
    return WorkerHandle(settings).start()


async def _check_database() -> None:
    from mpr.models import TranscodeJob

    await TranscodeJob.all().limit(1).values_list("id", flat=True)


def run_worker(settings: Settings) -> None:
    """``mpr worker``: open the database, load plugins (event sinks), run a worker in the foreground."""
    from mpr.db import close_portal, get_portal
    from mpr.errors import ConfigError
    from mpr.plugins import load_plugins

    load_plugins(settings)
    try:
        get_portal(settings).call(_check_database(), timeout=30)
    except Exception as exc:
        url = settings.database_url.split("@")[-1]  # no credentials in the message
        raise ConfigError(
            f"cannot use the database {url} (MPR_DATABASE_URL): {exc}; is it running and migrated (mpr migrate)?"
        ) from exc
    try:
        WorkerHandle(settings).run()
    finally:
        close_portal()
