"""Dispatch benchmark of the local executor (issue 4).

For the SQLite queue and the Redis queue, measures with no-op tasks:

- enqueue-to-start latency, p50/p99 over N tasks sent one at a time
  (each waits until the previous one started, so this is the pickup
  latency of an idle worker);
- throughput: M tasks submitted back to back into the queue (submit/s),
  then drained by one worker thread (run/s, from consumer start to the
  last task run).

Three implementations run in the same process, same consumer settings:

- ``raw huey``: a no-op ``@huey.task`` called directly, plain
  ``SqliteHuey`` / ``RedisHuey`` (no MPR code);
- ``raw huey (priority)``: the same on huey's ``PriorityRedisHuey``, the
  storage MPR uses with Redis;
- ``MPR``: ``LocalExecutor.submit(job)`` → MPR's ``run_job`` task →
  worker wrapper (running-job registry, heartbeat registration, cancel
  event) → a no-op runner in place of ``mpr.execute.run_job`` (no database,
  no ffmpeg: only the dispatch path is measured).

Usage: ``python bench/dispatch.py [-n 500] [-m 2000] [-r 3] [--redis redis://127.0.0.1:6379/0]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from huey import PriorityRedisHuey, RedisHuey, SqliteHuey
from huey.api import Huey
from mpr_local.executor import LocalExecutor
from mpr_local.queue import JobQueue, make_huey
from mpr_local.settings import LocalSettings
from mpr_local.worker import WorkerConsumer

from mpr.settings import Settings


@dataclass
class Row:
    queue: str
    impl: str
    p50_ms: float
    p99_ms: float
    submit_per_s: float
    run_per_s: float


@dataclass
class FakeJob:
    """What LocalExecutor.submit reads from a job."""

    id: str
    priority: int = 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Probe:
    """Collects start times of tasks keyed by a token; wakes the sender."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.count = 0
        self.expected = 0
        self.event = threading.Event()
        self.lock = threading.Lock()

    def started(self, token: str) -> None:
        t = time.perf_counter()
        with self.lock:
            self.latencies.append(t - self.sent.get(token, t))
            self.count += 1
            if self.count >= self.expected:
                self.event.set()

    def expect(self, n: int) -> None:
        with self.lock:
            self.count, self.expected = 0, n
            self.latencies = []
            self.event.clear()


async def measure(
    submit: Callable[[str], Awaitable[object]],
    probe: Probe,
    n: int,
    m: int,
    start_consumer: Callable[[], Callable[[], None]],
) -> tuple[float, float, float, float]:
    """Latency p50/p99 (ms) with a running consumer, then submit rate and drain rate (tasks/s).

    Runs inside one event loop, as the API does; waiting for the worker blocks
    the loop, which nothing else needs meanwhile.
    """
    stop = start_consumer()
    try:
        for _ in range(20):  # warm-up (connections, first-call costs)
            token = uuid.uuid4().hex
            probe.expect(1)
            probe.sent[token] = time.perf_counter()
            await submit(token)
            probe.event.wait(10)
        lat: list[float] = []
        for _ in range(n):
            token = uuid.uuid4().hex
            probe.expect(1)
            probe.sent[token] = time.perf_counter()
            await submit(token)
            if not probe.event.wait(10):
                raise RuntimeError("task did not start within 10 s")
            lat.extend(probe.latencies)
    finally:
        stop()
    # Throughput: fill the queue with the consumer stopped, then time the drain.
    probe.expect(m)
    start = time.perf_counter()
    for _ in range(m):
        await submit(uuid.uuid4().hex)
    submit_rate = m / (time.perf_counter() - start)
    start = time.perf_counter()
    stop = start_consumer()
    try:
        if not probe.event.wait(120):
            raise RuntimeError(f"only {probe.count}/{m} tasks ran within 120 s")
        run_rate = m / (time.perf_counter() - start)
    finally:
        stop()
    return percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, submit_rate, run_rate


def consumer_starter(
    huey: Huey, settings: Settings, local: LocalSettings, queue: JobQueue | None = None
) -> Callable[[], Callable[[], None]]:
    """Starts MPR's WorkerConsumer for ``queue``, or huey's own Consumer with the same options."""

    def start() -> Callable[[], None]:
        if queue is not None:
            consumer = WorkerConsumer(queue, settings, local)
        else:
            consumer = huey.create_consumer(
                workers=settings.workers,
                periodic=False,
                initial_delay=local.poll_interval,
                backoff=1.15,
                max_delay=local.max_poll_interval,
                worker_type="thread",
            )
        consumer.start()
        return lambda: consumer.stop(graceful=True)

    return start


