"""Redis Streams bus: atomic per-job numbering across processes, capped streams, XREAD BLOCK, restarts."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis

from mpr.bus import RedisStreamsBus, decode_event, encode_event, stream_key
from mpr.events import PROGRESS, STATUS, JobEvent

from .conftest import job_id, wait_until


def blocked_clients(server) -> int:
    """Clients of ``server`` waiting in a blocking command right now."""
    return int(redis.Redis.from_url(server.url).info("clients")["blocked_clients"])


WRITER = """
import asyncio, sys
from mpr.bus import RedisStreamsBus
from mpr.events import JobEvent

async def main(url, job, name, n):
    bus = RedisStreamsBus(url)
    for i in range(n):
        await bus.append(JobEvent(job_id=job, type="progress", worker=name, progress=float(i)))
    await bus.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def test_sequence_is_dense_and_monotonic_with_two_writer_processes(redis_url):
    j = job_id()
    n = 300
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, redis_url, j, name, str(n))
        for name in ("w1", "w2")
    ]
    for p in procs:
        assert await asyncio.wait_for(p.wait(), 60) == 0
    bus = RedisStreamsBus(redis_url)
    events = []
    after = 0
    while batch := await bus.fetch(j, after):
        events += batch
        after = batch[-1].seq
    await bus.close()
    assert [e.seq for e in events] == list(range(1, 2 * n + 1))  # no gap, no duplicate
    for name in ("w1", "w2"):  # each writer's events stay in its own order
        assert [e.progress for e in events if e.worker == name] == [float(i) for i in range(n)]


async def test_job_stream_is_capped_and_keeps_the_newest_events(redis_url):
    bus = RedisStreamsBus(redis_url, maxlen=50)
    j = job_id()
    for i in range(600):
        await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=float(i)))
    r = redis.Redis.from_url(redis_url)
    length = r.xlen(stream_key(j))
    assert 50 <= length < 600 - 300  # MAXLEN ~ trims whole nodes: about 50, never unbounded
    assert r.ttl(stream_key(j)) > 0  # a finished job's stream expires
    tail = await bus.fetch(j, 0, limit=1000)
    assert tail[-1].seq == 600 and tail[-1].progress == 599.0
    assert [e.seq for e in tail] == list(range(600 - len(tail) + 1, 601))
    await bus.close()


async def test_events_are_stored_compactly():
    e = JobEvent(job_id="6b9c1f8e-2b8e-4f55-9d43-0e1c2b3a4d5e", type=PROGRESS, status="processing", progress=42.123456)
    payload = encode_event(e)
    assert len(payload) < len(json.dumps(e.to_dict())) / 2
    assert b"chunk_index" not in payload and b"worker" not in payload  # defaults left out, short keys
    back = decode_event(payload, 7)
    assert back.seq == 7 and back.progress == 42.123 and back.job_id == e.job_id and back.ts == round(e.ts, 6)


async def test_blocking_reader_gets_events_without_polling_and_resumes(own_redis):
    bus = RedisStreamsBus(own_redis.url)
    j = job_id()
    await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=1.0))
    await bus.fetch(j, 0)  # warm up the connections
    before = own_redis.info_calls("xread")
    received: list[tuple[float, JobEvent]] = []

    async def reader():
        after = 1
        while after < 3:
            for e in await bus.fetch(j, after, wait=10):
                received.append((time.perf_counter(), e))
                after = e.seq

    task = asyncio.create_task(reader())
    await wait_until(lambda: blocked_clients(own_redis) == 1, 10)  # the reader is in its XREAD BLOCK
    await asyncio.sleep(1.0)  # idle: the reader sits in that one XREAD BLOCK
    assert own_redis.info_calls("xread") - before == 1  # one XREAD BLOCK for a whole idle second
    await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=2.0))
    await bus.append(JobEvent(job_id=j, type=STATUS, status="completed"))
    # woken by the append: the block it sits in lasts 10 s, longer than this wait
    await asyncio.wait_for(task, 8)
    assert [e.seq for _, e in received] == [2, 3]
    # that call woke up, then at most one more for the last event: no polling loop
    assert own_redis.info_calls("xread") - before <= 3
    await bus.close()


async def test_subscriber_survives_a_redis_restart_and_resumes_from_its_sequence(own_redis):
    bus = RedisStreamsBus(own_redis.url)
    j = job_id()
    seen: list[int] = []

    async def consume():
        async for e in bus.subscribe(j, 0):
            seen.append(e.seq)
            if e.final:
                return

    task = asyncio.create_task(consume())
    for i in range(3):
        await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=float(i)))
    await wait_until(lambda: len(seen) >= 3, 10)
    assert seen == [1, 2, 3]
    await asyncio.to_thread(own_redis.stop)
    await asyncio.sleep(0.3)  # the subscriber notices and retries
    await asyncio.to_thread(own_redis.start)
    await bus.append(JobEvent(job_id=j, type=PROGRESS, progress=3.0))
    await bus.append(JobEvent(job_id=j, type=STATUS, status="completed"))
    await asyncio.wait_for(task, 10)
    assert seen == [1, 2, 3, 4, 5]
    await bus.close()


async def test_a_lost_counter_continues_after_the_streams_last_id(redis_url):
    from mpr.bus import seq_key

    bus = RedisStreamsBus(redis_url)
    j = job_id()
    for _ in range(3):
        await bus.append(JobEvent(job_id=j, type=PROGRESS))
    redis.Redis.from_url(redis_url).delete(seq_key(j))  # e.g. evicted by maxmemory while the stream survived
    assert (await bus.append(JobEvent(job_id=j, type=PROGRESS))).seq == 4
    assert (await bus.append(JobEvent(job_id=j, type=PROGRESS))).seq == 5
    assert [e.seq for e in await bus.fetch(j, 0)] == [1, 2, 3, 4, 5]
    await bus.close()
