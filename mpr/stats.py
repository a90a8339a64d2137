"""Job statistics ("space saved"), computed by the database with COUNT/SUM ... GROUP BY.

Nothing here loads job rows: two aggregate queries whatever the number of jobs,
the same on SQLite and PostgreSQL. The byte totals cover the *comparable*
completed jobs: COMPLETED, with an ``output_size``, and whose source asset
still exists with a known size (``size > 0``). A job whose source asset was
deleted (``source_asset`` NULL) still counts in ``jobs_by_status`` but not in
the byte totals, so ``bytes_saved == completed_bytes_in - completed_bytes_out``
always compares like with like. ``bytes_saved`` is negative when the outputs
are bigger than their sources (e.g. a remux to a less compact container, or a
higher bitrate than the source's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tortoise.functions import Count, Sum

from mpr.models import JobStatus, TranscodeJob


@dataclass
class JobStatistics:
    jobs_total: int = 0
    jobs_by_status: dict[str, int] = field(default_factory=dict)  # every JobStatus, 0 when none
    completed_bytes_in: int = 0  # sum of source sizes of the comparable completed jobs
    completed_bytes_out: int = 0  # sum of their output sizes
    compared_jobs: int = 0  # how many completed jobs the byte totals cover

    @property
    def bytes_saved(self) -> int:
        """Source bytes minus output bytes of the comparable completed jobs (negative: outputs grew)."""
        return self.completed_bytes_in - self.completed_bytes_out


def size_ratio(status: object, output_size: float | None, source_size: float | None) -> float | None:
    """output/source of a completed job with both sizes known (source > 0), else None."""
    done = getattr(status, "value", status) == JobStatus.COMPLETED.value
    if not done or output_size is None or not source_size:
        return None
    return float(output_size) / float(source_size)


async def job_statistics() -> JobStatistics:
    """Counts per status and the byte totals of completed jobs (two aggregate queries)."""
    stats = JobStatistics(jobs_by_status={s.value: 0 for s in JobStatus})
    rows = await TranscodeJob.all().annotate(n=Count("id")).group_by("status").values("status", "n")
    for row in rows:
        status = getattr(row["status"], "value", row["status"])
        stats.jobs_by_status[status] = int(row["n"])
    stats.jobs_total = sum(stats.jobs_by_status.values())
    sums = (
        await TranscodeJob.filter(status=JobStatus.COMPLETED, output_size__isnull=False, source_asset__size__gt=0)
        .annotate(n=Count("id"), bytes_in=Sum("source_asset__size"), bytes_out=Sum("output_size"))
        # one group (the filter fixes the status); without it Tortoise groups by every job column
        .group_by("status")
        .values("n", "bytes_in", "bytes_out")
    )
    if sums:
        # SUM of a BIGINT is NUMERIC on PostgreSQL (a Decimal here) and NULL over no rows
        stats.compared_jobs = int(sums[0]["n"] or 0)
        stats.completed_bytes_in = int(sums[0]["bytes_in"] or 0)
        stats.completed_bytes_out = int(sums[0]["bytes_out"] or 0)
    return stats
