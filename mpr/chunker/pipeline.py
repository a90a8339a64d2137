"""The chunked encoding pipeline for one job (SPEC §7).

Threads: a **producer** plans keyframe-aligned chunks, records them as
``JobChunk`` rows and enqueues them (then the audio track, as one item);
**N workers** each take an item and run ffmpeg on it, retrying a failed
chunk up to ``max_attempts`` times; a **monitor** reports overall progress
every 500 ms (which is also how a cancel from another process is noticed).
When every chunk is done the chunks are joined with the concat demuxer and
the audio (with the subtitles the output container holds) is muxed in.

Chunk files live in ``<var>/chunks/<job id>/`` and survive a failure or a
cancel, so retrying the job re-encodes only the chunks that are not done.
Database writes and events go through :func:`mpr.db.run_sync` (these are
plain threads).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av

from mpr import events, ffmpeg, jobs
from mpr.chunker.concat import concat, placement
from mpr.chunker.encode import encode_audio, encode_chunk
from mpr.chunker.plan import Chunk, index_video, is_cover_art, plan_from_index
from mpr.db import run_sync
from mpr.errors import FFmpegError, MprError
from mpr.models import ChunkStatus, JobChunk
from mpr.presets import SOURCE_CONTAINER, Preset
from mpr.settings import get_settings

__all__ = ["Pipeline", "add_listener", "concat", "encode_audio", "encode_chunk", "listening", "run_chunked"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
PROGRESS_INTERVAL = 0.5
CONCAT_SHARE = 5.0  # percent of the job's progress bar the final concat takes
_AUDIO = "audio"

Listener = Callable[[events.JobEvent], None]
_listeners: list[Listener] = []
_listeners_lock = threading.Lock()


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` (in this process, from pipeline threads) with every event a pipeline emits.

    Returns a function that removes it. Used by the CLI's per-chunk display.
    """
    with _listeners_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """``with listening(fn): ...`` — :func:`add_listener` for the duration of the block."""
    remove = add_listener(listener)
    try:
        yield
    finally:
        remove()


@dataclass
class _ChunkState:
    chunk: Chunk
    status: ChunkStatus = ChunkStatus.QUEUED
    done: float = 0.0  # seconds of this chunk encoded so far
    fps: float = 0.0  # frames per second and speed (x realtime) of its ffmpeg, from the last -progress report
    speed: float = 0.0
    worker: str = ""
    attempts: int = 0
    error: str = ""
    stderr: str = ""


def _has_audio(source: Path) -> bool:
    try:
        with av.open(str(source)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError):
        return False


def work_dir_for(job_id: str) -> Path:
    """Where a job's chunk files are kept until it completes (``<var>/chunks/<job id>``)."""
    return get_settings().var_path / "chunks" / str(job_id)


