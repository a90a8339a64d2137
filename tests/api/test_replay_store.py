"""Callback replay protection shared by API processes through the var dir (no Redis).

Two real app instances (separate ReplayStore objects, as two ``mpr serve``
processes would have) share one MPR_VAR_DIR: a signature used at one is a
replay at the other. The store itself: first use wins across instances,
threads and processes, records expire, an unusable directory refuses.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
import uuid
from pathlib import Path

import pytest

from mpr import callbacks
from mpr.api.callback import ReplayStore
from mpr.models import JobStatus, TranscodeJob

from .conftest import make_asset

SECRET = "replay-store-test-secret"

pytestmark = pytest.mark.timeout(120)


def _signed(job_id, payload: dict) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({**payload, "job_id": str(job_id), "nonce": uuid.uuid4().hex}).encode()
    return body, callbacks.sign_headers(body, SECRET)


async def _processing_job(output: str = "out.mp4") -> TranscodeJob:
    asset = await make_asset(f"src-{uuid.uuid4().hex[:6]}.mp4")
    return await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        output_path=output,
        executor="lambda",
        preset_snapshot={},
        status=JobStatus.PROCESSING,
    )


@pytest.fixture
async def two_apps(start_api, media):
    """Two app instances on one var dir (MPR_VAR_DIR of the ``media`` fixture), no Redis."""
    env = {"MPR_CALLBACK_SECRET": SECRET}
    a = await start_api(**env)
    b = await start_api(**env)
    assert a.settings.var_path == b.settings.var_path
    return a, b


async def test_callback_accepted_by_one_process_is_a_replay_at_the_other(two_apps, media):
    a, b = two_apps
    job = await _processing_job()
    body, headers = _signed(job.id, {"status": "failed", "error": "encoder crashed"})

    first = await a.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["changed"] is True, first.text
    replayed = await b.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
    assert replayed.status_code == 401 and "replay" in replayed.json()["error"]
    again = await a.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
    assert again.status_code == 401

    # the record is a file in the shared var dir, named by the signature's digest
    records = [p.name for p in (media["var"] / "callback-replay").iterdir() if not p.name.startswith(".")]
    assert len(records) == 1
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.FAILED and job.error == "encoder crashed"


async def test_concurrent_duplicates_split_over_two_processes_are_accepted_once(two_apps, media):
    a, b = two_apps
    job = await _processing_job()
    body, headers = _signed(job.id, {"status": "failed", "error": "once"})
    answers = await asyncio.gather(
        *(
            (a if i % 2 else b).http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
            for i in range(16)
        )
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [401] * 15, [(r.status_code, r.text) for r in answers]
    assert all("replay" in r.json()["error"] for r in answers if r.status_code == 401)


async def test_distinct_signatures_are_each_accepted_once(two_apps):
    """A sender's retry is signed again: not a replay, whichever process receives it."""
    a, b = two_apps
    job = await _processing_job()
    first = _signed(job.id, {"status": "failed", "error": "x"})
    second = _signed(job.id, {"status": "failed", "error": "x"})
    r1 = await a.http.post(f"/api/jobs/{job.id}/callback", content=first[0], headers=first[1])
    r2 = await b.http.post(f"/api/jobs/{job.id}/callback", content=second[0], headers=second[1])
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert r1.json()["changed"] is True and r2.json()["changed"] is False  # duplicate, idempotent


async def test_unusable_replay_dir_refuses_with_503_and_changes_nothing(two_apps, media):
    a, _ = two_apps
    job = await _processing_job()
    store = media["var"] / "callback-replay"
    store.mkdir(exist_ok=True)
    for entry in store.iterdir():
        entry.unlink()
    store.rmdir()
    store.write_text("not a directory")  # the store cannot create its records
    try:
        body, headers = _signed(job.id, {"status": "failed", "error": "x"})
        r = await a.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
        assert r.status_code == 503, r.text  # a 5xx: the sender tries again later
        assert (await TranscodeJob.get(id=job.id)).status is JobStatus.PROCESSING
    finally:
        store.unlink()


