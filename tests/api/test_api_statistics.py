"""Space-saved statistics: ``Job.sourceSize``/``sizeRatio`` and the ``statistics`` query, checked
against the database rows of real jobs run by the local executor (SQLite and PostgreSQL)."""

from __future__ import annotations

from mpr.models import JobStatus, MediaAsset, TranscodeJob

from .conftest import make_asset, make_job, put_clip
from .test_api_auth_events import _count
from .test_api_graphql_mutations import _preset_id, _wait_status

JOB_FIELDS = "id status sourceSize sizeRatio output { size } sourceAsset { id size }"
JOBS = "{ jobs { " + JOB_FIELDS + " } }"
JOB = "query($id: ID!) { job(id: $id) { " + JOB_FIELDS + " } }"
STATS = "{ statistics { jobsTotal jobsByStatus { status count } completedBytesIn completedBytesOut bytesSaved } }"
CREATE = "mutation($a: ID!, $p: ID!) { createJob(input: { sourceAssetId: $a, presetId: $p }) { id } }"


async def _expected_statistics() -> dict:
    """The statistics recomputed in Python from every job row and its asset row."""
    jobs = await TranscodeJob.all()
    sizes = {a.id: a.size for a in await MediaAsset.all()}
    by_status = {s.value: sum(1 for j in jobs if j.status is s) for s in JobStatus}
    compared = [
        j
        for j in jobs
        if j.status is JobStatus.COMPLETED and j.output_size is not None and sizes.get(j.source_asset_id, 0) > 0
    ]
    bytes_in = sum(sizes[j.source_asset_id] for j in compared)
    bytes_out = sum(j.output_size for j in compared)
    return {
        "jobsTotal": len(jobs),
        "jobsByStatus": [{"status": k, "count": v} for k, v in by_status.items()],
        "completedBytesIn": bytes_in,
        "completedBytesOut": bytes_out,
        "bytesSaved": bytes_in - bytes_out,
    }


async def _check_jobs_against_rows(api) -> list[dict]:
    listed = (await api.ok(JOBS))["jobs"]
    for j in listed:
        row = await TranscodeJob.get(id=j["id"])
        asset = await MediaAsset.get_or_none(id=row.source_asset_id) if row.source_asset_id else None
        source = asset.size if asset else None
        assert j["sourceSize"] == source
        if row.status is JobStatus.COMPLETED and source:
            assert j["output"]["size"] == row.output_size
            assert j["sizeRatio"] == row.output_size / source
        else:
            assert j["sizeRatio"] is None
        # the single-job query (DataLoader path, not the list's join) agrees
        one = (await api.ok(JOB, {"id": j["id"]}))["job"]
        assert one == j
    return listed


async def test_statistics_match_the_rows_of_real_jobs_and_survive_a_deleted_source(start_api, media, clips):
    api = await start_api(worker=True)
    put_clip(media, clips["video"], "sample.mp4")
    put_clip(media, clips["video"], "again/sample2.mp4")
    put_clip(media, clips["audio"], "tone.mp3")
    await api.ok("mutation { scanMediaFolder { registered } }")
    assets = {a["filename"]: a for a in (await api.ok("{ assets { id filename size } }"))["assets"]}
    assert assets["sample.mp4"]["size"] == clips["video"].stat().st_size

    h264, aac = await _preset_id(api, "h264-720p"), await _preset_id(api, "aac-audio")
    ids = []
    for name, preset in (("sample.mp4", h264), ("sample2.mp4", aac), ("tone.mp3", aac)):
        ids.append((await api.ok(CREATE, {"a": assets[name]["id"], "p": preset}))["createJob"]["id"])
    for jid in ids:
        done = await _wait_status(jid, {"completed", "failed"})
        assert done.status is JobStatus.COMPLETED, done.error
        assert done.output_size and done.output_size > 0
    # jobs that must not count in the byte totals: not completed, or completed without an output size
    await make_job(await MediaAsset.get(id=assets["tone.mp3"]["id"]), status="failed", error="boom")
    await make_job(await MediaAsset.get(id=assets["sample.mp4"]["id"]), status="pending")

    listed = await _check_jobs_against_rows(api)
    assert sum(1 for j in listed if j["sizeRatio"] is not None) == 3
    stats = (await api.ok(STATS))["statistics"]
    expected = await _expected_statistics()
    assert stats == expected
    assert (
        stats["jobsTotal"] == 5
        and stats["completedBytesIn"] == 2 * assets["sample.mp4"]["size"] + assets["tone.mp3"]["size"]
    )
    assert {s["status"]: s["count"] for s in stats["jobsByStatus"]} == {
        "pending": 1,
        "processing": 0,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
    }

    # delete the source of a completed job: its sourceSize and sizeRatio become null, the job stays
    gone = ids[1]
    gone_out = (await TranscodeJob.get(id=gone)).output_size
    delete = "mutation($id: ID!) { deleteAsset(id: $id) { ok } }"
    assert (await api.ok(delete, {"id": assets["sample2.mp4"]["id"]}))["deleteAsset"] == {"ok": True}
    listed = await _check_jobs_against_rows(api)
    orphan = next(j for j in listed if j["id"] == gone)
    assert orphan == {
        "id": gone,
        "status": "completed",
        "sourceSize": None,
        "sizeRatio": None,
        "output": {"size": gone_out},
        "sourceAsset": None,
    }
    after = (await api.ok(STATS))["statistics"]
    assert after == await _expected_statistics()
    assert after["jobsTotal"] == 5  # the job still counts ...
    assert after["completedBytesIn"] == stats["completedBytesIn"] - assets["sample2.mp4"]["size"]
    assert after["completedBytesOut"] == stats["completedBytesOut"] - gone_out  # ... but not its bytes


