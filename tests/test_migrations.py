"""`mpr migrate` on SQLite and PostgreSQL, and migrations that match the models."""

from __future__ import annotations

import uuid

from testkit import PG_DSN, _pg_admin, postgres_available, require

TABLES = {"mpr_media_asset", "mpr_transcode_preset", "mpr_transcode_job", "mpr_job_chunk", "aerich"}


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
    assert "applied 0_" in out and "presets: 8 created" in out or "presets: 9 created" in out
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


async def test_new_migration_is_written_for_both_dialects(tmp_path) -> None:
    """``python -m mpr.migrations.new`` diffs the models for SQLite and PostgreSQL (offline)."""
    import importlib.util

    from aerich.utils import decompress_dict, get_formatted_compressed_data

    from mpr import migrations
    from mpr.migrations.new import generate

    assert await generate("nothing") is None  # the shipped migrations match the models
    # pretend the last migration predates MediaAsset.comments
    src = migrations.LOCATION / migrations.APP / migrations.pending_files()[-1]
    spec = importlib.util.spec_from_file_location("last_migration", src)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = decompress_dict(module.MODELS_STATE)
    asset = state["models.MediaAsset"]
    asset["data_fields"] = [f for f in asset["data_fields"] if f["name"] != "comments"]
    text = src.read_text()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / src.name).write_text(
        text[: text.index("MODELS_STATE = (")] + f"MODELS_STATE = (\n    {get_formatted_compressed_data(state)}\n)\n"
    )
    path = await generate("add_comments", tmp_path)
    assert path is not None and path.name.startswith("1_") and path.name.endswith("_add_comments.py")
    spec = importlib.util.spec_from_file_location("new_migration", path)
    new = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(new)
    for dialect in ("sqlite", "postgres"):
        assert 'ADD "comments"' in new.UPGRADE[dialect]
        assert 'DROP COLUMN "comments"' in new.DOWNGRADE[dialect]
