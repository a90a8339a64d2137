"""The ``gcp`` executor: one Cloud Run Jobs execution per MPR job, one task per chunk.

``submit`` plans the chunks (the same keyframe plan the local chunker uses),
then calls ``run_v2.JobsClient.run_job`` for the job named by
``MPR_GCP_JOB`` with overrides: ``task_count`` (chunks + 1 concat task, see
:mod:`mpr_gcp.spec`) and the container env that tells each task what to do.
The execution name is the job's external id. Completion arrives through the
signed callback (``POST /api/jobs/{id}/callback``) sent by the last task;
``poll`` catches an execution that ended without calling back, ``cancel``
cancels the execution.

Fail fast: once a task failed for good (its ``failed`` callback failed the
job, or its ``failed.json`` marker has been stored for
:data:`MARKER_GRACE` seconds without one), ``watch``/``poll`` fail the job
with that task's error and cancel the execution, so the chunk tasks still
queued never start (the tasks also check the marker themselves, see
:mod:`mpr_gcp.task`).

The client uses the REST transport (plain HTTPS, so a local fake can stand
in) with Application Default Credentials, or anonymous credentials when
``MPR_GCP_API_ENDPOINT`` points at a local server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mpr import events, jobs
from mpr.errors import ConfigError, ExecutorError, InvalidTransition, MprError
from mpr.models import FINAL_STATUSES, ChunkStatus, JobChunk, JobStatus, TranscodeJob
from mpr.presets import SOURCE_CONTAINER, Preset
from mpr_gcp.settings import LOCAL_HOSTS, GcpSettings, get_gcp_settings
from mpr_gcp.spec import TaskSpec

if TYPE_CHECKING:
    from mpr.chunker.plan import Chunk
    from mpr.settings import Settings

log = logging.getLogger(__name__)

API_TIMEOUT = 60.0
MARKER_GRACE = 10.0
"""Seconds a failure marker may wait for its task's ``failed`` callback before ``poll`` fails the job itself."""
CANCEL_DELAY = 2.0
"""Seconds ``watch`` waits after a failed callback before cancelling the execution (the failed task exits first)."""


def can_chunk(preset: Preset, job: TranscodeJob) -> bool:
    """True when the job can be fanned out per chunk: it re-encodes video.

    A trimmed job is chunked too (its plan covers only the trim), except with
    a preset that changes the frame rate: its fps filter places frames
    exactly like one pass only at cuts on its own grid, which a trim start
    does not give (see :func:`mpr.chunker.encode.chunk_command`).
    """
    trimmed = job.trim_start is not None or job.trim_end is not None
    return (
        bool(job.chunked)
        and preset.video_codec not in (None, "", "copy")
        and preset.container != SOURCE_CONTAINER
        and not (trimmed and preset.fps)
    )


