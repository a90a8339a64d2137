"""deleteJob (with and without its output, local folders and S3) and resetPreset, over the real app's HTTP."""

from __future__ import annotations

import re
import uuid

import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401  (fixtures)

from mpr.models import JobChunk, JobStatus, TranscodeJob, TranscodePreset

from .conftest import make_asset, make_job, put_clip
from .test_api_graphql_mutations import SEED_MUTATIONS, _wait_status

DELETE = "mutation($id: ID!, $out: Boolean!) { deleteJob(id: $id, deleteOutput: $out) { ok } }"
DELETE_DEFAULT = "mutation($id: ID!) { deleteJob(id: $id) { ok } }"
RESET = "mutation($id: ID!) { resetPreset(id: $id) { id name crf videoCodec modified builtin } }"
UPDATE = "mutation($id: ID!, $crf: Int) { updatePreset(id: $id, input: {crf: $crf}) { crf modified } }"


def _error(body: dict) -> str:
    assert body.get("errors"), body
    message = body["errors"][0]["message"]
    assert "internal error" not in message and "Traceback" not in str(body)
    return message


async def _run_copy_job(api, asset_id: str, name: str) -> TranscodeJob:
    job = (
        await api.ok(
            "mutation($a: ID!, $n: String) { createJob(input: {sourceAssetId: $a, outputName: $n}) { id } }",
            {"a": asset_id, "n": name},
        )
    )["createJob"]
    done = await _wait_status(job["id"], {"completed", "failed"})
    assert done.status is JobStatus.COMPLETED, done.error
    return done


async def test_delete_completed_jobs_with_and_without_their_output(start_api, media, clips):
    api = await start_api(worker=True)
    put_clip(media, clips["video"], "sample.mp4")
    await api.ok(SEED_MUTATIONS["scan"])
    asset = (await api.ok("{ assets { id } }"))["assets"][0]
    keep = await _run_copy_job(api, asset["id"], "keep")
    drop = await _run_copy_job(api, asset["id"], "drop")
    keep_file, drop_file = media["out"] / keep.output_path, media["out"] / drop.output_path
    assert keep_file.stat().st_size > 1000 and drop_file.stat().st_size > 1000

    assert (await api.ok(DELETE_DEFAULT, {"id": str(keep.id)}))["deleteJob"] == {"ok": True}
    assert not await TranscodeJob.exists(id=keep.id)
    assert keep_file.is_file()  # the output stays unless asked for
    r = await api.http.get(f"/media/out/{keep.output_path}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206

    assert (await api.ok(DELETE, {"id": str(drop.id), "out": True}))["deleteJob"] == {"ok": True}
    assert not await TranscodeJob.exists(id=drop.id) and not drop_file.exists()
    assert keep_file.is_file()  # the other job's output is untouched
    jobs = await api.ok("{ jobs { id } jobCount }")
    assert jobs == {"jobs": [], "jobCount": 0}

    # deleted once: now it is unknown, like any other id
    assert "does not exist" in _error(await api.gql(DELETE, {"id": str(drop.id), "out": True}))


async def test_only_final_jobs_can_be_deleted_and_errors_change_nothing(api, media):
    asset = await make_asset()
    pending = await make_job(asset, status=JobStatus.PENDING)
    running = await make_job(asset, status=JobStatus.PROCESSING)
    for job in (pending, running):
        (media["out"] / job.output_path).parent.mkdir(parents=True, exist_ok=True)
        (media["out"] / job.output_path).write_bytes(b"partial")
    before = sorted((str(j.id), j.status.value) for j in await TranscodeJob.all())
    cases = [
        (str(pending.id), "cancel it first"),
        (str(running.id), "cancel it first"),
        ("not-a-uuid", "'not-a-uuid' is not a valid job id"),
        (str(uuid.UUID(int=7)), "does not exist"),
    ]
    for job_id, expected in cases:
        assert expected in _error(await api.gql(DELETE, {"id": job_id, "out": True})), job_id
    assert sorted((str(j.id), j.status.value) for j in await TranscodeJob.all()) == before
    assert all((media["out"] / j.output_path).read_bytes() == b"partial" for j in (pending, running))

    # cancelled, it can go; a missing output file is not an error
    await api.ok(SEED_MUTATIONS["cancel"] % pending.id)
    (media["out"] / pending.output_path).unlink()
    assert (await api.ok(DELETE, {"id": str(pending.id), "out": True}))["deleteJob"] == {"ok": True}
    assert not await TranscodeJob.exists(id=pending.id)


async def test_delete_removes_chunk_rows_and_kept_chunk_files(api, media):
    asset = await make_asset()
    job = await make_job(asset, status=JobStatus.FAILED, executor="local", chunked=True, chunk_seconds=1.0)
    other = await make_job(asset, status=JobStatus.FAILED, executor="local", chunked=True, chunk_seconds=1.0)
    for j in (job, other):
        for i in range(3):
            await JobChunk.create(job=j, index=i, start=float(i), end=float(i + 1), status="done", output_key=f"{i}.ts")
    # a failed chunked job keeps its chunk files for a retry (mpr.chunker.pipeline.work_dir_for)
    work, other_work = media["var"] / "chunks" / str(job.id), media["var"] / "chunks" / str(other.id)
    for d in (work, other_work):
        d.mkdir(parents=True)
        (d / "00000.ts").write_bytes(b"x" * 100)

    assert (await api.ok(DELETE, {"id": str(job.id), "out": False}))["deleteJob"] == {"ok": True}
    assert await JobChunk.filter(job_id=job.id).count() == 0 and not work.exists()
    assert await JobChunk.filter(job_id=other.id).count() == 3 and (other_work / "00000.ts").is_file()


async def test_delete_never_removes_a_file_outside_media_out(api, media, tmp_path):
    asset = await make_asset()
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"precious")
    escaping = await make_job(asset, status=JobStatus.COMPLETED, output_path="../../outside.mp4")
    (media["out"] / "link.mp4").symlink_to(outside)
    linked = await make_job(asset, status=JobStatus.COMPLETED, output_path="link.mp4")
    for job in (escaping, linked):
        message = _error(await api.gql(DELETE, {"id": str(job.id), "out": True}))
        assert "media root" in message or "'..'" in message, message
        assert await TranscodeJob.exists(id=job.id)  # refused before any row was touched
    assert outside.read_bytes() == b"precious"


