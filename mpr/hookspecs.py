"""The whole plugin surface of MPR on one page.

A plugin is a module with ``@mpr.hookimpl`` functions, found through the
``mpr`` entry-point group. Registration hooks receive a ``register``
callback owned by the core, which validates names and refuses duplicates.
Hook arguments are only ever appended: an implementation may take fewer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mpr.events import EventSink
    from mpr.executors import Executor
    from mpr.presets import Preset
    from mpr.settings import Settings
    from mpr.storage import Storage

hookspec = pluggy.HookspecMarker("mpr")


@hookspec
def register_executors(register: Callable[[str, type[Executor]], None]) -> None:
    """Register executor classes: ``register("lambda", LambdaExecutor)``.

    Called once when plugins load. The class is built with ``cls(settings)``.
    A name registered twice raises PluginError.
    """


@hookspec
def register_storage_backends(register: Callable[[str, Callable[[str, Settings], Storage]], None]) -> None:
    """Register storage backend factories by URL scheme: ``register("s3", S3Storage)``.

    The factory is called as ``factory(root_url, settings)``. The scheme
    ``file`` covers plain paths. A scheme registered twice raises PluginError.
    """


@hookspec
def register_presets(register: Callable[[Preset], None]) -> None:
    """Register presets shipped by the plugin: ``register(Preset(name="h264-720p", ...))``.

    Synced into the database at start-up with ``source`` set to the plugin's
    name; a preset the user edited is kept, never overwritten.
    """


@hookspec
def register_event_sinks(register: Callable[[EventSink], None], settings: Settings) -> None:
    """Register event sinks; each receives every JobEvent through ``async emit(event)``.

    A sink that raises is logged and never fails a job.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``mpr`` click group: ``@cli.command() def mycmd(): ...``."""


@hookspec
def startup(app: Any) -> None:
    """Called once when the web app is built, with the Litestar ``app``.

    A plugin may register routes (``app.register``), start-up work
    (``app.on_startup.append(async_fn)``, run once the database is open) and
    shutdown work (``app.state.before_db_close.append(async_fn)``, run while
    the database is still open). ``app.state.settings`` holds the settings and
    ``app.state.embed_worker`` tells whether ``mpr serve`` wants an in-process
    worker. mpr-local starts its embedded worker this way.
    """
