"""The gRPC server (grpc.aio): ``ChunkerService`` streams job events from the event bus.

``StreamChunkPipeline`` sends one job's events after ``after_sequence`` and
ends after the job's final status event (at once, with the stored history,
when the job is already final). ``StreamJobs`` sends every job's events
numbered by the global sequence and never ends by itself. Both read the bus
with ``XREAD BLOCK`` (Redis) or a wake-up (in-process), never by polling.

Run alone with ``mpr grpc`` (:func:`serve`), or inside ``mpr serve`` on the
app's loop (:func:`start_in_app`, a Litestar lifespan context manager).
The same event streams feed the built-in gRPC-Web endpoint (``mpr.grpc.web``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from mpr.bus import get_bus
from mpr.errors import AuthError, ConfigError, MprError, NotFound, ValidationError
from mpr.events import STATUS, JobEvent
from mpr.grpc import events_pb2, events_pb2_grpc
from mpr.jobs import parse_job_id
from mpr.settings import Settings, get_settings

log = logging.getLogger(__name__)

FINAL = frozenset({"completed", "failed", "cancelled"})
# With no event for this long, the job's status is read from the database, so a
# stream ends even if the final event never reached this process's bus.
IDLE_CHECK_SECONDS = 5.0

_NO_DB = object()  # the database is not reachable from this process


def to_pb(event: JobEvent) -> events_pb2.PipelineEvent:
    """A JobEvent as the protobuf message clients receive."""
    return events_pb2.PipelineEvent(
        job_id=event.job_id,
        sequence=event.seq,
        timestamp=event.ts,
        type=event.type,
        status=event.status,
        chunk_index=event.chunk_index,
        worker_id=event.worker,
        progress=event.progress,
        fps=event.fps,
        speed=event.speed,
        eta=event.eta,
        message=event.message,
    )


def check_token(authorization: str | None, settings: Settings) -> None:
    """Raise AuthError unless ``authorization`` is ``Bearer <MPR_API_TOKEN>`` (no token set: allow all)."""
    token = settings.api_token
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise AuthError("missing or wrong API token (send 'authorization: Bearer <MPR_API_TOKEN>')")


async def _db_status(job_id: str) -> Any:
    """The job's status from the database, None if there is no such job, _NO_DB if no database."""
    from tortoise.exceptions import BaseORMException

    from mpr.models import TranscodeJob

    try:
        rows = await TranscodeJob.filter(id=job_id).values_list("status", flat=True)
    except (BaseORMException, RuntimeError, OSError) as exc:  # no database here (bare event server), or it is down
        log.debug("job %s: status not readable from the database: %s", job_id, exc)
        return _NO_DB
    if not rows:
        return None
    return getattr(rows[0], "value", rows[0])


async def open_job_stream(job_id: str, after_seq: int = 0, *, bus: Any = None) -> AsyncIterator[JobEvent]:
    """Check the job, then return the iterator of its events after ``after_seq``.

    Raises ValidationError for an id that is not a UUID and NotFound for a job
    that neither the database nor the bus knows. The iterator ends after the
    job's final status event.
    """
    job_id = str(parse_job_id(job_id))
    bus = bus or get_bus()
    status = await _db_status(job_id)
    if status is None and await bus.last(job_id) is None:
        raise NotFound(f"job {job_id} does not exist")
    return _job_stream(job_id, after_seq, status, bus)


async def _job_stream(job_id: str, after_seq: int, status: Any, bus: Any) -> AsyncIterator[JobEvent]:
    if status in FINAL:
        # finished: the stored history, then end (a final event is synthesized if it was not stored)
        while batch := await bus.fetch(job_id, after_seq):
            for ev in batch:
                after_seq = ev.seq
                yield ev
        last = await bus.last(job_id)
        if last is None or not last.final:
            yield _synthesized(job_id, status, max(after_seq, last.seq if last else 0) + 1)
        return
    while True:
        batch = await bus.fetch(job_id, after_seq, wait=IDLE_CHECK_SECONDS)
        if not batch:
            status = await _db_status(job_id)
            if status not in FINAL:
                continue
            # final in the database: give its event a moment to arrive, else synthesize it
            batch = await bus.fetch(job_id, after_seq, wait=1.0)
            if not batch:
                yield _synthesized(job_id, status, after_seq + 1)
                return
        for ev in batch:
            after_seq = ev.seq
            yield ev
        # end after a final event unless more (a retry) is already stored behind it
        if batch[-1].final and not await bus.fetch(job_id, after_seq):
            return


def _synthesized(job_id: str, status: str, seq: int) -> JobEvent:
    return JobEvent(job_id=job_id, type=STATUS, status=status, message="final status from the database", seq=seq)


