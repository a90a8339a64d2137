"""The admin login limit counts every failure, even when several API processes fail logins at the same moment."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from testkit import RedisServer, require
from tests.api.test_admin_sessions import PASSWORD, _cluster, _csrf, _login, _serve_processes

IP = "203.0.113.7"


@pytest.fixture(params=["file", "redis"])
async def cluster(request, db, media, monkeypatch, tmp_path):
    async with _cluster(request.param, monkeypatch, tmp_path) as group:
        yield group


@pytest.fixture(params=["file", "redis"])
async def stores(request, tmp_path) -> AsyncIterator:
    """A factory of separate stores on one backend (each like another API process's), and the count reader."""
    from mpr.api.admin import STORE_NAMESPACE, AdminAuth, AdminFileStore, AdminRedisStore

    made = []
    redis = None
    if request.param == "redis":
        require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
        redis = RedisServer(tmp_path / "redis")
        redis.start()

    def make():
        if redis:
            store = AdminRedisStore.with_client(url=redis.url, namespace=STORE_NAMESPACE)
        else:
            (tmp_path / "admin-sessions").mkdir(mode=0o700, exist_ok=True)
            store = AdminFileStore(tmp_path / "admin-sessions")
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await AdminAuth(PASSWORD, store=store).close()
        if redis:
            redis.stop()


async def _fail_concurrently(make_store, count: int) -> int:
    """``count`` failed() calls at once, each through its own AdminAuth and store; the failures then recorded."""
    from mpr.api.admin import AdminAuth

    auths = [AdminAuth(PASSWORD, store=make_store()) for _ in range(count)]
    start = asyncio.Event()

    async def fail(auth: AdminAuth) -> None:
        await start.wait()
        await auth.failed(IP)

    tasks = [asyncio.create_task(fail(auth)) for auth in auths]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)
    return await AdminAuth(PASSWORD, store=make_store()).failures(IP)


async def test_concurrent_failures_are_all_recorded(stores):
    from mpr.api.admin import LOGIN_MAX_FAILURES, AdminAuth

    assert await _fail_concurrently(stores, 12) == 12
    assert await AdminAuth(PASSWORD, store=stores()).blocked(IP)
    assert not await AdminAuth(PASSWORD, store=stores()).blocked("198.51.100.1")  # counted per address
    # more than the cap at once: exactly the cap is kept, as before
    assert await _fail_concurrently(stores, LOGIN_MAX_FAILURES * 4 + 10) == LOGIN_MAX_FAILURES * 4


async def test_failures_expire_after_the_window(stores):
    from mpr.api import admin

    store = stores()
    auth = admin.AdminAuth(PASSWORD, store=store)
    for _ in range(admin.LOGIN_MAX_FAILURES):
        await auth.failed(IP)
    assert await auth.blocked(IP)
    later = time.time() + admin.LOGIN_WINDOW + 1
    assert await store.count_failures(IP, later) == 0
    await store.add_failure(IP, later)  # a failure after the window starts a new count
    assert await store.count_failures(IP, later) == 1


async def _wrong_logins_at_once(urls: list[str]) -> list[int]:
    """One wrong-password POST per url, all sent together (each with its own login form and CSRF token)."""
    clients = [httpx.AsyncClient(base_url=url) for url in urls]
    try:
        tokens = [_csrf((await client.get("/admin/login")).text) for client in clients]
        posts = [
            client.post("/admin/login", data={"password": "wrong", "_csrf_token": token})
            for client, token in zip(clients, tokens, strict=True)
        ]
        return [r.status_code for r in await asyncio.gather(*posts)]
    finally:
        for client in clients:
            await client.aclose()


async def _recorded(kind: str, var_dir, redis_url: str | None) -> int:
    """The failures of 127.0.0.1 in the store the instances share."""
    from mpr.api.admin import STORE_NAMESPACE, AdminAuth, AdminFileStore, AdminRedisStore

    if kind == "redis":
        store = AdminRedisStore.with_client(url=redis_url, namespace=STORE_NAMESPACE)
    else:
        store = AdminFileStore(var_dir / "admin-sessions")
    auth = AdminAuth(PASSWORD, store=store)
    try:
        return await auth.failures("127.0.0.1")
    finally:
        await auth.close()


async def test_simultaneous_wrong_logins_on_two_instances_are_all_counted(cluster, media):
    from mpr.api.admin import LOGIN_MAX_FAILURES

    a = await cluster.start("a")
    b = await cluster.start("b")
    urls = [(a, b)[i % 2] for i in range(LOGIN_MAX_FAILURES)]
    assert await _wrong_logins_at_once(urls) == [401] * LOGIN_MAX_FAILURES
    redis_url = cluster.redis.url if cluster.redis else None
    assert await _recorded(cluster.kind, media["var"], redis_url) == LOGIN_MAX_FAILURES
    for url in (a, b):  # the right password is refused now, on both instances
        r = await _login(url, PASSWORD)
        assert r.status_code == 429 and "Too many failed logins" in r.text
        assert "mpr_admin=" not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_simultaneous_wrong_logins_on_two_mpr_serve_processes_are_all_counted(tmp_path, kind):
    from mpr.api.admin import LOGIN_MAX_FAILURES

    redis = None
    extra = {}
    if kind == "redis":
        require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
        redis = RedisServer(tmp_path / "redis")
        redis.start()
        extra["MPR_REDIS_URL"] = redis.url
    procs, (one, two) = await asyncio.to_thread(_serve_processes, tmp_path, 2, extra)
    try:
        urls = [(one, two)[i % 2] for i in range(LOGIN_MAX_FAILURES)]
        assert await _wrong_logins_at_once(urls) == [401] * LOGIN_MAX_FAILURES
        assert await _recorded(kind, tmp_path / "var", redis.url if redis else None) == LOGIN_MAX_FAILURES
        for url in (one, two):
            r = await _login(url, PASSWORD)
            assert r.status_code == 429 and "Too many failed logins" in r.text
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if redis:
            redis.stop()
