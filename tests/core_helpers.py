"""Helpers shared by the core tests: fake plugins and quick rows."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mpr import hookimpl
from mpr.errors import NotFound
from mpr.plugins import register_plugin, unregister_plugin
from mpr.storage import ObjectInfo, safe_key


class CollectSink:
    """An event sink that keeps every event (registered through the hook, like a real plugin)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def emit(self, event: Any) -> None:
        self.events.append(event)

    @hookimpl
    def register_event_sinks(self, register):
        register(self)

    def statuses(self, job_id: Any) -> list[str]:
        return [e.status for e in self.events if e.job_id == str(job_id) and e.type == "status"]


class FakeExecutorPlugin:
    """Registers executor ``fake``: records submits and cancels; ``fail`` makes submit raise."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.fail: Exception | None = None
        plugin = self

        class FakeExecutor:
            name = "fake"

            def __init__(self, settings: Any) -> None:
                self.settings = settings

            async def submit(self, job: Any) -> str | None:
                if plugin.fail is not None:
                    raise plugin.fail
                plugin.submitted.append(str(job.id))
                return f"ext-{job.id}"

            async def cancel(self, job: Any) -> None:
                plugin.cancelled.append(str(job.id))

        self.cls = FakeExecutor

    @hookimpl
    def register_executors(self, register):
        register("fake", self.cls)


def put_media(media: dict[str, Path], src: Path, key: str) -> Path:
    """Copy ``src`` into MEDIA_IN as ``key``."""
    dst = media["in"] / key
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


async def ready_asset(media: dict[str, Path], src: Path, key: str = "clip.mp4") -> Any:
    """Put ``src`` into MEDIA_IN and register it (probed) as an asset."""
    from mpr.scan import register

    put_media(media, src, key)
    asset, _ = await register(key)
    return asset


async def synced() -> None:
    from mpr.presets import sync_presets

    await sync_presets()


class MemoryStorage:
    """A non-filesystem backend (like S3): objects live in a dict; local_copy downloads to a temp file.

    Subclass it for a fresh ``objects`` dict; :func:`storage_plugin` registers it under a scheme.
    """

    objects: ClassVar[dict[str, bytes]] = {}

    def __init__(self, root: str, settings) -> None:
        self.root = root

    def list(self, prefix: str = ""):
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key=key, size=len(self.objects[key]))

    def stat(self, key: str) -> ObjectInfo:
        key = safe_key(key)
        if key not in self.objects:
            raise NotFound(key)
        return ObjectInfo(key=key, size=len(self.objects[key]))

    def exists(self, key: str) -> bool:
        return safe_key(key) in self.objects

    @contextlib.contextmanager
    def local_copy(self, key: str):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(safe_key(key)).name
            path.write_bytes(self.objects[safe_key(key)])
            yield path

    def local_path(self, key: str):
        return None


def storage_plugin(scheme: str, backend: type) -> Any:
    """A plugin object registering ``backend`` for ``scheme://`` storage URLs."""

    class StoragePlugin:
        @hookimpl
        def register_storage_backends(self, register):
            register(scheme, backend)

    return StoragePlugin()


@pytest.fixture(name="fake")
def fake_executor(media, monkeypatch):
    """Fixture ``fake`` (import ``fake_executor`` into a test module): MPR_EXECUTOR=fake: jobs go to a registered :class:`FakeExecutorPlugin` (yielded)."""
    monkeypatch.setenv("MPR_EXECUTOR", "fake")
    from mpr.settings import get_settings

    get_settings.cache_clear()
    plugin = FakeExecutorPlugin()
    register_plugin(plugin, name="mpr-fake")
    try:
        yield plugin
    finally:
        unregister_plugin(plugin)
