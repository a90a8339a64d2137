"""Job events: what happened to a job, fanned out to every registered event sink.

Every status transition and progress update becomes a :class:`JobEvent`.
Sinks are registered by plugins (``register_event_sinks``); the core ships a
log sink and an in-process bus, and a Redis Streams sink when Redis is set.
A failing sink is logged and never fails a job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

# Event types. Job-level: status changes and progress; chunk-level: chunk_*.
STATUS = "status"
PROGRESS = "progress"
CHUNK_QUEUED = "chunk_queued"
CHUNK_STARTED = "chunk_started"
CHUNK_PROGRESS = "chunk_progress"
CHUNK_DONE = "chunk_done"
CHUNK_FAILED = "chunk_failed"
LOG = "log"
EVENT_TYPES = (STATUS, PROGRESS, CHUNK_QUEUED, CHUNK_STARTED, CHUNK_PROGRESS, CHUNK_DONE, CHUNK_FAILED, LOG)


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job.

    ``seq`` is the event's position in the job's stream (1, 2, 3, ...); it is
    assigned by the bus that stores the stream (in-process bus or Redis
    Streams), not by the emitter, so emitters in several processes never
    collide. 0 means "not yet sequenced".
    """

    job_id: str
    type: str
    status: str = ""
    progress: float = 0.0
    chunk_index: int = -1
    worker: str = ""
    fps: float = 0.0
    speed: float = 0.0
    eta: float = 0.0
    message: str = ""
    ts: float = field(default_factory=time.time)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobEvent:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, strings are converted."""
        kwargs: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name in data:
                value = data[name]
                kind = f.type
                if kind == "int":
                    value = int(value)
                elif kind == "float":
                    value = float(value)
                else:
                    value = str(value)
                kwargs[name] = value
        return cls(**kwargs)

    def with_seq(self, seq: int) -> JobEvent:
        """A copy carrying its stream sequence number."""
        return replace(self, seq=seq)

    @property
    def final(self) -> bool:
        """True for a status event that ends the job (COMPLETED, FAILED, CANCELLED)."""
        return self.type == STATUS and self.status in {"completed", "failed", "cancelled"}


@runtime_checkable
class EventSink(Protocol):
    """Receives every JobEvent. Must not block for long; must not raise (if it does, it is logged)."""

    async def emit(self, event: JobEvent) -> None: ...


async def emit(event: JobEvent) -> None:
    """Send ``event`` to every registered sink; a failing sink is logged, never raised."""
    from mpr.plugins import load_plugins

    for sink in load_plugins().event_sinks:
        try:
            await sink.emit(event)
        except Exception:
            log.exception("event sink %r failed on %s event for job %s", sink, event.type, event.job_id)


def emit_threadsafe(event: JobEvent, loop: asyncio.AbstractEventLoop) -> None:
    """Emit from a non-async thread onto ``loop`` without waiting for the sinks."""
    asyncio.run_coroutine_threadsafe(emit(event), loop)
