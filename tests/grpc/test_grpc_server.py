"""gRPC ChunkerService over a real grpc.aio server and client, on both buses."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from mpr.events import PROGRESS, STATUS, JobEvent
from mpr.grpc import events_pb2, events_pb2_grpc

from .conftest import job_id, wait_until


def stub(port: int) -> tuple[grpc.aio.Channel, events_pb2_grpc.ChunkerServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return channel, events_pb2_grpc.ChunkerServiceStub(channel)


async def emit_job(bus, j: str, n: int = 5, delay: float = 0.02, final: str = "completed") -> None:
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    for i in range(n):
        await asyncio.sleep(delay)
        await bus.append(JobEvent(job_id=j, type=PROGRESS, status="processing", progress=(i + 1) * 100 / n))
    await asyncio.sleep(delay)
    await bus.append(JobEvent(job_id=j, type=STATUS, status=final, progress=100.0))


async def test_stream_chunk_pipeline_streams_a_job_start_to_end_and_ends_at_the_final_event(bus, grpc_server):
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="pending"))
    channel, client = stub(grpc_server)
    async with channel:
        call = client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j, after_sequence=0))
        producer = asyncio.create_task(emit_job(bus, j, n=5))
        got = [m async for m in call]  # ends by itself after the final event
        await producer
        assert await call.code() == grpc.StatusCode.OK
    assert [m.sequence for m in got] == list(range(1, 9))
    assert [m.type for m in got] == ["status", "status"] + ["progress"] * 5 + ["status"]
    assert got[-1].status == "completed" and got[-1].progress == 100.0 and got[-1].job_id == j
    assert all(m.chunk_index == -1 and m.timestamp > 0 for m in got)


async def test_resume_with_after_sequence_gets_the_rest_without_gap_or_duplicate(bus, grpc_server):
    j = job_id()
    channel, client = stub(grpc_server)
    async with channel:
        first = client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j))
        producer = asyncio.create_task(emit_job(bus, j, n=10, delay=0.03))
        seen = []
        async for m in first:
            seen.append(m.sequence)
            if len(seen) == 4:
                first.cancel()  # the browser goes away mid-stream...
                break
        # ...and reconnects with the last sequence it saw
        rest = [
            m.sequence async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j, after_sequence=4))
        ]
        await producer
    assert seen == [1, 2, 3, 4]
    assert rest == list(range(5, 13))


async def test_a_finished_job_returns_its_history_and_ends_at_once(bus, grpc_server, monkeypatch):
    from mpr.grpc import server

    # "at once": not after an idle check, made 60 s here so the bound below holds on any loaded machine
    monkeypatch.setattr(server, "IDLE_CHECK_SECONDS", 60.0)
    j = job_id()
    await emit_job(bus, j, n=3, delay=0, final="failed")
    channel, client = stub(grpc_server)
    async with channel:
        t0 = time.perf_counter()
        got = [m async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j, after_sequence=2))]
        assert time.perf_counter() - t0 < 30
    assert [m.sequence for m in got] == [3, 4, 5]
    assert got[-1].status == "failed"


async def test_stream_jobs_sends_new_events_of_all_jobs_with_a_global_sequence(bus, grpc_server):
    a, b, ping = job_id(), job_id(), job_id()
    await bus.append(JobEvent(job_id=a, type=PROGRESS, progress=1))  # before the call: not sent
    channel, client = stub(grpc_server)
    async with channel:
        call = client.StreamJobs(events_pb2.StreamJobsRequest())
        got, pinged = [], asyncio.Event()

        async def read():
            async for m in call:
                if m.job_id == ping:
                    pinged.set()
                if m.job_id in (a, b):
                    got.append(m)
                if len(got) == 4:
                    return

        reader = asyncio.create_task(read())
        while not pinged.is_set():  # the stream is live once it delivers a ping
            await bus.append(JobEvent(job_id=ping, type=PROGRESS))
            await asyncio.sleep(0.05)
        for j, p in ((a, 2), (b, 1), (a, 3), (b, 2)):
            await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=p))
        await asyncio.wait_for(reader, 5)
        call.cancel()
    assert [(m.job_id, m.progress) for m in got] == [(a, 2), (b, 1), (a, 3), (b, 2)]
    seqs = [m.sequence for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    # resuming the all-jobs stream from a global sequence replays what followed it
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server}") as channel:
        client = events_pb2_grpc.ChunkerServiceStub(channel)
        call = client.StreamJobs(events_pb2.StreamJobsRequest(after_sequence=seqs[1]))
        replay = []
        async for m in call:
            if m.job_id in (a, b):
                replay.append(m.sequence)
            if m.sequence >= seqs[3]:
                break
        call.cancel()
    assert replay == seqs[2:]


async def test_client_cancellation_releases_the_server_stream(media, grpc_server, bus):
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=STATUS, status="processing"))
    channel, client = stub(grpc_server)
    async with channel:
        call = client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j))
        assert (await call.read()).sequence == 1
        if hasattr(bus, "_waiters"):
            await wait_until(lambda: bus._waiters.get(j), 10)  # the server-side reader waits for more
        call.cancel()
    if hasattr(bus, "_waiters"):
        await wait_until(lambda: not bus._waiters.get(j), 10)  # the server-side reader is gone


async def test_unknown_and_malformed_job_ids_are_rejected(sqlite_db, bus, grpc_server):
    channel, client = stub(grpc_server)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [m async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=job_id()))]
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [m async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id="../etc"))]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_api_token_is_required_when_set(bus, monkeypatch):
    from mpr.grpc.server import start
    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_API_TOKEN", "s3cret")
    get_settings.cache_clear()
    running = await start(0, host="127.0.0.1")
    j = job_id()
    await emit_job(bus, j, n=1, delay=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            client = events_pb2_grpc.ChunkerServiceStub(channel)
            req = events_pb2.StreamRequest(job_id=j)
            for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [m async for m in client.StreamChunkPipeline(req, metadata=metadata)]
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [m async for m in client.StreamJobs(events_pb2.StreamJobsRequest())]
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            got = [m async for m in client.StreamChunkPipeline(req, metadata=(("authorization", "Bearer s3cret"),))]
            assert [m.sequence for m in got] == [1, 2, 3]
    finally:
        await running.stop(0)


async def test_a_port_another_server_holds_is_refused_not_shared(bus):
    # gRPC's default SO_REUSEPORT let a second `mpr serve` "listen" on the first one's port
    from mpr.errors import ConfigError
    from mpr.grpc.server import start

    first = await start(0, host="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{first.port}.*MPR_GRPC_PORT"):
            await start(first.port, host="127.0.0.1")
    finally:
        await first.stop(0)


async def make_job(status: str = "pending"):
    from mpr.models import TranscodeJob

    return await TranscodeJob.create(output_path=f"{job_id()}.mp4", status=status)


async def test_state_machine_transitions_reach_a_grpc_client(sqlite_db, bus, grpc_server):
    from mpr.jobs import transition, update_progress

    job = await make_job()
    j = str(job.id)
    channel, client = stub(grpc_server)
    async with channel:
        call = client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j))

        async def run_job():
            await asyncio.sleep(0.1)
            await transition(j, "processing")
            for p in (25.0, 50.0, 75.0):
                assert await update_progress(j, p, speed=2.0, eta=1.0, fps=50.0)
            await transition(j, "completed")

        worker = asyncio.create_task(run_job())
        got = [m async for m in call]
        await worker
    assert [(m.type, m.status, m.progress) for m in got] == [
        ("status", "processing", 0.0),
        ("progress", "processing", 25.0),
        ("progress", "processing", 50.0),
        ("progress", "processing", 75.0),
        ("status", "completed", 75.0),
    ]
    assert [m.sequence for m in got] == [1, 2, 3, 4, 5] and got[1].fps == 50.0 and got[1].speed == 2.0


async def test_a_final_job_without_stored_events_gets_its_status_from_the_database(sqlite_db, bus, grpc_server):
    job = await make_job("completed")
    channel, client = stub(grpc_server)
    async with channel:
        got = [m async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=str(job.id)))]
    assert [(m.sequence, m.type, m.status) for m in got] == [(1, "status", "completed")]


async def test_stream_ends_when_the_database_says_final_though_the_event_never_came(
    sqlite_db, bus, grpc_server, monkeypatch
):
    from mpr.grpc import server
    from mpr.models import TranscodeJob

    monkeypatch.setattr(server, "IDLE_CHECK_SECONDS", 0.2)
    job = await make_job("processing")
    await bus.append(JobEvent(job_id=str(job.id), type=STATUS, status="processing"))
    channel, client = stub(grpc_server)
    async with channel:
        call = client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=str(job.id)))
        assert (await call.read()).status == "processing"
        # e.g. a worker in another process without Redis: the database changes, this bus hears nothing
        await TranscodeJob.filter(id=job.id).update(status="cancelled")
        rest = []
        while (m := await call.read()) is not grpc.aio.EOF:
            rest.append(m)
    assert [(m.sequence, m.status) for m in rest] == [(2, "cancelled")]


async def test_start_in_app_runs_the_grpc_server_for_the_life_of_a_litestar_app(bus, monkeypatch):
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from mpr.grpc.server import start_in_app
    from mpr.settings import get_settings
    from testkit import free_port

    port = free_port()
    monkeypatch.setenv("MPR_GRPC_PORT", str(port))
    get_settings.cache_clear()
    j = job_id()
    await emit_job(bus, j, n=2, delay=0)
    async with (
        AsyncTestClient(app=Litestar(lifespan=[start_in_app])),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        client = events_pb2_grpc.ChunkerServiceStub(channel)
        got = [m.sequence async for m in client.StreamChunkPipeline(events_pb2.StreamRequest(job_id=j))]
    assert got == [1, 2, 3, 4]
