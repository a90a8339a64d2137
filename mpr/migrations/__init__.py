"""Database migrations (aerich). ``mpr migrate`` calls :func:`migrate`.

Migration files live in ``mpr/migrations/models/``. aerich generates SQL for
one dialect only, so each migration here returns SQL for the connection's
dialect (SQLite or PostgreSQL); see ``0_20261126000000_init.py``.
"""

from __future__ import annotations

from pathlib import Path

from mpr.settings import Settings, get_settings

LOCATION = Path(__file__).resolve().parent
APP = "models"


async def migrate(settings: Settings | None = None) -> list[str]:
    """Apply every migration not yet applied to the configured database; return the files applied.

    Opens (and leaves open) the Tortoise connections for ``settings``; the
    caller closes them with :func:`mpr.db.close_db`.
    """
    from aerich import Command

    from mpr.db import tortoise_config

    command = Command(tortoise_config=tortoise_config(settings or get_settings()), app=APP, location=str(LOCATION))
    await command.init()
    return await command.upgrade(run_in_transaction=True)


async def applied(settings: Settings | None = None) -> list[str]:
    """The migration files recorded as applied in the database (Tortoise must be initialised)."""
    from aerich.models import Aerich
    from tortoise.exceptions import OperationalError

    try:
        return list(await Aerich.filter(app=APP).order_by("id").values_list("version", flat=True))
    except OperationalError:
        return []


def pending_files() -> list[str]:
    """All migration files shipped with MPR, in order."""
    files = [p.name for p in (LOCATION / APP).glob("*.py") if p.stem.split("_")[0].isdigit()]
    return sorted(files, key=lambda name: int(name.split("_")[0]))