class Pipeline:
    """Producer, monitor and worker threads encoding one job's chunks in parallel."""

    max_attempts = MAX_ATTEMPTS
    progress_interval = PROGRESS_INTERVAL
    threads: int | None = None  # ffmpeg -threads per chunk process (None = ffmpeg's default)

    def __init__(
        self,
        job_id: str,
        source: Path,
        output: Path,
        preset: Preset,
        *,
        chunk_seconds: float | None = None,
        workers: int | None = None,
        cancel: threading.Event | None = None,
        max_attempts: int | None = None,
        work_dir: Path | None = None,
        trim_start: float | None = None,
        trim_end: float | None = None,
    ) -> None:
        settings = get_settings()
        self.job_id = str(job_id)
        self.source = Path(source)
        self.output = Path(output)
        self.preset = preset
        self.chunk_seconds = float(chunk_seconds or settings.chunk_seconds)
        self.workers = max(1, int(workers or settings.chunk_workers))
        self.cancel = cancel or threading.Event()
        if max_attempts is not None:
            self.max_attempts = max(1, max_attempts)
        self.work_dir = Path(work_dir) if work_dir else work_dir_for(self.job_id)
        self.trim_start = trim_start or None  # the job's trim (seconds of the source); chunks cover only it
        self.trim_end = trim_end
        self.ext = ffmpeg.output_extension(preset, source)
        self.states: list[_ChunkState] = []
        self.audio_path: Path | None = None
        self.audio_done = threading.Event()
        self.audio_error: FFmpegError | None = None
        self.failure: MprError | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[Chunk | str | None] = queue.Queue()
        self._planned = threading.Event()
        self._finished = threading.Event()
        self._started = time.monotonic()
        self._concat_done = 0.0
        self.video_start = 0.0
        self.total = 0.0
        self._host = socket.gethostname()[:40]

    # ---- events and database ----------------------------------------------------------------------

    def _emit(
        self,
        type_: str,
        *,
        chunk_index: int = -1,
        worker: str = "",
        progress: float = 0.0,
        message: str = "",
        fps: float = 0.0,
        speed: float = 0.0,
        eta: float = 0.0,
    ) -> None:
        """Send one chunk event to the event sinks (and in-process listeners); never raises."""
        event = events.JobEvent(
            job_id=self.job_id,
            type=type_,
            status="processing",
            chunk_index=chunk_index,
            worker=worker,
            progress=progress,
            message=message,
            fps=fps,
            speed=speed,
            eta=eta,
        )
        try:
            run_sync(events.emit(event))
        except Exception:
            log.exception("could not emit %s for job %s", type_, self.job_id)
        with _listeners_lock:
            listeners = list(_listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("chunk event listener failed")

    def _update_row(self, index: int | list[int], **fields: object) -> None:
        # the queryset is built inside the coroutine: Tortoise needs the portal loop's context for it
        async def update() -> None:
            if isinstance(index, list):
                await JobChunk.filter(job_id=self.job_id, index__in=index).update(**fields)
            else:
                await JobChunk.filter(job_id=self.job_id, index=index).update(**fields)

        try:
            run_sync(update())
        except Exception:
            log.exception("could not update chunk %d of job %s", index, self.job_id)

    def chunk_path(self, chunk: Chunk) -> Path:
        """The finished file of ``chunk`` in the work dir."""
        return self.work_dir / f"chunk_{chunk.index:05d}.{self.ext}"

    def _sync_rows(self, plan: list[Chunk]) -> list[_ChunkState]:
        """Create the JobChunk rows, or on a retry keep the chunks already done (row done + file present)."""

        async def sync() -> dict[int, JobChunk]:
            rows = {row.index: row for row in await JobChunk.filter(job_id=self.job_id)}
            same = len(rows) == len(plan) and all(
                i in rows and abs(rows[i].start - c.start) < 1e-6 and abs(rows[i].end - c.end) < 1e-6
                for i, c in enumerate(plan)
            )
            if not same:
                await JobChunk.filter(job_id=self.job_id).delete()
                for c in plan:
                    await JobChunk.create(job_id=self.job_id, index=c.index, start=c.start, end=c.end)
                rows = {row.index: row for row in await JobChunk.filter(job_id=self.job_id)}
            return rows

        rows = run_sync(sync())
        if set(rows) != {c.index for c in plan}:
            raise MprError("chunk rows do not match the plan")
        states = []
        for c in plan:
            row = rows[c.index]
            state = _ChunkState(chunk=c, attempts=row.attempts)
            if row.status == ChunkStatus.DONE and self.chunk_path(c).is_file():
                state.status = ChunkStatus.DONE
                state.done = c.duration
                state.worker = row.worker or ""
            elif row.status != ChunkStatus.QUEUED or row.error:
                self._update_row(
                    c.index, status=ChunkStatus.QUEUED, error=None, worker=None, started_at=None, finished_at=None
                )
            states.append(state)
        return states

    # ---- threads ----------------------------------------------------------------------------------

    def _produce(self) -> None:
        try:
            idx = index_video(self.source)
            if idx is None:
                raise MprError(f"{self.source.name} has no video stream to chunk")
            try:
                plan = plan_from_index(idx, self.chunk_seconds, start=self.trim_start, end=self.trim_end)
            except ValueError as exc:
                raise MprError(str(exc)) from None
            self.video_start = max(0.0, idx.frame_us[0] / 1_000_000) if plan and plan[0].start == 0 else 0.0
            self.work_dir.mkdir(parents=True, exist_ok=True)
            states = self._sync_rows(plan)
            with self._lock:
                self.states = states
                self.total = sum(c.duration for c in plan)
            self._planned.set()
            audio = self.preset.audio_codec is not None and _has_audio(self.source)
            if audio:
                self.audio_path = self.work_dir / f"audio.{self.ext}"
            if not audio or self.audio_path.is_file():
                self.audio_done.set()
            for state in states:
                if self.cancel.is_set():
                    break
                if state.status == ChunkStatus.DONE:
                    self._emit(
                        events.CHUNK_DONE,
                        chunk_index=state.chunk.index,
                        worker=state.worker,
                        progress=100.0,
                        message="reused from an earlier attempt",
                    )
                    continue
                self._emit(
                    events.CHUNK_QUEUED,
                    chunk_index=state.chunk.index,
                    message=f"{state.chunk.start:.3f}-{state.chunk.end:.3f}s",
                )
                self._queue.put(state.chunk)
            if not self.audio_done.is_set():
                # the short audio encode last: it fills the gap while the last chunks finish
                self._queue.put(_AUDIO)
        except MprError as exc:
            self._fail(exc)
        except Exception as exc:
            log.exception("chunk planning failed for job %s", self.job_id)
            self._fail(MprError(f"chunk planning failed: {exc}"))
        finally:
            self._planned.set()
            for _ in range(self.workers):
                self._queue.put(None)

    def _fail(self, exc: MprError) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = exc

    def _work(self, number: int) -> None:
        name = f"{self._host}:{os.getpid()}/w{number}"
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.cancel.is_set():
                continue  # drain to the sentinel
            try:
                if item == _AUDIO:
                    self._encode_audio()
                else:
                    assert isinstance(item, Chunk)
                    self._run_chunk(self.states[item.index], name)
            except Exception as exc:
                log.exception("worker %s crashed on %r", name, item)
                self._fail(MprError(f"chunk worker error: {exc}"))

    def _encode_audio(self) -> None:
        assert self.audio_path is not None
        last: FFmpegError | None = None
        for _ in range(self.max_attempts):
            if self.cancel.is_set():
                return
            try:
                encode_audio(
                    self.source,
                    self.preset,
                    self.audio_path,
                    cancel=self.cancel,
                    start=self.trim_start,
                    end=self.trim_end,
                )
                self.audio_done.set()
                return
            except ffmpeg.Cancelled:
                return
            except FFmpegError as exc:
                last = exc
        self.audio_error = last
        self._fail(
            FFmpegError(f"audio encode failed: {last}", last.returncode, last.stderr_tail)
            if last
            else MprError("audio encode failed")
        )

    def encode(self, chunk: Chunk, out_path: Path, on_progress: Callable[[ffmpeg.Progress], None]) -> None:
        """Encode one chunk (a method so tests can inject a failure on a real ffmpeg run)."""
        encode_chunk(
            self.source,
            chunk,
            self.preset,
            out_path,
            on_progress=on_progress,
            cancel=self.cancel,
            threads=self.threads,
            trim_start=self.trim_start,
            trim_end=self.trim_end,
        )

    def _run_chunk(self, state: _ChunkState, worker: str) -> None:
        chunk = state.chunk
        out = self.chunk_path(chunk)
        tries = 0  # this run's attempts; state.attempts counts every run of the job (the row's column)
        while tries < self.max_attempts and not self.cancel.is_set():
            tries += 1
            state.attempts += 1
            with self._lock:
                state.status, state.worker, state.done, state.error = ChunkStatus.RUNNING, worker, 0.0, ""
            self._update_row(
                chunk.index,
                status=ChunkStatus.RUNNING,
                worker=worker,
                attempts=state.attempts,
                started_at=jobs.now(),
                finished_at=None,
                error=None,
            )
            self._emit(
                events.CHUNK_STARTED, chunk_index=chunk.index, worker=worker, message=f"attempt {state.attempts}"
            )

            def on_progress(p: ffmpeg.Progress, state: _ChunkState = state) -> None:
                with self._lock:
                    state.done = min(chunk.duration, p.out_time)
                    state.fps, state.speed = p.fps or 0.0, p.speed or 0.0

            try:
                self.encode(chunk, out, on_progress)
            except ffmpeg.Cancelled:
                with self._lock:
                    state.status = ChunkStatus.CANCELLED
                self._update_row(chunk.index, status=ChunkStatus.CANCELLED, finished_at=jobs.now())
                return
            except FFmpegError as exc:
                final = tries >= self.max_attempts
                with self._lock:
                    state.status = ChunkStatus.FAILED if final else ChunkStatus.QUEUED
                    state.error, state.stderr, state.done = str(exc), exc.stderr_tail or "", 0.0
                self._update_row(
                    chunk.index,
                    status=state.status,
                    error=f"{exc}\n{exc.stderr_tail or ''}".strip(),
                    finished_at=jobs.now(),
                )
                self._emit(
                    events.CHUNK_FAILED,
                    chunk_index=chunk.index,
                    worker=worker,
                    message=f"attempt {tries}/{self.max_attempts}: {exc}" + ("" if final else " (retrying)"),
                )
                if final:
                    self._fail(
                        FFmpegError(
                            f"chunk {chunk.index} failed after {tries} attempts: {exc}",
                            exc.returncode,
                            exc.stderr_tail,
                        )
                    )
                    return
                continue
            with self._lock:
                state.status, state.done = ChunkStatus.DONE, chunk.duration
                state.fps = state.speed = 0.0
            self._update_row(
                chunk.index, status=ChunkStatus.DONE, finished_at=jobs.now(), output_key=out.name, error=None
            )
            self._emit(events.CHUNK_DONE, chunk_index=chunk.index, worker=worker, progress=100.0)
            return

    def fps(self) -> float:
        """Frames per second of all running chunk encoders together (their last ``-progress`` reports)."""
        with self._lock:
            return sum(s.fps for s in self.states if s.status == ChunkStatus.RUNNING)

    def progress(self) -> tuple[float, float, float | None]:
        """Overall (percent, speed × realtime, eta seconds) right now."""
        with self._lock:
            done = sum(s.done for s in self.states)
            total = self.total
            concat_done = self._concat_done
        if not total:
            return 0.0, 0.0, None
        elapsed = max(1e-6, time.monotonic() - self._started)
        percent = done / total * (100.0 - CONCAT_SHARE) + concat_done * CONCAT_SHARE
        speed = done / elapsed
        eta = (total - done) / speed if speed > 0 else None
        return min(100.0, percent), speed, eta

    def _monitor(self) -> None:
        last_chunk: dict[int, float] = {}
        # fixed rate (not "sleep 500 ms after the work"), so a slow database does not stretch the cadence
        next_tick = time.monotonic() + self.progress_interval
        while not self._finished.wait(max(0.0, next_tick - time.monotonic())):
            next_tick = max(next_tick + self.progress_interval, time.monotonic() + 0.05)
            if not self._planned.is_set():
                continue
            percent, speed, eta = self.progress()
            try:
                alive = run_sync(jobs.update_progress(self.job_id, percent, speed, eta, self.fps()))
            except Exception:
                log.exception("progress update failed for job %s", self.job_id)
                alive = True
            if not alive and not self._finished.is_set():
                log.info("job %s is no longer processing: stopping its chunks", self.job_id)
                self.cancel.set()
                return
            with self._lock:
                running = [
                    (
                        s.chunk.index,
                        s.worker,
                        s.done / s.chunk.duration * 100 if s.chunk.duration else 0.0,
                        s.fps,
                        s.speed,
                    )
                    for s in self.states
                    if s.status == ChunkStatus.RUNNING
                ]
            for index, worker, pct, fps, speed in running:
                if last_chunk.get(index) != pct:
                    last_chunk[index] = pct
                    self._emit(
                        events.CHUNK_PROGRESS, chunk_index=index, worker=worker, progress=pct, fps=fps, speed=speed
                    )

    # ---- the whole job ----------------------------------------------------------------------------

    def run(self) -> None:
        """Encode the job; returns when ``output`` is written. Raises FFmpegError/MprError, or Cancelled."""
        self._started = time.monotonic()
        threads = [threading.Thread(target=self._produce, name=f"chunk-producer-{self.job_id[:8]}", daemon=True)]
        threads += [
            threading.Thread(target=self._work, args=(i,), name=f"chunk-worker-{i}-{self.job_id[:8]}", daemon=True)
            for i in range(self.workers)
        ]
        monitor = threading.Thread(target=self._monitor, name=f"chunk-monitor-{self.job_id[:8]}", daemon=True)
        monitor.start()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.cancel.is_set():
                self._mark_unfinished(ChunkStatus.CANCELLED)
                raise ffmpeg.Cancelled("cancelled")
            if self.failure is not None:
                raise self.failure
            states = self.states
            missing = [s.chunk.index for s in states if s.status != ChunkStatus.DONE]
            if missing or not self.audio_done.is_set():
                raise MprError(f"chunks not encoded: {missing}" if missing else "the audio track was not encoded")
            self.output.parent.mkdir(parents=True, exist_ok=True)

            def on_concat(p: ffmpeg.Progress) -> None:
                with self._lock:
                    self._concat_done = min(1.0, p.out_time / self.total) if self.total else 0.0

            paths = [self.chunk_path(s.chunk) for s in states]
            durations, video_start = [s.chunk.duration for s in states], self.video_start
            if self.trimmed:
                durations, video_start = placement(paths)
            concat(
                paths,
                self.audio_path,
                self.output,
                self.preset,
                durations=durations,
                video_start=video_start,
                total=self.total,
                on_progress=on_concat,
                cancel=self.cancel,
                source=self.source,
                trim_start=self.trim_start,
                trim_end=self.trim_end,
            )
        finally:
            self._finished.set()
            monitor.join(timeout=5)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def trimmed(self) -> bool:
        """True when the job encodes only a trim of the source."""
        return self.trim_start is not None or self.trim_end is not None

    def _mark_unfinished(self, status: ChunkStatus) -> None:
        pending = [s.chunk.index for s in self.states if s.status in (ChunkStatus.QUEUED, ChunkStatus.RUNNING)]
        if pending:
            self._update_row(pending, status=status)


def chunkable(source: Path, preset: Preset) -> bool:
    """True when ``preset`` re-encodes video and ``source`` has a video stream."""
    if preset.video_codec in (None, "copy") or preset.container == SOURCE_CONTAINER:
        return False
    try:
        with av.open(str(source)) as container:
            return any(not is_cover_art(s) for s in container.streams.video)
    except (av.FFmpegError, OSError):
        return True  # let the pipeline's planner report the unreadable file


def _log(job_id: str, message: str) -> None:
    """A ``log`` event on the job (shown in the Chunker UI's event log and ``jobEvents``); never raises."""
    try:
        run_sync(events.emit(events.JobEvent(job_id=job_id, type=events.LOG, status="processing", message=message)))
    except Exception:
        log.exception("could not emit a log event for job %s", job_id)


def _single_pass(
    job_id: str,
    source: Path,
    output: Path,
    preset: Preset,
    cancel: threading.Event,
    start: float | None = None,
    end: float | None = None,
) -> None:
    # Nothing to chunk (audio-only source, or a preset without video re-encoding): one ffmpeg run.
    duration = None
    try:
        with av.open(str(source)) as container:
            if container.duration:
                duration = container.duration / 1_000_000
    except (av.FFmpegError, OSError):
        pass
    if duration is not None or end is not None:
        duration = (end if end is not None else duration or 0.0) - (start or 0.0)
    last = [0.0]

    def on_progress(p: ffmpeg.Progress) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = now
        if not run_sync(jobs.update_progress(job_id, p.percent, p.speed, p.eta, p.fps)):
            cancel.set()

    output.parent.mkdir(parents=True, exist_ok=True)
    argv = ffmpeg.build_command(source, output, preset, start=start, end=end)
    ffmpeg.run(argv, duration=duration, on_progress=on_progress, cancel=cancel)


def run_chunked(
    job_id: str,
    source: Path,
    output: Path,
    preset: Preset,
    *,
    chunk_seconds: float | None,
    workers: int | None,
    cancel: threading.Event | None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> None:
    """Encode local ``source`` into local ``output`` for job ``job_id`` in parallel chunks.

    Called by :func:`mpr.execute.run_job` for ``chunked`` jobs, from a plain
    thread (database access via ``run_sync``). A source without video (or a
    preset that does not re-encode video) is encoded in one pass. Raises
    FFmpegError naming the failed chunk, ``mpr.ffmpeg.Cancelled`` when
    ``cancel`` is set (or the job stops being PROCESSING); finished chunks are
    kept for a retry of the job. ``trim_start``/``trim_end`` (seconds of the
    source) encode only that range, with the same frames as a trimmed single
    pass (``mpr.ffmpeg.build_command(start=, end=)``); a trim with a preset
    that changes the frame rate is encoded in one pass.
    """
    cancel = cancel or threading.Event()
    source, output = Path(source), Path(output)
    trimmed = trim_start is not None or trim_end is not None
    reason = ""
    if not chunkable(source, preset):
        reason = "there is no video stream to re-encode in chunks"
    elif trimmed and preset.fps:
        # a frame-rate change (fps filter) in chunks is exact only at cuts on its output grid,
        # which a trim start does not give
        reason = f"preset {preset.name} changes the frame rate, whose trims are exact only in one pass"
    if reason:
        _log(str(job_id), f"encoding in one pass: {reason}")  # the job's event log says why it has no chunks
        _single_pass(str(job_id), source, output, preset, cancel, trim_start, trim_end)
        return
    Pipeline(
        job_id,
        source,
        output,
        preset,
        chunk_seconds=chunk_seconds,
        workers=workers,
        cancel=cancel,
        trim_start=trim_start,
        trim_end=trim_end,
    ).run()
