"""``/healthz`` (the process answers) and ``/readyz`` (database, queue and storage reachable).

The same checks feed GraphQL ``systemStatus`` and the admin status page.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from litestar import Request, get
from litestar.response import Response

import mpr
from mpr.settings import Settings, get_settings

CHECK_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    """The outcome of one readiness check."""

    name: str
    ok: bool
    detail: str


async def _timed(name: str, coro: object) -> Check:
    try:
        detail = await asyncio.wait_for(coro, CHECK_TIMEOUT)  # type: ignore[arg-type]
        return Check(name, True, str(detail))
    except TimeoutError:
        return Check(name, False, f"timed out after {CHECK_TIMEOUT:.0f}s")
    except Exception as exc:  # noqa: BLE001 - a check reports any failure; it never raises
        return Check(name, False, f"{type(exc).__name__}: {exc}"[:300])


async def check_database() -> str:
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    await conn.execute_query("SELECT 1")
    return conn.capabilities.dialect


async def check_queue(settings: Settings) -> str:
    if settings.redis_url:
        import redis.asyncio as aioredis

        client = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()
        return f"redis ({settings.executor} executor)"
    from mpr.plugins import load_plugins

    executors = load_plugins().executors
    if settings.executor not in executors:
        raise RuntimeError(f"executor {settings.executor!r} is not installed (have: {', '.join(sorted(executors))})")
    if settings.executor == "local":
        var = settings.var_path
        if not os.access(var, os.W_OK):
            raise RuntimeError(f"queue directory {var} is not writable")
        return f"sqlite queue in {var}"
    return f"{settings.executor} executor"


def _storage_probe(root: str, settings: Settings) -> str:
    from mpr.storage import get_storage, scheme_of

    if scheme_of(root) == "file":
        path = Path(root.removeprefix("file://"))
        if not path.is_dir():
            raise RuntimeError(f"{path} is not a directory")
        return str(path)
    backend = get_storage(root, settings)
    next(iter(backend.list("")), None)
    return root


async def check_storage(settings: Settings) -> str:
    results = []
    for label, root in (("in", settings.media_in), ("out", settings.media_out)):
        results.append(f"{label}={await asyncio.to_thread(_storage_probe, root, settings)}")
    return ", ".join(results)


async def run_checks(settings: Settings | None = None) -> list[Check]:
    """Database, queue and storage checks, run concurrently, each bounded by a timeout."""
    settings = settings or get_settings()
    return list(
        await asyncio.gather(
            _timed("database", check_database()),
            _timed("queue", check_queue(settings)),
            _timed("storage", check_storage(settings)),
        )
    )


@get("/healthz", sync_to_thread=False, include_in_schema=False)
def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving HTTP."""
    return {"status": "ok", "version": mpr.__version__}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response[dict[str, object]]:
    """Readiness: 200 when the database, the queue and storage answer, else 503 with the failing checks."""
    from mpr.api.deps import app_settings

    checks = await run_checks(app_settings(request))
    ok = all(c.ok for c in checks)
    body = {
        "status": "ok" if ok else "unavailable",
        "version": mpr.__version__,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return Response(body, status_code=200 if ok else 503)


routes = [healthz, readyz]