async def test_delete_job_needs_the_api_token(start_api, media):
    api = await start_api(MPR_API_TOKEN="s3cret")
    job = await make_job(await make_asset(), status=JobStatus.COMPLETED)
    assert "Authorization" in _error(await api.gql(DELETE, {"id": str(job.id), "out": False}))
    assert await TranscodeJob.exists(id=job.id)
    assert (await api.ok(DELETE, {"id": str(job.id), "out": False}, token="s3cret"))["deleteJob"] == {"ok": True}


async def test_delete_output_on_s3(start_api, s3_bucket, moto_server):  # noqa: F811
    api = await start_api(MEDIA_OUT=f"s3://{s3_bucket}/out/")
    s3 = moto_server.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="out/clip_h264.mp4", Body=b"encoded")
    s3.put_object(Bucket=s3_bucket, Key="secret.mp4", Body=b"not ours")
    asset = await make_asset()
    job = await make_job(asset, status=JobStatus.COMPLETED, output_path="clip_h264.mp4")
    gone = await make_job(asset, status=JobStatus.CANCELLED, output_path="never_written.mp4")
    escaping = await make_job(asset, status=JobStatus.COMPLETED, output_path="../secret.mp4")

    assert (await api.ok(DELETE, {"id": str(job.id), "out": True}))["deleteJob"] == {"ok": True}
    assert (await api.ok(DELETE, {"id": str(gone.id), "out": True}))["deleteJob"] == {"ok": True}
    assert "'..'" in _error(await api.gql(DELETE, {"id": str(escaping.id), "out": True}))
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == ["secret.mp4"]
    assert [str(j.id) for j in await TranscodeJob.all()] == [str(escaping.id)]


