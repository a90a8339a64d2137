"""Live chunk progress of Lambda jobs survives lost reports.

Reports are best effort: a Plan report that cannot be delivered leaves the job
without rows until a chunk report comes, and each EncodeChunk report carries
its chunk's start/end and the plan's chunk count so that report makes the row.
A ``completed`` callback finishes whatever rows lost their ``done``; a plan
arriving late adds the missing rows without touching the reported ones.

Reports are lost for real here: they are sent to a port nothing listens on
(connection refused), the way a network error loses them. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest

from mpr import callbacks
from mpr.models import ChunkStatus, JobChunk, JobStatus, TranscodeJob

sys.path.insert(0, str(Path(__file__).parent))
from test_lambda_e2e import SECRET, frames, gop_clip, serve_stack, submit  # noqa: F401 (gop_clip: a fixture)
from test_lambda_progress import CHUNKS_Q, PLAN3, Reporter, chunk_events, player, snapshot, subscribe

from testkit import free_port


@pytest.fixture
async def stack(moto_server, s3_bucket, db, monkeypatch, gop_clip, asl):  # noqa: F811
    async with serve_stack(moto_server, s3_bucket, monkeypatch, gop_clip, asl) as running:
        yield running


def losing(monkeypatch, *kinds: str) -> list[tuple[str, bool]]:
    """Make the handlers' reports of ``kinds`` go to a closed port; every report's (type, delivered) is recorded."""
    from mpr_lambda import handler

    real = handler.report
    sent: list[tuple[str, bool]] = []

    def report(job: dict, body: dict, ls=None) -> bool:
        if body.get("type") in kinds:
            job = {**job, "callback_url": f"http://127.0.0.1:{free_port()}/api/jobs/{job['job_id']}/callback"}
        delivered = real(job, body, ls)
        sent.append((body["type"], delivered))
        return delivered

    monkeypatch.setattr(handler, "report", report)
    return sent


async def test_lost_plan_report_chunk_reports_make_the_rows(stack, asl, monkeypatch) -> None:
    from mpr_lambda import handler

    sent = losing(monkeypatch, "plan")
    job, data = await submit(stack)
    task, seen = await subscribe(stack.url, job["id"])
    during: dict[int, dict] = {}
    real_encode = handler.encode_video_chunk

    def encode_and_look(source, chunk, preset, out, **kw):
        during[chunk.index] = snapshot(stack.url, job["id"])
        return real_encode(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", encode_and_look)
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "SUCCEEDED", run
    await asyncio.wait_for(task, 10)
    assert sent[0] == ("plan", False)  # the plan report was really lost
    assert all(delivered for kind, delivered in sent[1:]) and len(sent) == 7

    # while chunk i encoded: the rows reported so far (done, then this one running); progress counts all 3 chunks
    assert sorted(during) == [0, 1, 2]
    for i, seen_job in during.items():
        assert [c["status"] for c in seen_job["chunks"]] == ["done"] * i + ["running"]
        assert [c["index"] for c in seen_job["chunks"]] == list(range(i + 1))
        assert seen_job["progress"] == pytest.approx(95.0 * i / 3, abs=0.01)
        assert seen_job["chunks"][i]["attempts"] == 1 and seen_job["chunks"][i]["startedAt"]

    final = (await stack.gql(CHUNKS_Q, id=job["id"]))["job"]
    assert final["status"] == "completed" and final["progress"] == 100.0
    assert [(c["index"], c["start"], c["end"]) for c in final["chunks"]] == [(i, i, i + 1.0) for i in range(3)]
    for c in final["chunks"]:
        assert c["status"] == "done" and c["attempts"] == 1 and c["error"] is None
        assert (
            c["outputKey"]
            == f"{data['work_url']}chunk_{c['index']:05d}_{round(c['start'] * 1000)}-{round(c['end'] * 1000)}.mp4"
        )
        uuid.UUID(c["worker"])
        assert c["startedAt"] <= c["finishedAt"]

    # the events the plan would have given (chunk_queued with the span), each just before its chunk starts
    assert chunk_events(seen) == [
        (kind, i) for i in range(3) for kind in ("chunk_queued", "chunk_started", "chunk_done")
    ]
    assert [e["message"] for e in seen if e["type"] == "chunk_queued"] == [f"{i}.000-{i + 1}.000s" for i in range(3)]
    progress = [e["progress"] for e in seen if e["type"] == "progress"]
    assert progress == pytest.approx([95.0 / 3, 95.0 * 2 / 3, 95.0], abs=0.01)
    assert seen[-1]["type"] == "status" and seen[-1]["status"] == "completed"


async def test_completed_callback_finishes_the_rows_whose_done_was_lost(stack, asl, monkeypatch) -> None:
    sent = losing(monkeypatch, "plan", "done")
    job, data = await submit(stack)
    task, seen = await subscribe(stack.url, job["id"])
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "SUCCEEDED", run
    await asyncio.wait_for(task, 10)
    assert sorted(sent) == [("done", False)] * 3 + [("plan", False)] + [("started", True)] * 3

    rows = await JobChunk.filter(job_id=job["id"]).order_by("index")
    assert [(r.index, r.start, r.end, r.status) for r in rows] == [(i, i, i + 1.0, ChunkStatus.DONE) for i in range(3)]
    for r in rows:
        assert r.attempts == 1 and r.worker and r.started_at <= r.finished_at and r.error is None
    job_row = await TranscodeJob.get(id=job["id"])
    assert job_row.status == JobStatus.COMPLETED and job_row.progress == 100.0

    # queued + started from the chunk reports; the callback's chunk_done x3 come before the final status
    assert chunk_events(seen) == [(kind, i) for i in range(3) for kind in ("chunk_queued", "chunk_started")] + [
        ("chunk_done", i) for i in range(3)
    ]
    done = [e for e in seen if e["type"] == "chunk_done"]
    assert [e["worker"] for e in done] == [r.worker for r in rows]
    assert seen[-1]["type"] == "status" and seen[-1]["status"] == "completed"
    assert [e["type"] for e in seen[-4:]] == ["chunk_done"] * 3 + ["status"]


async def test_late_plan_adds_missing_rows_and_keeps_the_reported_ones(stack) -> None:
    from mpr.grpc.server import open_job_stream

    job, _ = await submit(stack)
    job_id = job["id"]
    rep = Reporter(stack, job_id)

    def span(i: int) -> dict:
        return {"index": i, "start": float(i), "end": float(i + 1), "count": 3}

    assert (await rep.send("started", **span(0), worker="a")).json()["changed"] is True
    assert (await rep.send("done", **span(0), worker="a", seconds=1.0)).json()["changed"] is True
    job_row = await TranscodeJob.get(id=job_id)
    assert job_row.progress == pytest.approx(95.0 / 3, abs=0.01)  # one of the 3 the report counts
    assert (await rep.send("failed", **span(2), worker="c", error="boom")).json()["changed"] is True
    # duplicates of reports that created rows change nothing (and make no second row)
    assert (await rep.send("done", **span(0), worker="a", seconds=1.0)).json()["changed"] is False
    assert (await rep.send("started", **span(0), worker="a")).json()["changed"] is False
    assert (await rep.send("failed", **span(2), worker="c", error="boom")).json()["changed"] is False

    # the plan, late: adds chunk 1, keeps 0 done and 2 failed (this run's), progress does not go back
    r = await rep.send("plan", chunks=PLAN3)
    assert r.status_code == 200 and r.json() == {"ok": True, "changed": True, "status": "processing"}
    assert (await rep.send("plan", chunks=PLAN3)).json()["changed"] is False
    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert [(r.index, r.status, r.worker, r.attempts) for r in rows] == [
        (0, ChunkStatus.DONE, "a", 1),
        (1, ChunkStatus.QUEUED, None, 0),
        (2, ChunkStatus.FAILED, "c", 1),
    ]
    assert rows[2].error == "boom"
    assert (await TranscodeJob.get(id=job_id)).progress == pytest.approx(95.0 / 3, abs=0.01)

    # the rest as usual; an out-of-order started of chunk 1 after its done stays done
    assert (await rep.send("started", **span(2), worker="d", attempt=2)).json()["changed"] is True
    assert (await rep.send("done", **span(1), worker="b", seconds=1.0)).json()["changed"] is True
    assert (await rep.send("started", **span(1), worker="b")).json()["changed"] is False
    assert (await rep.send("done", **span(2), worker="d", attempt=2)).json()["changed"] is True
    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert [(r.status, r.worker, r.attempts) for r in rows] == [
        (ChunkStatus.DONE, "a", 1),
        (ChunkStatus.DONE, "b", 1),
        (ChunkStatus.DONE, "d", 2),
    ]
    assert await JobChunk.filter(job_id=job_id).count() == 3
    job_row = await TranscodeJob.get(id=job_id)
    assert job_row.status == JobStatus.PROCESSING and job_row.progress == pytest.approx(95.0)

    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)  # ends the stream
    history = [e async for e in await open_job_stream(job_id, 0)]
    assert [(e.type, e.chunk_index) for e in history if e.type.startswith("chunk_")] == [
        ("chunk_queued", 0),
        ("chunk_started", 0),
        ("chunk_done", 0),
        ("chunk_queued", 2),
        ("chunk_failed", 2),
        ("chunk_queued", 1),  # the late plan: only the row it made
        ("chunk_started", 2),
        ("chunk_done", 1),
        ("chunk_done", 2),
    ]
    assert [e.progress for e in history if e.type == "progress"] == pytest.approx(
        [95.0 / 3, 95.0 * 2 / 3, 95.0], abs=0.01
    )


async def test_progress_without_a_count_counts_the_chunks_known_so_far(stack) -> None:
    job, _ = await submit(stack)
    rep = Reporter(stack, job["id"])
    # an encoder that does not send count: index 3 done means at least 4 chunks
    assert (await rep.send("done", index=3, start=3.0, end=4.0, worker="w")).json()["changed"] is True
    assert (await TranscodeJob.get(id=job["id"])).progress == pytest.approx(95.0 / 4, abs=0.01)
    assert (await rep.send("done", index=0, start=0.0, end=1.0, worker="w")).json()["changed"] is True
    assert (await TranscodeJob.get(id=job["id"])).progress == pytest.approx(95.0 * 2 / 4, abs=0.01)


async def test_chunk_reports_that_would_make_rows_are_checked(stack) -> None:
    job, _ = await submit(stack)
    job_id = job["id"]
    rep = Reporter(stack, job_id)
    body = {"type": "started", "index": 0, "start": 0.0, "end": 1.0, "count": 3, "worker": "w", "run": 0}
    # forged, unsigned, replayed: 401 and no row
    assert (await rep.post(body, secret="wrong")).status_code == 401
    unsigned = await stack.http.post(f"/api/jobs/{job_id}/chunks", json=body)
    assert unsigned.status_code == 401
    raw = b'{"type": "started", "index": 0, "start": 0.0, "end": 1.0}'
    headers = callbacks.sign_headers(raw, SECRET)
    assert (await stack.http.post(f"/api/jobs/{job_id}/chunks", content=raw, headers=headers)).status_code == 200
    replay = await stack.http.post(f"/api/jobs/{job_id}/chunks", content=raw, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    assert await JobChunk.filter(job_id=job_id).count() == 1
    await JobChunk.filter(job_id=job_id).delete()

    for bad, message in [
        ({"start": 0.0, "end": None}, "start and end must be given together"),
        ({"end": 1.0, "start": None}, "start and end must be given together"),
        ({"start": 1.0, "end": 1.0}, "start < end"),
        ({"start": -1.0}, "start must be a non-negative number"),
        ({"count": 0}, "count must be an integer >= 1"),
        ({"index": 3, "count": 3}, "count must be above the index"),
        ({"index": 1000, "count": None}, "index must be below 1000"),
    ]:
        r = await rep.post({**body, **bad})
        assert r.status_code == 400 and message in r.json()["error"], (bad, r.text)
    # without start/end a report still cannot make a row
    r = await rep.send("done", index=0, worker="w")
    assert r.status_code == 400 and "not in the job's plan (0 chunks)" in r.json()["error"]
    assert await JobChunk.filter(job_id=job_id).count() == 0


# -- a retried job that plans differently, its plan report lost -------------------------------------

RETRY = "mutation($id: ID!) { retryJob(id: $id) { status externalId } }"


async def rows_of(job_id: str) -> list[tuple]:
    return [(r.index, r.start, r.end, r.status) for r in await JobChunk.filter(job_id=job_id).order_by("index")]


async def test_retry_with_a_new_plan_and_its_report_lost_replaces_the_earlier_rows(
    stack, asl, monkeypatch, tmp_path
) -> None:
    from mpr_lambda import handler

    from mpr.grpc.server import open_job_stream

    real_encode = handler.encode_video_chunk

    def broken_for_chunk_1(source, chunk, preset, out, **kw):
        if chunk.index == 1:
            source = Path(out).with_name("corrupt.mp4")
            source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
        return real_encode(source, chunk, preset, out, **kw)

    # the first run: 1 s chunks, chunk 1 fails, the job fails
    monkeypatch.setattr(handler, "encode_video_chunk", broken_for_chunk_1)
    job, data = await submit(stack)
    job_id = job["id"]
    run = await asyncio.to_thread(player(asl).run, data, job["externalId"])
    assert run.status == "FAILED"
    first = await rows_of(job_id)
    assert [(i, s, e) for i, s, e, _ in first] == [(i, i, i + 1.0) for i in range(3)]
    assert first[0][3] == ChunkStatus.DONE and first[1][3] == ChunkStatus.FAILED
    assert (await TranscodeJob.get(id=job_id)).status == JobStatus.FAILED

    # the settings changed: the retry plans 2 s chunks (0-2, 2-3), and its plan report is lost
    await TranscodeJob.filter(id=job_id).update(chunk_seconds=2.0)
    sent = losing(monkeypatch, "plan")
    during: dict[int, dict] = {}

    def encode_and_look(source, chunk, preset, out, **kw):
        during[chunk.index] = snapshot(stack.url, job_id)
        return real_encode(source, chunk, preset, out, **kw)

    monkeypatch.setattr(handler, "encode_video_chunk", encode_and_look)
    after = max([e.seq async for e in await open_job_stream(job_id, 0)])  # the first run's events end here
    retried = (await stack.gql(RETRY, id=job_id))["retryJob"]
    assert retried["status"] == "processing"
    data = await asyncio.to_thread(stack.execution_input, retried["externalId"])
    assert data["chunk_seconds"] == 2.0
    task, seen = await subscribe(stack.url, job_id, after)
    run = await asyncio.to_thread(player(asl).run, data, retried["externalId"])
    assert run.status == "SUCCEEDED", run
    await asyncio.wait_for(task, 10)
    assert sent[0] == ("plan", False) and all(delivered for _, delivered in sent[1:])

    # while a chunk of the new plan encoded, no row of the old plan was left: its rows, the new spans
    for i, seen_job in during.items():
        spans = [(c["index"], c["start"], c["end"]) for c in seen_job["chunks"]]
        assert spans == [(0, 0.0, 2.0), (1, 2.0, 3.0)][: i + 1], (i, spans)
        assert seen_job["chunks"][i]["status"] == "running"
    if 1 in during:
        assert during[1]["chunks"][0]["status"] == "done"
        assert during[1]["progress"] == pytest.approx(95.0 / 2, abs=0.01)  # one of the 2 the reports count

    final = (await stack.gql(CHUNKS_Q, id=job_id))["job"]
    assert final["status"] == "completed" and final["progress"] == 100.0
    assert [(c["index"], c["start"], c["end"], c["status"]) for c in final["chunks"]] == [
        (0, 0.0, 2.0, "done"),
        (1, 2.0, 3.0, "done"),
    ]
    for c in final["chunks"]:
        assert (
            c["error"] is None
            and c["outputKey"]
            == f"{data['work_url']}chunk_{c['index']:05d}_{round(c['start'] * 1000)}-{round(c['end'] * 1000)}.mp4"
        )

    # the output is the whole source: no chunk of the first run's 1 s plan was taken for a 2 s one
    key = f"out/{(await stack.job(job_id))['outputPath']}"
    local = tmp_path / "retried.mp4"
    await asyncio.to_thread(stack.s3.download_file, stack.bucket, key, str(local))
    assert frames(local) == 75

    # the retry's events: each new row queued once (as the plan would have), progress only forwards
    kinds = chunk_events(seen)
    assert [k for k in kinds if k[0] == "chunk_queued"] == [("chunk_queued", 0), ("chunk_queued", 1)]
    assert [e["message"] for e in seen if e["type"] == "chunk_queued"] == ["0.000-2.000s", "2.000-3.000s"]
    assert ("chunk_done", 0) in kinds and kinds[-2:] == [("chunk_started", 1), ("chunk_done", 1)]
    assert kinds.index(("chunk_queued", 1)) > kinds.index(("chunk_done", 0))
    progress = [e["progress"] for e in seen if e["progress"] and e["type"] in ("progress", "status")]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert [p for p in progress if p < 100] == pytest.approx([95.0 / 2, 95.0], abs=0.01)
    assert seen[-1]["type"] == "status" and seen[-1]["status"] == "completed"


async def retried_job(stack) -> tuple[str, Reporter, int]:
    """A job whose first run reported 1 s chunks (0 done, 1 failed, 2 done, 3 queued), cancelled and retried.

    Also the sequence number of the first run's last event.
    """
    from mpr.grpc.server import open_job_stream

    job, _ = await submit(stack)
    job_id = job["id"]
    rep = Reporter(stack, job_id)
    plan = [{"index": i, "start": float(i), "end": float(i + 1)} for i in range(4)]
    assert (await rep.send("plan", chunks=plan)).json()["changed"] is True
    assert (await rep.send("done", index=0, start=0.0, end=1.0, count=4, worker="a")).json()["changed"] is True
    assert (await rep.send("failed", index=1, start=1.0, end=2.0, count=4, worker="b")).json()["changed"] is True
    assert (await rep.send("done", index=2, start=2.0, end=3.0, count=4, worker="c")).json()["changed"] is True
    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)
    after = max([e.seq async for e in await open_job_stream(job_id, 0)])  # the first run's events end here
    assert (await stack.gql(RETRY, id=job_id))["retryJob"]["status"] == "processing"
    return job_id, rep, after


async def test_new_plan_reports_keep_earlier_done_rows_that_fit_and_drop_the_rest(stack) -> None:
    from mpr.grpc.server import open_job_stream

    job_id, rep, after = await retried_job(stack)
    # the new plan: 0-1 (as before), 1-3; chunk 0's report matches its done row: nothing to replace
    assert (await rep.send("started", index=0, start=0.0, end=1.0, count=2, worker="x")).json()["changed"] is False
    assert len(await rows_of(job_id)) == 4
    # chunk 1's does not: row 1 (1-2) and the rows from index 2 on go, the done 0-1 stays (it fits)
    r = await rep.send("started", index=1, start=1.0, end=3.0, count=2, worker="y")
    assert r.status_code == 200 and r.json()["changed"] is True
    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert [(r.index, r.start, r.end, r.status, r.worker) for r in rows] == [
        (0, 0.0, 1.0, ChunkStatus.DONE, "a"),
        (1, 1.0, 3.0, ChunkStatus.RUNNING, "y"),
    ]
    assert rows[1].error is None and rows[1].attempts == 1
    # duplicates change nothing and replace nothing again
    assert (await rep.send("started", index=1, start=1.0, end=3.0, count=2, worker="y")).json()["changed"] is False
    assert (await rep.send("done", index=1, start=1.0, end=3.0, count=2, worker="y")).json()["changed"] is True
    assert (await rep.send("done", index=1, start=1.0, end=3.0, count=2, worker="y")).json()["changed"] is False
    assert await rows_of(job_id) == [(0, 0.0, 1.0, ChunkStatus.DONE), (1, 1.0, 3.0, ChunkStatus.DONE)]
    assert (await TranscodeJob.get(id=job_id)).progress == pytest.approx(95.0)
    # the late plan report of the retry agrees with the rows: nothing changes
    late = await rep.send(
        "plan", chunks=[{"index": 0, "start": 0.0, "end": 1.0}, {"index": 1, "start": 1.0, "end": 3.0}]
    )
    assert late.json()["changed"] is False

    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)  # ends the stream
    history = [e async for e in await open_job_stream(job_id, after)]
    assert [(e.type, e.chunk_index) for e in history if e.type.startswith("chunk_")] == [
        ("chunk_queued", 1),
        ("chunk_started", 1),
        ("chunk_done", 1),
    ]
    assert next(e for e in history if e.type == "chunk_queued").message == "1.000-3.000s"
    assert [e.progress for e in history if e.type == "progress"] == pytest.approx([95.0])


async def test_concurrent_reports_of_a_new_plan_replace_the_rows_once(stack) -> None:
    from mpr.grpc.server import open_job_stream

    job_id, rep, after = await retried_job(stack)
    # the new plan 0-2, 2-4 (no count: an encoder that does not send it); both chunks report at once
    answers = await asyncio.gather(
        rep.send("started", index=0, start=0.0, end=2.0, worker="x"),
        rep.send("started", index=1, start=2.0, end=4.0, worker="y"),
        rep.send("started", index=0, start=0.0, end=2.0, worker="x"),
    )
    assert [a.status_code for a in answers] == [200] * 3
    assert sorted(a.json()["changed"] for a in answers) == [False, True, True]
    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    # row 3 (3-4) of the first run cannot follow 2-4 either; row 2 (2-3, done) is not chunk 2 of this plan
    assert [(r.index, r.start, r.end, r.status, r.worker) for r in rows] == [
        (0, 0.0, 2.0, ChunkStatus.RUNNING, "x"),
        (1, 2.0, 4.0, ChunkStatus.RUNNING, "y"),
    ]
    for i, w in ((0, "x"), (1, "y")):
        assert (await rep.send("done", index=i, start=2.0 * i, end=2.0 * i + 2, worker=w)).json()["changed"] is True
    job = await TranscodeJob.get(id=job_id)
    assert job.progress == pytest.approx(95.0)

    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)
    history = [e async for e in await open_job_stream(job_id, after)]
    kinds = [(e.type, e.chunk_index) for e in history if e.type.startswith("chunk_")]
    assert sorted(k for k in kinds if k[0] == "chunk_queued") == [("chunk_queued", 0), ("chunk_queued", 1)]
    assert sorted(k for k in kinds if k[0] == "chunk_started") == [("chunk_started", 0), ("chunk_started", 1)]
    progress = [e.progress for e in history if e.type == "progress"]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(95.0)


async def test_a_report_that_conflicts_with_this_runs_row_is_400_and_changes_nothing(stack) -> None:
    from mpr.grpc.server import open_job_stream

    job, _ = await submit(stack)
    job_id = job["id"]
    rep = Reporter(stack, job_id)
    assert (await rep.send("started", index=0, start=0.0, end=1.0, count=3, worker="a")).json()["changed"] is True
    assert (await rep.send("done", index=2, start=2.0, end=3.0, count=3, worker="c")).json()["changed"] is True
    before = [dict(r) for r in await JobChunk.filter(job_id=job_id).order_by("index").values()]
    progress = (await TranscodeJob.get(id=job_id)).progress
    assert progress == pytest.approx(95.0 / 3, abs=0.01)

    for kind in ("started", "done", "failed"):
        for index, start, end, count in ((0, 0.0, 2.0, 2), (2, 1.0, 3.0, 3), (2, 2.0, 2.5, None)):
            fields = {"index": index, "start": start, "end": end, "worker": "z", "attempt": 2, "error": "x"}
            r = await rep.send(kind, **fields, **({"count": count} if count else {}))
            assert r.status_code == 400, r.text
            assert f"chunk {index} is {float(index):.3f}-{index + 1.0:.3f} s in this run" in r.json()["error"]

    assert [dict(r) for r in await JobChunk.filter(job_id=job_id).order_by("index").values()] == before
    assert (await TranscodeJob.get(id=job_id)).progress == progress
    await stack.gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", id=job_id)
    history = [e async for e in await open_job_stream(job_id, 0)]
    # the two reports taken, nothing from the refused ones
    assert [(e.type, e.chunk_index) for e in history if e.type.startswith("chunk_")] == [
        ("chunk_queued", 0),
        ("chunk_started", 0),
        ("chunk_queued", 2),
        ("chunk_done", 2),
    ]
    assert [e.progress for e in history if e.type == "progress"] == pytest.approx([95.0 / 3], abs=0.01)
