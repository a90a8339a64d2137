"""Running one job in this process: the code every local worker (and ``mpr transcode``) runs.

``run_job(job_id)`` moves the job PENDING → PROCESSING, runs ffmpeg (or the
chunker for chunked jobs) on a local copy of the source, stores the output in
MEDIA_OUT, probes it, and finishes COMPLETED, FAILED (with ffmpeg's stderr
tail) or CANCELLED (partial output removed). It is synchronous and talks to
the database through :func:`mpr.db.run_sync`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from mpr import ffmpeg, jobs
from mpr.db import run_sync
from mpr.errors import FFmpegError, InvalidTransition, MprError, NotFound, ProbeError
from mpr.local_storage import TMP_PREFIX
from mpr.models import JobStatus, MediaAsset, TranscodeJob
from mpr.presets import Preset
from mpr.probe import probe
from mpr.settings import get_settings
from mpr.storage import Storage, media_in, media_out

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes (and events) per job
WATCH_INTERVAL = 0.5  # how often the watcher checks for a cancel when no progress arrives
MAX_ERROR = 4000  # characters of ffmpeg output kept in job.error


def default_worker_name() -> str:
    """``host:pid`` of this process, recorded on the job it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def _heartbeat(job_id: uuid.UUID, run: dict[str, object]) -> bool:
    """Refresh the heartbeat of this run of a PROCESSING job; False when it is no longer PROCESSING
    (cancelled) or no longer this run (reaped as lost and retried by another worker)."""
    updated = await TranscodeJob.filter(id=job_id, status=JobStatus.PROCESSING, **run).update(heartbeat_at=jobs.now())
    return bool(updated)


async def _asset_duration(asset_id: uuid.UUID | None) -> float | None:
    if asset_id is None:
        return None
    asset = await MediaAsset.get_or_none(id=asset_id)
    return asset.duration if asset is not None else None


class _Watcher(threading.Thread):
    """Refreshes the heartbeat and notices a cancel while ffmpeg reports no progress."""

    def __init__(self, job_id: uuid.UUID, cancel: threading.Event, run: dict[str, object]) -> None:
        super().__init__(name=f"mpr-watch-{str(job_id)[:8]}", daemon=True)
        self.job_id = job_id
        self.run_key = run
        self.cancel = cancel
        self.done = threading.Event()
        self.last_update = time.monotonic()

    def touch(self) -> None:
        self.last_update = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(WATCH_INTERVAL):
            if self.cancel.is_set():
                return
            if time.monotonic() - self.last_update < WATCH_INTERVAL:
                continue
            try:
                alive = run_sync(_heartbeat(self.job_id, self.run_key), timeout=10)
            except Exception:  # a DB hiccup must not kill the job; try again next tick
                log.debug("heartbeat of job %s failed", self.job_id, exc_info=True)
                continue
            self.touch()
            if not alive:
                self.cancel.set()
                return


