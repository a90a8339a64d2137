"""POST /api/jobs/{id}/callback: signed completion webhooks from remote executors."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from mpr import callbacks
from mpr.models import JobStatus, TranscodeJob

from .conftest import make_asset, make_job

SECRET = "s3cret-callback-key"


@pytest.fixture
async def cb_api(start_api):
    return await start_api(MPR_CALLBACK_SECRET=SECRET)


async def _post(api, job_id, payload, *, secret=SECRET, ts=None, headers=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    hdrs = callbacks.sign_headers(body, secret, ts) if secret else {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return await api.http.post(f"/api/jobs/{job_id}/callback", content=body, headers=hdrs), hdrs, body


async def _job_with_output(media, clips, status="processing"):
    asset = await make_asset("src.mp4")
    job = await make_job(asset, status=status)
    target = media["out"] / job.output_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(clips["video"].read_bytes())
    return job


async def test_signed_completed_callback_registers_output(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    r, _, _ = await _post(cb_api, job.id, {"status": "completed", "output_key": job.output_path, "metrics": {"s": 1}})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "changed": True, "status": "completed"}
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.COMPLETED and job.progress == 100.0
    assert job.output_size == clips["video"].stat().st_size
    assert abs(job.output_duration - 3.0) < 0.3 and job.finished_at is not None


async def test_pending_job_goes_through_processing_to_completed(cb_api, media, clips):
    job = await _job_with_output(media, clips, status="pending")
    from mpr.bus import get_bus

    r, _, _ = await _post(cb_api, job.id, {"status": "completed"})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    statuses = [e.status for e in get_bus().read(str(job.id), 0) if e.type == "status"]
    assert statuses == ["processing", "completed"]


async def test_failed_callback_marks_job_failed_with_error(cb_api):
    job = await make_job(await make_asset(), status="processing")
    r, _, _ = await _post(cb_api, job.id, {"status": "failed", "error": "Lambda timed out"})
    assert r.status_code == 200
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.FAILED and job.error == "Lambda timed out"


async def test_completed_callback_with_missing_output_fails_the_job(cb_api):
    job = await make_job(await make_asset(), status="processing")
    r, _, _ = await _post(cb_api, job.id, {"status": "completed"})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert "missing" in (await TranscodeJob.get(id=job.id)).error


@pytest.mark.parametrize("case", ["unsigned", "wrong-secret", "stale", "future", "tampered", "bad-timestamp"])
async def test_bad_signatures_get_401_and_change_nothing(cb_api, media, clips, case):
    job = await _job_with_output(media, clips)
    payload = {"status": "completed"}
    if case == "unsigned":
        r, _, _ = await _post(cb_api, job.id, payload, secret=None)
    elif case == "wrong-secret":
        r, _, _ = await _post(cb_api, job.id, payload, secret="other")
    elif case == "stale":
        r, _, _ = await _post(cb_api, job.id, payload, ts=int(time.time()) - callbacks.MAX_AGE - 5)
    elif case == "future":
        r, _, _ = await _post(cb_api, job.id, payload, ts=int(time.time()) + callbacks.MAX_AGE + 60)
    elif case == "tampered":
        body = json.dumps(payload).encode()
        hdrs = callbacks.sign_headers(body, SECRET)
        r = await cb_api.http.post(
            f"/api/jobs/{job.id}/callback", content=body.replace(b"completed", b"failed"), headers=hdrs
        )
    else:
        r, _, _ = await _post(cb_api, job.id, payload, headers={callbacks.TIMESTAMP_HEADER: "yesterday"})
    assert r.status_code == 401, r.text
    assert (await TranscodeJob.get(id=job.id)).status is JobStatus.PROCESSING


async def test_replayed_signature_gets_401(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    r, hdrs, body = await _post(cb_api, job.id, {"status": "completed"})
    assert r.status_code == 200
    again = await cb_api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=hdrs)
    assert again.status_code == 401 and "replay" in again.json()["error"]


async def test_replay_store_uses_redis_when_configured(start_api, redis_url, media, clips):
    api = await start_api(MPR_CALLBACK_SECRET=SECRET, MPR_REDIS_URL=redis_url)
    job = await _job_with_output(media, clips)
    # the machine's Redis is shared with other test runs: a nonce keeps this signature our own
    r, hdrs, body = await _post(api, job.id, {"status": "completed", "nonce": uuid.uuid4().hex})
    assert r.status_code == 200
    import hashlib

    import redis

    key = "mpr:callback:seen:" + hashlib.sha256(hdrs[callbacks.SIGNATURE_HEADER].encode()).hexdigest()
    client = redis.Redis.from_url(redis_url)
    try:
        # kept for the whole window a signature stays valid in (its timestamp may be MAX_AGE ahead)
        assert client.exists(key) and 2 * callbacks.MAX_AGE < client.ttl(key) <= 2 * callbacks.MAX_AGE + 60
        again = await api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=hdrs)
        assert again.status_code == 401
    finally:
        client.delete(key)
        client.close()


async def test_duplicate_callback_is_idempotent(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    sent = int(time.time())
    first, _, _ = await _post(cb_api, job.id, {"status": "completed"}, ts=sent)
    finished = (await TranscodeJob.get(id=job.id)).finished_at
    # a sender's retry is signed again (another timestamp), so it is a duplicate, not a replay
    # (taken from the first one's: "now - 1" is the first's own timestamp when a second ticks in between)
    second, _, _ = await _post(cb_api, job.id, {"status": "completed"}, ts=sent - 1)
    late_fail, _, _ = await _post(cb_api, job.id, {"status": "failed", "error": "late"})
    assert first.json()["changed"] is True
    assert second.status_code == 200 and second.json() == {"ok": True, "changed": False, "status": "completed"}
    assert late_fail.status_code == 200 and late_fail.json()["changed"] is False
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.COMPLETED and job.finished_at == finished and job.error is None


async def test_cancelled_job_is_not_revived(cb_api, media, clips):
    job = await _job_with_output(media, clips, status="cancelled")
    r, _, _ = await _post(cb_api, job.id, {"status": "completed"})
    assert r.status_code == 200 and r.json() == {"ok": True, "changed": False, "status": "cancelled"}
    assert (await TranscodeJob.get(id=job.id)).status is JobStatus.CANCELLED


async def test_unknown_job_404_oversized_413_bad_body_400(cb_api):
    sent = int(time.time())
    r, _, _ = await _post(cb_api, uuid.uuid4(), {"status": "completed"}, ts=sent)
    assert r.status_code == 404
    r, _, _ = await _post(cb_api, "not-a-uuid", {"status": "completed"}, ts=sent - 2)  # not the same signature
    assert r.status_code == 404
    big = {"status": "failed", "error": "x" * (callbacks.MAX_BODY + 10)}
    r, _, _ = await _post(cb_api, uuid.uuid4(), big)
    assert r.status_code == 413
    job = await make_job(await make_asset(), status="processing")
    r, _, _ = await _post(cb_api, job.id, {"status": "exploded"})
    assert r.status_code == 400 and "completed' or 'failed" in r.json()["error"]
    r, _, _ = await _post(cb_api, job.id, None, raw=b"{not json")
    assert r.status_code == 400
    r, _, _ = await _post(cb_api, job.id, {"status": "failed", "job_id": str(uuid.uuid4())})
    assert r.status_code == 400 and "job_id" in r.json()["error"]
    assert (await TranscodeJob.get(id=job.id)).status is JobStatus.PROCESSING


async def test_callbacks_disabled_without_secret(api):
    job = await make_job(await make_asset(), status="processing")
    r, _, _ = await _post(api, job.id, {"status": "completed"})
    assert r.status_code == 401 and "MPR_CALLBACK_SECRET" in r.json()["error"]
