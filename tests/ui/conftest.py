"""End-to-end fixtures for the browser UIs: the built UI, a real `mpr serve`, Debian's Chromium.

The server runs as a subprocess on a free port with its own MEDIA_IN/MEDIA_OUT/var and SQLite
database (migrated with `mpr migrate`), the embedded local worker and the in-process event bus.
Chromium is driven by Playwright for Python with ``executable_path`` (never ``playwright install``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import free_port, realtime_ffmpeg, require
from tests.ui.helpers import REALTIME

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


def _mpr_bin() -> str:
    candidate = Path(sys.executable).with_name("mpr")
    return str(candidate) if candidate.exists() else "mpr"


@pytest.fixture(scope="session")
def ui_build() -> Path:
    """Build the UI once per session (`make -C ui build`: npm ci / codegen / vite only when stale)."""
    require("npm", shutil.which("npm") is not None, "Node.js and npm build the UI")
    env = {**os.environ, "PY": sys.executable}
    subprocess.run(["make", "-s", "-C", str(ROOT / "ui"), "build", f"PY={sys.executable}"], check=True, env=env)
    index = ROOT / "mpr" / "static" / "index.html"
    assert index.is_file() and (ROOT / "mpr" / "static" / "chunker" / "index.html").is_file()
    return index.parent


class Server:
    """A running `mpr serve` with its own media folders."""

    def __init__(self, base: Path, **extra_env: str) -> None:
        self.base = base
        self.extra_env = extra_env
        self.media_in = base / "media" / "in"
        self.media_out = base / "media" / "out"
        self.var = base / "var"
        for p in (self.media_in, self.media_out, self.var):
            p.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MPR_", "MEDIA_"))}
        env.update(
            MEDIA_IN=str(self.media_in),
            MEDIA_OUT=str(self.media_out),
            MPR_VAR_DIR=str(self.var),
            MPR_DATABASE_URL=f"sqlite://{self.var / 'mpr.db'}",
            MPR_EXECUTOR="local",
            MPR_WORKERS="2",
            MPR_GRPC_PORT="0",
            MPR_LOG_LEVEL="INFO",
            MPR_LOCAL_POLL_INTERVAL="0.05",
            MPR_LOCAL_MAX_POLL_INTERVAL="0.2",
            MPR_SCAN_INTERVAL="0",  # the tests press Scan themselves and check what it registered
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        env = self.env()
        subprocess.run([_mpr_bin(), "migrate"], check=True, env=env, cwd=self.base)
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [_mpr_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=self.base,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mpr serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"mpr serve did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def graphql(self, query: str) -> dict:
        """Run a GraphQL operation directly (to check what the UI did), with the server's token if it has one."""
        headers = {"Content-Type": "application/json"}
        if self.extra_env.get("MPR_API_TOKEN"):
            headers["Authorization"] = f"Bearer {self.extra_env['MPR_API_TOKEN']}"
        req = urllib.request.Request(self.url + "/graphql", data=json.dumps({"query": query}).encode(), headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        assert not body.get("errors"), body
        return body["data"]


@pytest.fixture(scope="session")
def ui_server(ui_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `mpr serve` for the UI tests (each test uses its own uniquely named clips).

    Clips named with ``REALTIME`` encode at native speed there (a test acts while their job runs).
    """
    require("ffmpeg", shutil.which("ffmpeg") is not None)
    realtime = realtime_ffmpeg(tmp_path_factory.mktemp("ui-ffmpeg") / "ffmpeg-realtime", only=REALTIME)
    server = Server(tmp_path_factory.mktemp("ui-server"), MPR_FFMPEG=str(realtime))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("MPR_UI_SERVER_LOG"):
            print(server.log_tail(200))


@pytest.fixture(scope="module")
def token_server(ui_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second `mpr serve` with MPR_API_TOKEN set (every query, mutation, stream and media file needs it)."""
    server = Server(tmp_path_factory.mktemp("ui-token-server"), MPR_API_TOKEN="ui-test-token")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class DroppingProxy:
    """A TCP proxy in front of the server whose connections the test can cut (a dropped network)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.drops = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                with self.lock:
                    self.conns.discard(s)

    def drop_all(self) -> int:
        """Cut every open connection (like a network drop); returns how many were cut."""
        with self.lock:
            conns = list(self.conns)
            self.conns.clear()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.drops += 1
        return len(conns)

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.drop_all()


@pytest.fixture
def proxy(ui_server: Server) -> Iterator[DroppingProxy]:
    p = DroppingProxy(ui_server.port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium via Playwright for Python (no downloaded browser).

    Module scope, not session: while sync_playwright() is open it leaves an
    asyncio loop marked running in the main thread, which breaks every
    pytest-asyncio test collected after the UI tests.
    """
    require("Chromium", CHROMIUM.exists(), str(CHROMIUM))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh 1280×800 page; browser console errors are printed when the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    messages: list[str] = []
    pg.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    yield pg
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print("browser console:\n" + "\n".join(messages[-50:]))
    context.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
