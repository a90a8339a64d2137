"""Load benchmark (issue 11): many queued jobs through 2 workers, API latency meanwhile, many event streams.

Part 1 — ``-n`` jobs (default 200) on short clips, queued at once through
GraphQL into the Redis queue, run by 2 ``mpr worker`` processes (1 job each)
on PostgreSQL, while a client measures API latency (GraphQL ``jobs`` page,
``systemStatus``, ``/healthz``). Checked afterwards: every job COMPLETED,
exactly one output file per job, ``attempts == 1`` for every job (no job ran
twice), and exactly one PROCESSING transition per job in its event stream.

Part 2 — ``-s`` (default 50) concurrent gRPC-Web streams on one running job
(``POST /grpc/mpr.v1.ChunkerService/StreamChunkPipeline``): each stream must
receive every event of the job (same sequence numbers as the stored history,
no gap, no duplicate), ending with the final status.

Uses the machine's PostgreSQL (a fresh database, dropped at the end) and Redis
(a unique queue name; events are per-job streams), an ``mpr serve --no-worker``
and two ``mpr worker`` subprocesses. Prints a table.

Usage: ``python bench/load.py [-n 200] [-s 50] [--preset copy] [--pg postgres://postgres@127.0.0.1:5432/test]
[--redis redis://127.0.0.1:6379/0]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MPR = str(Path(sys.executable).parent / "mpr")
GRPC_PATH = "/grpc/mpr.v1.ChunkerService/StreamChunkPipeline"
FINAL = {"completed", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def make_clips(dst: Path, n: int, seconds: float) -> list[str]:
    """``n`` distinct short clips (different sizes of testsrc2 with a tone) in MEDIA_IN."""
    from testkit import make_clip

    names = []
    base = make_clip(dst / "clip-0.mp4", seconds=seconds, size="320x240")
    names.append(base.name)
    for i in range(1, n):
        target = dst / f"clip-{i}.mp4"
        shutil.copyfile(base, target)  # same media, distinct files and assets
        names.append(target.name)
    return names


async def gql(client: httpx.AsyncClient, query: str, variables: dict | None = None) -> dict:
    r = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mpr serve did not become ready")
            await asyncio.sleep(0.3)


async def measure_api(url: str, stop: asyncio.Event, samples: dict[str, list[float]], rate: float = 20.0) -> None:
    """Sequential requests at ~``rate``/s, round-robin over three endpoints, latency per endpoint in ms."""
    requests = [
        (
            "graphql jobs(first 20)",
            "POST",
            "/graphql",
            {"query": "{ jobs(limit: 20) { id status progress sourceAsset { path } } }"},
        ),
        ("graphql systemStatus", "POST", "/graphql", {"query": "{ systemStatus { status version } }"}),
        ("GET /healthz", "GET", "/healthz", None),
    ]
    i = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            name, method, path, body = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            r = await client.request(method, path, json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:200]}")
            samples.setdefault(name, []).append(elapsed)
            await asyncio.sleep(max(0.0, 1 / rate - elapsed / 1000))


def grpc_web_request(job_id: str, after: int = 0) -> bytes:
    from mpr.grpc import events_pb2

    msg = events_pb2.StreamRequest(job_id=job_id, after_sequence=after).SerializeToString()
    return b"\x00" + struct.pack(">I", len(msg)) + msg


async def grpc_web_stream(url: str, job_id: str, after: int = 0) -> tuple[list[tuple[int, str, str]], str]:
    """All (sequence, type, status) of one gRPC-Web stream, and its grpc-status trailer."""
    from mpr.grpc import events_pb2

    events: list[tuple[int, str, str]] = []
    trailer = ""
    buf = b""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(300, connect=30)) as client,
        client.stream(
            "POST",
            url + GRPC_PATH,
            content=grpc_web_request(job_id, after),
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        ) as r,
    ):
        async for chunk in r.aiter_bytes():
            buf += chunk
            while len(buf) >= 5:
                flag, length = buf[0], struct.unpack(">I", buf[1:5])[0]
                if len(buf) < 5 + length:
                    break
                payload, buf = buf[5 : 5 + length], buf[5 + length :]
                if flag & 0x80:
                    trailer = payload.decode(errors="replace")
                else:
                    e = events_pb2.PipelineEvent.FromString(payload)
                    events.append((e.sequence, e.type, e.status))
        if not trailer:
            trailer = r.headers.get("grpc-status", "")
    return events, trailer


def history_text(seqs: list[int]) -> str:
    if not seqs:
        return "0"
    gap_free = seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    return f"{len(seqs)} (seq {seqs[0]}..{seqs[-1]}, gap-free: {gap_free})"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=200)
    parser.add_argument("-s", "--streams", type=int, default=50)
    parser.add_argument("--clips", type=int, default=20, help="distinct source files the jobs cycle through")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--preset", default="copy", help="preset of the load jobs (copy = remux)")
    parser.add_argument("--stream-preset", default="h264-720p", help="preset of the job watched by the streams")
    parser.add_argument("--stream-seconds", type=float, default=6.0, help="clip length of the streamed job")
    parser.add_argument("--pg", default=os.environ.get("MPR_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("MPR_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and database")
    args = parser.parse_args()

    import asyncpg

    work = Path(tempfile.mkdtemp(prefix="mpr-load-"))
    media_in, media_out, var = work / "in", work / "out", work / "var"
    for d in (media_in, media_out, var):
        d.mkdir()
    dbname = f"mpr_load_{uuid.uuid4().hex[:10]}"
    admin_dsn = args.pg.replace("postgres://", "postgresql://")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{dbname}"')
    await conn.close()
    db_url = args.pg.rsplit("/", 1)[0] + "/" + dbname
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    queue = f"mprload_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "MEDIA_IN": str(media_in),
        "MEDIA_OUT": str(media_out),
        "MPR_VAR_DIR": str(var),
        "MPR_DATABASE_URL": db_url,
        "MPR_REDIS_URL": args.redis,
        "MPR_LOCAL_QUEUE": queue,
        "MPR_WORKERS": "1",
        "MPR_GRPC_PORT": "0",
        "MPR_LOG_LEVEL": "WARNING",
        "MPR_PORT": str(port),
    }
    for name in ("MPR_API_TOKEN", "MPR_EXECUTOR"):
        env.pop(name, None)
    procs: list[subprocess.Popen] = []
    rows: list[tuple[str, str]] = []
    try:
        subprocess.run([MPR, "migrate"], env=env, check=True, capture_output=True)  # noqa: ASYNC221 - set-up
        names = make_clips(media_in, args.clips, args.seconds)
        from testkit import make_clip

        make_clip(media_in / "streamed.mp4", seconds=args.stream_seconds, size="640x360")
        procs.append(spawn([MPR, "serve", "--no-worker", "--no-grpc", "--port", str(port)], env, work / "serve.log"))
        await wait_http(url)
        for i in range(2):
            procs.append(spawn([MPR, "worker"], env, work / f"worker{i}.log"))

        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await gql(client, "mutation { scanMediaFolder { registered } }")
            assets = {a["path"]: a["id"] for a in (await gql(client, "{ assets { id path } }"))["assets"]}
            presets = {p["name"]: p["id"] for p in (await gql(client, "{ presets { id name } }"))["presets"]}

            # ---- part 1: N queued jobs, API latency while they run
            samples: dict[str, list[float]] = {}
            stop = asyncio.Event()
            meter = asyncio.create_task(measure_api(url, stop, samples))
            create_ms: list[float] = []
            t0 = time.perf_counter()
            job_ids = []
            for i in range(args.jobs):
                started = time.perf_counter()
                job = await gql(
                    client,
                    "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p}) { id } }",
                    {"a": assets[names[i % len(names)]], "p": presets[args.preset]},
                )
                create_ms.append((time.perf_counter() - started) * 1000)
                job_ids.append(job["createJob"]["id"])
            queued_s = time.perf_counter() - t0
            while True:
                counts = {}
                for status in ("pending", "processing", "completed", "failed", "cancelled"):
                    counts[status] = (await gql(client, "query($s: String) { jobCount(status: $s) }", {"s": status}))[
                        "jobCount"
                    ]
                if counts["pending"] + counts["processing"] == 0:
                    break
                if time.perf_counter() - t0 > 3600:
                    raise RuntimeError(f"jobs did not finish: {counts}")
                await asyncio.sleep(0.5)
            total_s = time.perf_counter() - t0
            stop.set()
            await meter

        # checks straight from the database and the output folder
        conn = await asyncpg.connect(db_url.replace("postgres://", "postgresql://"))
        try:
            recs = await conn.fetch("SELECT id, status, attempts, output_path FROM mpr_transcode_job")
        finally:
            await conn.close()
        statuses = {}
        for r in recs:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        attempts = [r["attempts"] for r in recs]
        outputs = [p for p in media_out.rglob("*") if p.is_file() and not p.name.startswith(".")]
        expected = {r["output_path"] for r in recs}
        import redis

        rconn = redis.Redis.from_url(args.redis)
        processing_twice = 0
        from mpr.bus import decode_event, stream_key

        for r in recs:
            entries = rconn.xrange(stream_key(str(r["id"])))
            events = [decode_event(fields[b"e"], 0) for _, fields in entries]
            n = sum(1 for e in events if e.type == "status" and e.status == "processing")
            processing_twice += n > 1
        rows += [
            ("jobs queued / workers", f"{args.jobs} ({args.preset}, {args.seconds:g} s clips) / 2 x mpr worker"),
            ("final statuses", ", ".join(f"{k}={v}" for k, v in sorted(statuses.items()))),
            ("all COMPLETED", str(statuses.get("completed", 0) == args.jobs == len(recs))),
            ("output files / distinct output paths", f"{len(outputs)} / {len(expected)}"),
            ("max attempts (1 = none ran twice)", str(max(attempts) if attempts else "-")),
            ("jobs with >1 PROCESSING event", str(processing_twice)),
            (
                "queueing time (createJob x N)",
                (f"{queued_s:.1f} s, createJob p50 {pct(create_ms, 50):.0f} ms p99 {pct(create_ms, 99):.0f} ms"),
            ),
            ("all done after", f"{total_s:.1f} s ({args.jobs / total_s:.1f} jobs/s)"),
        ]
        all_ms = [v for vs in samples.values() for v in vs]
        for name, values in [*sorted(samples.items()), ("API overall", all_ms)]:
            rows.append(
                (
                    f"{name} (n={len(values)})",
                    f"p50 {pct(values, 50):.1f} ms  p99 {pct(values, 99):.1f} ms  max {max(values):.1f} ms",
                )
            )

        # ---- part 2: S concurrent gRPC-Web streams on one job
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            job = await gql(
                client,
                "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p}) { id } }",
                {"a": assets["streamed.mp4"], "p": presets[args.stream_preset]},
            )
            jid = job["createJob"]["id"]
            started = time.perf_counter()
            results = await asyncio.gather(*(grpc_web_stream(url, jid) for _ in range(args.streams)))
            elapsed = time.perf_counter() - started
            reference, _ = await grpc_web_stream(url, jid)  # the stored history, read after the end
        ref_seqs = [s for s, _, _ in reference]
        complete = sum(1 for events, trailer in results if [s for s, _, _ in events] == ref_seqs)
        ok_trailers = sum(1 for _, trailer in results if "grpc-status:0" in trailer.replace(" ", "") or trailer == "0")
        final = reference[-1][2] if reference else "?"
        rows += [
            (
                "gRPC-Web streams on one job",
                (f"{args.streams} concurrent, {args.stream_seconds:g} s clip {args.stream_preset}, ended {final}"),
            ),
            ("events in the job's history", history_text(ref_seqs)),
            ("streams that got every event", f"{complete} / {args.streams}"),
            ("streams ending with grpc-status 0", f"{ok_trailers} / {args.streams}"),
            ("stream wall time", f"{elapsed:.1f} s"),
        ]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep:
            try:
                conn = await asyncpg.connect(admin_dsn)
                await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                await conn.close()
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                print(f"could not drop {dbname}: {exc}")
            try:
                import redis
                from mpr_local.queue import reset_queues  # noqa: F401 - only to be sure the plugin is importable

                rconn = redis.Redis.from_url(args.redis)
                for key in rconn.scan_iter(f"*{queue}*"):
                    rconn.delete(key)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                print(f"could not remove the queue keys: {exc}")
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and database {dbname}")

    width = max(len(k) for k, _ in rows) if rows else 10
    print()
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
