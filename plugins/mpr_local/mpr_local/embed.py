"""The embedded worker of ``mpr serve``: a huey consumer in the web app's process.

Attached through the ``startup(app)`` hook, so the core app never imports
this plugin. It starts after the app's lifespan has opened the database and
set the DB portal, and stops before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def attach(app: Any) -> None:
    """Start a worker with the app when ``app.state.embed_worker`` is set and the executor is ``local``."""
    settings = app.state.settings
    if not app.state.get("embed_worker") or settings.executor != "local":
        return
    handle: dict[str, Any] = {}

    async def start_worker() -> None:
        from mpr_local.worker import start_embedded_worker

        handle["worker"] = await asyncio.to_thread(start_embedded_worker, settings)

    async def stop_worker() -> None:
        worker = handle.pop("worker", None)
        if worker is not None:
            await asyncio.to_thread(worker.stop, 10.0)

    app.on_startup.append(start_worker)  # runs after the app's lifespan opened the database
    app.state.before_db_close.append(stop_worker)
