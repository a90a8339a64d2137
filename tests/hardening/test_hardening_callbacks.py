"""Callback security beyond tests/api/test_api_callback.py: races, streamed oversize bodies, wrong job, cancel.

(unsigned, wrong secret, stale, future, tampered, replay, 404/413/400 and the
plain duplicate are in tests/api/test_api_callback.py and not repeated here.)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from mpr import callbacks, service
from mpr.models import JobStatus, MediaAsset, TranscodeJob

from .conftest import db_digest, put

pytestmark = pytest.mark.timeout(120)

SECRET = "hardening-callback-secret-0123456789"


async def _setup(serve, media, clips, n_jobs=2, status=JobStatus.PROCESSING):
    api = await serve(MPR_CALLBACK_SECRET=SECRET)
    put(media, clips["video"], "src.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }")
    asset = await MediaAsset.get(path="src.mp4")
    made = []
    for i in range(n_jobs):
        key = f"out-{i}.mp4"
        (media["out"] / key).write_bytes(clips["video"].read_bytes())
        made.append(
            await TranscodeJob.create(
                source_asset=asset,
                source_path="src.mp4",
                output_path=key,
                executor="lambda",
                preset_snapshot={},
                status=status,
            )
        )
    return api, made


def _signed(payload: dict, ts: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({**payload, "nonce": uuid.uuid4().hex}).encode()
    return body, callbacks.sign_headers(body, SECRET, ts)


async def test_concurrent_duplicate_callbacks_complete_the_job_exactly_once(serve, media, clips):
    api, (job, _) = await _setup(serve, media, clips)
    requests = [_signed({"job_id": str(job.id), "status": "completed"}) for _ in range(12)]
    requests += [_signed({"job_id": str(job.id), "status": "failed", "error": "late"}) for _ in range(4)]
    answers = await asyncio.gather(
        *(api.http.post(f"/api/jobs/{job.id}/callback", content=b, headers=h) for b, h in requests)
    )
    assert all(r.status_code == 200 for r in answers), [(r.status_code, r.text) for r in answers]
    changed = [r.json() for r in answers if r.json()["changed"]]
    assert len(changed) == 1, [r.json() for r in answers]
    final = await TranscodeJob.get(id=job.id)
    assert final.status.value == changed[0]["status"]
    assert all(r.json()["status"] == final.status.value for r in answers)


async def test_a_body_signed_for_one_job_is_refused_at_another_jobs_url(serve, media, clips):
    api, (a, b) = await _setup(serve, media, clips)
    before = db_digest(media["var"] / "mpr.db")
    body, headers = _signed({"job_id": str(a.id), "status": "failed", "error": "forged"})
    r = await api.http.post(f"/api/jobs/{b.id}/callback", content=body, headers=headers)
    assert r.status_code in (400, 401), r.text
    assert db_digest(media["var"] / "mpr.db") == before
    assert (await TranscodeJob.get(id=b.id)).status is JobStatus.PROCESSING
    # the misdirected copy did not use up the signature: the genuine delivery still works, once
    r = await api.http.post(f"/api/jobs/{a.id}/callback", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    r = await api.http.post(f"/api/jobs/{a.id}/callback", content=body, headers=headers)
    assert r.status_code == 401 and "replay" in r.text


async def test_streamed_oversized_body_without_content_length_is_413_and_changes_nothing(serve, media, clips):
    api, (job, _) = await _setup(serve, media, clips)
    chunk = b" " * 8192

    async def stream():
        yield b'{"status": "failed", "error": "'
        for _ in range(callbacks.MAX_BODY // len(chunk) + 4):
            yield chunk
        yield b'"}'

    started = time.monotonic()
    r = await api.http.post(
        f"/api/jobs/{job.id}/callback",
        content=stream(),
        headers={
            "Content-Type": "application/json",
            callbacks.TIMESTAMP_HEADER: str(int(time.time())),
            callbacks.SIGNATURE_HEADER: "sha256=" + "0" * 64,
        },
    )
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert time.monotonic() - started < 10
    # a lying Content-Length larger than the limit is refused before the body is read
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /api/jobs/{job.id}/callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {callbacks.MAX_BODY * 100}\r\n\r\n{{}}".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] in (b"400", b"413"), status_line
    assert (await TranscodeJob.get(id=job.id)).status is JobStatus.PROCESSING


async def test_a_callback_racing_a_cancel_never_revives_the_job(serve, media, clips):
    api, jobs = await _setup(serve, media, clips, n_jobs=4)
    for job in jobs:
        payloads = [_signed({"job_id": str(job.id), "status": s}) for s in ("completed", "failed", "completed")]
        results = await asyncio.gather(
            service.cancel_job(job.id),
            *(api.http.post(f"/api/jobs/{job.id}/callback", content=b, headers=h) for b, h in payloads),
            return_exceptions=True,
        )
        for r in results[1:]:
            assert not isinstance(r, BaseException) and r.status_code == 200, r
        final = await TranscodeJob.get(id=job.id)
        if isinstance(results[0], BaseException):
            # the callback won: the job finished first and the cancel was refused cleanly
            assert final.status in (JobStatus.COMPLETED, JobStatus.FAILED), (final.status, results[0])
        else:
            assert final.status is JobStatus.CANCELLED, final.status
        # and later callbacks do not change a final state either
        body, headers = _signed({"job_id": str(job.id), "status": "completed"})
        again = await api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
        assert again.json()["changed"] is False and (await TranscodeJob.get(id=job.id)).status is final.status


async def test_a_cloud_run_callback_is_bound_to_its_job(serve, media, clips):
    """The GCP task signs a body naming its job: replayed at another job's URL it is refused."""
    pytest.importorskip("mpr_gcp")
    from mpr_gcp.spec import TaskSpec
    from mpr_gcp.task import TaskRunner

    from mpr.errors import MprError
    from mpr.settings import get_settings

    api, (a, b) = await _setup(serve, media, clips)

    def runner(job_id, url_job) -> TaskRunner:
        spec = TaskSpec(
            job_id=str(job_id),
            source_key="src.mp4",
            output_key="out-0.mp4",
            preset={"name": "copy", "container": "mp4"},
            callback_url=f"{api.url}/api/jobs/{url_job}/callback",
        )
        return TaskRunner(spec, get_settings(), 0)

    with pytest.raises(MprError, match="refused"):
        await asyncio.to_thread(runner(a.id, b.id).callback, {"status": "failed", "error": "forged"})
    assert (await TranscodeJob.get(id=b.id)).status is JobStatus.PROCESSING
    await asyncio.to_thread(runner(b.id, b.id).callback, {"status": "failed", "error": "real"})
    job = await TranscodeJob.get(id=b.id)
    assert job.status is JobStatus.FAILED and job.error == "real"
