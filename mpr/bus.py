"""Event buses: where JobEvents are stored in order and read back by subscribers.

MINIMAL VERSION (in-process only) — the events helper extends this with the
Redis Streams sink and XREAD BLOCK subscriber. Public API:

- ``get_bus(settings) -> EventBus`` (a sink; also ``subscribe``)
- ``subscribe(job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]``
  (job_id None = all jobs, global sequence)
- ``reset_bus()`` for tests
- ``LogSink``
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mpr.events import JobEvent

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger("mpr.events")


class LogSink:
    """Logs every status event (and progress at debug level)."""

    async def emit(self, event: JobEvent) -> None:
        if event.type == "status":
            log.info("job %s → %s %s", event.job_id, event.status, event.message)
        else:
            log.debug("job %s %s %.1f%%", event.job_id, event.type, event.progress)


class InProcessBus:
    """Keeps each job's recent events in memory and wakes subscribers; thread-safe."""

    def __init__(self, history: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, collections.deque[JobEvent]] = {}
        self._seq: dict[str, int] = {}
        self._global: collections.deque[JobEvent] = collections.deque(maxlen=history)
        self._global_seq = 0
        self._history = history
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def emit(self, event: JobEvent) -> None:
        self.publish(event)

    def publish(self, event: JobEvent) -> JobEvent:
        with self._lock:
            seq = self._seq.get(event.job_id, 0) + 1
            self._seq[event.job_id] = seq
            ev = event.with_seq(seq)
            self._jobs.setdefault(event.job_id, collections.deque(maxlen=self._history)).append(ev)
            self._global_seq += 1
            self._global.append(event.with_seq(self._global_seq))
            waiters, self._waiters = self._waiters, []
        for loop, flag in waiters:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # loop closed: subscriber is gone
                pass
        return ev

    def read(self, job_id: str | None, after_seq: int) -> list[JobEvent]:
        with self._lock:
            source = self._global if job_id is None else self._jobs.get(job_id, ())
            return [e for e in source if e.seq > after_seq]

    async def subscribe(self, job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        loop = asyncio.get_running_loop()
        while True:
            flag = asyncio.Event()
            with self._lock:
                self._waiters.append((loop, flag))
            batch = self.read(job_id, after_seq)
            for ev in batch:
                after_seq = ev.seq
                yield ev
            if not batch:
                await flag.wait()


_bus: InProcessBus | None = None


def get_bus(settings: Settings | None = None) -> InProcessBus:
    global _bus
    if _bus is None:
        _bus = InProcessBus()
    return _bus


def subscribe(job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
    return get_bus().subscribe(job_id, after_seq)


def reset_bus() -> None:
    global _bus
    _bus = None
