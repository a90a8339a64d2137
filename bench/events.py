"""Event latency benchmark: emit() → Redis Streams → gRPC / gRPC-Web client, against the seed's design.

Three processes, like production: an emitter (a worker: ``mpr.events.emit()``
with the Redis Streams sink), a server (``ChunkerService`` on grpc.aio plus the
built-in gRPC-Web endpoint under uvicorn, optionally Envoy in front), and the
clients (this process). The baseline reproduces the seed's path in the same
run: the emitter also RPUSHes each event to a Redis list, and a second gRPC
server polls it with LRANGE every 50 ms and yields protobuf.

Latency is measured from the event's timestamp (taken just before the
emitter's RPUSH + emit) to its arrival at the client (``time.time()``, same
host). Runs:

1. latency: N progress events, one every ``--interval`` ms;
2. progress: a job emitting progress every 500 ms, then its final status:
   share of progress events that reach each client, and the delay of the
   final event (until the client has it and the stream has ended).

Usage: ``MPR_REDIS_URL=redis://127.0.0.1:6379/0 python bench/events.py [--events 400] [--interval 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLL_SECONDS = 0.05  # the seed's gRPC server polled its Redis list every 50 ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def baseline_key(job_id: str) -> str:
    return f"mpr:bench:list:{job_id}"


# ---------------------------------------------------------------------------
# server process


def serve(http_port: int, grpc_port: int, baseline_port: int, redis_url: str) -> None:
    """The event server (gRPC + built-in gRPC-Web) and the seed-style polling gRPC server."""
    import grpc
    import redis.asyncio as aioredis
    import uvicorn
    from litestar import Litestar

    from mpr.grpc import events_pb2, events_pb2_grpc
    from mpr.grpc.server import start
    from mpr.grpc.web import grpc_web_router

    class SeedBaseline(events_pb2_grpc.ChunkerServiceServicer):
        """The seed's design: LRANGE the job's Redis list every 50 ms, yield what is new."""

        def __init__(self) -> None:
            self.redis = aioredis.from_url(redis_url)

        async def StreamChunkPipeline(self, request, context):
            index = request.after_sequence
            while True:
                items = await self.redis.lrange(baseline_key(request.job_id), index, -1)
                for raw in items:
                    index += 1
                    d = json.loads(raw)
                    yield events_pb2.PipelineEvent(
                        job_id=d["job_id"],
                        sequence=index,
                        timestamp=d["ts"],
                        type=d["type"],
                        status=d["status"],
                        progress=d["progress"],
                        chunk_index=d["chunk_index"],
                    )
                    if d["type"] == "status" and d["status"] in ("completed", "failed", "cancelled"):
                        return
                await asyncio.sleep(POLL_SECONDS)

    async def main() -> None:
        running = await start(grpc_port, host="127.0.0.1")
        baseline = grpc.aio.server()
        events_pb2_grpc.add_ChunkerServiceServicer_to_server(SeedBaseline(), baseline)
        baseline.add_insecure_port(f"127.0.0.1:{baseline_port}")
        await baseline.start()
        app = Litestar(route_handlers=[grpc_web_router])
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning"))
        try:
            await server.serve()
        finally:
            await baseline.stop(0)
            await running.stop(0)

    asyncio.run(main())


# ---------------------------------------------------------------------------
# emitter process


def emit_events(job_id: str, n: int, interval: float, redis_url: str, final: bool) -> None:
    """A worker: progress events every ``interval`` s through mpr.events.emit(), plus the seed's RPUSH."""
    import redis.asyncio as aioredis

    from mpr.bus import get_bus
    from mpr.events import PROGRESS, STATUS, JobEvent, emit
    from mpr.plugins import load_plugins

    async def main() -> None:
        load_plugins()  # warm up: plugin loading and connections are not part of an event's latency
        await get_bus().last(job_id)
        r = aioredis.from_url(redis_url)
        key = baseline_key(job_id)
        await r.ping()
        start = time.perf_counter()
        for i in range(n + (1 if final else 0)):
            # pace on a fixed schedule, like a 500 ms progress timer
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.perf_counter()))
            last = final and i == n
            ev = JobEvent(
                job_id=job_id,
                type=STATUS if last else PROGRESS,
                status="completed" if last else "processing",
                progress=100.0 if last else 100.0 * i / max(1, n),
            )
            await r.rpush(key, json.dumps(ev.to_dict()))
            await emit(ev)
        await r.expire(key, 60)
        await r.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# clients