async def test_bytes_saved_is_negative_when_outputs_grow_and_zero_without_jobs(api):
    empty = (await api.ok(STATS))["statistics"]
    assert empty["jobsTotal"] == 0 and empty["completedBytesIn"] == empty["bytesSaved"] == 0
    assert all(s["count"] == 0 for s in empty["jobsByStatus"])

    small = await make_asset("small.mp4", size=1_000)
    big = await make_asset("big.mkv", size=6_000_000_000)  # past 32 bits: GraphQL Int could not carry it
    await make_job(small, status="completed", output_size=4_000)  # grew 4x
    await make_job(big, status="completed", output_size=5_000_000_000)
    await make_job(small, status="completed")  # no output size: not compared
    await make_job(await make_asset("empty.mp4", size=0), status="completed", output_size=10)  # unknown source size
    stats = (await api.ok(STATS))["statistics"]
    assert stats["completedBytesIn"] == 6_000_001_000
    assert stats["completedBytesOut"] == 5_000_004_000
    assert stats["bytesSaved"] == 999_997_000
    ratios = sorted(j["sizeRatio"] for j in (await api.ok("{ jobs { sizeRatio } }"))["jobs"] if j["sizeRatio"])
    assert ratios == [5 / 6, 4.0]

    await make_job(big, status="completed", output_size=7_000_000_000)  # this one grew by 1 GB
    stats = (await api.ok(STATS))["statistics"]
    assert stats["bytesSaved"] == -3_000 and stats == await _expected_statistics()


async def test_size_fields_add_no_query_per_job(api):
    doc = "{ jobs { id sourceSize sizeRatio output { size } } }"
    for i in range(3):
        await make_job(await make_asset(f"a{i}.mp4", size=1000 + i), status="completed", output_size=500)
    small = await _count(api, doc)
    for i in range(3, 30):
        await make_job(await make_asset(f"a{i}.mp4", size=1000 + i), status="completed", output_size=500)
    assert small == await _count(api, doc) == 1  # the sizes come through the jobs query's join
    assert await _count(api, "{ assets { jobs { sourceSize sizeRatio } } }") <= 3
    assert await _count(api, STATS) == 2


async def test_admin_status_page_shows_the_same_totals(start_api):
    from .test_api_admin import PASSWORD, _login

    admin = await start_api(MPR_ADMIN_PASSWORD=PASSWORD)
    src = await make_asset("a.mp4", size=2_000_000)
    await make_job(src, status="completed", output_size=3_500_000)  # grew: negative saving
    await make_job(src, status="failed", error="boom")
    assert (await _login(admin)).status_code == 303
    page = (await admin.http.get("/admin/")).text
    section = page.split('<dl id="space-saved">')[1].split("</dl>")[0]
    assert "<dt>jobs total</dt><dd>2</dd>" in section
    assert "2.0 MB (2000000 bytes)" in section and "3.5 MB (3500000 bytes)" in section
    assert "-1.5 MB (-1500000 bytes: outputs are bigger than their sources)" in section
    assert '<a href="/admin/jobs?status=failed">1</a>' in page  # the queue counts come from the same GROUP BY
