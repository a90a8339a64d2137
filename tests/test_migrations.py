"""`mpr migrate` on SQLite and PostgreSQL, and migrations that match the models."""

from __future__ import annotations

import uuid

import pytest

from testkit import PG_DSN, _pg_admin, postgres_available, require

TABLES = {"mpr_media_asset", "mpr_transcode_preset", "mpr_transcode_job", "mpr_job_chunk", "aerich"}
STATUS_COMMENT = r"PENDING: pending\nREADY: ready\nERROR: error\nMISSING: missing"  # as PostgreSQL stores it
OLD_ASSET = uuid.uuid4()


def check_migrate(url: str, monkeypatch, capsys) -> None:
    """``mpr migrate`` twice (the second is a no-op), then ``mpr presets`` reads the migrated schema."""
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.cli import main
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()  # Tortoise caches SQL per connection name, across dialects
    monkeypatch.setenv("MPR_DATABASE_URL", url)
    get_settings.cache_clear()
    capsys.readouterr()
    assert main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 0_" in out and ("presets: 8 created" in out or "presets: 9 created" in out), out
    assert main(["migrate"]) == 0
    assert "database is up to date" in capsys.readouterr().out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "h264-720p" in out and "builtin" in out


def test_migrate_sqlite(media, monkeypatch, capsys) -> None:
    url = f"sqlite://{media['var'] / 'migrated.db'}"
    check_migrate(url, monkeypatch, capsys)
    import sqlite3

    with sqlite3.connect(media["var"] / "migrated.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= TABLES


async def test_migrate_postgres(media, monkeypatch, capsys) -> None:
    require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
    import asyncpg

    name = f"mpr_mig_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_DSN.rsplit("/", 1)[0] + "/" + name
    try:
        import asyncio

        await asyncio.to_thread(check_migrate, url, monkeypatch, capsys)
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            columns = await conn.fetch(
                "SELECT data_type FROM information_schema.columns WHERE table_name='mpr_transcode_job' "
                "AND column_name='preset_snapshot'"
            )
        finally:
            await conn.close()
        assert {r["tablename"] for r in rows} >= TABLES
        assert columns[0]["data_type"] == "jsonb"  # the PostgreSQL dialect, not SQLite's
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_migrations_match_the_models(sqlite_db) -> None:
    """A model change without a new migration fails here: run the generator described in mpr/migrations."""
    from aerich.utils import decompress_dict, get_models_describe, import_py_file

    from mpr import migrations

    last = migrations.pending_files()[-1]
    module = import_py_file(migrations.LOCATION / migrations.APP / last)
    recorded = decompress_dict(module.MODELS_STATE)
    current = get_models_describe("models")

    def shape(state: dict) -> dict:
        out = {}
        for model, desc in state.items():
            fields = [desc.get("pk_field") or {}] + desc.get("data_fields", []) + desc.get("fk_fields", [])
            out[model] = sorted(
                (f.get("db_column") or f.get("name"), f.get("field_type"), f.get("nullable")) for f in fields if f
            )
        return out

    assert shape(recorded) == shape(current)


def _load(path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pretend_last_migration(tmp_path, edit) -> None:
    """A migrations folder in ``tmp_path`` holding the last migration with its state changed by ``edit``."""
    from aerich.utils import decompress_dict, get_formatted_compressed_data

    from mpr import migrations

    src = migrations.LOCATION / migrations.APP / migrations.pending_files()[-1]
    state = decompress_dict(_load(src, "last_migration").MODELS_STATE)
    edit(state)
    text = src.read_text()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / src.name).write_text(
        text[: text.index("MODELS_STATE = (")] + f"MODELS_STATE = (\n    {get_formatted_compressed_data(state)}\n)\n"
    )


async def test_new_migration_is_written_for_both_dialects(tmp_path) -> None:
    """``python -m mpr.migrations.new`` diffs the models for SQLite and PostgreSQL (offline)."""
    from aerich.utils import decompress_dict

    from mpr import migrations
    from mpr.migrations.new import generate

    assert await generate("nothing") is None  # the shipped migrations match the models

    def drop_comments(state: dict) -> None:  # pretend the last migration predates MediaAsset.comments
        asset = state["models.MediaAsset"]
        asset["data_fields"] = [f for f in asset["data_fields"] if f["name"] != "comments"]

    _pretend_last_migration(tmp_path, drop_comments)
    path = await generate("add_comments", tmp_path)
    number = int(migrations.pending_files()[-1].split("_")[0]) + 1  # numbered after the last one
    assert path is not None and path.name.startswith(f"{number}_") and path.name.endswith("_add_comments.py")
    new = _load(path, "new_migration")
    for dialect in ("sqlite", "postgres"):
        assert 'ADD "comments"' in new.UPGRADE[dialect]
        assert 'DROP COLUMN "comments"' in new.DOWNGRADE[dialect]
    # the state keeps aerich's own model, like the initial migration's (aerich's diff pops it)
    assert "models.Aerich" in decompress_dict(new.MODELS_STATE)


async def test_a_comment_only_change_is_a_no_op_on_sqlite(tmp_path) -> None:
    """A new enum value only changes the column comment: ``COMMENT ON COLUMN`` on PostgreSQL, nothing on SQLite."""
    import sqlite3

    from mpr.migrations.new import generate

    def drop_missing(state: dict) -> None:  # pretend the last migration predates AssetStatus.MISSING
        status = next(f for f in state["models.MediaAsset"]["data_fields"] if f["name"] == "status")
        status["description"] = status["description"].replace("\nMISSING: missing", "")

    _pretend_last_migration(tmp_path, drop_missing)
    path = await generate("asset_missing", tmp_path)
    assert path is not None and path.name.endswith("_asset_missing.py")
    new = _load(path, "comment_migration")
    assert new.UPGRADE["postgres"].strip() == f"""COMMENT ON COLUMN "mpr_media_asset"."status" IS '{STATUS_COMMENT}';"""
    assert new.DOWNGRADE["postgres"].strip() == (
        r"""COMMENT ON COLUMN "mpr_media_asset"."status" IS 'PENDING: pending\nREADY: ready\nERROR: error';"""
    )
    for script in (new.UPGRADE["sqlite"], new.DOWNGRADE["sqlite"]):
        lines = [line for line in script.splitlines() if line.strip()]
        assert lines and all(line.startswith("-- ") for line in lines), script  # not empty: aerich downgrade needs SQL
        with sqlite3.connect(":memory:") as conn:
            conn.executescript(script)  # valid, and runs nothing
            assert conn.total_changes == 0


async def test_generator_rejects_a_bad_name(tmp_path) -> None:
    from mpr.migrations.new import generate, main

    for name in ("add-comments", "add comments", "../escape", ""):
        with pytest.raises(SystemExit, match="letters, digits and _ only"):
            await generate(name, tmp_path)
    assert main([]) == 2 and main(["a", "b"]) == 2
    assert not any(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- upgrading an existing database


async def _migrate_first(url: str, tmp_path, count: int) -> list[str]:
    """Apply only the first ``count`` migrations (the database as an older MPR left it) and add an asset row."""
    import shutil

    from aerich import Command
    from tortoise import Tortoise
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr import migrations
    from mpr.db import normalize_db_url

    old = tmp_path / "old_migrations" / migrations.APP
    old.mkdir(parents=True)
    first = migrations.pending_files()[:count]
    for name in first:
        shutil.copy(migrations.LOCATION / migrations.APP / name, old / name)
    EXECUTOR_CACHE.clear()
    config = {
        "connections": {"default": normalize_db_url(url)},
        "apps": {migrations.APP: {"models": ["aerich.models"], "default_connection": "default"}},
    }
    command = Command(tortoise_config=config, app=migrations.APP, location=str(old.parent))
    await command.init()
    assert await command.upgrade(run_in_transaction=True) == first
    conn = Tortoise.get_connection("default")
    placeholder = "$1" if conn.schema_generator.DIALECT == "postgres" else "?"
    await conn.execute_query(
        'INSERT INTO "mpr_media_asset" ("id", "path", "filename", "kind", "size", "status", "comments", '
        f"\"created_at\", \"updated_at\") VALUES ({placeholder}, 'gone.mp4', 'gone.mp4', 'video', 1, 'ready', '', "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        [str(OLD_ASSET)],
    )
    await Tortoise.close_connections()
    return first


def _mpr(args: list[str], url: str, monkeypatch, capsys) -> str:
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.cli import main
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()
    monkeypatch.setenv("MPR_DATABASE_URL", url)
    get_settings.cache_clear()
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def _upgrade_from(url: str, done: list[str], monkeypatch, capsys) -> None:
    """``mpr migrate`` applies exactly the migrations after ``done``; a second run has nothing to do."""
    from mpr import migrations

    out = _mpr(["migrate"], url, monkeypatch, capsys)
    applied = [line.split()[1] for line in out.splitlines() if line.startswith("applied ")]
    assert applied == [f for f in migrations.pending_files() if f not in done], out
    assert "database is up to date" in _mpr(["migrate"], url, monkeypatch, capsys)


async def _check_missing_status() -> None:
    """The old asset is kept and takes the new status (Tortoise must be initialised)."""
    from mpr.models import AssetStatus, MediaAsset

    old = await MediaAsset.get(id=OLD_ASSET)
    assert old.status is AssetStatus.READY and old.path == "gone.mp4"
    await MediaAsset.filter(id=OLD_ASSET).update(status=AssetStatus.MISSING)
    assert (await MediaAsset.get(id=OLD_ASSET)).status is AssetStatus.MISSING
    assert await MediaAsset.filter(status=AssetStatus.MISSING).count() == 1


async def _downgrade_last_and_check(check) -> None:
    """aerich downgrades asset_missing and the migrations after it (the SQL comment keeps SQLite's
    downgrade non-empty)."""
    from aerich import Command
    from aerich.models import Aerich
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr import migrations
    from mpr.db import close_db, init_db, tortoise_config
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()
    get_settings.cache_clear()
    files = migrations.pending_files()
    target = next(f for f in files if f.endswith("_asset_missing.py"))
    later = files[files.index(target) :]
    last = later[-1]
    await init_db()
    command = Command(tortoise_config=tortoise_config(), app=migrations.APP, location=str(migrations.LOCATION))
    try:
        await command.init()
        assert sorted(await command.downgrade(int(target.split("_")[0]), delete=False)) == later
        assert not await Aerich.filter(version__in=later).exists()
        await check()
    finally:
        await close_db()
    assert (migrations.LOCATION / migrations.APP / last).exists()  # delete=False keeps the file


async def _with_db(check) -> None:
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.db import close_db, init_db
    from mpr.settings import get_settings

    EXECUTOR_CACHE.clear()
    get_settings.cache_clear()
    await init_db()
    try:
        await check()
    finally:
        await close_db()


@pytest.mark.parametrize("count", [1, 2], ids=["from_init", "from_job_metrics"])
async def test_mpr_migrate_upgrades_an_existing_sqlite_database(media, monkeypatch, capsys, tmp_path, count) -> None:
    import asyncio
    import sqlite3

    from mpr import migrations

    url = f"sqlite://{media['var'] / 'old.db'}"
    done = await _migrate_first(url, tmp_path, count)
    await asyncio.to_thread(_upgrade_from, url, done, monkeypatch, capsys)
    with sqlite3.connect(media["var"] / "old.db") as conn:
        columns = {r[1]: r[2] for r in conn.execute('PRAGMA table_info("mpr_media_asset")')}
        jobs = {r[1]: r[2] for r in conn.execute('PRAGMA table_info("mpr_transcode_job")')}
    assert columns["status"] == "VARCHAR(16)" and jobs["metrics"] == "JSON"
    await _with_db(_check_missing_status)

    async def nothing_changed() -> None:  # but the columns later migrations added (auto_transcode, auto_reason)
        with sqlite3.connect(media["var"] / "old.db") as conn:
            after = {r[1]: r[2] for r in conn.execute('PRAGMA table_info("mpr_media_asset")')}
        assert {"auto", "auto_reason"} <= set(columns)
        assert after == {name: kind for name, kind in columns.items() if name not in ("auto", "auto_reason")}

    await _downgrade_last_and_check(nothing_changed)
    out = await asyncio.to_thread(_mpr, ["migrate"], url, monkeypatch, capsys)
    assert f"applied {migrations.pending_files()[-1]}" in out


@pytest.mark.parametrize("count", [1, 2], ids=["from_init", "from_job_metrics"])
async def test_mpr_migrate_upgrades_an_existing_postgres_database(media, monkeypatch, capsys, tmp_path, count) -> None:
    require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
    import asyncio

    import asyncpg

    name = f"mpr_mig_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_DSN.rsplit("/", 1)[0] + "/" + name

    async def status_comment() -> str:
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
        try:
            return await conn.fetchval(
                "SELECT col_description('mpr_media_asset'::regclass, attnum) FROM pg_attribute "
                "WHERE attrelid = 'mpr_media_asset'::regclass AND attname = 'status'"
            )
        finally:
            await conn.close()

    try:
        done = await _migrate_first(url, tmp_path, count)
        assert await status_comment() == STATUS_COMMENT.replace(r"\nMISSING: missing", "")
        await asyncio.to_thread(_upgrade_from, url, done, monkeypatch, capsys)
        assert await status_comment() == STATUS_COMMENT
        await _with_db(_check_missing_status)

        async def comment_restored() -> None:
            assert await status_comment() == STATUS_COMMENT.replace(r"\nMISSING: missing", "")

        await _downgrade_last_and_check(comment_restored)
        await asyncio.to_thread(_mpr, ["migrate"], url, monkeypatch, capsys)
        assert await status_comment() == STATUS_COMMENT
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