@pytest.mark.parametrize("out_prefix", ["media/", "media/out/"])
async def test_delete_output_on_s3_never_removes_a_source_when_prefixes_overlap(
    start_api,
    s3_bucket,  # noqa: F811
    moto_server,  # noqa: F811
    out_prefix,
):
    """MEDIA_OUT = MEDIA_IN's prefix, or inside it: an unfinished job's output name may be a source's."""
    api = await start_api(MEDIA_IN=f"s3://{s3_bucket}/media", MEDIA_OUT=f"s3://{s3_bucket}/{out_prefix}")
    s3 = moto_server.client("s3")
    for name in ("victim.mp4", "sub/other.mp4"):
        s3.put_object(Bucket=s3_bucket, Key=f"{out_prefix}{name}", Body=b"a source")
    s3.put_object(Bucket=s3_bucket, Key=f"{out_prefix}done.mp4", Body=b"encoded")
    asset = await make_asset()
    failed = await make_job(asset, status=JobStatus.FAILED, executor="local", output_path="victim.mp4")
    cancelled = await make_job(asset, status=JobStatus.CANCELLED, executor="local", output_path="sub/other.mp4")
    done = await make_job(asset, status=JobStatus.COMPLETED, executor="local", output_path="done.mp4")
    inside = out_prefix.removeprefix("media/")  # MEDIA_OUT's place in MEDIA_IN

    for job in (failed, cancelled):
        message = _error(await api.gql(DELETE, {"id": str(job.id), "out": True}))
        expected = f"{job.output_path} in MEDIA_OUT is {inside}{job.output_path} in MEDIA_IN"
        assert expected in message and "not deleted" in message, message
        assert await TranscodeJob.exists(id=job.id)
    # without deleteOutput the job goes and the object stays
    assert (await api.ok(DELETE, {"id": str(failed.id), "out": False}))["deleteJob"] == {"ok": True}
    # a completed job's output is its own, overlap or not
    assert (await api.ok(DELETE, {"id": str(done.id), "out": True}))["deleteJob"] == {"ok": True}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == [f"{out_prefix}sub/other.mp4", f"{out_prefix}victim.mp4"]
    assert [str(j.id) for j in await TranscodeJob.all()] == [str(cancelled.id)]


async def test_delete_output_on_s3_with_disjoint_prefixes(start_api, s3_bucket, moto_server):  # noqa: F811
    """``media-out/`` is not inside ``media/`` (nor another bucket): a cancelled job's output is deleted."""
    api = await start_api(MEDIA_IN=f"s3://{s3_bucket}/media/", MEDIA_OUT=f"s3://{s3_bucket}/media-out/")
    s3 = moto_server.client("s3")
    for key in ("media/clip.mp4", "media-out/clip.mp4"):
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"bytes")
    job = await make_job(await make_asset(), status=JobStatus.CANCELLED, executor="local", output_path="clip.mp4")
    assert (await api.ok(DELETE, {"id": str(job.id), "out": True}))["deleteJob"] == {"ok": True}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == ["media/clip.mp4"]
    assert not await TranscodeJob.exists(id=job.id)


async def test_reset_preset_restores_the_shipped_values(api):
    from mpr.builtin_presets import STATIC_PRESETS

    shipped = next(p for p in STATIC_PRESETS if p.name == "h264-720p")
    row = await TranscodePreset.get(name="h264-720p")
    edited = (await api.ok(UPDATE, {"id": str(row.id), "crf": 31}))["updatePreset"]
    assert edited == {"crf": 31, "modified": True}

    reset = (await api.ok(RESET, {"id": str(row.id)}))["resetPreset"]
    assert reset == {
        "id": str(row.id),
        "name": "h264-720p",
        "crf": shipped.crf,
        "videoCodec": shipped.video_codec,
        "modified": False,
        "builtin": True,
    }
    fresh = await TranscodePreset.get(id=row.id)
    assert fresh.extra == shipped.extra and fresh.height == shipped.height and fresh.source == "builtin"