class GcpExecutor:
    """Runs jobs as Cloud Run Jobs executions (see the module docstring)."""

    name = "gcp"
    chunked_trim = True  # plans only the trim; every task gets it (MPR_GCP_TRIM, see mpr_gcp.task)

    def __init__(self, settings: Settings, gcp: GcpSettings | None = None) -> None:
        self.settings = settings
        self.gcp = gcp or get_gcp_settings()
        self._jobs_client: Any = None
        self._executions_client: Any = None
        self._watchers: set[asyncio.Task] = set()

    # --- clients ---------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        from google.api_core.client_options import ClientOptions

        kwargs: dict[str, Any] = {"transport": "rest"}
        if self.gcp.api_endpoint:
            kwargs["client_options"] = ClientOptions(api_endpoint=self.gcp.api_endpoint)
        if self.gcp.endpoint_is_local:
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        return kwargs

    @property
    def jobs_client(self) -> Any:
        """``run_v2.JobsClient`` (REST), built on first use."""
        if self._jobs_client is None:
            from google.cloud import run_v2

            self._jobs_client = run_v2.JobsClient(**self._client_kwargs())
        return self._jobs_client

    @property
    def executions_client(self) -> Any:
        """``run_v2.ExecutionsClient`` (REST), built on first use."""
        if self._executions_client is None:
            from google.cloud import run_v2

            self._executions_client = run_v2.ExecutionsClient(**self._client_kwargs())
        return self._executions_client

    # --- planning --------------------------------------------------------

    def plan(self, job: TranscodeJob) -> tuple[list[Chunk], float]:
        """The chunk plan and the video's first-frame offset; ``([], 0)`` for a single-pass job.

        Reads the source through a presigned URL of it when MEDIA_IN gives one
        (:func:`mpr_gcp.task.source_input`: streamed, nothing written to disk), else a local copy.
        A trimmed job's plan covers only its trim; MprError when the trim holds no video frame.
        """
        from mpr.chunker.plan import index_video, plan_from_index
        from mpr.storage import media_in
        from mpr_gcp.task import source_input

        preset = Preset.from_dict(job.preset_snapshot or {})
        if not can_chunk(preset, job):
            return [], 0.0
        with source_input(media_in(self.settings), job.source_path) as source:
            index = index_video(source)
        if index is None:
            return [], 0.0
        seconds = job.chunk_seconds or self.settings.chunk_seconds
        trim = {"start": job.trim_start or None, "end": job.trim_end}
        try:
            chunks = plan_from_index(index, seconds, **trim)
            if len(chunks) > self.gcp.max_chunks:
                # keep the execution within MPR_GCP_MAX_CHUNKS tasks (and its env overrides small): longer chunks
                seconds *= math.ceil(len(chunks) / self.gcp.max_chunks)
                chunks = plan_from_index(index, seconds, **trim)
        except ValueError as exc:  # a trim that holds no video frame
            raise MprError(str(exc)) from None
        # as the local pipeline: the concat shifts video when the source's first frame is not at 0
        video_start = max(0.0, index.frame_us[0] / 1_000_000) if chunks and chunks[0].start == 0 else 0.0
        return chunks, video_start

    def task_spec(self, job: TranscodeJob, chunks: list[Chunk], video_start: float = 0.0) -> TaskSpec:
        """What the tasks of ``job``'s execution are told (container env overrides)."""
        return TaskSpec(
            job_id=str(job.id),
            source_key=job.source_path,
            output_key=job.output_path,
            preset=dict(job.preset_snapshot or {}),
            callback_url=f"{self.settings.public_url}/api/jobs/{job.id}/callback",
            chunks=tuple(chunks),
            video_start=video_start,
            trim_start=job.trim_start,
            trim_end=job.trim_end,
            work_prefix=self.gcp.work_prefix,
            max_retries=self.gcp.max_retries,
            poll_seconds=self.gcp.poll_seconds,
            media={"MEDIA_IN": self.settings.media_in, "MEDIA_OUT": self.settings.media_out},
        )

    def run_request(self, spec: TaskSpec) -> Any:
        """The ``RunJobRequest`` for ``spec``: task_count and the container env overrides."""
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        Overrides = run_v2.RunJobRequest.Overrides
        container = Overrides.ContainerOverride(
            env=[run_v2.EnvVar(name=k, value=v) for k, v in sorted(spec.to_env().items())],
        )
        if self.gcp.container:
            container.name = self.gcp.container
        overrides = Overrides(task_count=spec.task_count, container_overrides=[container])
        if self.gcp.task_timeout:
            overrides.timeout = duration_pb2.Duration(seconds=self.gcp.task_timeout)
        return run_v2.RunJobRequest(name=self.gcp.require_job(), overrides=overrides)

    def check_callback_settings(self) -> None:
        """ConfigError unless the tasks can call back: a secret, and a public URL Cloud Run can reach."""
        if not self.settings.callback_secret:
            raise ConfigError("MPR_EXECUTOR=gcp needs MPR_CALLBACK_SECRET (the Cloud Run job signs its callbacks)")
        host = urlsplit(self.settings.public_url).hostname or ""
        if not self.gcp.endpoint_is_local and (host in LOCAL_HOSTS or host.startswith("127.")):
            raise ConfigError(
                f"MPR_PUBLIC_URL is {self.settings.public_url}, which Cloud Run tasks cannot reach: "
                "set it to this server's public https URL"
            )

    # --- Executor protocol -----------------------------------------------

    async def submit(self, job: TranscodeJob) -> str | None:
        """Start a Cloud Run execution for ``job``; return its name (``.../executions/E``).

        Moves the job to PROCESSING with the execution name as external id.
        Raises ExecutorError when the source cannot be planned or the API refuses.
        """
        self.gcp.require_job()
        self.check_callback_settings()
        try:
            chunks, video_start = await asyncio.to_thread(self.plan, job)
        except MprError as exc:
            raise ExecutorError(f"cannot plan chunks of {job.source_path}: {exc}") from exc
        spec = self.task_spec(job, chunks, video_start)
        request = self.run_request(spec)
        # a retry keeps the chunks a previous execution finished, but not its failure marker
        await asyncio.to_thread(self._remove_scratch, str(job.id), "failed.json")
        try:
            operation = await asyncio.to_thread(self.jobs_client.run_job, request=request, timeout=API_TIMEOUT)
        except Exception as exc:  # google.api_core errors, transport errors, bad credentials
            raise ExecutorError(
                f"Cloud Run refused to run {self.gcp.job} for job {job.id}: {_api_message(exc)}"
            ) from exc
        name = operation.metadata.name if operation.metadata is not None else ""
        if not name:
            raise ExecutorError(f"Cloud Run returned no execution for job {job.id}")
        log.info("job %s: Cloud Run execution %s with %d task(s)", job.id, name, spec.task_count)
        try:
            await jobs.transition(
                job.id,
                JobStatus.PROCESSING,
                allowed_from=frozenset({JobStatus.PENDING}),
                external_id=name,
                message=f"Cloud Run execution {name.rsplit('/', 1)[-1]} ({spec.task_count} tasks)",
            )
        except InvalidTransition:
            current = await jobs.get_job(job.id)
            if current.status is JobStatus.CANCELLED:  # cancelled while the API call was in flight
                await self._cancel_execution(name)
            job.external_id = name
            return name
        job.external_id = name
        if spec.chunks:
            await self._chunk_rows(job, spec)
        if self.gcp.watch_seconds:
            watcher = asyncio.get_running_loop().create_task(self.watch(job.id, name, spec), name=f"gcp-watch-{job.id}")
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
        return name

    async def _chunk_rows(self, job: TranscodeJob, spec: TaskSpec) -> None:
        """One QUEUED JobChunk row per planned chunk (a retry starts from a fresh set of rows)."""
        await JobChunk.filter(job_id=job.id).delete()
        await JobChunk.bulk_create(
            [JobChunk(job_id=job.id, index=c.index, start=c.start, end=c.end, worker="cloud-run") for c in spec.chunks]
        )

    async def watch(self, job_id: Any, name: str, spec: TaskSpec) -> None:
        """While the job runs: mark chunks DONE as their objects appear, report progress, then ``poll``.

        Runs in the server's event loop for each submitted job, every
        ``MPR_GCP_WATCH_SECONDS``; stops when the job is final (or was
        resubmitted), after cancelling the execution of a job that FAILED
        while it ran (fail fast: the remaining tasks are wasted compute). A server restart loses it: ``mpr gcp-poll`` covers that.
        """
        from mpr.ffmpeg import output_extension
        from mpr.storage import media_out

        ext = output_extension(Preset.from_dict(spec.preset), spec.source_key)
        keys = {spec.chunk_key(c.index, ext): c.index for c in spec.chunks}
        done: set[int] = set()
        errors = 0
        while errors < 5:
            await asyncio.sleep(self.gcp.watch_seconds)
            try:
                job = await TranscodeJob.get_or_none(id=job_id)
                if job is None or job.external_id != name:
                    return
                if job.status in FINAL_STATUSES:
                    if job.status is JobStatus.FAILED:
                        # a task's failed callback: the job cannot complete, stop the tasks still to run,
                        # once the failed task itself had time to exit (its failure is what the execution shows)
                        failed_for = (jobs.now() - job.finished_at).total_seconds() if job.finished_at else CANCEL_DELAY
                        if failed_for < CANCEL_DELAY:
                            continue
                        await self._cancel_execution(name, why="job failed")
                    return
                if keys:
                    stored = await asyncio.to_thread(
                        lambda: {o.key for o in media_out(self.settings).list(spec.scratch + "/")}
                    )
                    new = sorted(keys[k] for k in stored if k in keys and keys[k] not in done)
                    if new:
                        await JobChunk.filter(job_id=job_id, index__in=new).update(
                            status=ChunkStatus.DONE, finished_at=jobs.now()
                        )
                        for index in new:
                            await events.emit(
                                events.JobEvent(
                                    job_id=str(job_id), type=events.CHUNK_DONE, chunk_index=index, worker="cloud-run"
                                )
                            )
                        done.update(new)
                    # the concat after the last chunk is the remaining few percent
                    if not await jobs.update_progress(job_id, 95.0 * len(done) / len(keys)):
                        return
                if await self.poll(job) is not JobStatus.PROCESSING:
                    # over: poll() failed/cancelled the job if no callback came within the grace period
                    job = await TranscodeJob.get_or_none(id=job_id)
                    if job is None or job.status in FINAL_STATUSES:
                        return
                errors = 0
            except Exception as exc:  # a DB or API hiccup: try again next round
                errors += 1
                log.debug("job %s: watch round failed: %s", job_id, exc, exc_info=True)

    def watching(self, job: TranscodeJob) -> bool:
        """True while this process's :meth:`watch` follows ``job``: the core's poll loop then leaves it alone.

        A job whose watcher is gone (server restarted, submitted by ``mpr transcode --queue``,
        ``MPR_GCP_WATCH_SECONDS=0``) is polled by the loop instead.
        """
        name = f"gcp-watch-{job.id}"
        return any(task.get_name() == name and not task.done() for task in self._watchers)

    async def cancel(self, job: TranscodeJob) -> None:
        """Cancel the job's execution (tasks get SIGTERM) and remove its scratch objects."""
        if job.external_id:
            await self._cancel_execution(job.external_id)
        await asyncio.to_thread(self._remove_scratch, str(job.id))

    async def discard(self, job: TranscodeJob) -> None:
        """Remove the scratch objects of a job being deleted (``deleteJob``)."""
        await asyncio.to_thread(self._remove_scratch, str(job.id))

    async def poll(self, job: TranscodeJob) -> JobStatus | None:
        """Read the execution; fail or cancel a job whose execution ended without a callback.

        Returns the execution's state as a JobStatus (PROCESSING while it
        runs), or None when the job has no execution.
        """
        if not job.external_id:
            return None
        try:
            execution = await asyncio.to_thread(
                self.executions_client.get_execution, name=job.external_id, timeout=API_TIMEOUT
            )
        except Exception as exc:
            raise ExecutorError(f"cannot read Cloud Run execution {job.external_id}: {_api_message(exc)}") from exc
        state = execution_status(execution)
        if state is JobStatus.PROCESSING and job.status is JobStatus.PROCESSING:
            await self._fail_from_marker(job)
        if state is JobStatus.PROCESSING or job.status in FINAL_STATUSES:
            return state
        finished = execution.completion_time
        grace = self.gcp.callback_grace
        age = (jobs.now() - finished).total_seconds() if isinstance(finished, dt.datetime) else grace
        try:
            if state is JobStatus.FAILED:
                reason = next((c.message for c in execution.conditions if c.type_ == "Completed"), "") or "task failed"
                error = f"Cloud Run execution failed: {reason}"
                await jobs.transition(job.id, JobStatus.FAILED, error=error, message=error)
            elif state is JobStatus.CANCELLED:
                await jobs.transition(job.id, JobStatus.CANCELLED, message="Cloud Run execution was cancelled")
            elif age >= grace:
                error = "Cloud Run execution finished but never called back (check MPR_PUBLIC_URL and the secret)"
                await jobs.transition(job.id, JobStatus.FAILED, error=error, message=error)
        except InvalidTransition:
            pass  # the callback won the race
        return state

    # --- helpers ---------------------------------------------------------

    async def _fail_from_marker(self, job: TranscodeJob) -> bool:
        """A task failed for good but its callback has not come: fail the job with its error, cancel the rest.

        True when the job was failed here. Waits :data:`MARKER_GRACE` seconds
        after the marker was stored, so the callback (with its metrics) wins
        in the normal case.
        """
        marker = await asyncio.to_thread(self._read_failure_marker, str(job.id))
        if marker is None:
            return False
        error, stored = marker
        if time.time() - stored < MARKER_GRACE:
            return False
        try:
            await jobs.transition(
                job.id, JobStatus.FAILED, allowed_from=frozenset({JobStatus.PROCESSING}), error=error, message=error
            )
        except InvalidTransition:
            return False  # the callback (or a cancel) won the race
        log.warning("job %s failed from its failure marker (no callback yet): %s", job.id, error)
        if job.external_id:
            await self._cancel_execution(job.external_id, why="job failed")
        return True

    def _read_failure_marker(self, job_id: str) -> tuple[str, float] | None:
        """``(error, stored at)`` of the job's ``failed.json`` marker, or None (runs in a worker thread)."""
        from mpr.errors import NotFound
        from mpr.storage import media_out

        storage = media_out(self.settings)
        for info in list(storage.list(f"{self.gcp.work_prefix}/{job_id}/")):
            if not info.key.endswith("/failed.json"):
                continue
            try:
                src = storage.open_read(info.key)
                try:
                    data = json.loads(src.read(64 * 1024) or b"{}")
                finally:
                    src.close()
            except NotFound:
                return None  # removed meanwhile (a retry)
            except ValueError:
                data = {}
            error = data.get("error") if isinstance(data, dict) else None
            return (str(error or "a Cloud Run task failed")[:4000], info.mtime or time.time())
        return None

    async def _cancel_execution(self, name: str, why: str = "") -> None:
        from google.api_core import exceptions as gexc

        if why:
            log.info("cancelling Cloud Run execution %s: %s", name, why)
        try:
            await asyncio.to_thread(self.executions_client.cancel_execution, name=name, timeout=API_TIMEOUT)
        except (gexc.FailedPrecondition, gexc.NotFound, gexc.BadRequest) as exc:
            log.info("execution %s not cancelled (already finished?): %s", name, _api_message(exc))
        except Exception as exc:
            raise ExecutorError(f"cannot cancel Cloud Run execution {name}: {_api_message(exc)}") from exc

    def _remove_scratch(self, job_id: str, name: str = "") -> None:
        """Delete the job's scratch objects (only those whose key ends with ``name`` when given)."""
        from mpr.storage import media_out

        storage = media_out(self.settings)
        try:
            for info in list(storage.list(f"{self.gcp.work_prefix}/{job_id}/")):
                if info.key.endswith(name):
                    storage.delete(info.key)
        except MprError as exc:
            log.warning("job %s: scratch objects not removed: %s", job_id, exc)


def execution_status(execution: Any) -> JobStatus:
    """Map a ``run_v2.Execution`` to a job status (PROCESSING while it has not completed)."""
    if not execution.completion_time:
        return JobStatus.PROCESSING
    if execution.cancelled_count or any(
        c.type_ == "Completed" and c.execution_reason.name == "CANCELLED" for c in execution.conditions
    ):
        return JobStatus.CANCELLED
    if execution.failed_count:
        return JobStatus.FAILED
    return JobStatus.COMPLETED


def _api_message(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.splitlines()[0][:500]
