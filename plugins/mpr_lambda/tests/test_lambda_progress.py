"""Live chunk progress of Lambda jobs: the Plan and EncodeChunk handlers report to
``POST /api/jobs/{id}/chunks`` (signed like the completion callback) and MPR turns the
reports into JobChunk rows, job progress and chunk events.

The state machine is played as in test_lambda_e2e.py (real handlers, real ffmpeg, moto S3,
the running app, real signed HTTP), on SQLite and PostgreSQL. Rows, GraphQL ``job { chunks }``,
the ``jobEvents`` subscription and the stream StreamChunkPipeline serves are checked while the
execution runs and after it ends; every way a report can be refused has its own test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from mpr import callbacks
from mpr.models import ChunkStatus, JobChunk, JobStatus, TranscodeJob

sys.path.insert(0, str(Path(__file__).parent))
from asl_player import Player, handlers_from_template
from test_lambda_e2e import DEPLOY, SECRET, gop_clip, serve_stack, submit  # noqa: F401 (gop_clip: a fixture)

from testkit import free_port

CHUNKS_Q = """query($id: ID!) { job(id: $id) { status progress metrics
  chunks { index start end status attempts worker outputKey error startedAt finishedAt } } }"""
SUB = """subscription($id: ID, $after: Int!) { jobEvents(jobId: $id, afterSequence: $after) {
  type status progress chunkIndex worker message sequence } }"""
PLAN3 = [{"index": i, "start": float(i), "end": float(i + 1)} for i in range(3)]


@pytest.fixture
async def stack(moto_server, s3_bucket, db, monkeypatch, gop_clip, asl):  # noqa: F811
    async with serve_stack(moto_server, s3_bucket, monkeypatch, gop_clip, asl) as running:
        yield running


def player(asl: dict, functions: dict | None = None) -> Player:
    """One Map iteration at a time, so what is running at each moment is known."""
    return Player(asl, functions or handlers_from_template(DEPLOY / "template.yaml"), max_workers=1)


def snapshot(url: str, job_id: str) -> dict:
    """``job { progress chunks }`` through GraphQL, from a player thread while the execution runs."""
    r = httpx.post(f"{url}/graphql", json={"query": CHUNKS_Q, "variables": {"id": job_id}}, timeout=30)
    assert r.status_code == 200 and not r.json().get("errors"), r.text
    return r.json()["data"]["job"]


async def subscribe(url: str, job_id: str, after: int = 0) -> tuple[asyncio.Task, list[dict]]:
    """Collect the job's ``jobEvents`` (graphql-transport-ws) after ``after`` until a final status event."""
    ws = await websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    sub = {"query": SUB, "variables": {"id": job_id, "after": after}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": sub}))
    seen: list[dict] = []

    async def read() -> None:
        try:
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] == "next", message
                event = message["payload"]["data"]["jobEvents"]
                seen.append(event)
                if event["type"] == "status" and event["status"] in ("completed", "failed", "cancelled"):
                    return
        finally:
            await ws.close()

    return asyncio.create_task(read()), seen


def chunk_events(evs: list[dict]) -> list[tuple[str, int]]:
    return [(e["type"], e["chunkIndex"]) for e in evs if e["type"].startswith("chunk_")]