async def test_reset_preset_errors(start_api):
    api = await start_api(MPR_API_TOKEN="tok")
    user = (
        await api.ok(
            'mutation { createPreset(input: {name: "mine", container: "mp4", videoCodec: "libx264", crf: 30}) { id } }',
            token="tok",
        )
    )["createPreset"]
    builtin = await TranscodePreset.get(name="h264-720p")
    assert "Authorization" in _error(await api.gql(RESET, {"id": str(builtin.id)}))
    cases = [
        (user["id"], "is a user preset"),
        ("nope", "'nope' is not a valid preset id"),
        (str(uuid.UUID(int=9)), "does not exist"),
    ]
    for preset_id, expected in cases:
        assert expected in _error(await api.gql(RESET, {"id": preset_id}, token="tok")), preset_id
    # a renamed built-in no longer matches what its plugin ships
    await TranscodePreset.filter(id=builtin.id).update(name="my-720p", modified=True)
    assert "ships no preset named 'my-720p'" in _error(await api.gql(RESET, {"id": str(builtin.id)}, token="tok"))


# -- admin ---------------------------------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def _csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


@pytest.fixture
async def admin(start_api):
    api = await start_api(MPR_ADMIN_PASSWORD=PASSWORD)
    page = await api.http.get("/admin/login")
    r = await api.http.post(
        "/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": _csrf(page.text)}
    )
    assert r.status_code == 303
    return api


async def test_admin_delete_job_buttons(admin, media):
    asset = await make_asset()
    running = await make_job(asset, status=JobStatus.PROCESSING)
    page = await admin.http.get(f"/admin/jobs/{running.id}")
    assert f"/admin/jobs/{running.id}/delete" not in page.text  # only finished jobs offer it
    r = await admin.http.post(f"/admin/jobs/{running.id}/delete", data={"_csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and "cancel+it+first" in r.headers["location"]
    assert await TranscodeJob.exists(id=running.id)

    kept = await make_job(asset, status=JobStatus.COMPLETED)
    dropped = await make_job(asset, status=JobStatus.COMPLETED)
    for job in (kept, dropped):
        (media["out"] / job.output_path).parent.mkdir(parents=True, exist_ok=True)
        (media["out"] / job.output_path).write_bytes(b"output")
    page = await admin.http.get(f"/admin/jobs/{kept.id}")
    assert f'action="/admin/jobs/{kept.id}/delete"' in page.text and 'name="delete_output"' in page.text
    r = await admin.http.post(f"/admin/jobs/{kept.id}/delete")  # no CSRF token
    assert r.status_code == 403 and await TranscodeJob.exists(id=kept.id)

    r = await admin.http.post(f"/admin/jobs/{kept.id}/delete", data={"_csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/jobs?msg=")
    assert not await TranscodeJob.exists(id=kept.id) and (media["out"] / kept.output_path).is_file()
    page = await admin.http.get(f"/admin/jobs/{dropped.id}")
    r = await admin.http.post(
        f"/admin/jobs/{dropped.id}/delete", data={"delete_output": "1", "_csrf_token": _csrf(page.text)}
    )
    assert r.status_code == 303
    assert not await TranscodeJob.exists(id=dropped.id) and not (media["out"] / dropped.output_path).exists()


async def test_admin_reset_preset_button(admin):
    builtin = await TranscodePreset.get(name="h264-720p")
    shipped_crf = builtin.crf
    await TranscodePreset.filter(id=builtin.id).update(crf=40, modified=True)
    page = await admin.http.get(f"/admin/presets/{builtin.id}")
    assert f'action="/admin/presets/{builtin.id}/reset"' in page.text
    r = await admin.http.post(f"/admin/presets/{builtin.id}/reset", data={"_csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and "Preset+reset" in r.headers["location"]
    fresh = await TranscodePreset.get(id=builtin.id)
    assert fresh.crf == shipped_crf and not fresh.modified

    user = await TranscodePreset.create(name="mine", container="mp4", video_codec="libx264", crf=30)
    page = await admin.http.get(f"/admin/presets/{user.id}")
    assert f"/admin/presets/{user.id}/reset" not in page.text
    r = await admin.http.post(f"/admin/presets/{user.id}/reset", data={"_csrf_token": _csrf(page.text)})
    assert "err=" in r.headers["location"] and "user+preset" in r.headers["location"]
