"""Event buses: where JobEvents are stored in order and read back by subscribers.

Two implementations with one interface (:class:`EventBus`):

- :class:`RedisStreamsBus` when ``MPR_REDIS_URL`` is set: each event is
  appended atomically (one Lua script) to the job's stream
  ``mpr:events:{job_id}`` and to the global stream ``mpr:events``, both capped
  with ``MAXLEN ~``. Sequence numbers are Redis counters (``mpr:seq:{job_id}``,
  ``mpr:seq``) used as explicit stream ids ``0-<seq>``, so they are 1, 2, 3...
  per job even with many writer processes, and a reader resumes with
  ``XREAD BLOCK ... 0-<after_seq>`` (no polling).
- :class:`InProcessBus` otherwise: bounded per-job histories in memory,
  thread-safe, waking only the subscribers of the job that changed.

Public API: ``get_bus(settings)``, ``subscribe(job_id | None, after_seq)``,
``reset_bus()``, ``LogSink``. ``job_id=None`` means all jobs, numbered by the
global sequence.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import math
import threading
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from mpr.events import JobEvent

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger("mpr.events")

STREAM_PREFIX = "mpr:events"
SEQ_PREFIX = "mpr:seq"
# how long an append retries while Redis is unreachable or still loading its data after a restart
APPEND_RETRY_SECONDS = 5.0


def stream_key(job_id: str | None) -> str:
    """Redis key of a job's stream, or of the global stream for ``None``."""
    return f"{STREAM_PREFIX}:{job_id}" if job_id else STREAM_PREFIX


def seq_key(job_id: str | None) -> str:
    """Redis key of a job's sequence counter, or of the global counter for ``None``."""
    return f"{SEQ_PREFIX}:{job_id}" if job_id else SEQ_PREFIX


class LogSink:
    """Logs every status event (and progress at debug level)."""

    async def emit(self, event: JobEvent) -> None:
        if event.type == "status":
            log.info("job %s → %s %s", event.job_id, event.status, event.message)
        else:
            log.debug("job %s %s %.1f%%", event.job_id, event.type, event.progress)


