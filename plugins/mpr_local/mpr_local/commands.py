"""The ``mpr worker`` command."""

from __future__ import annotations

import dataclasses
import logging

import click


@click.command("worker")
@click.option(
    "-w", "--workers", type=click.IntRange(min=1), default=None, help="Concurrent jobs (default MPR_WORKERS, 1)."
)
def worker_command(workers: int | None) -> None:
    """Run a local worker: take jobs from the queue (SQLite, or Redis with MPR_REDIS_URL) until stopped.

    Ctrl-C finishes the running jobs first; a second Ctrl-C or SIGTERM stops
    at once and marks the running jobs failed (retry them with `mpr retry`).
    """
    from mpr.bus import local_bus_warning
    from mpr.settings import get_settings
    from mpr_local.worker import run_worker

    settings = get_settings()
    warning = local_bus_warning(settings, "mpr worker")
    if warning:
        click.echo(warning, err=True)
    if workers:
        settings = dataclasses.replace(settings, workers=workers)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(settings)
