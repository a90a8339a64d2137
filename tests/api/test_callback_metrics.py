"""Callback ``metrics`` stored on the job: GraphQL ``Job.metrics``, the admin job page, and the migration adding it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid

import pytest

from mpr import callbacks
from mpr.models import JobStatus, TranscodeJob
from testkit import PG_DSN, _pg_admin, postgres_available, require

from .conftest import make_asset, make_job

SECRET = "s3cret-callback-key"
PASSWORD = "correct horse battery staple"
METRICS = {"billed_ms": 5123, "memory_mb": 1769, "region": "eu-west-1", "steps": [{"name": "ffmpeg", "s": 4.2}]}
JOB_METRICS = "query($id: ID!) { job(id: $id) { status metrics } }"


@pytest.fixture
async def cb_api(start_api):
    return await start_api(MPR_CALLBACK_SECRET=SECRET, MPR_ADMIN_PASSWORD=PASSWORD)


async def _post(api, job_id, payload=None, *, secret=SECRET, raw=None, headers=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    hdrs = callbacks.sign_headers(body, secret)
    hdrs.update(headers or {})
    return await api.http.post(f"/api/jobs/{job_id}/callback", content=body, headers=hdrs)


async def _job_with_output(media, clips, status="processing"):
    job = await make_job(await make_asset("src.mp4"), status=status)
    target = media["out"] / job.output_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(clips["video"].read_bytes())
    return job


async def _admin_page(api, path: str) -> str:
    page = await api.http.get("/admin/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    r = await api.http.post("/admin/login", data={"password": PASSWORD, "next": path, "_csrf_token": token})
    assert r.status_code == 303
    r = await api.http.get(path)
    assert r.status_code == 200
    return r.text


async def test_signed_callback_metrics_reach_graphql_and_the_admin_page(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    metrics = {**METRICS, "note": "<script>x</script>"}
    r = await _post(cb_api, job.id, {"status": "completed", "output_key": job.output_path, "metrics": metrics})
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    assert (await TranscodeJob.get(id=job.id)).metrics == metrics
    data = await cb_api.ok(JOB_METRICS, {"id": str(job.id)})
    assert data["job"] == {"status": "completed", "metrics": metrics}
    listed = await cb_api.ok("{ jobs { id metrics } }")
    assert {"id": str(job.id), "metrics": metrics} in listed["jobs"]
    html = await _admin_page(cb_api, f"/admin/jobs/{job.id}")
    assert "<dt>metrics</dt>" in html and "&#34;billed_ms&#34;: 5123" in html and "eu-west-1" in html
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html  # escaped


async def test_failed_callback_metrics_are_stored_too(cb_api):
    job = await make_job(await make_asset(), status="processing")
    r = await _post(cb_api, job.id, {"status": "failed", "error": "out of memory", "metrics": {"memory_mb": 3008}})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert (await cb_api.ok(JOB_METRICS, {"id": str(job.id)}))["job"]["metrics"] == {"memory_mb": 3008}


async def test_a_job_without_metrics_shows_none(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    for payload in ({"status": "completed"}, {"status": "completed", "metrics": None}):
        await TranscodeJob.filter(id=job.id).update(status=JobStatus.PROCESSING)
        r = await _post(cb_api, job.id, payload)
        assert r.status_code == 200 and r.json()["status"] == "completed"
        assert (await cb_api.ok(JOB_METRICS, {"id": str(job.id)}))["job"]["metrics"] is None
    html = await _admin_page(cb_api, f"/admin/jobs/{job.id}")
    assert "<dt>metrics</dt><dd>—</dd>" in html


@pytest.mark.parametrize("case", ["unsigned", "wrong-secret", "tampered", "replay"])
async def test_a_refused_callback_stores_no_metrics(cb_api, media, clips, case):
    job = await _job_with_output(media, clips)
    payload = {"status": "completed", "metrics": METRICS}
    body = json.dumps(payload).encode()
    if case == "unsigned":
        r = await cb_api.http.post(f"/api/jobs/{job.id}/callback", content=body)
    elif case == "wrong-secret":
        r = await _post(cb_api, job.id, raw=body, secret="not-the-secret")
    elif case == "tampered":
        headers = callbacks.sign_headers(json.dumps({"status": "completed"}).encode(), SECRET)
        r = await cb_api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
    else:  # the genuine delivery, then the same signed body again after the job was reset
        headers = callbacks.sign_headers(json.dumps({"status": "failed"}).encode(), SECRET)
        first = await cb_api.http.post(
            f"/api/jobs/{job.id}/callback", content=json.dumps({"status": "failed"}).encode(), headers=headers
        )
        assert first.status_code == 200
        await TranscodeJob.filter(id=job.id).update(status=JobStatus.PROCESSING, metrics=None)
        headers = callbacks.sign_headers(body, SECRET)
        assert (
            await cb_api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
        ).status_code == 200
        await TranscodeJob.filter(id=job.id).update(status=JobStatus.PROCESSING, metrics=None)
        r = await cb_api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=headers)
    assert r.status_code == 401, r.text
    row = await TranscodeJob.get(id=job.id)
    assert row.metrics is None and row.status is JobStatus.PROCESSING


async def test_a_callback_for_a_finished_job_stores_nothing(cb_api, media, clips):
    job = await _job_with_output(media, clips, status="cancelled")
    r = await _post(cb_api, job.id, {"status": "completed", "metrics": METRICS})
    assert r.status_code == 200 and r.json() == {"ok": True, "changed": False, "status": "cancelled"}
    assert (await TranscodeJob.get(id=job.id)).metrics is None


@pytest.mark.parametrize(
    ("metrics", "kind"),
    [([1, 2], "an array"), ("fast", "a string"), (12, "a number"), (1.5, "a number"), (True, "a boolean")],
)
async def test_metrics_that_are_not_an_object_get_a_clear_400(cb_api, media, clips, metrics, kind):
    job = await _job_with_output(media, clips)
    r = await _post(cb_api, job.id, {"status": "completed", "metrics": metrics})
    assert r.status_code == 400
    assert r.json() == {"ok": False, "error": f"callback metrics must be a JSON object, got {kind}"}
    row = await TranscodeJob.get(id=job.id)
    assert row.metrics is None and row.status is JobStatus.PROCESSING


async def test_oversized_or_too_deeply_nested_metrics_are_refused(cb_api, media, clips):
    job = await _job_with_output(media, clips)
    big = {"status": "completed", "metrics": {"blob": "x" * callbacks.MAX_BODY}}
    r = await _post(cb_api, job.id, big)
    assert r.status_code == 413
    nested = b'{"status": "completed", "metrics": {"a": ' + b"[" * 30000 + b"]" * 30000 + b"}}"
    assert len(nested) < callbacks.MAX_BODY
    r = await _post(cb_api, job.id, raw=nested)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    row = await TranscodeJob.get(id=job.id)
    assert row.metrics is None and row.status is JobStatus.PROCESSING


# --------------------------------------------------------------------------- the migration


async def _migrate_to_the_initial_schema(url: str, tmp_path) -> None:
    """Apply only ``0_*_init.py`` (the database as an older MPR left it) and add a job row."""
    from aerich import Command
    from tortoise import Tortoise
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr import migrations
    from mpr.db import normalize_db_url

    old = tmp_path / "old_migrations" / migrations.APP
    old.mkdir(parents=True)
    first = migrations.pending_files()[0]
    shutil.copy(migrations.LOCATION / migrations.APP / first, old / first)
    EXECUTOR_CACHE.clear()
    config = {
        "connections": {"default": normalize_db_url(url)},
        "apps": {migrations.APP: {"models": ["aerich.models"], "default_connection": "default"}},
    }
    command = Command(tortoise_config=config, app=migrations.APP, location=str(old.parent))
    await command.init()
    assert await command.upgrade(run_in_transaction=True) == [first]
    conn = Tortoise.get_connection("default")
    placeholder = "$1" if conn.schema_generator.DIALECT == "postgres" else "?"
    await conn.execute_query(
        'INSERT INTO "mpr_transcode_job" ("id", "source_path", "preset_snapshot", "output_path", "priority", '
        '"executor", "status", "progress", "attempts", "chunked", "created_at", "updated_at") '
        f"VALUES ({placeholder}, '', '{{}}', 'old.mp4', 0, 'local', 'completed', 100, 1, "
        "false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        [str(OLD_JOB)],
    )
    await Tortoise.close_connections()


OLD_JOB = uuid.uuid4()


def _mpr_migrate(url: str, monkeypatch, capsys) -> str:
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.cli import main
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()
    monkeypatch.setenv("MPR_DATABASE_URL", url)
    get_settings.cache_clear()
    capsys.readouterr()
    assert main(["migrate"]) == 0
    return capsys.readouterr().out


async def _check_metrics_column(url: str) -> None:
    from tortoise import Tortoise
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.db import close_db, init_db
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()
    get_settings.cache_clear()
    await init_db()
    try:
        assert Tortoise.get_connection("default").schema_generator.DIALECT in ("sqlite", "postgres")
        old = await TranscodeJob.get(id=OLD_JOB)
        assert old.output_path == "old.mp4" and old.metrics is None  # existing rows kept, column NULL
        await TranscodeJob.filter(id=OLD_JOB).update(metrics={"after": "migration", "n": [1, 2]})
        assert (await TranscodeJob.get(id=OLD_JOB)).metrics == {"after": "migration", "n": [1, 2]}
    finally:
        await close_db()


def _upgrade_and_check(url: str, monkeypatch, capsys) -> None:
    out = _mpr_migrate(url, monkeypatch, capsys)
    applied = [line.split()[1] for line in out.splitlines() if line.startswith("applied ")]
    assert applied and all(not name.startswith("0_") for name in applied), out
    assert any("job_metrics" in name for name in applied), out
    assert "database is up to date" in _mpr_migrate(url, monkeypatch, capsys)


async def test_mpr_migrate_adds_metrics_to_an_existing_sqlite_database(media, monkeypatch, capsys, tmp_path):
    url = f"sqlite://{media['var'] / 'old.db'}"
    await _migrate_to_the_initial_schema(url, tmp_path)
    await asyncio.to_thread(_upgrade_and_check, url, monkeypatch, capsys)
    import sqlite3

    with sqlite3.connect(media["var"] / "old.db") as conn:
        columns = {r[1]: r[2] for r in conn.execute('PRAGMA table_info("mpr_transcode_job")')}
    assert columns["metrics"] == "JSON"
    await _check_metrics_column(url)


async def test_mpr_migrate_adds_metrics_to_an_existing_postgres_database(media, monkeypatch, capsys, tmp_path):
    require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
    import asyncpg

    name = f"mpr_mig_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_DSN.rsplit("/", 1)[0] + "/" + name
    try:
        await _migrate_to_the_initial_schema(url, tmp_path)
        await asyncio.to_thread(_upgrade_and_check, url, monkeypatch, capsys)
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
        try:
            row = await conn.fetchrow(
                "SELECT data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name='mpr_transcode_job' AND column_name='metrics'"
            )
        finally:
            await conn.close()
        assert row["data_type"] == "jsonb" and row["is_nullable"] == "YES"
        await _check_metrics_column(url)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
