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
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
import time
from typing import Any

from litestar import Request, post
from litestar.response import Response

from mpr import callbacks, events, jobs
from mpr.api.deps import app_settings
from mpr.errors import AuthError, InvalidTransition, MprError, NotFound, ValidationError
from mpr.models import FINAL_STATUSES, JobStatus, TranscodeJob
from mpr.settings import Settings
from mpr.storage import media_out, safe_key

log = logging.getLogger("mpr.api.callback")


class ReplayStore:
    """Remembers callback signatures for :data:`mpr.callbacks.MAX_AGE` seconds (Redis when configured)."""

    def __init__(self, redis_url: str | None = None, ttl: int = callbacks.MAX_AGE) -> None:
        self.redis_url = redis_url
        self.ttl = ttl
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._redis: Any = None

    async def first_use(self, signature: str) -> bool:
        """Record ``signature``; True if it was not seen within the TTL (i.e. not a replay)."""
        digest = hashlib.sha256(signature.encode()).hexdigest()
        if self.redis_url:
            if self._redis is None:
                import redis.asyncio as aioredis

                self._redis = aioredis.from_url(self.redis_url)
            # +60 s covers clock skew between the sender's timestamp and our own clock
            return bool(await self._redis.set(f"mpr:callback:seen:{digest}", "1", nx=True, ex=self.ttl + 60))
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            expiry = self._seen.get(digest)
            if expiry is not None and expiry > now:
                return False
            self._seen[digest] = now + self.ttl + 60
            return True

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


async def _apply(job: TranscodeJob, data: dict[str, Any], settings: Settings) -> TranscodeJob:
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
    return await jobs.transition(job.id, JobStatus.COMPLETED, **fields)


@post("/api/jobs/{job_id:str}/callback", request_max_body_size=callbacks.MAX_BODY, include_in_schema=False)
async def job_callback(request: Request, job_id: str) -> Response[dict[str, Any]]:
    """Receive a signed completion callback for ``job_id`` (see the module docstring)."""
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
        data = _parse(body)
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
            job = await _apply(job, data, settings)
        except InvalidTransition:
            changed = False  # raced with a cancel or another callback: the final state stands
        except MprError as exc:
            return _error(400, str(exc))
    job = await TranscodeJob.get(id=jid)
    if not changed:
        log.info("job %s callback (%s) ignored: job is already %s", jid, data["status"], job.status.value)
    return Response({"ok": True, "changed": changed, "status": job.status.value}, status_code=200)


routes = [job_callback]