# --- the store on its own ------------------------------------------------


async def test_file_store_first_use_wins_across_instances(tmp_path: Path):
    one, two = ReplayStore(ttl=300, path=tmp_path), ReplayStore(ttl=300, path=tmp_path)
    assert await one.first_use("sig-a") is True
    assert await two.first_use("sig-a") is False
    assert await one.first_use("sig-a") is False
    assert await two.first_use("sig-b") is True
    assert await one.first_use("sig-b") is False


async def test_file_store_record_expires_and_is_swept(tmp_path: Path):
    one, two = ReplayStore(ttl=300, path=tmp_path), ReplayStore(ttl=300, path=tmp_path)
    assert await one.first_use("old") is True
    assert await one.first_use("fresh") is True
    (record,) = [p for p in tmp_path.iterdir() if p.name != ".lock" and _is_record(p, "old")]
    past = time.time() - (2 * 300 + 61)  # older than the record's lifetime (2 x TTL + 60 s)
    os.utime(record, (past, past))
    assert await two.first_use("fresh") is False
    # the expired one is a new first use (once), in either process
    assert await two.first_use("old") is True
    assert await one.first_use("old") is False

    os.utime(tmp_path / record.name, (past, past))
    two._swept = 0.0  # due for a sweep
    assert await two.first_use("another") is True
    names = {p.name for p in tmp_path.iterdir()}
    assert record.name not in names  # swept
    assert {_digest("fresh"), _digest("another")} <= names


def _digest(signature: str) -> str:
    import hashlib

    return hashlib.sha256(signature.encode()).hexdigest()


def _is_record(path: Path, signature: str) -> bool:
    return path.name == _digest(signature)


async def test_file_store_concurrent_first_use_one_winner_threads(tmp_path: Path):
    """16 concurrent first uses of one signature from 4 store instances: exactly one wins."""
    stores = [ReplayStore(ttl=300, path=tmp_path) for _ in range(4)]
    results = await asyncio.gather(*(stores[i % 4].first_use("dup") for i in range(16)))
    assert sorted(results) == [False] * 15 + [True]


def _race(path: str, signature: str, start: float, out) -> None:
    store = ReplayStore(ttl=300, path=path)
    while time.time() < start:
        pass
    out.put(asyncio.run(store.first_use(signature)))


def test_file_store_concurrent_first_use_one_winner_processes(tmp_path: Path):
    """The same race between real processes; also when the record they race for has expired."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(2):
        out = ctx.Queue()
        start = time.time() + 1.0
        procs = [ctx.Process(target=_race, args=(str(tmp_path), "racy", start, out)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results = sorted(out.get(timeout=5) for _ in procs)
        assert results == [False] * 7 + [True], (round_, results)
        past = time.time() - (2 * 300 + 100)  # past the record's lifetime
        os.utime(tmp_path / _digest("racy"), (past, past))  # round 2 races for an expired record


async def test_store_without_path_or_redis_is_per_instance_memory():
    one, two = ReplayStore(), ReplayStore()
    assert await one.first_use("s") is True
    assert await one.first_use("s") is False
    assert await two.first_use("s") is True  # not shared: why the app passes the var dir


async def test_for_settings_picks_redis_or_the_var_dir(tmp_path: Path, redis_url):
    from mpr.settings import Settings

    files = ReplayStore.for_settings(Settings(var_dir=str(tmp_path), redis_url=None))
    assert files.path == tmp_path / "callback-replay" and files.redis_url is None
    shared = ReplayStore.for_settings(Settings(var_dir=str(tmp_path), redis_url=redis_url))
    assert shared.redis_url == redis_url and shared.path is None
    signature = f"sig-{uuid.uuid4().hex}"
    other = ReplayStore.for_settings(Settings(var_dir=str(tmp_path), redis_url=redis_url))
    try:
        assert await shared.first_use(signature) is True
        assert await other.first_use(signature) is False
    finally:
        await shared.close()
        await other.close()
