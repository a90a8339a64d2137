"""``POST /api/jobs/{id}/callback``: the completion webhook of remote executors (Lambda, Cloud Run).

Body (JSON): ``{"status": "completed"|"failed", "output_key": str, "error": str, "metrics": {...}}``,
signed as :mod:`mpr.callbacks` describes. Answers:

- 413 body larger than :data:`mpr.callbacks.MAX_BODY`;
- 401 unsigned, wrong secret, stale (> 5 min) or replayed signature;
- 404 unknown job; 400 malformed body (``metrics``, when given, must be a JSON object);
- 200 otherwise. A callback for a job already in a final state changes
  nothing (``"changed": false``): duplicates are idempotent and a cancelled
  job is never revived.

``metrics`` is stored on the job (``TranscodeJob.metrics``, shown by the admin
and GraphQL's ``Job.metrics``) together with the status change the callback
makes; a refused callback, or one ignored because the job is already final,
stores nothing.

A PENDING job's first callback is accepted (a remote executor may never have
reported PROCESSING): the job goes PENDING → PROCESSING → COMPLETED through
:func:`mpr.jobs.transition`, like every other status change.

``POST /api/jobs/{id}/chunks``: live chunk progress from remote executors
(the Lambda Plan and EncodeChunk steps), signed and checked exactly like the
completion callback (same secret, age limit and replay store). Body (JSON),
``run`` being the job attempt the execution belongs to (optional)::

    {"type": "plan", "run": 0, "chunks": [{"index": 0, "start": 0.0, "end": 2.0}, ...]}
    {"type": "started" | "done" | "failed", "run": 0, "index": 1, "start": 2.0, "end": 4.0,
     "count": 3, "worker": "<request id>", "attempt": 1, "seconds": 1.8, "output_key": "...", "error": "..."}

A plan creates the job's JobChunk rows (QUEUED, a ``chunk_queued`` event
each); started/done/failed update the row (status, worker, attempts,
timings, error) and emit ``chunk_started``/``chunk_done``/``chunk_failed``, as
the local pipeline does; every done chunk sets the job's progress to 95 % x
the fraction of chunks done (the concat is the rest).

The plan report may be lost (reports are best effort), so a chunk report
carries its chunk's ``start``/``end`` and the plan's chunk ``count``: a report
for a chunk that has no row yet creates it (QUEUED, ``chunk_queued``, as the
plan would have) and then applies. The fraction done counts ``count`` chunks
(else as many as the rows show). A plan arriving after such reports adds the
missing rows and leaves the reported ones as they are. A retried job's
new execution may plan differently (the settings changed) and lose its plan
report too: a chunk report whose ``start``/``end`` differ from an earlier
run's row at its index, or that makes its row, deletes the earlier runs' rows
that cannot be chunks of its plan (the one at the index, those at ``count``
or above, those before the index ending after its start and those after it
starting before its end; the others wait for their own chunk's report) and
makes its row (``chunk_queued``). A mismatch against a row of the current run
is a conflicting report: 400, nothing changes. A row no report of the current
run has touched (QUEUED, no timestamps) counts as an earlier run's: nothing
on it says otherwise. A ``completed``
callback marks the rows still not done DONE (``chunk_done`` each, before the
final status event): the output exists, so every chunk was encoded, whatever
reports were lost.

Answers as above, plus: 400 for a report without ``start``/``end`` for a
chunk that has no row (an index outside the plan, or no plan yet), or whose
``start``/``end`` differ from those of its row in the current run; 200 with
``"changed": false`` for a duplicate, a report older than the row (a late
``started`` after ``done``), a report for a job in a final state, or one from
an earlier run of a retried job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar import Request, post
from litestar.params import FromPath
from litestar.response import Response
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from mpr import callbacks, events, jobs
from mpr.api.deps import app_settings
from mpr.errors import AuthError, InvalidTransition, MprError, NotFound, ValidationError
from mpr.models import FINAL_STATUSES, ChunkStatus, JobChunk, JobStatus, TranscodeJob
from mpr.settings import Settings
from mpr.storage import media_out, safe_key

log = logging.getLogger("mpr.api.callback")


class ReplayStore:
    """Remembers callback signatures for 2 × :data:`mpr.callbacks.MAX_AGE` (+60) seconds; the first use wins.

    A signature is accepted while its timestamp is within MAX_AGE of our clock, on
    either side (senders' clocks run fast or slow), so one first used early may be
    valid for up to 2 × MAX_AGE: the record must outlive that window.

    Shared by every API process, as the admin sessions are (``mpr.api.admin.session_store``):

    - Redis (``MPR_REDIS_URL``): ``SET NX EX``;
    - else files under ``path`` (``MPR_VAR_DIR/callback-replay``, see :meth:`for_settings`):
      one empty file per signature digest, created with ``O_CREAT | O_EXCL``, so
      of two processes (or threads) recording the same signature exactly one
      creates it. Its mtime + TTL is the expiry. Litestar's ``FileStore`` has no
      set-if-absent (it writes a temporary file and renames it over the old one),
      hence the files of its own. Expired files are replaced, and swept, under
      an ``flock`` of ``.lock``, so an expired record is never taken over twice;
    - else (no path) this process's memory (tests, tools).
    """

    SWEEP_SECONDS = 60.0

    def __init__(
        self, redis_url: str | None = None, ttl: int = callbacks.MAX_AGE, path: str | os.PathLike[str] | None = None
    ) -> None:
        self.redis_url = redis_url
        self.ttl = ttl
        self.path = Path(path) if path is not None and not redis_url else None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._redis: Any = None
        self._swept = 0.0

    @classmethod
    def for_settings(cls, settings: Settings, ttl: int = callbacks.MAX_AGE) -> ReplayStore:
        """Redis when MPR_REDIS_URL is set, else files in the var dir (shared by the API processes using it)."""
        if settings.redis_url:
            return cls(settings.redis_url, ttl)
        return cls(None, ttl, settings.var_path / "callback-replay")

    @property
    def lifetime(self) -> float:
        # a timestamp up to ttl in the future stays valid until 2 x ttl after a first use; +60 s margin
        return 2 * self.ttl + 60

    async def first_use(self, signature: str) -> bool:
        """Record ``signature``; True if it was not seen within the TTL (i.e. not a replay)."""
        digest = hashlib.sha256(signature.encode()).hexdigest()
        if self.redis_url:
            if self._redis is None:
                import redis.asyncio as aioredis

                self._redis = aioredis.from_url(self.redis_url)
            return bool(await self._redis.set(f"mpr:callback:seen:{digest}", "1", nx=True, ex=int(self.lifetime)))
        if self.path is not None:
            try:
                return await asyncio.to_thread(self._first_use_file, digest)
            except OSError as exc:
                # refuse rather than risk accepting a replay; 503, so the sender tries again later
                from litestar.exceptions import ServiceUnavailableException

                log.error("callback replay store %s is not usable: %s", self.path, exc)
                raise ServiceUnavailableException("callback replay store unavailable") from exc
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            expiry = self._seen.get(digest)
            if expiry is not None and expiry > now:
                return False
            self._seen[digest] = now + self.lifetime
            return True

    def _create(self, target: Path) -> bool:
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    def _expired(self, target: Path, now: float) -> bool:
        try:
            return target.stat().st_mtime + self.lifetime <= now
        except FileNotFoundError:
            return True

    def _first_use_file(self, digest: str) -> bool:
        """The file store's first_use (in a worker thread). Raises OSError when the directory is unusable."""
        assert self.path is not None
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path / digest
        now = time.time()
        if now - self._swept > self.SWEEP_SECONDS:
            self._sweep(now)
        if self._create(target):
            return True
        if not self._expired(target, now):
            return False
        # an old record of the same signature: replace it, one process at a time
        with open(self.path / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._expired(target, now):
                return False  # another process took it over first
            target.unlink(missing_ok=True)
            return self._create(target)

    def _sweep(self, now: float) -> None:
        """Delete expired records (under the lock, so a takeover never loses a fresh one)."""
        assert self.path is not None
        self._swept = now
        with open(self.path / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for entry in os.scandir(self.path):
                if entry.name.startswith("."):
                    continue
                if self._expired(Path(entry.path), now):
                    Path(entry.path).unlink(missing_ok=True)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _error(status: int, message: str) -> Response[dict[str, Any]]:
    return Response({"ok": False, "error": message}, status_code=status)


def _probe_output(key: str, settings: Settings) -> tuple[int, float | None, dict[str, Any] | None]:
    """Size, duration and probe of an output object (runs in a worker thread)."""
    storage = media_out(settings)
    info = storage.stat(key)
    try:
        from mpr.probe import probe
    except ImportError:  # probe module missing: register the size only
        return info.size, None, None
    try:
        with storage.local_copy(key) as path:
            result = probe(path)
    except MprError as exc:
        log.warning("callback output %s could not be probed: %s", key, exc)
        return info.size, None, None
    data = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(getattr(result, "__dict__", {}))
    return info.size, getattr(result, "duration", None), json.loads(json.dumps(data, default=str))


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
        raise ValidationError("callback body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("callback body must be a JSON object")
    status = data.get("status")
    if status not in ("completed", "failed"):
        raise ValidationError("callback status must be 'completed' or 'failed'")
    for name in ("output_key", "error"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ValidationError(f"callback {name} must be a string")
    if data.get("metrics") is not None and not isinstance(data["metrics"], dict):
        kind = _JSON_KINDS.get(type(data["metrics"]), "value")
        raise ValidationError(f"callback metrics must be a JSON object, got {kind}")
    return data


async def apply_report(job: TranscodeJob, data: dict[str, Any], settings: Settings) -> TranscodeJob:
    """Move the job as the callback says (storing its metrics); InvalidTransition when it is already final."""
    extra: dict[str, Any] = {} if data.get("metrics") is None else {"metrics": data["metrics"]}
    if data["status"] == "failed":
        error = (data.get("error") or "remote executor reported failure")[:4000]
        return await jobs.transition(job.id, JobStatus.FAILED, error=error, message=error, **extra)

    key = safe_key(data.get("output_key") or job.output_path)
    if key != job.output_path and await TranscodeJob.filter(output_path=key).exclude(id=job.id).exists():
        raise ValidationError(f"output {key} belongs to another job")  # else a UNIQUE violation (500)
    fields: dict[str, Any] = {"progress": 100.0, **extra}
    try:
        size, duration, probe = await asyncio.to_thread(_probe_output, key, settings)
    except NotFound:
        error = f"executor reported completion but output {key} is missing"
        return await jobs.transition(job.id, JobStatus.FAILED, error=error, message=error, **extra)
    fields.update(output_size=size, output_duration=duration, output_probe=probe)
    if key != job.output_path:
        fields["output_path"] = key
    if job.status == JobStatus.PENDING:
        try:
            await jobs.transition(job.id, JobStatus.PROCESSING, message="reported by callback")
        except InvalidTransition:
            pass  # someone else moved it; the COMPLETED transition below decides
    await _finish_chunks(job.id)
    return await jobs.transition(job.id, JobStatus.COMPLETED, **fields)


async def _finish_chunks(job_id: Any) -> None:
    """Mark the job's chunk rows that are not DONE yet DONE, with a ``chunk_done`` each.

    Called when a completed callback is about to complete the job: its output
    exists, so every chunk was encoded, even if a plan or chunk report (or a
    GCP watch round) that would have said so never arrived. Done before the
    final status event, which ends the event streams.
    """
    for row in await JobChunk.filter(job_id=job_id, status__not=ChunkStatus.DONE):
        now = jobs.now()
        updated = await JobChunk.filter(id=row.id, status__not=ChunkStatus.DONE).update(
            status=ChunkStatus.DONE, error=None, started_at=row.started_at or now, finished_at=now
        )
        if updated:
            await events.emit(
                events.JobEvent(
                    job_id=str(job_id),
                    type=events.CHUNK_DONE,
                    status=JobStatus.PROCESSING.value,
                    chunk_index=row.index,
                    worker=row.worker or "",
                    progress=100.0,
                    message="done (the job completed)",
                )
            )


async def _receive(
    request: Request, job_id: str, parse: Callable[[bytes], dict[str, Any]]
) -> tuple[TranscodeJob, dict[str, Any]] | Response[dict[str, Any]]:
    """Size, signature, job id, body, job, replay: the job and the parsed body, or the error answer."""
    settings = app_settings(request)
    body = await request.body()
    if len(body) > callbacks.MAX_BODY:
        return _error(413, f"callback body is larger than {callbacks.MAX_BODY} bytes")
    try:
        callbacks.verify(dict(request.headers), body, settings.callback_secret)
    except AuthError as exc:
        return _error(401, str(exc))
    try:
        jid = jobs.parse_job_id(job_id)
    except ValidationError:
        return _error(404, f"job {job_id} does not exist")
    try:
        data = parse(body)
    except ValidationError as exc:
        return _error(400, str(exc))
    if data.get("job_id") is not None and str(data["job_id"]) != str(jid):
        # a body signed for another job, posted to this job's URL
        return _error(400, "callback job_id does not match the URL")
    job = await TranscodeJob.get_or_none(id=jid)
    if job is None:
        return _error(404, f"job {job_id} does not exist")
    # recorded only now: a signed body posted to the wrong URL first must not burn the genuine delivery
    store: ReplayStore = request.app.state.replay_store
    if not await store.first_use(request.headers.get(callbacks.SIGNATURE_HEADER, "")):
        return _error(401, "callback signature was already used (replay)")
    return job, data


@post("/api/jobs/{job_id:str}/callback", request_max_body_size=callbacks.MAX_BODY, include_in_schema=False)
async def job_callback(request: Request, job_id: FromPath[str]) -> Response[dict[str, Any]]:
    """Receive a signed completion callback for ``job_id`` (see the module docstring)."""
    settings = app_settings(request)
    received = await _receive(request, job_id, _parse)
    if isinstance(received, Response):
        return received
    job, data = received
    jid = job.id

    if data.get("metrics"):
        log.info("job %s callback metrics: %s", jid, data["metrics"])
        await events.emit(
            events.JobEvent(job_id=str(jid), type=events.LOG, message=f"metrics: {json.dumps(data['metrics'])[:1000]}")
        )
    changed = True
    if job.status in FINAL_STATUSES:
        changed = False
    else:
        try:
            job = await apply_report(job, data, settings)
        except InvalidTransition:
            changed = False  # raced with a cancel or another callback: the final state stands
        except MprError as exc:
            return _error(400, str(exc))
    job = await TranscodeJob.get(id=jid)
    if not changed:
        log.info("job %s callback (%s) ignored: job is already %s", jid, data["status"], job.status.value)
    return Response({"ok": True, "changed": changed, "status": job.status.value}, status_code=200)


# -- chunk progress reports ----------------------------------------------------------------------

REPORT_TYPES = ("plan", "started", "done", "failed")
MAX_PLAN_CHUNKS = 1000  # within MAX_BODY; MPR_LAMBDA_MAX_CHUNKS is 400 by default
# the concat after the last chunk is the job's remaining few percent (as the local pipeline and GCP count)
CHUNKS_SHARE = 95.0


def _int(data: dict[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"chunk report {name} must be an integer >= {minimum}")
    return value


def _number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValidationError(f"chunk report {name} must be a non-negative number")
    return float(value)


def _parse_report(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise ValidationError("chunk report body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("chunk report body must be a JSON object")
    if data.get("type") not in REPORT_TYPES:
        raise ValidationError(f"chunk report type must be one of {', '.join(REPORT_TYPES)}")
    if data.get("run") is not None:
        _int(data, "run")
    if data["type"] == "plan":
        chunks = data.get("chunks")
        if not isinstance(chunks, list) or not 0 < len(chunks) <= MAX_PLAN_CHUNKS:
            raise ValidationError(f"chunk report chunks must be a list of 1 to {MAX_PLAN_CHUNKS} chunks")
        for position, chunk in enumerate(chunks):
            if not isinstance(chunk, dict) or _int(chunk, "index", -1) != position:
                raise ValidationError(f"chunk report chunks[{position}] must be an object with index {position}")
            start, end = _number(chunk, "start"), _number(chunk, "end")
            if start is None or end is None or end <= start:
                raise ValidationError(f"chunk report chunks[{position}] needs start < end (seconds)")
        return data
    index = _int(data, "index")
    _int(data, "attempt", 1, minimum=1)
    start, end = _number(data, "start"), _number(data, "end")
    if (start is None) != (end is None) or (end is not None and start is not None and end <= start):
        raise ValidationError("chunk report start and end must be given together, start < end (seconds)")
    if start is not None and index >= MAX_PLAN_CHUNKS:
        raise ValidationError(f"chunk report index must be below {MAX_PLAN_CHUNKS}")
    if data.get("count") is not None:
        count = _int(data, "count", minimum=1)
        if count <= index or count > MAX_PLAN_CHUNKS:
            raise ValidationError(f"chunk report count must be above the index, at most {MAX_PLAN_CHUNKS}")
    for name in ("worker", "error", "output_key"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ValidationError(f"chunk report {name} must be a string")
    _number(data, "seconds")
    return data


async def _processing(job: TranscodeJob, message: str) -> None:
    """A PENDING job's first report shows it runs (a remote executor may never have said so)."""
    if job.status is JobStatus.PENDING:
        try:
            await jobs.transition(job.id, JobStatus.PROCESSING, message=message)
        except InvalidTransition:
            pass


async def _queued(job_id: Any, index: int, start: float, end: float) -> None:
    """The ``chunk_queued`` event of a new (or requeued) row, as the local pipeline emits it."""
    await events.emit(
        events.JobEvent(
            job_id=str(job_id),
            type=events.CHUNK_QUEUED,
            status=JobStatus.PROCESSING.value,
            chunk_index=index,
            message=f"{start:.3f}-{end:.3f}s",
        )
    )


async def _create_rows(job_id: Any, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create QUEUED rows for ``chunks``; the ones this call created (a concurrent report may create some first)."""
    made = [JobChunk(job_id=job_id, index=c["index"], start=float(c["start"]), end=float(c["end"])) for c in chunks]
    try:
        await JobChunk.bulk_create(made)
        return chunks
    except IntegrityError:
        pass  # atomic: none of them was created; one at a time, skipping the rows that exist now
    created = []
    for c in chunks:
        try:
            await JobChunk.create(job_id=job_id, index=c["index"], start=float(c["start"]), end=float(c["end"]))
        except IntegrityError:
            continue
        created.append(c)
    return created


def _same_span(row: JobChunk, start: float, end: float) -> bool:
    """The row is this chunk of the plan (a microsecond's leeway for the numbers' trips through JSON)."""
    return abs(row.start - start) < 1e-6 and abs(row.end - end) < 1e-6


def _earlier_run(row: JobChunk, job: TranscodeJob) -> bool:
    """True when the row was last reported before the job's current run started (a retried job's)."""
    last = row.finished_at or row.started_at
    return job.started_at is None or last is None or last < job.started_at


async def _row_from_report(job: TranscodeJob, index: int, start: float, end: float, count: int | None) -> None:
    """Make chunk ``index``'s row from a report (its plan report lost), first deleting the earlier runs' misfits.

    The report says chunk ``index`` of its plan is ``start``-``end`` (of
    ``count``). A plan's chunks follow each other in index order, so rows an
    earlier run left (a retried job's, planned differently) cannot be chunks of
    this plan when they are: at the index with another span, at ``count`` or
    above, before the index ending after ``start``, after it starting before
    ``end``. Those are deleted, each only in the state it was judged in (as
    ``_chunk`` updates), so a row a concurrent report of this run has just
    moved (it belongs to this run now) stays; the others wait for their own
    chunk's report. Then the row is created (``chunk_queued``, as the plan
    would have) unless a concurrent report created it first.
    """
    eps = 1e-6
    misfit = Q(index=index) | Q(index__lt=index, end__gt=start + eps) | Q(index__gt=index, start__lt=end - eps)
    if count is not None:
        misfit |= Q(index__gte=count)
    deleted = []
    for r in await JobChunk.filter(Q(job_id=job.id) & misfit):
        if (r.index == index and _same_span(r, start, end)) or not _earlier_run(r, job):
            continue
        if await JobChunk.filter(id=r.id, status=r.status, attempts=r.attempts, worker=r.worker).delete():
            deleted.append(r.index)
    if deleted:
        log.info(
            "job %s: chunk %d reported as %.3f-%.3f s (of %s), a new plan: rows %s of an earlier run replaced",
            job.id,
            index,
            start,
            end,
            count if count is not None else "?",
            sorted(deleted),
        )
    if await _create_rows(job.id, [{"index": index, "start": start, "end": end}]):
        await _processing(job, "reported by the executor's chunks")
        await _queued(job.id, index, start, end)


async def _plan(job: TranscodeJob, chunks: list[dict[str, Any]]) -> bool:
    """Create the job's QUEUED rows (CHUNK_QUEUED each); False when that changes nothing.

    Rows that fit the plan (same index, start and end) are kept: DONE rows
    stay (a retried job's execution reuses the chunk objects already encoded),
    so do rows chunk reports of this run created or moved before the plan
    report arrived (it may come late); rows left running or failed by an
    earlier run are requeued, and the plan's other chunks get new rows. A
    retried Plan step, or the same plan again, changes nothing. A different
    plan replaces the rows.
    """
    rows = {r.index: r for r in await JobChunk.filter(job_id=job.id)}
    planned = {c["index"]: (float(c["start"]), float(c["end"])) for c in chunks}
    if rows and all(i in planned and _same_span(r, *planned[i]) for i, r in rows.items()):
        left = [i for i, r in rows.items() if r.status not in (ChunkStatus.QUEUED, ChunkStatus.DONE)]
        requeue = [i for i in left if _earlier_run(rows[i], job)]
        if requeue:
            await JobChunk.filter(job_id=job.id, index__in=requeue).update(
                status=ChunkStatus.QUEUED, worker=None, error=None, started_at=None, finished_at=None
            )
        queued = [c for c in chunks if c["index"] in requeue]
        queued += await _create_rows(job.id, [c for c in chunks if c["index"] not in rows])
        if not queued:
            return False
    else:
        await JobChunk.filter(job_id=job.id).delete()
        queued = await _create_rows(job.id, chunks)
        if not queued:
            return False  # a concurrent delivery of the same plan created them first
    await _processing(job, "reported by the executor's plan")
    done = await JobChunk.filter(job_id=job.id, status=ChunkStatus.DONE).count()
    if done:
        await _raise_progress(job.id, CHUNKS_SHARE * done / max(len(chunks), await _total(job.id)))
    for c in sorted(queued, key=lambda c: c["index"]):
        await _queued(job.id, c["index"], float(c["start"]), float(c["end"]))
    return True


async def _total(job_id: Any, count: int = 0) -> int:
    """How many chunks the job has, as far as known: ``count`` (a report's), the rows, the highest index + 1."""
    indexes = await JobChunk.filter(job_id=job_id).values_list("index", flat=True)
    return max(count, len(indexes), max(indexes, default=-1) + 1)


async def _raise_progress(job_id: Any, progress: float) -> None:
    """:func:`mpr.jobs.update_progress`, only forwards: reports counted in parallel may arrive out of order."""
    current = await TranscodeJob.filter(id=job_id).values_list("progress", flat=True)
    if not current or progress > (current[0] or 0.0):
        await jobs.update_progress(job_id, progress)


def _stale(row: JobChunk, kind: str, worker: str, attempt: int) -> bool:
    """True when the report adds nothing: a duplicate, or older than what the row already says."""
    if row.status == ChunkStatus.DONE:
        return True  # a done chunk stays done (late started/failed of an earlier attempt, duplicate done)
    if kind == "done":
        return False
    if attempt < row.attempts:
        return True
    target = ChunkStatus.RUNNING if kind == "started" else ChunkStatus.FAILED
    return row.status == target and (row.worker or "") == worker and attempt == row.attempts


async def _chunk(job: TranscodeJob, data: dict[str, Any]) -> bool:
    """Apply a started/done/failed report to its row and emit the chunk event; False when it changes nothing."""
    kind, index = data["type"], data["index"]
    worker = (data.get("worker") or "")[:64]
    attempt = int(data.get("attempt", 1))
    seconds = _number(data, "seconds")
    start, end = _number(data, "start"), _number(data, "end")
    count = int(data["count"]) if data.get("count") is not None else None
    for _ in range(5):  # optimistic: the update only lands on the row state the decision was made on
        row = await JobChunk.get_or_none(job_id=job.id, index=index)
        if row is not None and start is not None and end is not None and not _same_span(row, start, end):
            if not _earlier_run(row, job):
                log.warning(
                    "job %s: chunk %d report (%s) refused: %.3f-%.3f s, this run's row is %.3f-%.3f s",
                    job.id,
                    index,
                    kind,
                    start,
                    end,
                    row.start,
                    row.end,
                )
                raise ValidationError(
                    f"chunk {index} is {row.start:.3f}-{row.end:.3f} s in this run, not {start:.3f}-{end:.3f} s"
                )
            await _row_from_report(job, index, start, end, count)  # a retried job's new plan
            continue
        if row is None:
            if start is None or end is None:
                rows = await JobChunk.filter(job_id=job.id).count()
                raise ValidationError(f"chunk {index} is not in the job's plan ({rows} chunks)")
            # the plan report was lost (or is late): the report makes the row the plan would have made
            await _row_from_report(job, index, start, end, count)
            continue
        if _stale(row, kind, worker, attempt):
            return False
        now = jobs.now()
        fields: dict[str, Any] = {"worker": worker or row.worker, "attempts": max(row.attempts, attempt)}
        if kind == "started":
            fields.update(status=ChunkStatus.RUNNING, started_at=now, finished_at=None, error=None)
        elif kind == "done":
            started = row.started_at or (now - dt.timedelta(seconds=seconds) if seconds is not None else now)
            fields.update(
                status=ChunkStatus.DONE,
                started_at=started,
                finished_at=now,
                error=None,
                output_key=data.get("output_key"),
            )
        else:
            error = (data.get("error") or "chunk failed")[:4000]
            fields.update(status=ChunkStatus.FAILED, finished_at=now, error=error)
        updated = await JobChunk.filter(id=row.id, status=row.status, attempts=row.attempts, worker=row.worker).update(
            **fields
        )
        if updated:
            break
    else:
        return False  # five concurrent changes in a row: the others' state stands
    event = {"started": events.CHUNK_STARTED, "done": events.CHUNK_DONE, "failed": events.CHUNK_FAILED}[kind]
    if kind == "started":
        message = f"attempt {attempt}"
    elif kind == "done":
        message = f"encoded in {seconds:.2f} s" if seconds is not None else ""
    else:
        message = f"attempt {attempt}: {fields['error']}"[:1000]
    await events.emit(
        events.JobEvent(
            job_id=str(job.id),
            type=event,
            status=JobStatus.PROCESSING.value,
            chunk_index=index,
            worker=worker,
            progress=100.0 if kind == "done" else 0.0,
            message=message,
        )
    )
    if kind == "done":
        total = await _total(job.id, count or 0)
        done = await JobChunk.filter(job_id=job.id, status=ChunkStatus.DONE).count()
        await _raise_progress(job.id, CHUNKS_SHARE * done / total)
    return True


@post("/api/jobs/{job_id:str}/chunks", request_max_body_size=callbacks.MAX_BODY, include_in_schema=False)
async def job_chunks(request: Request, job_id: FromPath[str]) -> Response[dict[str, Any]]:
    """Receive a signed chunk progress report for ``job_id`` (see the module docstring)."""
    received = await _receive(request, job_id, _parse_report)
    if isinstance(received, Response):
        return received
    job, data = received
    if job.status in FINAL_STATUSES or (data.get("run") is not None and data["run"] != job.attempts):
        # too late (the job ended) or from an earlier run of a retried job: the rows stand as they are
        log.info("job %s chunk report (%s) ignored: job is %s", job.id, data["type"], job.status.value)
        return Response({"ok": True, "changed": False, "status": job.status.value}, status_code=200)
    try:
        changed = await (_plan(job, data["chunks"]) if data["type"] == "plan" else _chunk(job, data))
    except ValidationError as exc:
        return _error(400, str(exc))
    job = await TranscodeJob.get(id=job.id)
    return Response({"ok": True, "changed": changed, "status": job.status.value}, status_code=200)


routes = [job_callback, job_chunks]
