"""The huey queue of the local executor: one ``run_job(job_id)`` task, on SQLite or Redis.

Without ``MPR_REDIS_URL`` the queue is a SQLite file in ``MPR_VAR_DIR``
(``queue.db``): no server, shared by the worker processes of one machine.
With it, the queue is a Redis sorted set (huey's ``PriorityRedisHuey``,
``BZPOPMIN``), shared by workers on any number of machines. Both honour the
job's ``priority``: higher runs first, equal priorities in enqueue order.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.registry import Message
from huey.serializer import Serializer

from mpr_local.settings import LocalSettings

if TYPE_CHECKING:
    from mpr.settings import Settings

TASK_NAME = "run_job"
Runner = Callable[..., None]


class JsonSerializer(Serializer):
    """huey messages as JSON instead of pickle.

    Whoever can write to a shared Redis could otherwise make every worker
    unpickle (run) anything; with JSON a queue entry is data only, and one
    that is not a valid message is dropped by the worker with a log line.
    """

    def _serialize(self, data: Any) -> bytes:
        payload = ["m", *_message_fields(data)] if isinstance(data, Message) else ["v", data]
        return json.dumps(payload, separators=(",", ":"), default=_json_default).encode()

    def _deserialize(self, data: bytes) -> Any:
        kind, *rest = json.loads(data)
        if kind == "m":
            return _message(rest)
        if kind == "v":
            return rest[0]
        raise ValueError(f"not an MPR queue entry: {kind!r}")


# Message fields holding nested messages and datetimes (huey.registry.Message).
_NESTED = (Message._fields.index("on_complete"), Message._fields.index("on_error"))
_CHORD = Message._fields.index("chord_config")
_DATES = tuple(Message._fields.index(f) for f in ("eta", "expires", "expires_resolved"))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"__dt__": value.isoformat()}
    raise TypeError(f"cannot put a {type(value).__name__} on the MPR queue (ids and numbers only)")


def _message_fields(message: Message) -> list[Any]:
    fields = list(message)
    for i in _NESTED:
        if fields[i] is not None:
            fields[i] = _message_fields(fields[i])
    if fields[_CHORD] is not None:
        cid, size, idx, callback = fields[_CHORD]
        fields[_CHORD] = [cid, size, idx, _message_fields(callback)]
    return fields


def _message(fields: list[Any]) -> Message:
    for i in _NESTED:
        if fields[i] is not None:
            fields[i] = _message(fields[i])
    if fields[_CHORD] is not None:
        cid, size, idx, callback = fields[_CHORD]
        fields[_CHORD] = (cid, size, idx, _message(callback))
    for i in _DATES:
        if isinstance(fields[i], dict):
            fields[i] = dt.datetime.fromisoformat(fields[i]["__dt__"])
    args = Message._fields.index("args")
    fields[args] = tuple(fields[args])
    return Message(*fields)


def make_huey(settings: Settings, local: LocalSettings | None = None) -> Huey:
    """A huey instance for ``settings``: PriorityRedisHuey with Redis, else SqliteHuey in the var dir."""
    local = local or LocalSettings.from_env()
    # Results are never read (job state lives in the database), so huey stores none.
    options: dict[str, Any] = {"results": False, "serializer": JsonSerializer()}
    if settings.redis_url:
        return PriorityRedisHuey(local.queue_name, url=settings.redis_url, blocking=True, read_timeout=1, **options)
    return SqliteHuey(local.queue_name, filename=str(Path(settings.var_path) / "queue.db"), **options)


class JobQueue:
    """A huey instance with MPR's ``run_job`` task registered on it.

    ``runner`` is what a worker calls for each job (default
    ``mpr.execute.run_job``); the dispatch benchmark swaps in a no-op.
    """

    def __init__(self, huey: Huey, runner: Runner | None = None) -> None:
        self.huey = huey
        self._runner = runner
        self.task = huey.task(name=TASK_NAME)(self._run)

    @property
    def kind(self) -> str:
        """``redis`` or ``sqlite``."""
        return "redis" if isinstance(self.huey, PriorityRedisHuey) else "sqlite"

    @property
    def name(self) -> str:
        """The huey queue name (``MPR_LOCAL_QUEUE``)."""
        return self.huey.name

    def runner(self) -> Runner:
        """The job runner called by workers."""
        if self._runner is not None:
            return self._runner
        from mpr.execute import run_job  # core module; imported late so the queue works without it

        return run_job

    def enqueue(self, job_id: str, priority: int = 0) -> str:
        """Put ``run_job(job_id)`` on the queue (blocking I/O) and return the huey task id."""
        task = self.task.s(str(job_id), priority=priority)
        self.huey.enqueue(task)
        return task.id

    def pending(self) -> int:
        """Number of tasks waiting in the queue."""
        return self.huey.pending_count()

    def queued_job_ids(self) -> set[str]:
        """Job ids of the ``run_job`` tasks waiting in the queue (reads the whole queue)."""
        ids = set()
        for data in self.huey.storage.enqueued_items():
            try:
                task = self.huey.deserialize_task(data)
            except Exception:  # noqa: BLE001, S112 - a task of another app or version: not ours to judge
                continue
            if isinstance(task, self.task.task_class) and task.args:
                ids.add(str(task.args[0]))
        return ids

    def close(self) -> None:
        """Release the storage connections."""
        storage = self.huey.storage
        if hasattr(storage, "pool"):
            storage.pool.disconnect()
        else:
            storage.close()

    def _run(self, job_id: str) -> None:
        from mpr_local.worker import execute_task

        execute_task(self, job_id)


_queues: dict[tuple[str | None, str, str], JobQueue] = {}
_lock = threading.Lock()


def get_queue(settings: Settings, local: LocalSettings | None = None) -> JobQueue:
    """The process's queue for ``settings`` (one per Redis URL / var dir / queue name)."""
    local = local or LocalSettings.from_env()
    key = (settings.redis_url, str(Path(settings.var_dir).resolve()), local.queue_name)
    with _lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = JobQueue(make_huey(settings, local))
        return queue


def reset_queues() -> None:
    """Close and forget cached queues (tests)."""
    with _lock:
        for queue in _queues.values():
            queue.close()
        _queues.clear()
