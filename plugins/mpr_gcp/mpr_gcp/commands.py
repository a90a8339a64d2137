"""The ``mpr gcp-poll`` command."""

from __future__ import annotations

import time

import click


@click.command("gcp-poll")
@click.option("--every", type=click.FloatRange(min=5), default=None, help="Repeat every N seconds (default: once).")
def poll_command(every: float | None) -> None:
    """Fail or cancel gcp jobs whose Cloud Run execution ended without calling back."""
    from mpr.db import run_sync
    from mpr_gcp.watch import poll_processing

    while True:
        for job_id, state in run_sync(poll_processing()).items():
            click.echo(f"{job_id} {state}")
        if every is None:
            return
        time.sleep(every)
