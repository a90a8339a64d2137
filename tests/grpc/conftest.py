"""Fixtures for the event bus, gRPC and gRPC-Web tests: buses, a gRPC server, a private redis-server."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from testkit import RedisServer, free_port, redis_available, require


def _reset() -> None:
    from mpr.bus import reset_bus
    from mpr.plugins import reset_plugins
    from mpr.settings import get_settings

    get_settings.cache_clear()
    reset_plugins()
    reset_bus()


@pytest.fixture(params=["inprocess", "redis"])
async def bus(request: pytest.FixtureRequest, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """The process's event bus, in-process and (second run) Redis Streams on the machine's Redis."""
    if request.param == "redis":
        require("Redis", redis_available(), "127.0.0.1:6379")
        monkeypatch.setenv("MPR_REDIS_URL", "redis://127.0.0.1:6379/0")
    _reset()
    from mpr.bus import get_bus

    b = get_bus()
    yield b
    await b.close()
    _reset()


@pytest.fixture
async def grpc_server(bus) -> AsyncIterator[int]:
    """ChunkerService on a free port of 127.0.0.1, on the test's loop; yields the port."""
    from mpr.grpc.server import start

    running = await start(0, host="127.0.0.1")
    try:
        yield running.port
    finally:
        await running.stop(grace=0)


def job_id() -> str:
    """A fresh job id (Redis is shared with other tests: never reuse one)."""
    return str(uuid.uuid4())


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for tests that restart Redis or count its commands."""
    require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Await until predicate() is true (test helper for background tasks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class GrpcWebReader:
    """Incremental gRPC-Web response decoder (binary or base64 text), like a browser client's."""

    def __init__(self, text: bool = False) -> None:
        self.text = text
        self._b64 = b""
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Add received bytes; return the complete (flag, payload) frames now available."""
        import base64

        if self.text:
            self._b64 += b"".join(chunk.split())
            cut = len(self._b64) - len(self._b64) % 4
            # servers (Envoy too) base64 each chunk on its own, so padding may sit mid-stream: decode per quantum
            self._buf += b"".join(base64.b64decode(self._b64[i : i + 4]) for i in range(0, cut, 4))
            self._b64 = self._b64[cut:]
        else:
            self._buf += chunk
        frames = []
        while len(self._buf) >= 5:
            size = int.from_bytes(self._buf[1:5], "big")
            if len(self._buf) < 5 + size:
                break
            frames.append((self._buf[0], self._buf[5 : 5 + size]))
            self._buf = self._buf[5 + size :]
        return frames

    @property
    def leftover(self) -> bytes:
        return self._buf + self._b64


def grpc_web_request(message, text: bool = False) -> bytes:
    """A gRPC-Web request body: one message frame (base64 for text)."""
    import base64

    payload = message.SerializeToString()
    body = b"\x00" + len(payload).to_bytes(4, "big") + payload
    return base64.b64encode(body) if text else body


def parse_trailer(payload: bytes) -> dict[str, str]:
    """The headers carried by a trailer frame."""
    out = {}
    for line in payload.decode().split("\r\n"):
        if line:
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.strip()
    return out


@pytest.fixture
async def litestar_app_url(bus) -> AsyncIterator[str]:
    """A minimal Litestar app with the gRPC-Web router, served by uvicorn on the test's loop."""
    import uvicorn
    from litestar import Litestar

    from mpr.grpc.web import grpc_web_router

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Litestar(route_handlers=[grpc_web_router]), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, 10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