class EventBus(Protocol):
    """A sink that stores events in order and lets subscribers read them back."""

    async def emit(self, event: JobEvent) -> None:
        """Store ``event`` (the sink interface)."""

    async def append(self, event: JobEvent) -> JobEvent:
        """Store ``event`` and return it with its per-job sequence number."""

    async def fetch(
        self, job_id: str | None, after_seq: int, *, wait: float | None = None, limit: int = 500
    ) -> list[JobEvent]:
        """Stored events with ``seq > after_seq`` (at most ``limit``).

        With ``wait`` (seconds, may be ``math.inf``) and nothing stored yet,
        wait for the next event up to that long; return ``[]`` on timeout.
        """

    async def last(self, job_id: str | None) -> JobEvent | None:
        """The newest stored event of the job (or of all jobs), or None."""

    def subscribe(self, job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        """Every event after ``after_seq``, then new ones as they come; never ends by itself."""


async def _subscribe(bus: EventBus, job_id: str | None, after_seq: int) -> AsyncIterator[JobEvent]:
    while True:
        for ev in await bus.fetch(job_id, after_seq, wait=30.0):
            after_seq = ev.seq
            yield ev


# ---------------------------------------------------------------------------
# in-process bus


class _Stream:
    __slots__ = ("events", "seq")

    def __init__(self, maxlen: int, seq: int = 0) -> None:
        self.events: collections.deque[JobEvent] = collections.deque(maxlen=maxlen)
        self.seq = seq

    def after(self, after_seq: int, limit: int) -> list[JobEvent]:
        if not self.events or after_seq >= self.seq:
            return []
        first = self.events[0].seq
        start = max(0, after_seq - first + 1)
        return list(itertools.islice(self.events, start, start + limit))


class InProcessBus:
    """Keeps recent events in memory and wakes waiting subscribers; thread-safe and bounded.

    Each job keeps at most ``per_job`` events; all jobs together at most
    ``max_events`` (the least recently active jobs are dropped first, their
    sequence counters are remembered so numbering never restarts). The
    all-jobs stream keeps the last ``global_history`` events.
    """

    def __init__(self, per_job: int = 10_000, max_events: int = 100_000, global_history: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._per_job = per_job
        self._max_events = max_events
        self._jobs: collections.OrderedDict[str, _Stream] = collections.OrderedDict()
        self._total = 0
        self._dropped_seq: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._global = _Stream(global_history)
        # job id (None = all jobs) -> waiting subscribers (their loop and wake-up flag)
        self._waiters: dict[str | None, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    async def emit(self, event: JobEvent) -> None:
        self.publish(event)

    async def append(self, event: JobEvent) -> JobEvent:
        return self.publish(event)

    def publish(self, event: JobEvent) -> JobEvent:
        """Store ``event`` from any thread, wake its subscribers, return it with its sequence number."""
        with self._lock:
            stream = self._jobs.get(event.job_id)
            if stream is None:
                stream = _Stream(self._per_job, self._dropped_seq.pop(event.job_id, 0))
                self._jobs[event.job_id] = stream
            else:
                self._jobs.move_to_end(event.job_id)
            stream.seq += 1
            ev = event.with_seq(stream.seq)
            if len(stream.events) < self._per_job:
                self._total += 1
            stream.events.append(ev)
            self._global.seq += 1
            self._global.events.append(event.with_seq(self._global.seq))
            self._evict()
            woken = [*self._waiters.pop(event.job_id, ()), *self._waiters.pop(None, ())]
        _wake(woken)
        return ev

    def _evict(self) -> None:
        while self._total > self._max_events and len(self._jobs) > 1:
            job_id, stream = self._jobs.popitem(last=False)
            self._total -= len(stream.events)
            self._dropped_seq[job_id] = stream.seq
            if len(self._dropped_seq) > 100_000:
                self._dropped_seq.popitem(last=False)

    def read(self, job_id: str | None, after_seq: int, limit: int = 1_000_000) -> list[JobEvent]:
        """Stored events after ``after_seq``, without waiting."""
        with self._lock:
            stream = self._global if job_id is None else self._jobs.get(job_id)
            return stream.after(after_seq, limit) if stream else []

    async def fetch(
        self, job_id: str | None, after_seq: int, *, wait: float | None = None, limit: int = 500
    ) -> list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = None if wait is None or math.isinf(wait) else loop.time() + wait
        while True:
            flag = asyncio.Event()
            waiter = (loop, flag)
            with self._lock:
                stream = self._global if job_id is None else self._jobs.get(job_id)
                batch = stream.after(after_seq, limit) if stream else []
                if batch or wait is None:
                    return batch
                # registered under the same lock as the read: a publish in between cannot be missed
                self._waiters.setdefault(job_id, set()).add(waiter)
            try:
                if deadline is None:
                    await flag.wait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return []
                    await asyncio.wait_for(flag.wait(), remaining)
            except TimeoutError:
                return []
            finally:
                with self._lock:
                    waiting = self._waiters.get(job_id)
                    if waiting is not None:
                        waiting.discard(waiter)
                        if not waiting:
                            del self._waiters[job_id]

    async def last(self, job_id: str | None) -> JobEvent | None:
        with self._lock:
            stream = self._global if job_id is None else self._jobs.get(job_id)
            return stream.events[-1] if stream and stream.events else None

    def subscribe(self, job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        return _subscribe(self, job_id, after_seq)

    async def close(self) -> None:
        """Nothing to release (symmetry with the Redis bus)."""


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, flag in waiters:
        if loop is running:
            flag.set()
            continue
        try:
            loop.call_soon_threadsafe(flag.set)
        except RuntimeError:  # loop closed: that subscriber is gone
            pass


# ---------------------------------------------------------------------------
# Redis Streams bus

# Append one event to the job's stream and the global stream, numbering it
# with the counters. Explicit ids 0-<seq> keep the numbering dense (1, 2, 3...)
# and make XREAD's "after id" the same thing as "after sequence". If a counter
# was lost while its stream survived (eviction, partial restore), continue
# after the stream's last id instead of failing.
_APPEND_LUA = """
local function add(seqkey, stream, maxlen, ...)
  local seq = redis.call('INCR', seqkey)
  local ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '0-' .. seq, ...)
  if type(ok) == 'table' and ok.err then
    local info = redis.call('XINFO', 'STREAM', stream)
    local lastid = '0-0'
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then lastid = info[i + 1] end
    end
    seq = tonumber(string.match(lastid, '-(%d+)$')) + 1
    redis.call('SET', seqkey, seq)
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '0-' .. seq, ...)
  end
  return seq
end
local seq = add(KEYS[1], KEYS[2], ARGV[2], 'e', ARGV[1])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
add(KEYS[3], KEYS[4], ARGV[3], 'e', ARGV[1], 's', seq)
return seq
"""

# JobEvent field -> short key in the stored JSON; fields equal to their default are left out.
_SHORT = {
    "job_id": "j",
    "type": "t",
    "status": "s",
    "progress": "p",
    "chunk_index": "c",
    "worker": "w",
    "fps": "f",
    "speed": "x",
    "eta": "e",
    "message": "m",
    "ts": "ts",
}
_LONG = {v: k for k, v in _SHORT.items()}
_DEFAULTS = {name: f.default for name, f in JobEvent.__dataclass_fields__.items()}


def encode_event(event: JobEvent) -> bytes:
    """Compact JSON of an event (short keys, defaults left out, no sequence number)."""
    out: dict[str, Any] = {}
    for name, short in _SHORT.items():
        value = getattr(event, name)
        if name == "ts":
            value = round(value, 6)
        elif isinstance(value, float):
            value = round(value, 3)
        if name in ("job_id", "type", "ts") or value != _DEFAULTS.get(name):
            out[short] = value
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def decode_event(payload: bytes | str, seq: int) -> JobEvent:
    """Inverse of :func:`encode_event`, with ``seq`` from the stream id."""
    data = json.loads(payload)
    return JobEvent(**{_LONG[k]: v for k, v in data.items() if k in _LONG}, seq=seq)


def _id_seq(entry_id: bytes | str) -> int:
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.rsplit("-", 1)[1])


def _entries(reply: Any) -> list[tuple[Any, dict]]:
    """XREAD reply (RESP2 list or RESP3 dict) → [(id, fields)] of the one stream read."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for entries in reply.values():
            return list(entries[0] if entries and isinstance(entries[0], list) else entries)
        return []
    return list(reply[0][1])


class RedisStreamsBus:
    """Events in Redis Streams: atomic per-job sequence numbers, capped streams, XREAD BLOCK readers.

    Usable from any number of processes and event loops (clients are kept per loop).
    ``maxlen`` caps each job's stream, ``global_maxlen`` the all-jobs stream
    (both approximately, ``MAXLEN ~``); a job's stream and counter expire
    ``ttl`` seconds after its last event (0 = never).
    """

    def __init__(
        self, url: str, *, maxlen: int = 10_000, global_maxlen: int = 100_000, ttl: int = 7 * 24 * 3600
    ) -> None:
        self.url = url
        self.maxlen = maxlen
        self.global_maxlen = global_maxlen
        self.ttl = ttl
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def _for_loop(self) -> tuple[Any, Any, Any]:
        """(writer client, blocking-reader client, append script) for the running loop."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._clients.get(loop)
            if found is None:
                # forget clients of loops that are gone (their connections died with them)
                for old in [lp for lp in self._clients if lp.is_closed()]:
                    del self._clients[old]
                # short timeouts for writes, so a dead Redis never holds up a job for long;
                # no read timeout for XREAD BLOCK (the block time bounds it), keepalive for dead peers
                # the writer's retries are append()'s own (bounded, APPEND_RETRY_SECONDS), whatever
                # redis-py's default is (none in 5.x, ten with random backoff in 6+): one immediate
                # retry on a fresh connection only, for a connection pooled before a Redis restart
                writer = aioredis.from_url(
                    self.url, socket_timeout=5, socket_connect_timeout=3, retry=Retry(NoBackoff(), 1)
                )
                reader = aioredis.from_url(self.url, socket_connect_timeout=3, socket_keepalive=True)
                found = (writer, reader, writer.register_script(_APPEND_LUA))
                self._clients[loop] = found
            return found

    async def emit(self, event: JobEvent) -> None:
        await self.append(event)

    async def append(self, event: JobEvent) -> JobEvent:
        import redis.exceptions

        _, _, script = self._for_loop()
        keys = [seq_key(event.job_id), stream_key(event.job_id), seq_key(None), stream_key(None)]
        args = [encode_event(event), self.maxlen, self.global_maxlen, self.ttl]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPEND_RETRY_SECONDS
        delay = 0.0  # the first retry goes out at once: a stale pooled connection is the usual cause
        while True:
            try:
                seq = await script(keys=keys, args=args)
                break
            except redis.exceptions.ConnectionError as exc:
                # A pooled connection from before a Redis restart (the new server never saw the
                # command, so a retry on a fresh connection cannot append twice), or a restarted
                # server still loading its data (BusyLoadingError, a ConnectionError: it refused
                # the command). Retried with backoff for up to APPEND_RETRY_SECONDS; the loop
                # sleeps with asyncio, so the caller's other tasks go on meanwhile.
                left = deadline - loop.time()
                if left <= 0:
                    raise
                log.debug("event append: Redis unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(min(delay, left))
                delay = min(max(delay * 2, 0.05), 1.0)
        return event.with_seq(int(seq))

    def _decode(self, job_id: str | None, entries: list[tuple[Any, dict]]) -> list[JobEvent]:
        out = []
        for entry_id, fields in entries:
            payload = fields.get(b"e", fields.get("e"))
            if payload is not None:
                out.append(decode_event(payload, _id_seq(entry_id)))
        return out

    async def fetch(
        self, job_id: str | None, after_seq: int, *, wait: float | None = None, limit: int = 500
    ) -> list[JobEvent]:
        import redis.exceptions

        writer, reader, _ = self._for_loop()
        key = stream_key(job_id)
        if wait is None:
            return self._decode(job_id, _entries(await writer.xread({key: f"0-{after_seq}"}, count=limit)))
        loop = asyncio.get_running_loop()
        deadline = math.inf if math.isinf(wait) else loop.time() + wait
        backoff = 0.05
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # block at most 10 s per call so a silently dead connection is noticed
            block_ms = max(1, int(min(remaining, 10.0) * 1000))
            try:
                reply = await reader.xread({key: f"0-{after_seq}"}, count=limit, block=block_ms)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                # Redis restarted or unreachable: retry (the next read resumes from after_seq)
                log.warning("event stream %s: Redis unavailable (%s); retrying in %.2fs", key, exc, backoff)
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, 2.0)
                continue
            events = self._decode(job_id, _entries(reply))
            if events:
                return events
            if math.isinf(deadline):
                continue

    async def last(self, job_id: str | None) -> JobEvent | None:
        writer, _, _ = self._for_loop()
        entries = await writer.xrevrange(stream_key(job_id), "+", "-", count=1)
        events = self._decode(job_id, list(entries))
        return events[0] if events else None

    def subscribe(self, job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
        return _subscribe(self, job_id, after_seq)

    async def close(self) -> None:
        """Close this loop's Redis connections."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._clients.pop(loop, None)
        if found:
            await found[0].aclose()
            await found[1].aclose()


_bus: InProcessBus | RedisStreamsBus | None = None
_bus_lock = threading.Lock()


def get_bus(settings: Settings | None = None) -> InProcessBus | RedisStreamsBus:
    """The process's event bus: Redis Streams when ``settings.redis_url`` is set, else in-process."""
    global _bus
    with _bus_lock:
        if _bus is None:
            if settings is None:
                from mpr.settings import get_settings

                settings = get_settings()
            _bus = RedisStreamsBus(settings.redis_url) if settings.redis_url else InProcessBus()
        return _bus


def local_bus_warning(settings: Settings, command: str) -> str | None:
    """The start-up warning of ``command`` (``mpr worker``, ...) when its events cannot leave the process.

    None when ``MPR_REDIS_URL`` is set. Without it, events live in one
    process's memory: what a separate ``mpr worker`` emits never reaches the
    ``mpr serve`` or ``mpr grpc`` that streams to the UIs (job status in the
    database stays right; only live progress is missing).
    """
    if settings.redis_url:
        return None
    return (
        f"Warning: {command} without MPR_REDIS_URL: job events stay inside this process, so live progress "
        "from other MPR processes (mpr worker, mpr serve --no-worker, mpr grpc) is not seen. "
        "Set MPR_REDIS_URL (the same Redis for every MPR process) for live progress across processes."
    )


def subscribe(job_id: str | None, after_seq: int = 0) -> AsyncIterator[JobEvent]:
    """Events of ``job_id`` (None = all jobs) after ``after_seq``, then live ones; never ends by itself."""
    return get_bus().subscribe(job_id, after_seq)


def reset_bus() -> None:
    """Forget the process's bus (tests; the next :func:`get_bus` builds a new one)."""
    global _bus
    with _bus_lock:
        _bus = None
