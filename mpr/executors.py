"""The executor interface: how a job leaves the API and gets run somewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

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
    work still running for it. Executors without callbacks may implement
    ``async poll(job)`` to report a run that died silently. An executor that
    runs trimmed chunked jobs in chunks sets ``chunked_trim = True`` (local,
    lambda, gcp); for the others such a job is refused when it is created.
    """

    name: str

    def __init__(self, settings: Settings) -> None: ...

    async def submit(self, job: TranscodeJob) -> str | None: ...

    async def cancel(self, job: TranscodeJob) -> None: ...


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
