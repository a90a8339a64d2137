"""Fixtures of the hardening tests: the real app served by uvicorn on the test's loop, a DB snapshot helper.

The app runs as a task on the test's event loop (like ``tests/api``), so it
shares the ``sqlite_db`` fixture's connections, exactly as ``mpr serve`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testkit import Api, run_app, serving, stop_app  # noqa: F401  (re-exported for the tests here)


@pytest.fixture
async def serve(sqlite_db, media, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """``await serve(worker=True, MPR_API_TOKEN="x")``: the real app on a free port (SQLite database)."""
    async for start in serving(monkeypatch):
        yield start


@pytest.fixture
async def serve_any_db(db, media, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Like ``serve``, on SQLite and (second run) a fresh database on the machine's PostgreSQL."""
    async for start in serving(monkeypatch):
        yield start


def db_digest(db_file: Path | str) -> str:
    """A hash of every row of every table, from a separate connection (safe from any thread).

    ``db_file`` is a SQLite file, or a ``postgres://`` URL (read with asyncpg on a private loop).
    """
    h = hashlib.sha256()
    if str(db_file).startswith("postgres://"):
        import asyncpg

        async def dump() -> None:
            conn = await asyncpg.connect(str(db_file).replace("postgres://", "postgresql://", 1))
            try:
                tables = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
                    )
                ]
                for table in tables:
                    for row in await conn.fetch(f'SELECT * FROM "{table}" ORDER BY 1'):
                        h.update(repr((table, tuple(row))).encode())
            finally:
                await conn.close()

        asyncio.run(dump())
        return h.hexdigest()
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            if table.startswith("sqlite_"):
                continue
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                h.update(repr((table, row)).encode())
        return h.hexdigest()
    finally:
        conn.close()


def put(media: dict[str, Path], clip: Path, name: str) -> Path:
    """Copy ``clip`` into MEDIA_IN as ``name``."""
    target = media["in"] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, target)
    return target


async def wait_job(job_id: Any, *statuses: Any, timeout: float = 60.0) -> Any:
    """Poll the job row until its status is one of ``statuses``."""
    from mpr.models import TranscodeJob

    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job.status.value} ({job.error}), wanted {statuses}")
        await asyncio.sleep(0.1)
