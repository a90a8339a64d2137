"""The executor interface: how a job leaves the API and gets run somewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mpr.plugins import load_plugins, missing_plugin_error

if TYPE_CHECKING:
    from mpr.models import TranscodeJob
    from mpr.settings import Settings


@runtime_checkable
class Executor(Protocol):
    """Runs jobs. Built once per process as ``cls(settings)``.

    ``submit`` is called after the job row exists in PENDING; it returns an
    external id (an execution ARN, a Cloud Run execution name) or None.
    ``cancel`` is called after the job moved to CANCELLED and must stop any
    work still running for it.

    Executors without callbacks (or whose callback may never come) implement
    ``async poll(job)``: ``mpr serve`` calls it every ``MPR_POLL_INTERVAL``
    seconds for each of the executor's PROCESSING jobs and PENDING jobs with an
    external id (:mod:`mpr.polling`). Returning a :class:`PollResult` lets the
    core apply it like a callback; any other value is only reported (the
    executor moved the job itself). An executor that follows some jobs itself
    may add ``watching(job) -> bool``; the poll loop skips a job while it is
    true. An executor that keeps work files of its own (chunks in a bucket)
    may add ``async discard(job)``: ``deleteJob`` calls it to remove them.
    An executor that
    runs trimmed chunked jobs in chunks sets ``chunked_trim = True`` (local,
    lambda, gcp); for the others such a job is refused when it is created.
    """

    name: str

    def __init__(self, settings: Settings) -> None: ...

    async def submit(self, job: TranscodeJob) -> str | None: ...

    async def cancel(self, job: TranscodeJob) -> None: ...


@dataclass(frozen=True)
class PollResult:
    """What ``poll`` learned about a job's run, applied by :func:`mpr.polling.apply_result`.

    ``status``: ``running`` (nothing to do), ``completed`` (the output is at
    ``output_key``, default the job's; probed and recorded as a completed
    callback would), ``failed`` (``error`` says why) or ``cancelled``.
    ``state`` is the executor's own word for it (``ABORTED``), shown by poll
    commands. A job that is already final is never changed.
    """

    status: Literal["running", "completed", "failed", "cancelled"]
    error: str = ""
    output_key: str | None = None
    metrics: dict[str, Any] | None = None
    state: str = ""


_instances: dict[str, Executor] = {}


def get_executor(name: str, settings: Settings | None = None) -> Executor:
    """The executor registered as ``name`` (one instance per process).

    Raises PluginError naming the package to install when none is registered.
    """
    from mpr.settings import get_settings

    if name not in _instances:
        registry = load_plugins()
        cls = registry.executors.get(name)
        if cls is None:
            raise missing_plugin_error("executor", name, list(registry.executors))
        _instances[name] = cls(settings or get_settings())
    return _instances[name]


def reset_executors() -> None:
    """Drop cached executor instances (tests)."""
    _instances.clear()
