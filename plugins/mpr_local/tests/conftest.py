"""Fixtures of the local executor's tests: a unique huey queue per test (SQLite or Redis), workers, a library."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from testkit import REDIS_URL, _reset_caches, make_clip, redis_available, require


@pytest.fixture(params=["sqlite", "redis"])
def queue_kind(request: pytest.FixtureRequest, media, monkeypatch: pytest.MonkeyPatch):
    """A fresh queue for this test: SQLite file in the test's var dir, or a uniquely named Redis queue."""
    from mpr_local.queue import get_queue, reset_queues

    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprt_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("MPR_LOCAL_HEARTBEAT_INTERVAL", "0.2")
    if request.param == "redis":
        require("Redis", redis_available(), "127.0.0.1:6379")
        monkeypatch.setenv("MPR_REDIS_URL", REDIS_URL)
    _reset_caches()
    reset_queues()
    yield request.param
    try:
        get_queue(get_settings()).huey.flush()  # drops only this queue's keys / rows
    finally:
        reset_queues()
        get_settings.cache_clear()


@pytest.fixture
async def workers(queue_kind):
    """``await workers.start()`` runs a worker (consumer threads + reaper) in this process; all stop at teardown.

    List the database fixture before this one so workers stop before the database closes.
    """
    from mpr_local.worker import WorkerHandle

    from mpr.settings import get_settings

    class Workers:
        def __init__(self) -> None:
            self.handles: list[WorkerHandle] = []

        async def start(self) -> WorkerHandle:
            handle = WorkerHandle(get_settings()).start()
            self.handles.append(handle)
            return handle

    pool = Workers()
    try:
        yield pool
    finally:
        for handle in pool.handles:
            await asyncio.to_thread(handle.stop, 10)


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20 s 640x480 clip: long enough that encoding it to 720p is still running when a test cancels it."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", seconds=20.0, size="640x480")


@pytest.fixture
async def library(media, clips):
    """``await library.add(name, clip=...)`` copies a clip into MEDIA_IN and registers it; presets are synced."""
    from mpr import scan
    from mpr.presets import sync_presets

    await sync_presets()

    class Library:
        async def add(self, name: str = "sample.mp4", clip: Path | None = None):
            shutil.copyfile(clip or clips["video"], media["in"] / name)
            asset, _ = await scan.register(name)
            return asset

    return Library()
