"""Fixtures for the API tests: the real app served by uvicorn on a free port, on the test's event loop.

Running uvicorn as a task on the test loop (rather than in a thread) keeps the
app on the same loop as the ``db`` fixture's connections, exactly like
``mpr serve`` where the app's loop owns the database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testkit import Api, free_port, serving  # noqa: F401  (re-exported for the API tests)


@pytest.fixture
async def start_api(db, media, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Start the real app with extra environment (``await start_api(MPR_API_TOKEN="x", worker=True)``)."""
    async for start in serving(monkeypatch):
        yield start


@pytest.fixture
async def api(start_api) -> Api:
    """The app with default settings (no token, no admin password, no embedded worker)."""
    return await start_api()


def put_clip(media: dict[str, Path], clip: Path, name: str | None = None) -> Path:
    """Copy a generated clip into MEDIA_IN (under ``name``)."""
    target = media["in"] / (name or clip.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, target)
    return target


async def make_asset(path: str = "a.mp4", **fields: Any) -> Any:
    """A MediaAsset row (ready video by default) without touching the filesystem."""
    from mpr.models import AssetKind, AssetStatus, MediaAsset

    values = {
        "filename": os.path.basename(path),
        "kind": AssetKind.VIDEO,
        "status": AssetStatus.READY,
        "size": 1000,
        "duration": 3.0,
        "container": "mp4",
        "video_codec": "h264",
        "audio_codec": "aac",
    }
    values.update(fields)
    return await MediaAsset.create(path=path, **values)


async def make_job(asset: Any = None, **fields: Any) -> Any:
    """A TranscodeJob row (PENDING by default) for ``asset``."""
    import uuid

    from mpr.models import TranscodeJob

    values = {
        "source_asset": asset,
        "source_path": asset.path if asset else "",
        "output_path": f"out/{uuid.uuid4().hex}.mp4",
        "executor": "lambda",
        "preset_snapshot": {"name": "test"},
    }
    values.update(fields)
    return await TranscodeJob.create(**values)


async def raw_request(api: Api, method: str, path: str) -> int:
    """Send a request line exactly as written (httpx would normalise ``..``); return the status code."""
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


# request paths that try to leave the media roots (each must get 400 or 404, with GET and HEAD alike)
ESCAPING_MEDIA_PATHS = [
    "/media/in/../out/x.webm",
    "/media/in/%2e%2e/out/x.webm",
    "/media/in/%252e%252e/%252e%252e/etc/passwd",
    "/media/in/..%2f..%2fetc%2fpasswd",
    "/media/in//etc/passwd",
    "/media/in/a%5c..%5c..%5cetc",
    "/media/out/%00x",
    "/media/out/..%2f..%2f..%2fetc%2fpasswd",
]
