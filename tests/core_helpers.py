"""Helpers shared by the core tests: fake plugins and quick rows."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mpr import hookimpl


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
