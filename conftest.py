"""Shared pytest fixtures: real services, real ffmpeg clips, a database per test.

Helpers live in ``testkit.py`` (import them from there, not from conftest:
each test folder has a conftest of its own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import REDIS_URL, _open_db, _reset_caches, make_clip, redis_available, require


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small generated clips, made once per session: video (3 s 320x240 + audio), audio-only, corrupt."""
    base = tmp_path_factory.mktemp("clips")
    out = {
        "video": make_clip(base / "sample.mp4", seconds=3.0),
        "audio": make_clip(base / "tone.mp3", seconds=2.0, video=False),
    }
    truncated = base / "truncated.mp4"
    truncated.write_bytes(out["video"].read_bytes()[:4096])
    out["truncated"] = truncated
    garbage = base / "garbage.mp4"
    garbage.write_bytes(os.urandom(20_000))
    out["garbage"] = garbage
    empty = base / "empty.mp4"
    empty.write_bytes(b"")
    out["empty"] = empty
    return out


@pytest.fixture
def media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Fresh MEDIA_IN, MEDIA_OUT and var dirs for this test, set in the environment."""
    paths = {"in": tmp_path / "media" / "in", "out": tmp_path / "media" / "out", "var": tmp_path / "var"}
    for p in paths.values():
        p.mkdir(parents=True)
    monkeypatch.setenv("MEDIA_IN", str(paths["in"]))
    monkeypatch.setenv("MEDIA_OUT", str(paths["out"]))
    monkeypatch.setenv("MPR_VAR_DIR", str(paths["var"]))
    for name in ("MPR_REDIS_URL", "MPR_API_TOKEN", "MPR_EXECUTOR", "MPR_DATABASE_URL", "MEDIA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPR_DATABASE_URL", f"sqlite://{paths['var'] / 'mpr.db'}")
    monkeypatch.setenv("MPR_SCAN_INTERVAL", "0")  # no watch-folder scans behind a test's back (tests opt in)
    _reset_caches()
    yield paths
    _reset_caches()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """A fresh, migrated database on SQLite and (second run) the machine's PostgreSQL."""
    async for kind in _open_db(request.param, media, monkeypatch):
        yield kind


@pytest.fixture
async def sqlite_db(media: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """A fresh database on SQLite only (for tests that are not about the database)."""
    async for kind in _open_db("sqlite", media, monkeypatch):
        yield kind


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (db 0 flushed of mpr:* keys is the test's job); fails under MPR_REQUIRE_SERVICES."""
    require("Redis", redis_available(), "127.0.0.1:6379")
    return REDIS_URL
