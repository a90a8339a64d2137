"""Per-chunk progress for a terminal (``mpr transcode --chunked``).

Fed by the pipeline's in-process listeners, so it works for a job run in
this process (the CLI's foreground mode); a queued job is followed through
the event stream instead.
"""

from __future__ import annotations

import threading

from mpr import events
from mpr.chunker.pipeline import add_listener


class ChunkProgress:
    """Keeps the state of each chunk of one job and renders it as one short line."""

    def __init__(self, job_id: str) -> None:
        self.job_id = str(job_id)
        self._lock = threading.Lock()
        self._chunks: dict[int, tuple[str, float, str]] = {}  # index -> (state, percent, worker)
        self._remove = add_listener(self)

    @classmethod
    def attach(cls, job_id: object) -> ChunkProgress:
        """Start collecting chunk events of ``job_id``; call :meth:`close` when done."""
        return cls(str(job_id))

    def __call__(self, event: events.JobEvent) -> None:
        if event.job_id != self.job_id or event.chunk_index < 0:
            return
        state = {
            events.CHUNK_QUEUED: "queued",
            events.CHUNK_STARTED: "running",
            events.CHUNK_PROGRESS: "running",
            events.CHUNK_DONE: "done",
            events.CHUNK_FAILED: "retrying" if "retrying" in event.message else "failed",
        }.get(event.type)
        if state is None:
            return
        with self._lock:
            _old, pct, worker = self._chunks.get(event.chunk_index, ("queued", 0.0, ""))
            if event.type == events.CHUNK_STARTED:
                pct = 0.0
            elif event.type in (events.CHUNK_PROGRESS, events.CHUNK_DONE):
                pct = event.progress
            self._chunks[event.chunk_index] = (state, pct, event.worker or worker)

    @property
    def active(self) -> bool:
        """True once the job's chunks are known (a chunked job is running)."""
        with self._lock:
            return bool(self._chunks)

    def summary(self, max_running: int = 4) -> str:
        """E.g. ``chunks 3/12 done · #3 45% #4 12% · 1 retrying``."""
        with self._lock:
            chunks = dict(self._chunks)
        if not chunks:
            return ""
        done = sum(1 for s, _p, _w in chunks.values() if s == "done")
        parts = [f"chunks {done}/{len(chunks)} done"]
        running = [f"#{i} {p:.0f}%" for i, (s, p, _w) in sorted(chunks.items()) if s == "running"]
        if running:
            parts.append(" ".join(running[:max_running]) + (" …" if len(running) > max_running else ""))
        for label in ("retrying", "failed"):
            n = sum(1 for s, _p, _w in chunks.values() if s == label)
            if n:
                parts.append(f"{n} {label}")
        return " · ".join(parts)

    def close(self) -> None:
        """Stop listening."""
        self._remove()