@contextlib.contextmanager
def _output_target(storage: Storage, key: str, job_id: uuid.UUID) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A local path for ffmpeg to write and a ``finish()`` that publishes it as ``key`` atomically.

    Local MEDIA_OUT: a hidden temp file beside the final one, hard-linked into
    place (never overwriting a file that appeared meanwhile). Remote: a temp
    file uploaded with ``storage.put``. The temp file is always removed.
    """
    ext = Path(key).suffix
    final = storage.local_path(key)
    if final is not None:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{job_id.hex}{ext}"

        def finish() -> None:
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise MprError(f"output {key} appeared in MEDIA_OUT while the job ran; not overwriting it") from None
            except OSError:
                if final.exists():
                    raise MprError(f"output {key} already exists in MEDIA_OUT; not overwriting it") from None
                os.replace(tmp, final)

        try:
            yield tmp, finish
        finally:
            tmp.unlink(missing_ok=True)
        return
    tmp_dir = get_settings().var_path / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="job-", dir=tmp_dir) as d:
        tmp = Path(d) / f"output{ext}"

        def finish() -> None:
            if storage.exists(key):
                raise MprError(f"output {key} already exists in MEDIA_OUT; not overwriting it")
            storage.put(key, tmp)

        yield tmp, finish


def _error_text(exc: FFmpegError) -> str:
    text = str(exc)
    tail = (exc.stderr_tail or "").strip()
    if tail and tail not in text:
        text = f"{text}\n\n{tail}"
    return text[-MAX_ERROR:]


def _finish(job_id: uuid.UUID, to: JobStatus, run: dict[str, object], **fields: object) -> None:
    try:
        run_sync(jobs.transition(job_id, to, allowed_from=frozenset({JobStatus.PROCESSING}), expect=run, **fields))
    except InvalidTransition as exc:
        log.info("job %s not moved to %s: %s", job_id, to.value, exc)


def run_job(job_id: str | uuid.UUID, *, cancel: threading.Event | None = None, worker: str = "") -> None:
    """Run job ``job_id`` to the end in this process (see module doc). Never raises for a job failure.

    ``cancel`` (set by a worker shutting down, or Ctrl-C in ``mpr transcode``)
    stops ffmpeg within 2 s; the job also stops when it is cancelled in the
    database. A job that is not PENDING is left alone.
    """
    cancel = cancel or threading.Event()
    jid = jobs.parse_job_id(job_id)
    try:
        job = run_sync(jobs.get_job(jid))
    except NotFound:
        log.warning("job %s does not exist; nothing to run", jid)
        return
    if job.status is not JobStatus.PENDING:
        log.info("job %s is %s, not pending; not running it", jid, job.status.value)
        return
    try:
        job = run_sync(
            jobs.transition(
                jid,
                JobStatus.PROCESSING,
                allowed_from=frozenset({JobStatus.PENDING}),
                worker=worker or default_worker_name(),
                attempts=job.attempts + 1,
                progress=0.0,
            )
        )
    except InvalidTransition as exc:
        log.info("job %s was taken or cancelled before it started: %s", jid, exc)
        return

    run = {"worker": job.worker, "attempts": job.attempts}  # this run, as opposed to a later retry
    watcher = _Watcher(jid, cancel, run)
    watcher.start()
    try:
        _run(job, cancel, watcher)
    except ffmpeg.Cancelled:
        _finish(jid, JobStatus.CANCELLED, run, message="cancelled while running")
    except FFmpegError as exc:
        if cancel.is_set():
            _finish(jid, JobStatus.CANCELLED, run, message="cancelled while running")
        else:
            _finish(jid, JobStatus.FAILED, run, error=_error_text(exc))
    except MprError as exc:
        _finish(jid, JobStatus.FAILED, run, error=str(exc))
    except Exception as exc:
        log.exception("job %s failed with an internal error", jid)
        _finish(jid, JobStatus.FAILED, run, error=f"internal error: {type(exc).__name__}: {exc}")
    finally:
        watcher.done.set()
        watcher.join(timeout=2)


def _source_duration(job: TranscodeJob, src: Path) -> float | None:
    duration = run_sync(_asset_duration(job.source_asset_id))  # type: ignore[attr-defined]
    if duration is None:
        try:
            duration = probe(src).duration
        except ProbeError:
            duration = None
    return duration


def _run(job: TranscodeJob, cancel: threading.Event, watcher: _Watcher) -> None:
    settings = get_settings()
    preset = Preset.from_dict(job.preset_snapshot)
    in_store, out_store = media_in(settings), media_out(settings)
    last = [0.0]

    def on_progress(p: ffmpeg.Progress) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL and p.percent < 100:
            return
        last[0] = now
        watcher.touch()
        alive = run_sync(jobs.update_progress(job.id, p.percent, p.speed, p.eta, p.fps), timeout=30)
        if not alive:
            cancel.set()

    with contextlib.ExitStack() as stack:
        try:
            src = Path(stack.enter_context(in_store.local_copy(job.source_path)))
        except NotFound:
            raise MprError(f"the source file {job.source_path} no longer exists in MEDIA_IN") from None
        tmp, publish = stack.enter_context(_output_target(out_store, job.output_path, job.id))
        if job.chunked:
            from mpr.chunker.pipeline import run_chunked  # the chunker is optional until a chunked job runs

            run_chunked(
                str(job.id),
                src,
                tmp,
                preset,
                chunk_seconds=job.chunk_seconds or settings.chunk_seconds,
                workers=job.chunk_workers or settings.chunk_workers,
                cancel=cancel,
                trim_start=job.trim_start,
                trim_end=job.trim_end,
            )
        else:
            full = _source_duration(job, src)
            end = job.trim_end if job.trim_end is not None else full
            duration = (end - (job.trim_start or 0.0)) if end else None
            argv = ffmpeg.build_command(src, tmp, preset, start=job.trim_start, end=job.trim_end)
            ffmpeg.run(argv, duration=duration, on_progress=on_progress, cancel=cancel)
        if cancel.is_set():
            raise ffmpeg.Cancelled("cancelled")
        try:
            result = probe(tmp)
        except ProbeError as exc:
            raise MprError(f"ffmpeg finished but the output is not playable: {exc}") from exc
        size = tmp.stat().st_size
        publish()
    try:
        run_sync(
            jobs.transition(
                job.id,
                JobStatus.COMPLETED,
                allowed_from=frozenset({JobStatus.PROCESSING}),
                expect=watcher.run_key,
                progress=100.0,
                eta=0.0,
                output_size=size,
                output_duration=result.duration,
                output_probe=result.raw,
            )
        )
    except InvalidTransition:
        # cancelled in the last moment: the output must not outlive the job
        out_store.delete(job.output_path)
        raise ffmpeg.Cancelled("cancelled") from None
