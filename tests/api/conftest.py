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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    """A running app: its base URL, an HTTP client, and a GraphQL helper."""

    url: str
    http: httpx.AsyncClient
    settings: Any

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """POST a GraphQL document; return the JSON body (``data`` and maybe ``errors``)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def ok(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        """Like :meth:`gql` but asserts there are no errors and returns ``data``."""
        body = await self.gql(query, variables, token)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@pytest.fixture
async def start_api(db, media, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Start the real app with extra environment (``await start_api(MPR_API_TOKEN="x", worker=True)``)."""
    import uvicorn

    from mpr.api.app import create_app
    from mpr.settings import get_settings

    started: list[tuple[uvicorn.Server, asyncio.Task, httpx.AsyncClient]] = []

    async def start(*, worker: bool = False, **env: str) -> Api:
        monkeypatch.setenv("MPR_GRPC_PORT", "0")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        app = create_app(settings, worker=worker, grpc=False)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

        async def serve() -> None:
            try:
                await server.serve()
            except SystemExit:  # uvicorn exits when the lifespan fails; the log above says why
                raise RuntimeError("the app failed to start (see the captured log)") from None

        task = asyncio.create_task(serve())
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=url, timeout=30)
        started.append((server, task, client))
        return Api(url=url, http=client, settings=settings)

    yield start
    for server, task, client in reversed(started):
        await client.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 30)


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
