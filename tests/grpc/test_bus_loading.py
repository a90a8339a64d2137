"""The Redis Streams sink keeps an event across a Redis restart that is still LOADING its data."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
import redis

from mpr.bus import RedisStreamsBus
from mpr.events import JobEvent

# filler keys loaded back after the restart 20 us each (--key-load-delay): for a second or more the
# server answers LOADING (between batches of 1024 loaded commands it handles clients)
KEYS = 20_000


def loading(port: int) -> bool:
    """True while the server at ``port`` answers PING with LOADING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"-LOADING")
    except OSError:
        return False


async def test_append_waits_for_a_restarted_redis_that_is_loading(own_redis, monkeypatch) -> None:
    job_id = str(uuid.uuid4())
    monkeypatch.setattr("mpr.bus.APPEND_RETRY_SECONDS", 60.0)  # loading takes longer on a loaded machine
    with redis.Redis.from_url(own_redis.url) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(KEYS):
            pipe.set(f"filler:{i}", i)
        pipe.execute()
    bus = RedisStreamsBus(own_redis.url)
    first = await bus.append(JobEvent(job_id=job_id, type="status", status="processing"))
    assert first.seq == 1
    own_redis.stop()
    own_redis.start("--key-load-delay", "20", wait=False)
    deadline = time.monotonic() + 30
    while not loading(own_redis.port):  # poll until the restarted server refuses commands with LOADING
        assert time.monotonic() < deadline, "redis-server never answered LOADING"
        await asyncio.sleep(0.005)
    ticks = 0

    async def tick() -> None:  # the caller's loop stays free while the append waits
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        second = await bus.append(JobEvent(job_id=job_id, type="status", status="completed"))
    finally:
        ticker.cancel()
        await bus.close()
    assert second.seq == 2  # not dropped, appended once, numbered after the event from before the restart
    assert ticks > 1
    events = await RedisStreamsBus(own_redis.url).fetch(job_id, 0)
    assert [(e.seq, e.status) for e in events] == [(1, "processing"), (2, "completed")]


async def test_append_gives_up_with_the_error_when_redis_stays_down(own_redis, monkeypatch) -> None:
    job_id = str(uuid.uuid4())
    monkeypatch.setattr("mpr.bus.APPEND_RETRY_SECONDS", 0.3)
    bus = RedisStreamsBus(own_redis.url)
    await bus.append(JobEvent(job_id=job_id, type="status", status="processing"))
    own_redis.stop()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await bus.append(JobEvent(job_id=job_id, type="status", status="completed"))
    finally:
        await bus.close()
