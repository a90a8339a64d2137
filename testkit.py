"""Helpers for MPR's tests: real services, generated clips, databases.

Imported by the root ``conftest.py`` (fixtures) and by test modules
(``from testkit import make_clip``). ``MPR_REQUIRE_SERVICES=1`` (set by
.ci/run) turns a missing PostgreSQL, Redis, ffmpeg, nginx or Chromium into a
test failure instead of a skip.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

PG_DSN = os.environ.get("MPR_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MPR_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require(service: str, available: bool, why: str = "") -> None:
    """Skip (locally) or fail (CI, MPR_REQUIRE_SERVICES=1) when ``service`` is not available."""
    if available:
        return
    message = f"{service} is not available{': ' + why if why else ''}"
    if os.environ.get("MPR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MPR_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


_port_picker = random.SystemRandom()  # not the seedable global one: parallel runs and forks must not pick alike


def free_port() -> int:
    """A TCP port that was free a moment ago, drawn below the kernel's ephemeral range.

    Callers bind it later (a server in a subprocess, a Redis restarted on the same
    port). A port from the ephemeral range (what ``bind(0)`` returns) can be taken
    in between by any outgoing connection's source port or another process's
    ``bind(0)``, more often on a busy CI machine; below that range only another
    explicit pick can collide.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low > 12_000:
        for _ in range(200):
            port = _port_picker.randrange(max(10_000, low - 12_000), low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg_bin() -> str:
    """ffmpeg for generating test clips: PATH first, else imageio-ffmpeg's bundled binary."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def realtime_ffmpeg(path: Path, only: str | None = None) -> Path:
    """An ffmpeg wrapper that reads its input at the native frame rate (``-re``).

    An N s clip then takes at least N s to encode on any machine, so a test can act mid-job
    without racing a fast encode. Point ``MPR_FFMPEG`` at it (and reset the settings cache; a
    worker or server subprocess needs it in its environment). ``only``: slow down just the runs
    with an argument containing this text (say a marker in one clip's name), the others of a
    shared server run at full speed. Joining finished chunks (``-f concat``) always runs at full speed.
    """
    if only is not None and not re.fullmatch(r"[\w.-]+", only):
        raise ValueError(f"realtime_ffmpeg: only={only!r} must be letters, digits, '_', '.' or '-'")
    real = ffmpeg_bin()
    gate = f"*{only}*" if only else ""
    path.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -f concat "*) exec "{real}" "$@";; esac\n'
        f'case " $* " in *" -i "*{gate}) exec "{real}" -re "$@";; esac\n'
        f'exec "{real}" "$@"\n'
    )
    path.chmod(0o755)
    return path


def make_clip(
    path: Path,
    seconds: float = 3.0,
    size: str = "320x240",
    rate: int = 25,
    gop: int | None = None,
    video: bool = True,
    audio: bool = True,
    extra: list[str] | None = None,
) -> Path:
    """Generate a small test clip with ffmpeg's lavfi sources (testsrc2 + sine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        if gop:
            args += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    if audio:
        args += ["-c:a", "aac" if path.suffix in (".mp4", ".m4a", ".mov", ".mkv") else "libmp3lame"]
        if path.suffix == ".flac":
            args[-1] = "flac"
        if path.suffix == ".wav":
            args[-1] = "pcm_s16le"
    args += [*(extra or []), "-shortest" if video and audio else "-y", str(path)]
    subprocess.run(args, check=True)
    return path


def copies_on_disk(root: Path, original: Path) -> tuple[int, int]:
    """What lies under ``root`` right now: (number of files with exactly ``original``'s bytes, bytes of all files)."""
    want = original.read_bytes()
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    return sum(1 for p in files if p.stat().st_size == len(want) and p.read_bytes() == want), sum(
        p.stat().st_size for p in files
    )


def _reset_caches() -> None:
    from mpr.executors import reset_executors
    from mpr.plugins import reset_plugins
    from mpr.settings import get_settings
    from mpr.storage import reset_storage

    get_settings.cache_clear()
    reset_plugins()
    reset_storage()
    reset_executors()
    try:
        from mpr.bus import reset_bus
    except ImportError:
        pass
    else:
        reset_bus()


def postgres_available() -> bool:
    return port_open("127.0.0.1", 5432)


def redis_available() -> bool:
    return port_open("127.0.0.1", 6379)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN.replace("postgres://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _open_db(kind: str, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    from tortoise import Tortoise

    from mpr.db import Portal, close_db, init_db, set_portal
    from mpr.settings import get_settings

    dbname = None
    if kind == "postgres":
        require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
        dbname = f"mpr_t_{uuid.uuid4().hex[:12]}"
        await _pg_admin(f'CREATE DATABASE "{dbname}"')
        url = PG_DSN.rsplit("/", 1)[0] + "/" + dbname
    else:
        url = f"sqlite://{media['var'] / 'mpr.db'}"
    monkeypatch.setenv("MPR_DATABASE_URL", url)
    get_settings.cache_clear()
    # Tortoise caches each model's INSERT/DELETE SQL per connection name ("default"), so a
    # PostgreSQL test after a SQLite one would reuse SQLite's "?" placeholders.
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()
    await init_db()
    await Tortoise.generate_schemas()
    set_portal(Portal(asyncio.get_running_loop()))
    try:
        yield kind
    finally:
        set_portal(None)
        await close_db()
        if dbname:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --- the real web app on a free port, on the test's event loop -------------------------------
# Serving on the test loop (not in a thread) keeps the app on the same loop as the ``db``
# fixture's connections, exactly like ``mpr serve`` where the app's loop owns the database.


@dataclass
class Api:
    """A running app: base URL, an async HTTP client, its settings."""

    url: str
    http: httpx.AsyncClient
    settings: Any

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def ok(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        body = await self.gql(query, variables, token)
        assert not body.get("errors"), body["errors"]
        return body["data"]


async def run_app(
    settings: Any, *, worker: bool = False, port: int | None = None, timeout: float = 30
) -> tuple[Any, asyncio.Task, httpx.AsyncClient, str]:
    """Serve ``create_app(settings)`` with uvicorn on this loop; returns (server, task, client, url).

    ``port``: a port chosen beforehand (e.g. one already named in MPR_PUBLIC_URL); ``timeout``: the client's.
    """
    import uvicorn

    from mpr.api.app import create_app

    app = create_app(settings, worker=worker, grpc=False)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    if task.done():
        task.result()
    assert server.started, "uvicorn did not start"
    url = f"http://127.0.0.1:{port}"
    return server, task, httpx.AsyncClient(base_url=url, timeout=timeout), url


async def stop_app(server: Any, task: asyncio.Task, client: httpx.AsyncClient) -> None:
    await client.aclose()
    server.should_exit = True
    await asyncio.wait_for(task, 30)


async def serving(monkeypatch) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    from mpr.settings import get_settings

    started: list[tuple[Any, asyncio.Task, httpx.AsyncClient]] = []

    async def start(*, worker: bool = False, **env: str) -> Api:
        monkeypatch.setenv("MPR_GRPC_PORT", "0")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        server, task, client, url = await run_app(settings, worker=worker)
        started.append((server, task, client))
        return Api(url=url, http=client, settings=settings)

    yield start
    for server, task, client in reversed(started):
        await stop_app(server, task, client)


class RedisServer:
    """A private redis-server (AOF on) that a test may stop and restart on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra_args: str, wait: bool = True) -> None:
        """Start (or restart) it; ``extra_args`` go to redis-server; ``wait=False`` returns before it
        answers PING (a restart may then still be LOADING its data)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait:
            return
        # ready = answers PING: a restarted server listens before it has loaded its AOF and
        # meanwhile refuses commands with LOADING (a test's first command would fail)
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.proc.poll() is not None:  # not someone else's listener mistaken for ours
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): port {self.port} taken?")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def ready(self) -> bool:
        """True once the server answers PING with PONG (not LOADING, not refused)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """Die like a crash: no shutdown save; AOF (fsync always) keeps what was written."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def info_calls(self, command: str) -> int:
        """How many times ``command`` ran on this server (INFO commandstats)."""
        import redis

        stats = redis.Redis.from_url(self.url).info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


class CountingProxy:
    """A TCP relay in front of an HTTP server (moto) that counts the response bytes delivered to clients.

    Point an S3 endpoint (and so the presigned URLs signed for it) at :attr:`url`:
    :attr:`received` is then what the clients read from "S3" (the relay's send
    buffer is small, so a response a client abandons is counted only as far as
    it was delivered), :attr:`requests` the request lines (no query strings)
    and Range headers they sent.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.received = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, name="counting-proxy", daemon=True).start()

    def reset(self) -> tuple[int, list[str]]:
        """The count and requests so far, and start again from zero."""
        with self._lock:
            counted, requests = self.received, self.requests
            self.received, self.requests = 0, []
        return counted, requests

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        # a small send buffer: what is counted reached the client, not a kernel queue it never drains
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return

        def up() -> None:  # requests: passed on, their request lines and Range headers noted
            try:
                while data := client.recv(65536):
                    for line in data.split(b"\r\n"):
                        if line.split(b" ", 1)[0] in (b"GET", b"HEAD", b"PUT", b"POST") or line.lower().startswith(
                            b"range:"
                        ):
                            with self._lock:
                                self.requests.append(line.decode("latin-1").split("?", 1)[0])
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threading.Thread(target=up, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
                with self._lock:
                    self.received += len(data)
        except OSError:
            pass  # the client hung up (ffmpeg stops reading when its chunk is done)
        finally:
            upstream.close()
            client.close()
