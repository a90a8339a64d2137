"""``mpr serve --processes 2`` as a user runs it: two API processes on one port, one embedded worker,
job events reaching subscribers on either process through Redis, a clean stop, no orphans."""

# ruff: noqa: UP031 - GraphQL documents are built with "%s" like the neighbouring serve tests

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from testkit import PG_DSN, _pg_admin, postgres_available, redis_available, require

from .conftest import free_port

REDIS = "redis://127.0.0.1:6379/0"
SUB = "subscription($id: ID, $after: Int!) { jobEvents(jobId: $id, afterSequence: $after) { jobId type status sequence } }"


def _mpr(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("mpr")), *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(cmd, env=env, start_new_session=True, **kwargs)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def children_of(pid: int) -> dict[int, str]:
    """Live processes whose parent is ``pid``: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _env(tmp_path: Path, clips, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPR_", "MEDIA_"))}
    for name in ("in", "out"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "in" / "sample.mp4").write_bytes(clips["video"].read_bytes())
    env.update(
        MEDIA_IN=str(tmp_path / "in"),
        MEDIA_OUT=str(tmp_path / "out"),
        MPR_VAR_DIR=str(tmp_path / "var"),
        MPR_DATABASE_URL=database_url or f"sqlite://{tmp_path / 'var' / 'mpr.db'}",
        MPR_GRPC_PORT=str(free_port()),
        MPR_REDIS_URL=REDIS,
        MPR_LOCAL_QUEUE=f"mprsp_{uuid.uuid4().hex[:10]}",  # the machine's Redis is shared with other tests
    )
    return env


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def children(self) -> dict[int, str]:
        return children_of(self.proc.pid)

    def stop(self) -> int:
        """SIGTERM to the parent only; its exit status (the children must stop with it)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def serve2(tmp_path, clips):
    """Start ``mpr serve --processes 2`` (SQLite or, with ``database_url``, PostgreSQL); yield a Served."""
    require("Redis", redis_available(), "127.0.0.1:6379")
    started: list[tuple[subprocess.Popen, object]] = []

    def start(database_url: str | None = None, *extra: str) -> Served:
        env = _env(tmp_path, clips, database_url)
        _mpr("migrate", env=env, check=True)
        port = free_port()
        log_path = tmp_path / "serve.log"
        log = log_path.open("w")
        proc = _mpr("serve", "--processes", "2", "--port", str(port), *extra, env=env, background=True,
                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return Served(proc, url, log_path)

    try:
        yield start
    finally:
        for proc, log in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            log.close()


def _gql(url: str, query: str, variables: dict | None = None, client: httpx.Client | None = None) -> dict:
    """One request on a fresh connection (each may land on another process), or on ``client``'s."""
    if client is None:
        r = httpx.post(url + "/graphql", json={"query": query, "variables": variables or {}},
                       headers={"Connection": "close"}, timeout=30)  # fmt: skip
    else:
        r = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("errors"), body
    return body["data"]


def _pids_answering(served: Served, want: int = 2) -> set[int]:
    """Pids seen in ``systemStatus`` over fresh connections, until ``want`` differ (both started)."""
    pids: set[int] = set()
    for _ in range(600):
        status = _gql(served.url, "{ systemStatus { pid apiProcesses } }")["systemStatus"]
        assert status["apiProcesses"] == 2
        pids.add(status["pid"])
        if len(pids) >= want:
            break
        time.sleep(0.05)
    return pids


def test_two_processes_answer_on_one_port_and_sigterm_stops_all(serve2):
    served = serve2()
    children = served.children()
    assert len(children) == 2, children
    assert _pids_answering(served) == set(children)
    assert _gql(served.url, "{ systemStatus { status } }")["systemStatus"]["status"] == "ok"
    assert served.stop() == 0
    assert not [pid for pid in children if alive(pid)], "API processes outlived mpr serve"


def test_killed_parent_takes_its_children_and_a_crashed_child_stops_serve(serve2):
    served = serve2()
    children = served.children()
    assert len(children) == 2
    # a child that dies (here: SIGKILL) ends the whole serve with status 1 and says which one
    victim = max(children)
    os.kill(victim, signal.SIGKILL)
    assert served.proc.wait(60) == 1
    assert not [pid for pid in children if alive(pid)]
    assert f"(pid {victim}) exited with status -9" in served.log.read_text()

    served = serve2()
    children = served.children()
    assert len(children) == 2
    os.kill(served.proc.pid, signal.SIGKILL)  # no chance to stop them: the kernel's parent-death signal does
    served.proc.wait(10)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], "orphaned API processes"