async def test_lambda_job_shows_chunks_live_and_they_match_the_result(stack, asl, monkeypatch) -> None:
    from mpr_lambda import handler

    from mpr.grpc.server import open_job_stream

    job, data = await submit(stack)
    task, seen = await subscribe(stack.url, job["id"])
    assert (await stack.gql(CHUNKS_Q, id=job["id"]))["job"]["chunks"] == []  # nothing before the plan

    during: dict[int, dict] = {}
    real_encode = handler.encode_video_chunk

    def encode_and_look(source, chunk, preset, out, **kw):
        during[chunk.index] = snapshot(stack.url, job["id"])  # reported started, not yet done
        return real_encode(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", encode_and_look)
    functions = handlers_from_template(DEPLOY / "template.yaml")
    before_concat: list[dict] = []
    real_concat = functions["${ConcatFunctionArn}"]

    def concat_after_look(event, context):
        before_concat.append(snapshot(stack.url, job["id"]))
        return real_concat(event, context)

    functions["${ConcatFunctionArn}"] = concat_after_look
    run = await asyncio.to_thread(player(asl, functions).run, data, job["externalId"])
    assert run.status == "SUCCEEDED", run
    await asyncio.wait_for(task, 10)

    # while each chunk encoded: it was running on its Lambda, the earlier ones done, the later ones queued
    assert sorted(during) == [0, 1, 2]
    workers = {}
    for i, seen_job in during.items():
        assert seen_job["status"] == "processing"
        assert seen_job["progress"] == pytest.approx(95.0 * i / 3, abs=0.01)
        rows = seen_job["chunks"]
        assert [c["status"] for c in rows] == ["done"] * i + ["running"] + ["queued"] * (2 - i)
        running = rows[i]
        assert running["attempts"] == 1 and running["startedAt"] and running["finishedAt"] is None
        uuid.UUID(running["worker"])  # the Lambda request id of the invocation
        workers[i] = running["worker"]
    assert len(set(workers.values())) == 3  # one invocation per chunk
    # before Concat: every chunk done, 95 % (the concat is the rest)
    assert [c["status"] for c in before_concat[0]["chunks"]] == ["done"] * 3
    assert before_concat[0]["progress"] == pytest.approx(95.0)

    final = (await stack.gql(CHUNKS_Q, id=job["id"]))["job"]
    assert final["status"] == "completed" and final["progress"] == 100.0
    assert final["metrics"]["chunks"] == len(final["chunks"]) == 3  # the plan Concat joined
    chunks = final["chunks"]
    assert [(c["start"], c["end"]) for c in chunks] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    for c in chunks:
        assert c["status"] == "done" and c["attempts"] == 1 and c["error"] is None
        assert c["worker"] == workers[c["index"]]
        assert (
            c["outputKey"]
            == f"{data['work_url']}chunk_{c['index']:05d}_{round(c['start'] * 1000)}-{round(c['end'] * 1000)}.mp4"
        )
        assert c["startedAt"] <= c["finishedAt"]

    # jobEvents: queued x3 (the plan), then started/done per chunk in order, all before "completed"
    assert chunk_events(seen) == [("chunk_queued", i) for i in range(3)] + [
        (kind, i) for i in range(3) for kind in ("chunk_started", "chunk_done")
    ]
    assert seen[-1]["type"] == "status" and seen[-1]["status"] == "completed"
    started = [e for e in seen if e["type"] == "chunk_started"]
    assert [e["worker"] for e in started] == [workers[i] for i in range(3)]
    assert all(e["message"] == "attempt 1" for e in started)
    progress = [e["progress"] for e in seen if e["type"] == "progress"]
    assert progress == pytest.approx([95.0 / 3, 95.0 * 2 / 3, 95.0], abs=0.01)
    seqs = [e["sequence"] for e in seen]
    assert seqs == sorted(seqs)

    # StreamChunkPipeline serves the same stored stream and ends after the final status
    streamed = [e async for e in await open_job_stream(job["id"], 0)]
    assert [(e.type, e.chunk_index) for e in streamed if e.type.startswith("chunk_")] == chunk_events(seen)
    assert [e.seq for e in streamed] == seqs


async def test_retried_chunk_reports_its_second_attempt_on_a_new_lambda(stack, asl, monkeypatch) -> None:
    from mpr_lambda import handler

    crash = type("Lambda.Unknown", (Exception,), {})  # what Step Functions reports for a runtime crash
    real = handler.encode_video_chunk
    calls: list[int] = []

    def crash_once_on_chunk_1(source, chunk, preset, out, **kw):
        calls.append(chunk.index)
        if chunk.index == 1 and calls.count(1) == 1:
            raise crash("Runtime exited with error: signal: killed")
        return real(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", crash_once_on_chunk_1)
    job, data = await submit(stack)
    task, seen = await subscribe(stack.url, job["id"])
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "SUCCEEDED", run
    assert ("EncodeChunk", "retry:Lambda.Unknown") in run.trace
    await asyncio.wait_for(task, 10)

    rows = await JobChunk.filter(job_id=job["id"]).order_by("index")
    assert [r.status for r in rows] == [ChunkStatus.DONE] * 3
    assert [r.attempts for r in rows] == [1, 2, 1] and rows[1].error is None
    mine = [(e["type"], e["message"], e["worker"]) for e in seen if e["chunkIndex"] == 1]
    assert [t for t, _, _ in mine] == ["chunk_queued", "chunk_started", "chunk_failed", "chunk_started", "chunk_done"]
    assert [m for _, m, _ in mine[1:4]] == [
        "attempt 1",
        "attempt 1: Runtime exited with error: signal: killed",
        "attempt 2",
    ]
    assert mine[4][1].startswith("encoded in ")
    assert mine[1][2] == mine[2][2] != mine[3][2] == mine[4][2] == rows[1].worker  # the retry ran on a new invocation


async def test_failed_chunk_keeps_its_error_and_a_retried_job_requeues_only_what_is_not_done(
    stack, asl, monkeypatch
) -> None:
    from mpr_lambda import handler

    from mpr.grpc.server import open_job_stream

    real = handler.encode_video_chunk

    def broken_for_chunk_1(source, chunk, preset, out, **kw):
        if chunk.index == 1:
            source = Path(out).with_name("corrupt.mp4")
            source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
        return real(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", broken_for_chunk_1)
    job, data = await submit(stack)
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "FAILED"
    final = (await stack.gql(CHUNKS_Q, id=job["id"]))["job"]
    assert final["status"] == "failed"
    statuses = [c["status"] for c in final["chunks"]]
    assert statuses[:2] == ["done", "failed"]  # chunk 2 ran or not, as the Map's other iterations went
    assert "encode chunk 1 (1.000-2.000 s) failed" in final["chunks"][1]["error"]
    assert final["chunks"][1]["finishedAt"]

    # a Lambda still running when the job failed reports late: the rows stand
    late = {"type": "done", "index": 1, "worker": "late", "attempt": 1}
    assert await asyncio.to_thread(handler.report, data, late) is True
    assert (await JobChunk.get(job_id=job["id"], index=1)).status == ChunkStatus.FAILED

    # retryJob: a new execution; the same plan keeps the done rows (their objects are reused), requeues the rest
    monkeypatch.setattr(handler, "encode_video_chunk", real)
    after = max([e.seq async for e in await open_job_stream(job["id"], 0)])  # the first run's events end here
    done_before = {c["index"]: c for c in final["chunks"] if c["status"] == "done"}
    retried = await stack.gql("mutation($id: ID!) { retryJob(id: $id) { status externalId } }", id=job["id"])
    assert retried["retryJob"]["status"] == "processing"
    arn = retried["retryJob"]["externalId"]
    data = await asyncio.to_thread(stack.execution_input, arn)
    task, seen = await subscribe(stack.url, job["id"], after)
    run = await asyncio.to_thread(player(asl).run, data, arn)
    assert run.status == "SUCCEEDED", run
    await asyncio.wait_for(task, 10)
    rows = await JobChunk.filter(job_id=job["id"]).order_by("index")
    assert [r.status for r in rows] == [ChunkStatus.DONE] * 3 and rows[1].error is None
    for i, kept in done_before.items():  # reused, not encoded again: the row is still the first run's
        assert rows[i].worker == kept["worker"]
    requeued = [e["chunkIndex"] for e in seen if e["type"] == "chunk_queued"]
    assert 1 in requeued and not set(requeued) & set(done_before)
    progress = [e["progress"] for e in seen if e["type"] == "progress"]
    assert progress[0] == pytest.approx(95.0 * len(done_before) / 3, abs=0.01)  # the kept chunks count at once
    assert progress[-1] == pytest.approx(95.0) and progress == sorted(progress)
    assert (await stack.job(job["id"]))["status"] == "completed"


# -- the encoder's side: best effort ----------------------------------------------------------------


async def test_progress_reports_never_fail_the_encode(stack, asl, monkeypatch, caplog) -> None:
    from mpr_lambda import handler

    job, data = await submit(stack)
    monkeypatch.setenv("MPR_LAMBDA_CALLBACK_SECRET_PARAM", "")
    monkeypatch.setenv("MPR_CALLBACK_SECRET", "")  # the encoder cannot sign at all
    planned = await asyncio.to_thread(handler.plan, data)
    videos = [i for i in planned["items"] if i["kind"] == "video"]
    first = await asyncio.to_thread(handler.encode_chunk, {"job": data, "item": videos[0], "retry": 0})
    assert first["size"] > 0 and first["reused"] is False
    assert "started report not delivered: no callback secret" in caplog.text

    monkeypatch.setenv("MPR_CALLBACK_SECRET", "not-the-secret")  # MPR refuses the reports (401)
    second = await asyncio.to_thread(handler.encode_chunk, {"job": data, "item": videos[1], "retry": 0})
    assert second["size"] > 0 and second["reused"] is False
    assert "done report not delivered: MPR rejected the callback" in caplog.text and "HTTP 401" in caplog.text

    monkeypatch.setenv("MPR_CALLBACK_SECRET", SECRET)  # MPR cannot be reached
    down = {**data, "callback_url": f"http://127.0.0.1:{free_port()}/api/jobs/{job['id']}/callback"}
    third = await asyncio.to_thread(handler.encode_chunk, {"job": down, "item": videos[2], "retry": 0})
    assert third["size"] > 0
    assert "could not reach MPR" in caplog.text
    assert await asyncio.to_thread(handler.report, down, {"type": "started", "index": 0}) is False
    assert await JobChunk.filter(job_id=job["id"]).count() == 0  # nothing unsigned or forged got in
    assert await asyncio.to_thread(handler.report, data, {"type": "plan", "chunks": PLAN3}) is True  # the control


async def test_the_same_report_sent_twice_in_one_second_is_not_a_replay(stack) -> None:
    """A retried step (or a retried job's Plan) sends the same body again: signed anew, applied idempotently."""
    from mpr_lambda import handler

    job, data = await submit(stack)
    plan = {"type": "plan", "chunks": PLAN3}
    results = [await asyncio.to_thread(handler.report, data, plan) for _ in range(3)]
    assert results == [True, True, True]  # none refused as a replay (401), whatever the clock did
    assert await JobChunk.filter(job_id=job["id"]).count() == 3  # and the plan applied once
    done = {"type": "done", "index": 0, "worker": "w", "attempt": 1}
    assert [await asyncio.to_thread(handler.report, data, done) for _ in range(2)] == [True, True]
    assert (await JobChunk.get(job_id=job["id"], index=0)).status == ChunkStatus.DONE


async def test_reports_can_be_turned_off(stack, asl, monkeypatch) -> None:
    job, data = await submit(stack, chunk_seconds=3.0)
    monkeypatch.setenv("MPR_LAMBDA_PROGRESS_TIMEOUT", "0")
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "SUCCEEDED"
    assert (await stack.job(job["id"]))["status"] == "completed"
    assert await JobChunk.filter(job_id=job["id"]).count() == 0


# -- the server's side: strict ----------------------------------------------------------------------


class Reporter:
    """Signed POSTs to /api/jobs/{id}/chunks; each gets its own timestamp so equal bodies are not replays."""

    def __init__(self, stack, job_id: str) -> None:
        self.stack, self.job_id = stack, job_id
        self.ts = int(time.time()) - 100

    async def post(
        self, body, *, job_id: str | None = None, secret: str = SECRET, ts: int | None = None, raw: bytes | None = None
    ):
        data = raw if raw is not None else json.dumps(body).encode()
        self.ts += 1
        headers = callbacks.sign_headers(data, secret, self.ts if ts is None else ts)
        url = f"/api/jobs/{job_id or self.job_id}/chunks"
        return await self.stack.http.post(url, content=data, headers=headers)

    async def send(self, type_: str, **fields):
        return await self.post({"type": type_, "job_id": self.job_id, "run": 0, **fields})


async def planned_job(stack) -> tuple[str, Reporter]:
    job, _ = await submit(stack)
    reporter = Reporter(stack, job["id"])
    r = await reporter.send("plan", chunks=PLAN3)
    assert r.status_code == 200 and r.json() == {"ok": True, "changed": True, "status": "processing"}
    return job["id"], reporter


async def test_bad_signatures_are_refused_with_401(stack) -> None:
    job_id, rep = await planned_job(stack)
    body = {"type": "started", "index": 0, "worker": "w"}
    assert (await rep.post(body, secret="wrong")).status_code == 401
    unsigned = await stack.http.post(f"/api/jobs/{job_id}/chunks", json=body)
    assert unsigned.status_code == 401 and "not signed" in unsigned.json()["error"]
    stale = await rep.post(body, ts=int(time.time()) - callbacks.MAX_AGE - 60)
    assert stale.status_code == 401 and "too old" in stale.json()["error"]
    data = json.dumps(body).encode()
    headers = callbacks.sign_headers(data, SECRET)
    first = await stack.http.post(f"/api/jobs/{job_id}/chunks", content=data, headers=headers)
    replay = await stack.http.post(f"/api/jobs/{job_id}/chunks", content=data, headers=headers)
    assert first.status_code == 200 and replay.status_code == 401 and "replay" in replay.json()["error"]
    tampered = await stack.http.post(
        f"/api/jobs/{job_id}/chunks", content=data.replace(b'"w"', b'"x"'), headers=callbacks.sign_headers(data, SECRET)
    )
    assert tampered.status_code == 401
    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert [r.status for r in rows] == [ChunkStatus.RUNNING, ChunkStatus.QUEUED, ChunkStatus.QUEUED]
    assert rows[0].worker == "w"  # only the genuine delivery counted


async def test_unknown_job_is_404(stack) -> None:
    rep = Reporter(stack, str(uuid.uuid4()))
    r = await rep.send("plan", chunks=PLAN3)
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    r = await rep.post({"type": "plan", "chunks": PLAN3}, job_id="not-a-uuid")
    assert r.status_code == 404


async def test_reports_for_a_final_job_are_ignored(stack) -> None:
    job_id, rep = await planned_job(stack)
    cancelled = await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)
    assert cancelled["cancelJob"]["status"] == "cancelled"
    for type_ in ("started", "done", "failed"):
        r = await rep.send(type_, index=0, worker="late")
        assert r.status_code == 200 and r.json() == {"ok": True, "changed": False, "status": "cancelled"}
    r = await rep.send("plan", chunks=PLAN3[:1])
    assert r.json()["changed"] is False
    rows = await JobChunk.filter(job_id=job_id)
    assert len(rows) == 3 and all(r.status == ChunkStatus.QUEUED and r.worker is None for r in rows)
    assert (await TranscodeJob.get(id=job_id)).status == JobStatus.CANCELLED


async def test_chunk_outside_the_plan_is_400(stack) -> None:
    job, _ = await submit(stack)
    rep = Reporter(stack, job["id"])
    r = await rep.send("started", index=0, worker="w")  # no plan reported yet
    assert r.status_code == 400 and "not in the job's plan (0 chunks)" in r.json()["error"]
    await rep.send("plan", chunks=PLAN3)
    for index in (3, 99):
        r = await rep.send("done", index=index, worker="w")
        assert r.status_code == 400 and f"chunk {index} is not in the job's plan (3 chunks)" in r.json()["error"]
    assert not await JobChunk.filter(job_id=job["id"], status__not=ChunkStatus.QUEUED).exists()


async def test_duplicates_and_late_reports_change_nothing(stack) -> None:
    from mpr.grpc.server import open_job_stream

    job_id, rep = await planned_job(stack)
    assert (await rep.send("plan", chunks=PLAN3)).json()["changed"] is False  # the same plan again
    assert (await rep.send("started", index=0, worker="a", attempt=1)).json()["changed"] is True
    assert (await rep.send("started", index=0, worker="a", attempt=1)).json()["changed"] is False
    assert (await rep.send("done", index=0, worker="a", attempt=1, seconds=1.5)).json()["changed"] is True
    assert (await rep.send("done", index=0, worker="a", attempt=1, seconds=1.5)).json()["changed"] is False
    assert (await rep.send("started", index=0, worker="a", attempt=1)).json()["changed"] is False  # late
    assert (await rep.send("failed", index=0, worker="b", attempt=2, error="x")).json()["changed"] is False
    # an out-of-order failure of attempt 1 after attempt 2 started
    assert (await rep.send("started", index=1, worker="c", attempt=2)).json()["changed"] is True
    assert (await rep.send("failed", index=1, worker="b", attempt=1, error="old")).json()["changed"] is False
    # a report from an earlier run of a retried job
    assert (await rep.post({"type": "done", "index": 2, "worker": "d", "run": 7})).json()["changed"] is False

    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert [(r.status, r.worker, r.attempts) for r in rows] == [
        (ChunkStatus.DONE, "a", 1),
        (ChunkStatus.RUNNING, "c", 2),
        (ChunkStatus.QUEUED, None, 0),
    ]
    assert (rows[0].finished_at - rows[0].started_at).total_seconds() >= 0
    job = await TranscodeJob.get(id=job_id)
    assert job.progress == pytest.approx(95.0 / 3, abs=0.01)
    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)  # ends the stream
    history = [e async for e in await open_job_stream(job_id, 0)]
    kinds = [(e.type, e.chunk_index) for e in history if e.type.startswith("chunk_")]
    assert kinds == [("chunk_queued", 0), ("chunk_queued", 1), ("chunk_queued", 2)] + [
        ("chunk_started", 0),
        ("chunk_done", 0),
        ("chunk_started", 1),
    ]
    assert [e.progress for e in history if e.type == "progress"] == pytest.approx([95.0 / 3], abs=0.01)


MALFORMED = [
    ({"type": "progress", "index": 0}, "type must be one of plan, started, done, failed"),
    ({"index": 0}, "type must be one of"),
    ({"type": "started"}, "index must be an integer >= 0"),
    ({"type": "started", "index": -1}, "index must be an integer >= 0"),
    ({"type": "started", "index": True}, "index must be an integer >= 0"),
    ({"type": "started", "index": "1"}, "index must be an integer >= 0"),
    ({"type": "started", "index": 0, "attempt": 0}, "attempt must be an integer >= 1"),
    ({"type": "started", "index": 0, "worker": 5}, "worker must be a string"),
    ({"type": "failed", "index": 0, "error": ["x"]}, "error must be a string"),
    ({"type": "done", "index": 0, "output_key": 1}, "output_key must be a string"),
    ({"type": "done", "index": 0, "seconds": -1}, "seconds must be a non-negative number"),
    ({"type": "done", "index": 0, "seconds": "1"}, "seconds must be a non-negative number"),
    ({"type": "done", "index": 0, "run": "0"}, "run must be an integer >= 0"),
    ({"type": "plan"}, "chunks must be a list of 1 to 1000 chunks"),
    ({"type": "plan", "chunks": []}, "chunks must be a list of 1 to 1000 chunks"),
    ({"type": "plan", "chunks": [{"index": 0, "start": 0, "end": 1}] * 1001}, "list of 1 to 1000 chunks"),
    ({"type": "plan", "chunks": [PLAN3[0], PLAN3[2]]}, "chunks[1] must be an object with index 1"),
    ({"type": "plan", "chunks": [{"index": 0, "start": 1.0, "end": 1.0}]}, "chunks[0] needs start < end"),
    ({"type": "plan", "chunks": [{"index": 0, "start": 0.0}]}, "chunks[0] needs start < end"),
    ({"type": "plan", "chunks": [{"index": 0, "start": -1.0, "end": 1.0}]}, "start must be a non-negative number"),
    ({"type": "plan", "chunks": ["x"]}, "chunks[0] must be an object with index 0"),
    ([1, 2], "body must be a JSON object"),
    ("plan", "body must be a JSON object"),
]


async def test_malformed_reports_are_400_and_change_nothing(stack) -> None:
    job_id, rep = await planned_job(stack)
    for body, message in MALFORMED:
        r = await rep.post(body)
        assert r.status_code == 400 and message in r.json()["error"], (body if len(str(body)) < 200 else "big", r.text)
    rows = await JobChunk.filter(job_id=job_id)
    assert len(rows) == 3 and all(r.status == ChunkStatus.QUEUED and r.worker is None for r in rows)


async def test_other_bad_bodies(stack) -> None:
    job_id, rep = await planned_job(stack)
    r = await rep.post(None, raw=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = await rep.post({"type": "started", "index": 0, "job_id": str(uuid.uuid4())})
    assert r.status_code == 400 and "does not match the URL" in r.json()["error"]
    r = await rep.post(None, raw=b'{"type": "plan", "x": "' + b"a" * callbacks.MAX_BODY + b'"}')
    assert r.status_code == 413
    assert not await JobChunk.filter(job_id=job_id, status__not=ChunkStatus.QUEUED).exists()
