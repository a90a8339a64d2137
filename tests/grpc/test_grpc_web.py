"""The built-in gRPC-Web endpoint, called over real HTTP (httpx streaming) against uvicorn + Litestar."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest

from mpr.events import PROGRESS, STATUS, JobEvent
from mpr.grpc import events_pb2
from mpr.grpc.web import encode_message, parse_timeout

from .conftest import GrpcWebReader, grpc_web_request, job_id, parse_trailer

PATH = "/grpc/mpr.v1.ChunkerService/"


async def call(url: str, method: str, message, *, text: bool = False, headers: dict | None = None, on_frame=None):
    """POST one gRPC-Web call; return (response, [(arrival time, flag, payload)]); ``on_frame(flag, payload)`` live."""
    ctype = "application/grpc-web-text" if text else "application/grpc-web+proto"
    hdrs = {"content-type": ctype, "x-grpc-web": "1", **(headers or {})}
    reader = GrpcWebReader(text)
    frames = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url + PATH + method, content=grpc_web_request(message, text), headers=hdrs) as r,
    ):
        async for chunk in r.aiter_raw():
            now = time.perf_counter()
            for flag, payload in reader.feed(chunk):
                frames.append((now, flag, payload))
                if on_frame:
                    on_frame(flag, payload)
    assert reader.leftover == b""
    return r, frames


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
async def test_events_arrive_one_by_one_then_a_trailer_frame(bus, litestar_app_url, text):
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    arrived: dict[int, asyncio.Event] = {}

    def on_frame(flag: int, payload: bytes) -> None:
        if flag == 0:
            arrived.setdefault(events_pb2.PipelineEvent.FromString(payload).sequence, asyncio.Event()).set()

    async def reached_client(seq: int) -> None:
        await asyncio.wait_for(arrived.setdefault(seq, asyncio.Event()).wait(), 15)

    async def produce():
        # lockstep: each event must reach the client before the next one (and the end of the
        # stream) is emitted, so a server that buffers the stream cannot pass, however slow the machine
        await reached_client(1)
        for i in range(5):
            e = await bus.append(JobEvent(job_id=j, type=PROGRESS, status="processing", progress=20.0 * (i + 1)))
            await reached_client(e.seq)
        await bus.append(JobEvent(job_id=j, type=STATUS, status="completed", progress=100.0))

    client = asyncio.create_task(
        call(litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=j), text=text, on_frame=on_frame)
    )
    try:
        await produce()  # TimeoutError here: an event was held back (buffered) by the server
        r, frames = await asyncio.wait_for(client, 30)
    finally:
        client.cancel()
    assert r.status_code == 200
    assert r.headers["content-type"] == ("application/grpc-web-text" if text else "application/grpc-web+proto")
    assert [flag for _, flag, _ in frames] == [0x00] * 7 + [0x80]
    events = [events_pb2.PipelineEvent.FromString(p) for _, _, p in frames[:-1]]
    assert [e.sequence for e in events] == list(range(1, 8))
    assert events[-1].status == "completed"
    assert parse_trailer(frames[-1][2]) == {"grpc-status": "0", "grpc-message": ""}


async def test_resume_over_grpc_web_with_after_sequence(bus, litestar_app_url):
    j = job_id()
    for i in range(4):
        await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=float(i)))
    await bus.append(JobEvent(job_id=j, type=STATUS, status="cancelled"))
    _, frames = await call(
        litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=j, after_sequence=2)
    )
    events = [events_pb2.PipelineEvent.FromString(p) for _, flag, p in frames if flag == 0]
    assert [e.sequence for e in events] == [3, 4, 5] and events[-1].status == "cancelled"


async def test_stream_jobs_over_grpc_web(bus, litestar_app_url):
    a, ping = job_id(), job_id()
    await bus.append(JobEvent(job_id=a, type=PROGRESS, progress=-1.0))  # before the call: not sent
    got, pinged = [], asyncio.Event()

    async def read():
        hdrs = {"content-type": "application/grpc-web+proto"}
        reader = GrpcWebReader()
        body = grpc_web_request(events_pb2.StreamJobsRequest())
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", litestar_app_url + PATH + "StreamJobs", content=body, headers=hdrs) as r,
        ):
            async for chunk in r.aiter_raw():
                for _, payload in reader.feed(chunk):
                    e = events_pb2.PipelineEvent.FromString(payload)
                    if e.job_id == ping:
                        pinged.set()
                    if e.job_id == a:
                        got.append(e)
                        if len(got) == 3:
                            return

    task = asyncio.create_task(read())
    while not pinged.is_set():  # the stream is live once it delivers a ping
        await bus.append(JobEvent(job_id=ping, type=PROGRESS))
        await asyncio.sleep(0.05)
    for i in range(3):
        await bus.append(JobEvent(job_id=a, type=PROGRESS, progress=float(i)))
    await asyncio.wait_for(task, 5)
    assert [e.progress for e in got] == [0.0, 1.0, 2.0]
    assert got[0].sequence < got[1].sequence < got[2].sequence


async def test_errors_are_sent_trailers_only(sqlite_db, bus, litestar_app_url, monkeypatch):
    from mpr.settings import get_settings

    r, frames = await call(litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=job_id()))
    assert r.status_code == 200 and r.headers["grpc-status"] == "5" and frames == []  # NOT_FOUND
    r, _ = await call(litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id="nope"))
    assert r.headers["grpc-status"] == "3"  # INVALID_ARGUMENT
    r, _ = await call(litestar_app_url, "Nope", events_pb2.StreamRequest(job_id=job_id()))
    assert r.headers["grpc-status"] == "12"  # UNIMPLEMENTED
    async with httpx.AsyncClient() as client:
        bad = await client.post(
            litestar_app_url + PATH + "StreamJobs", content=b"x", headers={"content-type": "text/plain"}
        )
        assert bad.status_code == 415
        trunc = await client.post(
            litestar_app_url + PATH + "StreamJobs",
            content=b"\x00\x00\x00\x00\x09ab",
            headers={"content-type": "application/grpc-web+proto"},
        )
        assert trunc.headers["grpc-status"] == "3"

    monkeypatch.setenv("MPR_API_TOKEN", "tok")
    get_settings.cache_clear()
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="completed"))
    r, frames = await call(litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=j))
    assert r.headers["grpc-status"] == "16" and frames == []  # UNAUTHENTICATED
    r, frames = await call(
        litestar_app_url,
        "StreamChunkPipeline",
        events_pb2.StreamRequest(job_id=j),
        headers={"authorization": "Bearer tok"},
    )
    assert [flag for _, flag, _ in frames] == [0, 0x80]


async def test_cors_preflight_allows_a_browser_on_another_origin(bus, litestar_app_url):
    async with httpx.AsyncClient() as client:
        r = await client.options(
            litestar_app_url + PATH + "StreamChunkPipeline",
            headers={
                "origin": "http://localhost:5173",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-grpc-web,authorization",
            },
        )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"]
    assert "grpc-status" in r.headers["access-control-expose-headers"]


async def test_grpc_timeout_header_ends_the_stream_with_deadline_exceeded(bus, litestar_app_url):
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    t0 = time.perf_counter()
    _, frames = await call(
        litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=j), headers={"grpc-timeout": "300m"}
    )
    # not before the 300 ms deadline; ended by it (status 4 below), not by the client's 30 s read timeout
    assert 0.25 < time.perf_counter() - t0 < 25
    assert [flag for _, flag, _ in frames] == [0, 0x80]
    assert parse_trailer(frames[-1][2])["grpc-status"] == "4"


def test_helpers_follow_the_grpc_spec():
    assert parse_timeout("1500m") == 1.5 and parse_timeout("2S") == 2 and parse_timeout("bad") is None
    assert encode_message("100% façade\n") == "100%25 fa%C3%A7ade%0A"
    assert base64.b64decode(base64.b64encode(b"x"))


async def test_create_app_mounts_the_grpc_web_router(sqlite_db, bus):
    from litestar.testing import AsyncTestClient

    from mpr.api.app import create_app

    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="completed"))
    async with AsyncTestClient(app=create_app()) as client:
        r = await client.post(
            PATH + "StreamChunkPipeline",
            content=grpc_web_request(events_pb2.StreamRequest(job_id=j)),
            headers={"content-type": "application/grpc-web+proto"},
        )
    frames = GrpcWebReader().feed(r.content)
    assert [flag for flag, _ in frames] == [0, 0x80]
    assert events_pb2.PipelineEvent.FromString(frames[0][1]).status == "completed"


async def test_a_browser_that_goes_away_releases_its_server_stream(bus, litestar_app_url):
    from .conftest import wait_until

    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    reader = GrpcWebReader()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            litestar_app_url + PATH + "StreamChunkPipeline",
            content=grpc_web_request(events_pb2.StreamRequest(job_id=j)),
            headers={"content-type": "application/grpc-web+proto"},
        ) as r,
    ):
        async for chunk in r.aiter_raw():
            if reader.feed(chunk):
                break  # got the first event; leaving the block closes the connection
    if hasattr(bus, "_waiters"):
        await wait_until(lambda: not bus._waiters.get(j), 5)
    # the server keeps serving new calls
    await bus.append(JobEvent(job_id=j, type=STATUS, status="completed"))
    _, frames = await call(
        litestar_app_url, "StreamChunkPipeline", events_pb2.StreamRequest(job_id=j, after_sequence=1)
    )
    assert [flag for _, flag, _ in frames] == [0, 0x80]