def test_processes_2_without_redis_is_a_clear_error(tmp_path, clips):
    env = _env(tmp_path, clips)
    del env["MPR_REDIS_URL"]
    result = _mpr("serve", "--processes", "2", "--port", str(free_port()), env=env)
    assert result.returncode == 1
    assert "Error: --processes 2 (MPR_API_PROCESSES) needs MPR_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    env["MPR_API_PROCESSES"] = "3"
    result = _mpr("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 1 and "--processes 3" in result.stderr


async def _ws_on(url: str, pid: int) -> websockets.ClientConnection:
    """A graphql-transport-ws connection that landed on process ``pid`` (asks it with systemStatus)."""
    for _ in range(200):
        ws = await websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"])
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "pid", "type": "subscribe", "payload": {"query": "{ systemStatus { pid } }"}}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer["payload"]["data"]["systemStatus"]["pid"] == pid:
            await asyncio.wait_for(ws.recv(), 10)  # "complete"
            return ws
        await ws.close()
    raise AssertionError(f"no WebSocket connection landed on pid {pid}")


async def _ws_events(ws, job_id: str) -> list[tuple[int, str, str | None]]:
    await ws.send(json.dumps({"id": "ev", "type": "subscribe",
                              "payload": {"query": SUB, "variables": {"id": job_id, "after": 0}}}))  # fmt: skip
    seen = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        assert message["type"] == "next", message
        event = message["payload"]["data"]["jobEvents"]
        assert event["jobId"] == job_id
        seen.append((event["sequence"], event["type"], event["status"]))
        if event["type"] == "status" and event["status"] in ("completed", "failed", "cancelled"):
            await ws.close()
            return seen


async def _grpc_web_events(url: str, pid: int, job_id: str) -> list[tuple[int, str]]:
    """StreamChunkPipeline over the built-in gRPC-Web route, on a connection that landed on ``pid``."""
    from mpr.grpc import events_pb2

    payload = events_pb2.StreamRequest(job_id=job_id).SerializeToString()
    body = b"\x00" + len(payload).to_bytes(4, "big") + payload
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    for _ in range(200):
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=1)) as client:
            r = await client.post("/graphql", json={"query": "{ systemStatus { pid } }"})
            if r.json()["data"]["systemStatus"]["pid"] != pid:
                continue
            raw = b""  # the same (kept-alive) connection: the same process
            async with client.stream("POST", "/grpc/mpr.v1.ChunkerService/StreamChunkPipeline", content=body,
                                     headers=headers) as stream:  # fmt: skip
                assert stream.status_code == 200
                async for chunk in stream.aiter_raw():
                    raw += chunk
            frames = []
            while len(raw) >= 5:
                size = int.from_bytes(raw[1:5], "big")
                frames.append((raw[0], raw[5 : 5 + size]))
                raw = raw[5 + size :]
            assert frames and frames[-1][0] == 0x80, frames  # the trailer
            events = [events_pb2.PipelineEvent.FromString(p) for flag, p in frames if flag == 0]
            return [(e.sequence, e.status) for e in events]
    raise AssertionError(f"no HTTP connection landed on pid {pid}")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request):
    if request.param == "sqlite":
        yield None
        return
    require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
    name = f"mpr_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_a_job_runs_once_and_its_events_reach_both_processes(serve2, database):
    served = await asyncio.to_thread(serve2, database)
    children = served.children()
    first = next(pid for pid, cmd in children.items() if "--process-index 0" in cmd)
    pids = await asyncio.to_thread(_pids_answering, served)
    assert pids == set(children)
    url = served.url
    await asyncio.to_thread(_gql, url, "mutation { scanMediaFolder { registered } }")
    asset = (await asyncio.to_thread(_gql, url, '{ assets(status: "ready") { id } }'))["assets"][0]["id"]
    sockets = {pid: await _ws_on(url, pid) for pid in sorted(pids)}
    create = 'mutation { createJob(input: { sourceAssetId: "%s" }) { id } }' % asset
    job = (await asyncio.to_thread(_gql, url, create))["createJob"]["id"]

    results = await asyncio.gather(
        *(_ws_events(ws, job) for ws in sockets.values()),
        *(_grpc_web_events(url, pid, job) for pid in sorted(pids)),
    )
    ws_results, grpc_results = results[: len(pids)], results[len(pids) :]
    # every process saw the same events, from the worker in process 0, through Redis
    assert ws_results[0] == ws_results[1], ws_results
    statuses = [status for _, kind, status in ws_results[0] if kind == "status"]
    assert statuses.count("processing") == 1 and statuses[-1] == "completed", ws_results[0]
    assert [s for s, _, _ in ws_results[0]] == list(range(1, len(ws_results[0]) + 1))
    assert grpc_results[0] == grpc_results[1] == [(s, st or "") for s, _, st in ws_results[0]]

    done = (await asyncio.to_thread(_gql, url, '{ job(id: "%s") { status worker attempts } }' % job))["job"]
    assert done["status"] == "completed" and done["attempts"] == 1
    assert done["worker"].split(":")[1] == str(first)  # the one embedded worker, in process 0
    log = served.log.read_text()
    assert log.count("Huey consumer started") == 1, "more than one embedded worker"
    assert await asyncio.to_thread(served.stop) == 0
    assert not [pid for pid in children if alive(pid)]
