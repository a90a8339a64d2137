"""MPR plugin: the ``gcp`` executor (Cloud Run Jobs, one task per chunk). Hook implementations only."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_executors(register):
    """The ``gcp`` executor: a Cloud Run Jobs execution per job (``MPR_GCP_JOB``)."""
    from mpr_gcp.executor import GcpExecutor

    register("gcp", GcpExecutor)


@hookimpl
def register_commands(cli):
    """``mpr gcp-poll``: catch executions that ended without calling back."""
    from mpr_gcp.commands import poll_command

    cli.add_command(poll_command)
