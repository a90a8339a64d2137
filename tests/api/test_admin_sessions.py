"""Admin sessions in a shared store: valid on every API process and after a restart, on Redis and on files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from testkit import RedisServer, free_port, require, run_app, stop_app

PASSWORD = "correct horse battery staple"


def _csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


class Cluster:
    """Several app instances (like API processes) on one database and one session store."""

    def __init__(self, monkeypatch, env: dict[str, str]) -> None:
        self.monkeypatch = monkeypatch
        self.env = env
        self.running: dict[str, tuple] = {}

    async def start(self, name: str, **env: str) -> str:
        from mpr.settings import get_settings

        for key, value in {"MPR_GRPC_PORT": "0", "MPR_ADMIN_PASSWORD": PASSWORD, **self.env, **env}.items():
            self.monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        server, task, client, url = await run_app(get_settings())
        self.running[name] = (server, task, client)
        return url

    async def stop(self, name: str) -> None:
        await stop_app(*self.running.pop(name))

    async def close(self) -> None:
        for name in list(self.running):
            await self.stop(name)


@contextlib.asynccontextmanager
async def _cluster(kind: str, monkeypatch, tmp_path) -> AsyncIterator[Cluster]:
    redis = None
    env = {}
    if kind == "redis":
        require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
        redis = RedisServer(tmp_path / "redis")  # a private one: counters and sessions of other tests stay apart
        redis.start()
        env["MPR_REDIS_URL"] = redis.url
    group = Cluster(monkeypatch, env)
    group.kind = kind
    group.redis = redis
    try:
        yield group
    finally:
        await group.close()
        if redis:
            redis.stop()


@pytest.fixture(params=["file", "redis"])
async def cluster(request, db, media, monkeypatch, tmp_path) -> AsyncIterator[Cluster]:
    async with _cluster(request.param, monkeypatch, tmp_path) as group:
        yield group


@pytest.fixture
async def redis_cluster(db, media, monkeypatch, tmp_path) -> AsyncIterator[Cluster]:
    async with _cluster("redis", monkeypatch, tmp_path) as group:
        yield group


@pytest.fixture
async def file_cluster(db, media, monkeypatch, tmp_path) -> AsyncIterator[Cluster]:
    async with _cluster("file", monkeypatch, tmp_path) as group:
        yield group


async def _login(url: str, password: str = PASSWORD) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/admin/login")
        return await client.post(
            "/admin/login", data={"password": password, "next": "/admin/jobs", "_csrf_token": _csrf(page.text)}
        )


def _token(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text[:300]
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("mpr_admin="))
    assert "HttpOnly" in cookie and "Path=/admin" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    return cookie.split(";")[0].split("=", 1)[1]


async def _status(url: str, token: str | None, path: str = "/admin/jobs") -> int:
    """GET ``path`` with only the session cookie (sent by hand: a fresh client, no jar)."""
    headers = {"Cookie": f"mpr_admin={token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get(path, headers=headers)).status_code


async def _logout(url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        client.cookies.set("mpr_admin", token)
        page = await client.get("/admin/jobs")
        assert page.status_code == 200
        return await client.post("/admin/logout", data={"_csrf_token": _csrf(page.text)})


async def test_a_session_is_valid_on_another_instance_and_after_a_restart(cluster):
    a = await cluster.start("a")
    b = await cluster.start("b")
    token = _token(await _login(a))
    assert await _status(a, token) == 200
    assert await _status(b, token) == 200  # another API process
    await cluster.stop("a")
    await cluster.stop("b")
    c = await cluster.start("c")  # a restart of the whole API
    assert await _status(c, token) == 200
    assert await _status(c, None) == 303


async def test_logout_on_one_instance_ends_the_session_on_all(cluster):
    a = await cluster.start("a")
    b = await cluster.start("b")
    token = _token(await _login(a))
    other = _token(await _login(b))  # a second admin session, left alone
    assert await _status(a, token) == 200 and await _status(b, token) == 200
    r = await _logout(b, token)
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    cleared = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mpr_admin="))
    assert 'mpr_admin="";' in cleared or "mpr_admin=;" in cleared or "Max-Age=0" in cleared
    assert await _status(a, token) == 303
    assert await _status(b, token) == 303
    c = await cluster.start("c")
    assert await _status(c, token) == 303  # and it stays ended after a restart
    assert await _status(a, other) == 200 and await _status(c, other) == 200


async def test_a_login_form_from_one_instance_is_accepted_by_another(cluster):
    """Behind a load balancer the form's GET and POST may reach different processes: CSRF must hold on both."""
    a = await cluster.start("a")
    b = await cluster.start("b")
    async with httpx.AsyncClient() as browser:  # one cookie jar for 127.0.0.1, like a browser on one origin
        page = await browser.get(f"{a}/admin/login")
        r = await browser.post(
            f"{b}/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": _csrf(page.text)}
        )
        assert r.status_code == 303, r.text[:300]
        r = await browser.post(f"{a}/admin/login", data={"password": PASSWORD, "_csrf_token": "0" * 64})
        assert r.status_code == 403  # a wrong CSRF token is still refused
    assert await _status(a, _token(await _login(b))) == 200


