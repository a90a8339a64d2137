"""GraphQL mutations over HTTP: the seed's mutation documents, real jobs through the local executor,
preset management, and error cases that must leave the database unchanged."""

from __future__ import annotations

import asyncio

from mpr.models import JobStatus, MediaAsset, TranscodeJob, TranscodePreset

from .conftest import make_asset, make_job, put_clip

SEED_MUTATIONS = {
    "scan": "mutation { scanMediaFolder { found registered skipped } }",
    "create": 'mutation { createJob(input: { sourceAssetId: "%s", presetId: "%s" }) { id status } }',
    "cancel": 'mutation { cancelJob(id: "%s") { id status } }',
    "retry": 'mutation { retryJob(id: "%s") { id status } }',
    "update": 'mutation { updateAsset(id: "%s", input: { comments: "%s" }) { id comments } }',
    "delete": 'mutation { deleteAsset(id: "%s") { ok } }',
}


async def _wait_status(job_id: str, statuses: set[str], timeout: float = 60) -> TranscodeJob:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status.value in statuses:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job still {job.status.value}: {job.error}"
        await asyncio.sleep(0.2)


async def _preset_id(api, name_part: str) -> str:
    presets = (await api.ok("{ presets { id name container } }"))["presets"]
    return next(p["id"] for p in presets if name_part in p["name"].lower())