def bench_raw(huey: Huey, label: str, kind: str, settings: Settings, local: LocalSettings, n: int, m: int) -> Row:
    probe = Probe()

    @huey.task()
    def noop(token: str) -> None:
        probe.started(token)

    async def submit(token: str) -> None:
        noop(token)  # huey's own call: a blocking enqueue

    try:
        result = asyncio.run(measure(submit, probe, n, m, consumer_starter(huey, settings, local)))
    finally:
        huey.flush()
    return Row(kind, label, *result)


def bench_mpr(kind: str, settings: Settings, local: LocalSettings, n: int, m: int) -> Row:
    probe = Probe()

    def runner(job_id: str, *, cancel: threading.Event | None = None, worker: str = "") -> None:
        probe.started(job_id)

    queue = JobQueue(make_huey(settings, local), runner=runner)
    executor = LocalExecutor(settings, queue=queue)

    async def submit(token: str) -> None:
        await executor.submit(FakeJob(token))  # what service.create_job awaits

    try:
        result = asyncio.run(measure(submit, probe, n, m, consumer_starter(queue.huey, settings, local, queue)))
    finally:
        queue.huey.flush()
        queue.close()
    return Row(kind, "MPR (LocalExecutor)", *result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="latency samples (default 500)")
    parser.add_argument("-m", type=int, default=2000, help="throughput tasks (default 2000)")
    parser.add_argument("-r", "--repeat", type=int, default=1, help="rounds; the table shows medians (default 1)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL ('' to skip Redis)")
    args = parser.parse_args()

    samples: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mpr-bench-") as tmp:
        var = Path(tmp)
        base = {"MPR_VAR_DIR": str(var), "MPR_WORKERS": "1", "MPR_DATABASE_URL": f"sqlite://{var / 'mpr.db'}"}
        sqlite_settings = Settings.from_env(base)
        redis_settings = Settings.from_env({**base, "MPR_REDIS_URL": args.redis}) if args.redis else None
        local = LocalSettings.from_env({"MPR_LOCAL_QUEUE": f"bench_{uuid.uuid4().hex[:8]}"})
        # Rounds interleave the implementations so that load from other processes hits them alike.
        for _ in range(args.repeat):
            raw_sqlite = SqliteHuey(f"raw_{uuid.uuid4().hex[:8]}", filename=str(var / "raw.db"), results=False)
            samples.append(bench_raw(raw_sqlite, "raw huey", "sqlite", sqlite_settings, local, args.n, args.m))
            samples.append(bench_mpr("sqlite", sqlite_settings, local, args.n, args.m))
            if redis_settings is None:
                continue
            for cls, label in ((RedisHuey, "raw huey"), (PriorityRedisHuey, "raw huey (priority)")):
                huey = cls(f"raw_{uuid.uuid4().hex[:8]}", url=args.redis, results=False, blocking=True, read_timeout=1)
                samples.append(bench_raw(huey, label, "redis", redis_settings, local, args.n, args.m))
                huey.storage.pool.disconnect()
            samples.append(bench_mpr("redis", redis_settings, local, args.n, args.m))
    rows = []
    for key in dict.fromkeys((r.queue, r.impl) for r in samples):
        group = [r for r in samples if (r.queue, r.impl) == key]
        rows.append(
            Row(
                *key,
                *(
                    statistics.median(getattr(r, f) for r in group)
                    for f in ("p50_ms", "p99_ms", "submit_per_s", "run_per_s")
                ),
            )
        )

    print(
        f"\nDispatch benchmark: latency over {args.n} sequential no-op tasks, throughput over {args.m} "
        f"no-op tasks (submit, then drain), median of {args.repeat} round(s), 1 worker thread, poll {local.poll_interval * 1000:g}-"
        f"{local.max_poll_interval * 1000:g} ms (SQLite)\n"
    )
    header = (
        f"| {'queue':<6} | {'implementation':<22} | {'p50 ms':>7} | {'p99 ms':>7} | {'submit/s':>8} | {'run/s':>8} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r.queue:<6} | {r.impl:<22} | {r.p50_ms:7.2f} | {r.p99_ms:7.2f} | {r.submit_per_s:8.0f} | {r.run_per_s:8.0f} |"
        )
    for kind in ("sqlite", "redis"):
        mine = [r for r in rows if r.queue == kind and r.impl.startswith("MPR")]
        raw = [r for r in rows if r.queue == kind and r.impl == "raw huey"]
        if mine and raw:
            a, b = mine[0], raw[0]
            print(
                f"{kind}: MPR / raw huey  p50 ×{a.p50_ms / b.p50_ms:.2f}, p99 ×{a.p99_ms / b.p99_ms:.2f}, "
                f"submit/s ×{a.submit_per_s / b.submit_per_s:.2f}, run/s ×{a.run_per_s / b.run_per_s:.2f}"
            )


if __name__ == "__main__":
    main()
