"""The in-process event bus: per-job ordering, resume, bounds, wake-ups across threads; sink registration."""

from __future__ import annotations

import asyncio
import threading
import time

from mpr.bus import InProcessBus, RedisStreamsBus, get_bus, subscribe
from mpr.events import PROGRESS, STATUS, JobEvent, emit

from .conftest import job_id


def ev(job: str, i: int = 0, type: str = PROGRESS, status: str = "processing") -> JobEvent:
    return JobEvent(job_id=job, type=type, status=status, progress=float(i))


async def test_inprocess_bus_numbers_each_job_from_one_and_resumes_after_sequence():
    bus = InProcessBus()
    a, b = job_id(), job_id()
    for i in range(5):
        assert (await bus.append(ev(a, i))).seq == i + 1
        assert (await bus.append(ev(b, i))).seq == i + 1
    assert [e.progress for e in await bus.fetch(a, 0)] == [0, 1, 2, 3, 4]
    assert [e.seq for e in await bus.fetch(a, 3)] == [4, 5]
    assert await bus.fetch(a, 5) == []
    # the all-jobs stream has its own global numbering, in emit order
    assert [(e.job_id, e.seq) for e in await bus.fetch(None, 8)] == [(a, 9), (b, 10)]
    assert (await bus.last(a)).seq == 5 and (await bus.last(None)).seq == 10


async def test_inprocess_bus_is_bounded_and_numbering_survives_eviction():
    bus = InProcessBus(per_job=10, max_events=25, global_history=15)
    jobs = [job_id() for _ in range(5)]
    for j in jobs:
        for i in range(12):
            await bus.append(ev(j, i))
    # each job keeps its last 10 events, and all jobs together at most 25
    assert [e.seq for e in await bus.fetch(jobs[-1], 0)] == list(range(3, 13))
    stored = sum([len(await bus.fetch(j, 0)) for j in jobs])
    assert stored <= 25
    assert await bus.fetch(jobs[0], 0) == []  # least recently active job dropped
    assert len(await bus.fetch(None, 0)) == 15
    # a dropped job continues its numbering instead of restarting at 1
    assert (await bus.append(ev(jobs[0], 99))).seq == 13


async def test_inprocess_subscriber_is_woken_by_a_publish_from_another_thread():
    bus = InProcessBus()
    j = job_id()
    got: list[JobEvent] = []
    batches: list[int] = []
    delivered = threading.Event()
    fetch = bus.fetch

    async def counted_fetch(*args, **kwargs):  # every wake-up of the subscriber, with what it brought
        batch = await fetch(*args, **kwargs)
        batches.append(len(batch))
        return batch

    bus.fetch = counted_fetch

    async def consume():
        async for e in bus.subscribe(j, 0):  # waits up to 30 s per fetch
            got.append(e)
            delivered.set()
            if e.final:
                return

    task = asyncio.create_task(consume())
    missed: list[int] = []

    def producer():
        # one event at a time, each delivered before the next is published: a subscriber that
        # was not woken would sleep through its 30 s wait and miss these 10 s (however busy the machine)
        for i in range(21):
            delivered.clear()
            bus.publish(ev(j, i) if i < 20 else ev(j, type=STATUS, status="completed"))
            if not delivered.wait(10):
                missed.append(i)
                return

    await asyncio.to_thread(producer)
    await asyncio.wait_for(task, 10)
    assert missed == []
    assert [e.seq for e in got] == list(range(1, 22))
    assert all(n > 0 for n in batches), batches  # woken by publishes only, never an empty (polling) return
    assert not bus._waiters  # nobody left waiting


async def test_fetch_with_wait_times_out_empty_and_leaves_no_waiter():
    bus = InProcessBus()
    t0 = time.perf_counter()
    assert await bus.fetch(job_id(), 0, wait=0.1) == []
    assert 0.09 <= time.perf_counter() - t0 < 10  # returned at its 0.1 s timeout (loose bound: busy machines)
    task = asyncio.create_task(bus.fetch(job_id(), 0, wait=10))
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not bus._waiters


async def test_module_subscribe_reads_history_then_live_events(media):
    j = job_id()
    bus = get_bus()
    for i in range(3):
        await bus.append(ev(j, i))
    seen = []

    async def consume():
        async for e in subscribe(j, after_seq=1):
            seen.append(e.seq)
            if e.seq == 4:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    await bus.append(ev(j, 3))
    await asyncio.wait_for(task, 2)
    assert seen == [2, 3, 4]


async def test_sinks_plugin_registers_inprocess_bus_without_redis(media):
    from mpr.plugins import load_plugins

    sinks = load_plugins().event_sinks
    assert any(isinstance(s, InProcessBus) for s in sinks)
    assert not any(isinstance(s, RedisStreamsBus) for s in sinks)
    j = job_id()
    await emit(ev(j, 7))
    assert [e.progress for e in await get_bus().fetch(j, 0)] == [7.0]


async def test_sinks_plugin_registers_redis_streams_when_redis_is_set(media, monkeypatch, redis_url):
    from mpr.bus import reset_bus
    from mpr.plugins import load_plugins, reset_plugins
    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_REDIS_URL", redis_url)
    get_settings.cache_clear()
    reset_plugins()
    reset_bus()
    sinks = load_plugins().event_sinks
    assert any(isinstance(s, RedisStreamsBus) for s in sinks)
    assert not any(isinstance(s, InProcessBus) for s in sinks)
    j = job_id()
    await emit(ev(j, 3))
    stored = await get_bus().fetch(j, 0)
    assert [(e.seq, e.progress) for e in stored] == [(1, 3.0)]
    await get_bus().close()
