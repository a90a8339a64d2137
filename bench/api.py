"""GraphQL API benchmark (issue 5): list queries over 1,000 assets and 1,000 jobs while a transcode runs.

Starts the real app (``mpr.api.server.serve`` with the embedded local worker)
in a subprocess on a free port, with a fresh database (SQLite by default,
``--database postgres://...`` for PostgreSQL) holding 1,000 assets and
1,000 jobs, submits one real transcode (a generated clip, H.264 1080p) and,
while it runs, sends each query ``-n`` times from ``-c`` concurrent clients.
Prints p50/p99 latency and requests per second per query as a table.

``--processes 1,2`` runs the whole measurement once per value against
``mpr serve --processes N`` (the same database, one after the other) and
prints them side by side; more than one process needs Redis (``--redis``,
default the machine's), which every run then uses so that they compare.

Usage: ``python bench/api.py [-n 300] [-c 4] [--processes 1,2] [--database postgres://postgres@127.0.0.1:5432/test]``
(the PostgreSQL run creates and drops its own database).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

QUERIES = {
    "jobs (1000, nested)": "{ jobs { id status progress outputPath sourceAsset { filename } preset { name } } }",
    "assets (1000)": '{ assets(status: "ready") { id filename duration kind status videoCodec } }',
    "jobs page (50)": '{ jobs(limit: 50, status: "completed") { id status progress output { url size } } }',
    "assets page (50)": "{ assets(limit: 50) { id filename duration thumbnailUrl } }",
    "systemStatus": "{ systemStatus { status version } }",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg() -> str:
    return shutil.which("ffmpeg") or __import__("imageio_ffmpeg").get_ffmpeg_exe()


def make_clip(path: Path, seconds: int) -> None:
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


async def seed(n: int) -> None:
    """Schema, presets, and ``n`` assets plus ``n`` jobs (mixed statuses)."""
    from mpr import migrations
    from mpr.db import close_db, init_db
    from mpr.models import AssetKind, AssetStatus, JobStatus, MediaAsset, TranscodeJob, TranscodePreset
    from mpr.presets import sync_presets

    await init_db()
    await migrations.migrate()  # as `mpr migrate` would: `mpr serve` then finds nothing pending
    await sync_presets()
    preset = await TranscodePreset.filter(name="h264-720p").first()
    assets = [
        MediaAsset(
            id=uuid.uuid4(), path=f"library/clip{i:05d}.mp4", filename=f"clip{i:05d}.mp4", kind=AssetKind.VIDEO,
            status=AssetStatus.READY, size=10_000_000, duration=60.0 + i, container="mp4", video_codec="h264",
            audio_codec="aac", width=1920, height=1080, fps=25.0,
        )
        for i in range(n)
    ]  # fmt: skip
    await MediaAsset.bulk_create(assets, batch_size=500)
    # a file for each (sparse, of the recorded size: never probed), or the benchmark's scan would mark them
    # missing, or probe them again as changed files
    media_in = Path(os.environ["MEDIA_IN"])
    (media_in / "library").mkdir(parents=True, exist_ok=True)
    for asset in assets:
        with open(media_in / asset.path, "wb") as f:
            f.truncate(asset.size)
    statuses = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED]
    jobs = [
        TranscodeJob(
            id=uuid.uuid4(), source_asset_id=assets[i].id, source_path=assets[i].path, preset_id=preset.id,
            preset_snapshot={"name": "h264-720p"}, output_path=f"library/clip{i:05d}_h264-720p.mp4",
            status=statuses[i % 4], progress=100.0, executor="local", output_size=1_000_000, output_duration=60.0,
        )
        for i in range(n)
    ]  # fmt: skip
    await TranscodeJob.bulk_create(jobs, batch_size=500)
    await close_db()


def start_server(env: dict[str, str], port: int, log: Path, processes: int = 1) -> subprocess.Popen:
    """``mpr serve --processes N`` with its embedded worker, without the native gRPC server."""
    argv = [sys.executable, "-c", "import sys; from mpr.cli import main; sys.exit(main())", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--no-grpc", "--processes", str(processes)]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen, log: Path) -> None:
    last = ""
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            r = await client.get("/readyz")
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise SystemExit(f"server did not become ready: {last}\n{log.read_text()[-3000:]}")


async def gql(client: httpx.AsyncClient, query: str, variables: dict | None = None) -> dict:
    r = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise SystemExit(f"GraphQL error: {body['errors']}")
    return body["data"]


async def measure(client: httpx.AsyncClient, query: str, n: int, concurrency: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    todo = iter(range(n))

    async def one_client() -> None:
        for _ in todo:
            t0 = time.perf_counter()
            r = await client.post("/graphql", json={"query": query})
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200 and "errors" not in r.json()

    for _ in range(5):  # warm-up
        await client.post("/graphql", json={"query": query})
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies) * 1000, p99 * 1000, n / elapsed


async def run(env: dict[str, str], tmp: Path, processes: int, n: int, concurrency: int) -> tuple[list[tuple], int]:
    """Start ``mpr serve --processes N``, keep one transcode running, measure every query; stop it."""
    port = free_port()
    log = tmp / f"server-{processes}.log"
    proc = start_server(env, port, log, processes)
    rows = []
    done: list[str] = []
    try:
        limits = httpx.Limits(max_connections=concurrency + 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:
            await wait_ready(client, proc, log)
            await gql(client, "mutation { scanMediaFolder { registered } }")
            asset = (await gql(client, '{ assets(search: "long.mp4") { id } }'))["assets"][0]["id"]
            preset = next(p["id"] for p in (await gql(client, "{ presets { id name } }"))["presets"]
                          if p["name"] == "h264-1080p")  # fmt: skip
            create = "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p}) { id } }"
            state = {"job": ""}

            async def keep_transcoding() -> None:
                """Keep exactly one real transcode running for the whole measurement."""
                while True:
                    state["job"] = (await gql(client, create, {"a": asset, "p": preset}))["createJob"]["id"]
                    while True:
                        q = "query($id: ID!) { job(id: $id) { status } }"
                        status = (await gql(client, q, {"id": state["job"]}))["job"]["status"]
                        if status in ("completed", "failed", "cancelled"):
                            done.append(status)
                            break
                        await asyncio.sleep(0.5)

            transcoder = asyncio.create_task(keep_transcoding())
            for _ in range(100):
                await asyncio.sleep(0.1)
                if state["job"]:
                    q = "query($id: ID!) { job(id: $id) { status } }"
                    if (await gql(client, q, {"id": state["job"]}))["job"]["status"] == "processing":
                        break
            try:
                for name, query in QUERIES.items():
                    p50, p99, rps = await measure(client, query, n, concurrency)
                    rows.append((name, p50, p99, rps))
                # which processes the pool's connections (opened during the measurement) landed on
                answers = await asyncio.gather(*(gql(client, "{ systemStatus { pid } }") for _ in range(concurrency)))
                pids = {a["systemStatus"]["pid"] for a in answers}
            finally:
                transcoder.cancel()
                await client.post("/graphql", json={"query": 'mutation($id: ID!) { cancelJob(id: $id) { id } }',
                                                    "variables": {"id": state["job"]}})  # fmt: skip
        print(f"  {processes} process(es): {len(pids)} answered {concurrency} concurrent requests", flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return rows, len(done)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="requests per query")
    parser.add_argument("-c", type=int, default=1, help="concurrent clients")
    parser.add_argument("--rows", type=int, default=1000, help="assets and jobs in the database")
    parser.add_argument("--clip-seconds", type=int, default=120, help="length of the clip being transcoded")
    parser.add_argument("--database", default=None, help="PostgreSQL server URL (default: SQLite in a temp dir)")
    parser.add_argument("--processes", default="1", help="comma-separated API process counts to compare, e.g. 1,2")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL when a count is above 1")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="mpr-bench-api-"))
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    env = dict(os.environ)
    for name in ("MPR_REDIS_URL", "MPR_API_TOKEN", "MPR_EXECUTOR", "MEDIA_BASE_URL", "MPR_API_PROCESSES"):
        env.pop(name, None)
    if max(counts) > 1:  # every run on Redis (queue and events), so that the runs differ only in processes
        env.update(MPR_REDIS_URL=args.redis, MPR_LOCAL_QUEUE=f"mpr_bench_{uuid.uuid4().hex[:8]}")
    pg_db = None
    if args.database:
        import asyncpg

        pg_db = f"mpr_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.database.replace("postgres://", "postgresql://"))
        await admin.execute(f'CREATE DATABASE "{pg_db}"')
        await admin.close()
        db_url = args.database.rsplit("/", 1)[0] + "/" + pg_db
    else:
        db_url = f"sqlite://{tmp / 'var' / 'mpr.db'}"
    env.update(MEDIA_IN=str(tmp / "in"), MEDIA_OUT=str(tmp / "out"), MPR_VAR_DIR=str(tmp / "var"),
               MPR_DATABASE_URL=db_url, MPR_GRPC_PORT="0", MPR_LOG_LEVEL="WARNING")  # fmt: skip
    os.environ.update(env)
    try:
        print(f"seeding {args.rows} assets + {args.rows} jobs, generating a {args.clip_seconds} s clip ...", flush=True)
        make_clip(tmp / "in" / "long.mp4", args.clip_seconds)
        await seed(args.rows)
        results = {}
        for count in counts:
            results[count] = await run(env, tmp, count, args.n, args.c)
        kind = "PostgreSQL" if args.database else "SQLite"
        finished = ", ".join(f"{done} with {count} process(es)" for count, (_, done) in results.items())
        print(f"\nGraphQL over HTTP, {kind}{' + Redis' if max(counts) > 1 else ''}, {args.rows} assets + "
              f"{args.rows} jobs, {args.n} requests x {args.c} clients, one H.264 1080p transcode always running "
              f"(transcodes finished: {finished}); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
        print(f"| {'query':<20} | processes | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s':>7} |")
        print(f"|{'-' * 22}|-----------|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
        for i, name in enumerate(QUERIES):
            for count, (rows, _) in results.items():
                _, p50, p99, rps = rows[i]
                print(f"| {name:<20} | {count:>9} | {p50:7.1f} | {p99:7.1f} | {rps:7.1f} |")
    finally:
        if pg_db:
            import asyncpg

            admin = await asyncpg.connect(args.database.replace("postgres://", "postgresql://"))
            await admin.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
            await admin.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