async def test_seed_mutations_run_a_real_job_end_to_end(start_api, media, clips):
    api = await start_api(worker=True)
    put_clip(media, clips["video"], "sample.mp4")
    put_clip(media, clips["audio"], "tone.mp3")

    scan = (await api.ok(SEED_MUTATIONS["scan"]))["scanMediaFolder"]
    assert scan == {"found": 2, "registered": 2, "skipped": 0}
    assert (await api.ok(SEED_MUTATIONS["scan"]))["scanMediaFolder"] == {"found": 2, "registered": 0, "skipped": 2}

    asset = next(
        a
        for a in (await api.ok('query { assets(status: "ready") { id filename duration } }'))["assets"]
        if a["filename"] == "sample.mp4"
    )
    preset = await _preset_id(api, "720p")
    job = (await api.ok(SEED_MUTATIONS["create"] % (asset["id"], preset)))["createJob"]
    assert job["status"] in ("pending", "processing")
    done = await _wait_status(job["id"], {"completed", "failed"})
    assert done.status is JobStatus.COMPLETED, done.error

    data = await api.ok(
        "query($id: ID!) { job(id: $id) { status progress output { path size url duration } } }", {"id": job["id"]}
    )
    out = data["job"]["output"]
    assert data["job"]["progress"] == 100.0 and out["size"] > 1000 and abs(out["duration"] - 3.0) < 0.3
    r = await api.http.get(out["url"], headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100

    updated = (await api.ok(SEED_MUTATIONS["update"] % (asset["id"], "nice clip")))["updateAsset"]
    assert updated == {"id": asset["id"], "comments": "nice clip"}

    # retry a finished job is illegal; cancel it is illegal too — clear errors
    body = await api.gql(SEED_MUTATIONS["retry"] % job["id"])
    assert "only failed or cancelled jobs can be retried" in body["errors"][0]["message"]
    body = await api.gql(SEED_MUTATIONS["cancel"] % job["id"])
    assert "is completed; it cannot become cancelled" in body["errors"][0]["message"]

    assert (await api.ok(SEED_MUTATIONS["delete"] % asset["id"]))["deleteAsset"] == {"ok": True}
    assert not await MediaAsset.exists(id=asset["id"])


async def test_cancel_and_retry_seed_documents(api):
    asset = await make_asset()
    job = await make_job(asset, executor="local")
    cancelled = (await api.ok(SEED_MUTATIONS["cancel"] % job.id))["cancelJob"]
    assert cancelled == {"id": str(job.id), "status": "cancelled"}
    retried = (await api.ok(SEED_MUTATIONS["retry"] % job.id))["retryJob"]
    assert retried["status"] in ("pending", "processing", "failed")  # no source file: the worker may fail it
    assert retried["id"] == str(job.id)


async def _snapshot() -> tuple:
    jobs = sorted((str(j.id), j.status.value, j.output_path) for j in await TranscodeJob.all())
    assets = sorted((str(a.id), a.comments, a.status.value) for a in await MediaAsset.all())
    presets = sorted((p.name, p.container, p.crf, p.video_codec) for p in await TranscodePreset.all())
    return jobs, assets, presets


async def test_error_cases_are_clear_and_change_nothing(api):
    ready = await make_asset("ready.mp4")
    pending = await make_asset("pending.mp4", status="pending")
    running = await make_job(ready, status="processing")
    done = await make_job(ready, status="completed")
    preset = await _preset_id(api, "720p")
    before = await _snapshot()
    cases = [
        (SEED_MUTATIONS["create"] % ("nope", preset), "'nope' is not a valid asset id"),
        (SEED_MUTATIONS["create"] % ("00000000-0000-0000-0000-000000000001", preset), "does not exist"),
        (SEED_MUTATIONS["create"] % (pending.id, preset), "is not ready"),
        (SEED_MUTATIONS["cancel"] % done.id, "it cannot become cancelled"),
        (SEED_MUTATIONS["retry"] % running.id, "only failed or cancelled jobs can be retried"),
        (SEED_MUTATIONS["delete"] % ready.id, "pending or running job"),
        (SEED_MUTATIONS["update"] % ("bad-uuid", "x"), "not a valid asset id"),
        (
            'mutation { createPreset(input: {name: "bad", container: "mp4", videoCodec: "libx264", crf: 99}) { id } }',
            "crf",
        ),
        ('mutation { createPreset(input: {name: "bad2", container: "exe"}) { id } }', "container"),
    ]
    for document, expected in cases:
        body = await api.gql(document)
        assert body.get("errors"), document
        message = body["errors"][0]["message"]
        assert expected in message, (document, message)
        assert "Traceback" not in str(body) and "internal error" not in message
    assert await _snapshot() == before


async def test_preset_create_update_delete_and_builtins_are_protected(api):
    created = (
        await api.ok(
            'mutation { createPreset(input: {name: "tiny", container: "mp4", videoCodec: "libx264", crf: 30, '
            'width: 160, audioCodec: "aac", audioBitrate: "64k"}) { id name crf builtin source } }'
        )
    )["createPreset"]
    assert created["name"] == "tiny" and created["crf"] == 30 and created["builtin"] is False
    updated = (
        await api.ok(
            "mutation($id: ID!) { updatePreset(id: $id, input: {crf: 28}) { crf width } }", {"id": created["id"]}
        )
    )["updatePreset"]
    assert updated == {"crf": 28, "width": 160}
    assert (await api.ok("mutation($id: ID!) { deletePreset(id: $id) { ok } }", {"id": created["id"]}))["deletePreset"]
    builtin = await _preset_id(api, "720p")
    body = await api.gql("mutation($id: ID!) { deletePreset(id: $id) { ok } }", {"id": builtin})
    assert "cannot be deleted" in body["errors"][0]["message"]
    assert await TranscodePreset.exists(id=builtin)


async def test_create_job_with_trim_and_options(start_api, media, clips):
    api = await start_api(worker=True)
    put_clip(media, clips["video"], "trim.mp4")
    await api.ok(SEED_MUTATIONS["scan"])
    asset = (await api.ok("{ assets { id } }"))["assets"][0]
    preset = await _preset_id(api, "720p")
    job = (
        await api.ok(
            "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p, trimStart: 0.5, trimEnd: 2.0, "
            'outputName: "cut", priority: 5}) { id status trimStart trimEnd priority outputPath preset { id } } }',
            {"a": asset["id"], "p": preset},
        )
    )["createJob"]
    assert job["trimStart"] == 0.5 and job["trimEnd"] == 2.0 and job["priority"] == 5
    assert job["preset"] == {"id": preset}
    assert job["outputPath"].startswith("cut")
    done = await _wait_status(job["id"], {"completed", "failed"})
    assert done.status is JobStatus.COMPLETED, done.error
    assert abs(done.output_duration - 1.5) < 0.3


async def test_chunked_job_reports_its_chunks(start_api, media, clips):
    api = await start_api(worker=True)
    put_clip(media, clips["video"], "chunky.mp4")
    await api.ok(SEED_MUTATIONS["scan"])
    asset = (await api.ok("{ assets { id } }"))["assets"][0]
    preset = await _preset_id(api, "720p")
    job = (
        await api.ok(
            "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p, chunked: true, "
            "chunkSeconds: 1, chunkWorkers: 2}) { id chunked chunkSeconds chunkWorkers } }",
            {"a": asset["id"], "p": preset},
        )
    )["createJob"]
    assert job["chunked"] is True and job["chunkSeconds"] == 1.0 and job["chunkWorkers"] == 2
    done = await _wait_status(job["id"], {"completed", "failed"})
    assert done.status is JobStatus.COMPLETED, done.error
    data = await api.ok("query($id: ID!) { job(id: $id) { chunks { index status start end } } }", {"id": job["id"]})
    chunks = data["job"]["chunks"]
    assert chunks and all(c["status"] == "done" for c in chunks)
    assert [c["index"] for c in chunks] == list(range(len(chunks)))


async def test_unknown_executor_is_refused_before_any_row_exists(api, media, clips):
    put_clip(media, clips["video"], "a.mp4")
    asset = await make_asset("a.mp4")
    body = await api.gql(
        'mutation($a: ID!) { createJob(input: {sourceAssetId: $a, executor: "nope"}) { id } }', {"a": str(asset.id)}
    )
    assert "nope" in body["errors"][0]["message"]
    assert await TranscodeJob.all().count() == 0


async def test_audio_only_preset_on_a_silent_video_is_a_clear_error(api, media, tmp_path):
    from mpr.scan import register
    from testkit import make_clip

    put_clip(media, make_clip(tmp_path / "silent.mp4", seconds=1.0, audio=False), "silent.mp4")
    asset, _ = await register("silent.mp4")
    preset = await _preset_id(api, "aac-audio")
    body = await api.gql(SEED_MUTATIONS["create"] % (asset.id, preset))
    message = body["errors"][0]["message"]
    assert "audio-only but silent.mp4 has no audio track" in message and "internal error" not in message
    assert await TranscodeJob.all().count() == 0