async def test_an_expired_session_is_rejected(cluster, monkeypatch):
    from mpr.api import admin

    monkeypatch.setattr(admin, "SESSION_TTL", 3)  # room for the first check on a busy machine
    a = await cluster.start("a")
    b = await cluster.start("b")
    token = _token(await _login(a))
    assert await _status(b, token) == 200
    deadline = time.monotonic() + 30
    while await _status(a, token) != 303:  # the cookie is still sent; the server refuses it once expired
        assert time.monotonic() < deadline, "the session never expired"
        await asyncio.sleep(0.2)
    assert await _status(b, token) == 303


async def test_forged_and_tampered_cookies_are_rejected(cluster, media):
    a = await cluster.start("a")
    token = _token(await _login(a))
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in ("forged-session-token", flipped, token + "x", token[:20], "", "x" * 5000, "%00"):
        assert await _status(a, bad) == 303, bad
    assert await _status(a, token) == 200
    # the store keeps only an HMAC of the token: reading the store gives no usable cookie
    if cluster.kind == "redis":
        import redis

        keys = redis.Redis.from_url(cluster.redis.url).keys("*")
        assert any(k.startswith(b"mpr:admin:session:") for k in keys), keys
        stored = b" ".join(keys) + b" ".join(redis.Redis.from_url(cluster.redis.url).mget(keys))
    else:
        files = list((media["var"] / "admin-sessions").iterdir())
        assert files
        stored = b" ".join(f.name.encode() + f.read_bytes() for f in files)
    assert token.encode() not in stored


async def test_a_new_password_ends_every_session(cluster):
    a = await cluster.start("a")
    token = _token(await _login(a))
    await cluster.stop("a")
    b = await cluster.start("b", MPR_ADMIN_PASSWORD="a brand new password")
    assert await _status(b, token) == 303
    assert (await _login(b)).status_code == 401
    assert _token(await _login(b, "a brand new password"))


async def test_failed_logins_are_counted_across_instances(cluster):
    a = await cluster.start("a")
    b = await cluster.start("b")
    for url in (a, a, a, b, b):
        assert (await _login(url, "wrong")).status_code == 401
    r = await _login(a, PASSWORD)  # five failures in the window, spread over two processes
    assert r.status_code == 429 and "Too many failed logins" in r.text
    await cluster.stop("a")
    c = await cluster.start("c")
    assert (await _login(c, PASSWORD)).status_code == 429  # a restart does not reset the count


async def test_redis_down_is_a_clear_503_and_sessions_survive_a_redis_restart(redis_cluster):
    cluster = redis_cluster
    a = await cluster.start("a")
    token = _token(await _login(a))
    cluster.redis.stop()
    async with httpx.AsyncClient(base_url=a) as client:
        r = await client.get("/admin/jobs", headers={"Cookie": f"mpr_admin={token}"})
        assert r.status_code == 503 and "session store is unavailable" in r.text
        page = await client.get("/admin/login")
        r = await client.post("/admin/login", data={"password": PASSWORD, "_csrf_token": _csrf(page.text)})
        assert r.status_code == 503 and "mpr_admin" not in r.headers.get("set-cookie", "")
    cluster.redis.start()  # same port, AOF: the session is still there
    assert await _status(a, token) == 200


async def test_an_unusable_var_dir_is_a_clear_503(file_cluster, media):
    cluster = file_cluster
    (media["var"] / "admin-sessions").write_text("not a directory")
    a = await cluster.start("a")
    r = await _login(a)
    assert r.status_code == 503 and "session store is unavailable" in r.text
    assert "mpr_admin=" not in r.headers.get("set-cookie", "")
    assert await _status(a, "whatever") == 503
    (media["var"] / "admin-sessions").unlink()
    assert await _status(a, _token(await _login(a))) == 200  # recovers without a restart


# --------------------------------------------------------------------------- real `mpr serve` processes


def _serve_processes(tmp_path, count: int, extra_env: dict[str, str]) -> tuple[list[subprocess.Popen], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPR_", "MEDIA_"))}
    for name in ("in", "out"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(
        MEDIA_IN=str(tmp_path / "in"),
        MEDIA_OUT=str(tmp_path / "out"),
        MPR_VAR_DIR=str(tmp_path / "var"),
        MPR_DATABASE_URL=f"sqlite://{tmp_path / 'var' / 'mpr.db'}",
        MPR_ADMIN_PASSWORD=PASSWORD,
        **extra_env,
    )
    mpr = str(Path(sys.executable).with_name("mpr"))
    subprocess.run([mpr, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    procs, urls = [], []
    for _ in range(count):
        port = free_port()
        cmd = [mpr, "serve", "--port", str(port), "--no-worker", "--no-grpc"]
        log = (tmp_path / f"serve-{port}.log").open("w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 90  # process start-ups on a busy CI machine
    for proc, url in zip(procs, urls, strict=True):
        while True:
            assert proc.poll() is None, "mpr serve exited"
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"mpr serve at {url} not ready"
            time.sleep(0.1)
    return procs, urls


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_two_mpr_serve_processes_share_sessions(tmp_path, kind):
    redis = None
    extra = {}
    if kind == "redis":
        require("redis-server", shutil.which("redis-server") is not None, "apt install redis-server")
        redis = RedisServer(tmp_path / "redis")
        redis.start()
        extra["MPR_REDIS_URL"] = redis.url
    procs, (one, two) = await asyncio.to_thread(_serve_processes, tmp_path, 2, extra)
    try:
        token = _token(await _login(one))
        assert await _status(two, token) == 200
        assert (await _logout(two, token)).status_code == 303
        assert await _status(one, token) == 303
        assert await _status(two, token) == 303
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
