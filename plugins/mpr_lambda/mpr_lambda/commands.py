"""The ``mpr lambda-poll`` command."""

from __future__ import annotations

import time

import click


@click.command("lambda-poll")
@click.option("--every", type=click.FloatRange(min=5), default=None, help="Repeat every N seconds (default: once).")
def poll_command(every: float | None) -> None:
    """Fail lambda jobs whose Step Functions execution ended without calling back."""
    from mpr.db import run_sync
    from mpr_lambda.executor import poll_processing

    while True:
        for job_id, status in run_sync(poll_processing()).items():
            click.echo(f"{job_id} {status}")
        if every is None:
            return
        time.sleep(every)
