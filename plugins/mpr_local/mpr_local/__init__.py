"""MPR plugin package mpr_local: hook implementations only; the work lives in modules beside this one."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_executors(register):
    """The ``local`` executor: a huey queue (SQLite or Redis) and ``mpr worker`` processes."""
    from mpr_local.executor import LocalExecutor

    register("local", LocalExecutor)


@hookimpl
def register_commands(cli):
    """``mpr worker``."""
    from mpr_local.commands import worker_command

    cli.add_command(worker_command)


@hookimpl
def startup(app):
    """Inside ``mpr serve``: run an embedded worker next to the API (unless --no-worker)."""
    from mpr_local.embed import attach

    attach(app)