class Received:
    """What one client saw: arrival latency per sequence, and when its stream ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency: dict[int, float] = {}
        self.final_ts: float | None = None
        self.ended: float | None = None
        self.error: str = ""

    def add(self, ev) -> None:
        now = time.time()
        self.latency[ev.sequence] = now - ev.timestamp
        if ev.type == "status" and ev.status in ("completed", "failed", "cancelled"):
            self.final_ts = ev.timestamp


async def grpc_client(name: str, port: int, job_id: str, out: Received) -> None:
    import grpc

    from mpr.grpc import events_pb2, events_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = events_pb2_grpc.ChunkerServiceStub(channel)
        try:
            async for ev in stub.StreamChunkPipeline(events_pb2.StreamRequest(job_id=job_id)):
                out.add(ev)
        except grpc.aio.AioRpcError as exc:
            out.error = f"{exc.code().name}: {exc.details()}"
        out.ended = time.time()  # the server ended the stream (before we close our channel)


async def grpc_web_client(url: str, job_id: str, out: Received, text: bool = False) -> None:
    import httpx

    from mpr.grpc import events_pb2

    payload = events_pb2.StreamRequest(job_id=job_id).SerializeToString()
    body = b"\x00" + len(payload).to_bytes(4, "big") + payload
    ctype = "application/grpc-web-text" if text else "application/grpc-web+proto"
    headers = {"content-type": ctype, "accept": ctype, "x-grpc-web": "1"}
    buf = b""
    content = base64.b64encode(body) if text else body
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("POST", url, content=content, headers=headers) as r,
    ):
        async for chunk in r.aiter_raw():
            buf += chunk
            while len(buf) >= 5:
                size = int.from_bytes(buf[1:5], "big")
                if len(buf) < 5 + size:
                    break
                flag, message, buf = buf[0], buf[5 : 5 + size], buf[5 + size :]
                if flag == 0:
                    out.add(events_pb2.PipelineEvent.FromString(message))
                elif b"grpc-status:0" not in message:
                    out.error = message.decode(errors="replace").strip()
        out.ended = time.time()  # the trailer frame and the end of the body arrived


def start_envoy(envoy_port: int, grpc_port: int, workdir: Path) -> subprocess.Popen | None:
    try:
        import envoy
    except ImportError:
        return None
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    if not binary.is_file():
        return None
    config = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    config = re.sub(r"port_value: 8090\b", f"port_value: {envoy_port}", config)
    config = re.sub(r"port_value: 50051\b", f"port_value: {grpc_port}", config)
    config = re.sub(r"port_value: 9901\b", f"port_value: {free_port()}", config)
    config = config.replace("address: 0.0.0.0", "address: 127.0.0.1")
    path = workdir / "envoy.yaml"
    path.write_text(config)
    return subprocess.Popen(
        [str(binary), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
        stdout=subprocess.DEVNULL,
    )


async def run_clients(ports: dict[str, int], job_id: str, emitter_args: list[str], envoy: bool) -> list[Received]:
    http = f"http://127.0.0.1:{ports['http']}/grpc/mpr.v1.ChunkerService/StreamChunkPipeline"
    clients = [
        (Received("gRPC (Streams + XREAD BLOCK)"), lambda o: grpc_client("grpc", ports["grpc"], job_id, o)),
        (Received("gRPC-Web built-in"), lambda o: grpc_web_client(http, job_id, o)),
    ]
    if envoy:
        url = f"http://127.0.0.1:{ports['envoy']}/mpr.v1.ChunkerService/StreamChunkPipeline"
        clients.append((Received("gRPC-Web via Envoy"), lambda o: grpc_web_client(url, job_id, o)))
    clients.append(
        (Received("baseline: RPUSH + LRANGE 50 ms"), lambda o: grpc_client("b", ports["baseline"], job_id, o))
    )
    tasks = [asyncio.create_task(fn(out)) for out, fn in clients]
    await asyncio.sleep(1.0)  # every client is subscribed before the first event
    emitter = await asyncio.create_subprocess_exec(sys.executable, __file__, "emit", job_id, *emitter_args)
    await emitter.wait()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return [out for out, _ in clients]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400, help="latency run: number of events")
    parser.add_argument("--interval", type=float, default=20.0, help="latency run: ms between events")
    parser.add_argument("--progress-seconds", type=float, default=10.0, help="progress run length (500 ms ticks)")
    parser.add_argument("--no-envoy", action="store_true")
    args = parser.parse_args()
    redis_url = os.environ.get("MPR_REDIS_URL") or "redis://127.0.0.1:6379/0"
    os.environ["MPR_REDIS_URL"] = redis_url
    ports = {"http": free_port(), "grpc": free_port(), "baseline": free_port(), "envoy": free_port()}
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(ports["http"]), str(ports["grpc"]), str(ports["baseline"])],
        env={**os.environ, "MPR_API_TOKEN": ""},
    )
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"mpr-bench-events-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    envoy = None if args.no_envoy else start_envoy(ports["envoy"], ports["grpc"], workdir)
    try:
        for port in (ports["http"], ports["grpc"], ports["baseline"]) + ((ports["envoy"],) if envoy else ()):
            wait_port(port)
        latency = asyncio.run(
            run_clients(
                ports, str(uuid.uuid4()), [str(args.events), str(args.interval / 1000), redis_url, "1"], bool(envoy)
            )
        )
        ticks = int(args.progress_seconds / 0.5)
        progress = asyncio.run(run_clients(ports, str(uuid.uuid4()), [str(ticks), "0.5", redis_url, "1"], bool(envoy)))
    finally:
        for proc in (envoy, server):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    report(latency, progress, args, ticks)


def report(latency: list[Received], progress: list[Received], args, ticks: int) -> None:
    base = latency[-1]
    base_p50 = pct(list(base.latency.values()), 50)
    base_p99 = pct(list(base.latency.values()), 99)
    print(
        f"\nEvent latency, emit() → client: {args.events} events every {args.interval:g} ms "
        f"(+ final), {ticks} progress ticks at 500 ms (+ final)\n"
    )
    head = (
        f"{'path':34} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50 vs base':>12} "
        f"{'progress delivered':>19} {'final delay ms':>15}"
    )
    print(head)
    print("-" * len(head))
    for lat, prog in zip(latency, progress, strict=True):
        values = [v * 1000 for v in lat.latency.values()]
        p50, p99 = pct(values, 50), pct(values, 99)
        speedup = "1.0x" if lat is base else f"{base_p50 * 1000 / p50:.1f}x lower"
        delivered = sum(1 for s in prog.latency if s <= ticks + 1) - 1  # progress events (not the final)
        # the final event's delay: until the client has it and its stream has ended
        final_ms = (prog.ended - prog.final_ts) * 1000 if prog.final_ts and prog.ended else float("nan")
        print(
            f"{lat.name:34} {len(values):>5} {p50:>8.2f} {p99:>8.2f} {max(values, default=float('nan')):>8.2f} "
            f"{speedup:>12} {f'{delivered}/{ticks} ({100 * delivered / ticks:.0f}%)':>19} {final_ms:>15.1f}"
        )
        for r in (lat, prog):
            if r.error:
                print(f"   {r.name}: ERROR {r.error}")
    ours = latency[0]
    values = [v * 1000 for v in ours.latency.values()]
    print(
        f"\ntargets (gRPC): p50 ≤ 10 ms: {pct(values, 50):.2f}; p99 ≤ 25 ms: {pct(values, 99):.2f}; "
        f"≥ 3x lower than baseline: {base_p50 * 1000 / pct(values, 50):.1f}x (p99 {base_p99 * 1000 / pct(values, 99):.1f}x); "
        f"mean {statistics.fmean(values):.2f} ms"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), os.environ["MPR_REDIS_URL"])
    elif len(sys.argv) > 1 and sys.argv[1] == "emit":
        emit_events(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6] == "1")
    else:
        main()
