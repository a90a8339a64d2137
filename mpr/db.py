"""Database setup (Tortoise ORM) and a portal for running ORM code from plain threads.

Tortoise is async. ffmpeg workers, huey tasks and chunker threads are not:
they call :func:`run_sync`, which runs a coroutine on the process's one
database event loop (the web app's loop inside ``mpr serve``, or a private
background loop in ``mpr worker`` and the CLI).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from tortoise import Tortoise

from mpr.settings import Settings, get_settings

T = TypeVar("T")

MODELS_MODULES = ["mpr.models"]


def normalize_db_url(url: str) -> str:
    """Tortoise's URL form: ``postgresql://`` → ``postgres://``; SQLite parent dir created."""
    if url.startswith("postgresql://"):
        url = "postgres://" + url[len("postgresql://") :]
    if url.startswith("sqlite://") and url not in ("sqlite://:memory:",):
        path = Path(url[len("sqlite://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
    return url


def tortoise_config(settings: Settings | None = None) -> dict[str, Any]:
    """The Tortoise/aerich configuration dict for ``settings.database_url``."""
    settings = settings or get_settings()
    return {
        "connections": {"default": normalize_db_url(settings.database_url)},
        "apps": {"models": {"models": [*MODELS_MODULES, "aerich.models"], "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def __getattr__(name: str) -> Any:
    # aerich's CLI reads ``tool.aerich.tortoise_orm = "mpr.db.TORTOISE_ORM"``; built from settings on access.
    if name == "TORTOISE_ORM":
        return tortoise_config()
    raise AttributeError(name)


async def init_db(settings: Settings | None = None) -> None:
    """Open the database connections for this event loop (no schema changes; see ``mpr migrate``).

    Tortoise 1.x keeps its state in a contextvar of the task that ran init; the
    web app's requests and :func:`run_sync` calls from threads run in other
    tasks, so the context is also made the process-wide fallback (as Tortoise's
    own ``RegisterTortoise`` does). If another context already holds the
    fallback, this one stays task-local.
    """
    from tortoise.exceptions import ConfigurationError

    try:
        await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    except ConfigurationError as exc:
        if "Global context fallback" not in str(exc):
            raise
        await Tortoise.init(config=tortoise_config(settings))


async def close_db() -> None:
    """Close all database connections."""
    await Tortoise.close_connections()


class Portal:
    """Runs coroutines on one event loop from any thread; owns a background loop unless given one."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._own = loop is None
        # Tortoise >= 1.0 keeps its connections in a contextvar: coroutines submitted from plain
        # threads must run in the context where the database was initialised (captured here when
        # the portal wraps a running loop, after init_db() for a portal that owns its loop).
        self.context: contextvars.Context | None = None if loop is None else contextvars.copy_context()
        if loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="mpr-db-loop", daemon=True)
            self._thread.start()
        self.loop = loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the portal's loop and return a concurrent Future."""
        if self.context is None:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        # the task copies the context current at scheduling time; a copy per call because one
        # Context cannot be entered by two threads at once
        return self.context.copy().run(asyncio.run_coroutine_threadsafe, coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's loop and wait for its result (from a non-loop thread)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError("Portal.call() from the portal's own loop would deadlock; await instead")
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Stop the background loop if this portal owns it."""
        if self._own:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


_portal: Portal | None = None
_portal_lock = threading.Lock()


def set_portal(portal: Portal | None) -> None:
    """Use ``portal`` for :func:`run_sync` (the web app sets its own loop at start-up)."""
    global _portal
    _portal = portal


async def _init_and_capture(settings: Settings | None) -> contextvars.Context:
    await init_db(settings)
    return contextvars.copy_context()


def get_portal(settings: Settings | None = None) -> Portal:
    """The process's database portal; creates a background loop with the DB initialised on first use."""
    global _portal
    with _portal_lock:
        if _portal is None:
            portal = Portal()
            portal.context = portal.call(_init_and_capture(settings))
            _portal = portal
        return _portal


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run an ORM coroutine from a plain (non-async) thread and return its result."""
    return get_portal().call(coro, timeout)


def close_portal() -> None:
    """Close the DB connections and stop the background loop (CLI exit, tests)."""
    global _portal
    with _portal_lock:
        if _portal is not None:
            if _portal._own:
                _portal.call(close_db())
            _portal.stop()
            _portal = None