async def all_jobs_stream(after_seq: int = 0, *, bus: Any = None) -> AsyncIterator[JobEvent]:
    """Every job's events after global sequence ``after_seq`` (0 = only new ones); never ends."""
    bus = bus or get_bus()
    if after_seq <= 0:
        last = await bus.last(None)
        after_seq = last.seq if last else 0
    while True:
        for ev in await bus.fetch(None, after_seq, wait=30.0):
            after_seq = ev.seq
            yield ev


_STATUS_CODES = {
    AuthError: grpc.StatusCode.UNAUTHENTICATED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
}


def status_code_of(exc: MprError) -> grpc.StatusCode:
    """The gRPC status for an MprError."""
    for kind, code in _STATUS_CODES.items():
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


class ChunkerService(events_pb2_grpc.ChunkerServiceServicer):
    """``mpr.v1.ChunkerService``: live job events over native gRPC."""

    def __init__(self, settings: Settings | None = None, bus: Any = None) -> None:
        self.settings = settings or get_settings()
        self.bus = bus

    async def _open(self, context: grpc.aio.ServicerContext, opener: Any) -> AsyncIterator[JobEvent]:
        try:
            check_token(dict(context.invocation_metadata() or ()).get("authorization"), self.settings)
            return await opener()
        except MprError as exc:
            await context.abort(status_code_of(exc), str(exc))
            raise  # abort() raises; this line is never reached

    async def StreamChunkPipeline(self, request: events_pb2.StreamRequest, context: grpc.aio.ServicerContext):
        """Events of one job from ``after_sequence``; ends after the job's final status event."""
        bus = self.bus or get_bus(self.settings)
        stream = await self._open(context, lambda: open_job_stream(request.job_id, request.after_sequence, bus=bus))
        async for ev in stream:
            yield to_pb(ev)

    async def StreamJobs(self, request: events_pb2.StreamJobsRequest, context: grpc.aio.ServicerContext):
        """Events of all jobs from global ``after_sequence`` (0 = only new ones)."""
        bus = self.bus or get_bus(self.settings)

        async def opener() -> AsyncIterator[JobEvent]:
            return all_jobs_stream(request.after_sequence, bus=bus)

        stream = await self._open(context, opener)
        async for ev in stream:
            yield to_pb(ev)


SERVER_OPTIONS = [
    # ping idle streams so a vanished client (or proxy) is noticed and its stream released
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # gRPC sets SO_REUSEPORT by default: a second `mpr serve` would then share the port with the first
    # (the kernel splitting clients between two servers) instead of being told the port is in use
    ("grpc.so_reuseport", 0),
]


@dataclass
class RunningServer:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting calls; cancel open streams after ``grace`` seconds."""
        await self.server.stop(grace)


async def start(
    port: int | None = None, *, host: str | None = None, settings: Settings | None = None, bus: Any = None
) -> RunningServer:
    """Start the gRPC server on the running loop (``port=0``: any free port); raise ConfigError if it cannot bind."""
    settings = settings or get_settings()
    port = settings.grpc_port if port is None else port
    host = host or settings.host
    server = grpc.aio.server(options=SERVER_OPTIONS)
    events_pb2_grpc.add_ChunkerServiceServicer_to_server(ChunkerService(settings, bus), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"gRPC server cannot listen on {address}: {exc} (set MPR_GRPC_PORT)") from None
    if not bound:
        raise ConfigError(f"gRPC server cannot listen on {address} (port in use? set MPR_GRPC_PORT)")
    await server.start()
    log.info("gRPC event server listening on %s:%s", host, bound)
    return RunningServer(server, bound)


@contextlib.asynccontextmanager
async def start_in_app(app: Any = None) -> AsyncIterator[RunningServer | None]:
    """Run the gRPC server on ``settings.grpc_port`` for the life of the web app (a Litestar lifespan).

    ``MPR_GRPC_PORT=0`` disables it. If the port cannot be bound the error is
    logged and the app runs without native gRPC (gRPC-Web still works).
    """
    settings = get_settings()
    running = None
    if settings.grpc_port:
        try:
            running = await start(settings.grpc_port, settings=settings)
        except ConfigError as exc:
            log.error("%s; continuing without the native gRPC server", exc)
    try:
        yield running
    finally:
        if running is not None:
            await running.stop(grace=0.5)


async def run(port: int | None = None, host: str | None = None) -> None:
    """Open the database and serve gRPC until cancelled or SIGTERM/SIGINT."""
    from mpr.db import close_db, init_db

    await init_db()
    running = await start(port, host=host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop(grace=1.0)
        with contextlib.suppress(Exception):
            await get_bus().close()
        await close_db()


def serve(port: int | None = None, host: str | None = None) -> None:
    """``mpr grpc``: serve ChunkerService on ``port`` (default MPR_GRPC_PORT, 50051); blocks."""
    asyncio.run(run(port, host))
