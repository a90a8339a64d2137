"""Executor ``lambda``: run a job as an AWS Step Functions execution (Plan → Map → Concat → callback).

``submit`` starts an execution of ``deploy/aws/statemachine.asl.json`` with an
input that says what to encode and where to put it, and the URL to call back.
It carries no secret: the Lambdas read the callback secret from their own
environment or SSM. The job is finished by the signed callback
(``POST /api/jobs/{id}/callback``); ``poll`` (called by the poll loop of
``mpr serve``, :mod:`mpr.polling`) catches an execution that ended without
calling back, ``cancel`` stops the execution.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from mpr import jobs
from mpr.errors import ExecutorError, InvalidTransition
from mpr.executors import PollResult
from mpr.models import JobStatus
from mpr.storage import safe_key, scheme_of
from mpr_lambda.settings import LambdaSettings

if TYPE_CHECKING:
    from mpr.models import TranscodeJob
    from mpr.settings import Settings

log = logging.getLogger(__name__)

# Step Functions status -> what it means for a job that is still PROCESSING
_DEAD = {"FAILED", "TIMED_OUT", "ABORTED"}


def join_url(root: str, key: str) -> str:
    """``s3://bucket/prefix/`` + ``a/b.mp4`` → ``s3://bucket/prefix/a/b.mp4`` (key checked)."""
    return root.rstrip("/") + "/" + safe_key(key)


def work_root_url(settings: Settings, lambda_settings: LambdaSettings) -> str:
    """Where the chunk files of every job go: MPR_SFN_WORK_URL, else ``mpr-work/`` in MEDIA_OUT's bucket."""
    if lambda_settings.work_url:
        return lambda_settings.work_url
    bucket = settings.media_out.split("://", 1)[1].split("/", 1)[0]
    return f"{scheme_of(settings.media_out)}://{bucket}/mpr-work/"


def execution_input(job: TranscodeJob, settings: Settings, lambda_settings: LambdaSettings) -> dict[str, Any]:
    """The state machine input for ``job``: ids, storage URLs, preset snapshot, chunk size, callback URL.

    Raises ExecutorError when a media root is not in a bucket (Lambda cannot
    read this machine's disk).
    """
    for name, root in (("MEDIA_IN", settings.media_in), ("MEDIA_OUT", settings.media_out)):
        if scheme_of(root) not in ("s3", "gs"):
            raise ExecutorError(f"the lambda executor needs {name} in a bucket (s3://bucket/prefix/), got {root!r}")
    output_url = join_url(settings.media_out, job.output_path)
    work_root = work_root_url(settings, lambda_settings)
    return {
        "job_id": str(job.id),
        "attempt": int(job.attempts or 0),
        "source_url": join_url(settings.media_in, job.source_path),
        "source_key": job.source_path,
        "output_url": output_url,
        "output_key": job.output_path,
        "work_url": join_url(work_root, f"{job.id}/{int(job.attempts or 0)}") + "/",
        "preset": dict(job.preset_snapshot or {}),
        "trim_start": job.trim_start,
        "trim_end": job.trim_end,
        "chunk_seconds": float(job.chunk_seconds or lambda_settings.chunk_seconds or settings.chunk_seconds),
        "callback_url": f"{settings.public_url}/api/jobs/{job.id}/callback",
    }


class LambdaExecutor:
    """Runs jobs on AWS Step Functions + Lambda (see ``deploy/aws``)."""

    name = "lambda"
    chunked_trim = True  # its Plan step plans only the trim and every step gets it (mpr_lambda.handler)

    def __init__(self, settings: Settings, lambda_settings: LambdaSettings | None = None) -> None:
        self.settings = settings
        self.lambda_settings = lambda_settings or LambdaSettings.from_env()
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The boto3 Step Functions client (endpoint from MPR_SFN_ENDPOINT_URL, for moto/LocalStack)."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client(
                "stepfunctions", endpoint_url=self.lambda_settings.endpoint_url, region_name=self.lambda_settings.region
            )
        return self._client

    def _start(self, payload: dict[str, Any], name: str) -> str:
        arn = self.lambda_settings.require_arn()
        try:
            response = self.client.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
        except (ClientError, BotoCoreError) as exc:
            raise ExecutorError(f"could not start the Step Functions execution: {_describe(exc)}") from exc
        return response["executionArn"]

    async def submit(self, job: TranscodeJob) -> str:
        """Start an execution for ``job``, move it to PROCESSING, and return the execution ARN."""
        self.lambda_settings.require_arn()
        payload = execution_input(job, self.settings, self.lambda_settings)
        # Execution names are unique per state machine for 90 days: a retried job needs a new one.
        name = f"mpr-{job.id}-{int(job.attempts or 0)}-{uuid.uuid4().hex[:6]}"[:80]
        arn = await asyncio.to_thread(self._start, payload, name)
        try:
            await jobs.transition(
                job.id,
                JobStatus.PROCESSING,
                allowed_from=frozenset({JobStatus.PENDING}),
                message=f"started Step Functions execution {name}",
                external_id=arn,
            )
        except InvalidTransition:
            # cancelled while we were starting it: do not leave the execution running
            log.info("job %s left PENDING while its execution started; stopping %s", job.id, arn)
            await asyncio.to_thread(self._stop, arn, "job is no longer pending")
        job.external_id = arn
        return arn

    def _stop(self, arn: str, cause: str) -> None:
        try:
            self.client.stop_execution(executionArn=arn, error="MPR.Cancelled", cause=cause)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ExecutionDoesNotExist", "ExecutionAlreadyStopped"):  # already over: nothing to stop
                return
            raise ExecutorError(f"could not stop execution {arn}: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise ExecutorError(f"could not stop execution {arn}: {_describe(exc)}") from exc

    async def cancel(self, job: TranscodeJob) -> None:
        """Stop the job's execution (StopExecution); a finished or unknown execution is fine."""
        if not job.external_id:
            return
        await asyncio.to_thread(self._stop, job.external_id, "cancelled in MPR")

    async def discard(self, job: TranscodeJob) -> None:
        """Remove the chunk files a failed or cancelled run left under the work URL (``deleteJob``)."""
        if scheme_of(self.settings.media_out) not in ("s3", "gs"):
            return  # no execution ever ran, so nothing was written
        await asyncio.to_thread(self._remove_work, str(job.id))

    def _remove_work(self, job_id: str) -> None:
        from mpr.storage import get_storage

        storage = get_storage(work_root_url(self.settings, self.lambda_settings), self.settings)
        for info in list(storage.list(f"{safe_key(job_id)}/")):
            storage.delete(info.key)

    def describe(self, arn: str) -> dict[str, Any]:
        """DescribeExecution for ``arn`` (ExecutorError on failure)."""
        try:
            return self.client.describe_execution(executionArn=arn)
        except (ClientError, BotoCoreError) as exc:
            raise ExecutorError(f"could not describe execution {arn}: {_describe(exc)}") from exc

    async def poll(self, job: TranscodeJob) -> PollResult | None:
        """What the job's execution says: ``failed`` when it ended FAILED/TIMED_OUT/ABORTED, else ``running``.

        Such an execution will not call back (it was stopped, timed out, or
        failed without reaching NotifyFailure's callback), so the core's poll
        loop (:mod:`mpr.polling`, inside ``mpr serve``; also ``mpr lambda-poll``)
        fails the job with the execution's error, unless the job is already
        final. A SUCCEEDED execution has delivered its callback (NotifySuccess
        has no Catch). None when the job has no execution.
        """
        if not job.external_id:
            return None
        info = await asyncio.to_thread(self.describe, job.external_id)
        status = str(info.get("status") or "UNKNOWN")
        if status not in _DEAD:
            return PollResult("running", state=status)
        reason = ": ".join(x for x in (info.get("error"), info.get("cause")) if x) or status.lower()
        message = f"Step Functions execution {status.lower()} without calling back ({reason})"[:4000]
        return PollResult("failed", error=message, state=status)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
    return f"{exc.__class__.__name__}: {exc}"


async def poll_processing() -> dict[str, str]:
    """Poll every unfinished lambda job once (``mpr lambda-poll``); ``{job id: execution status}``.

    The same pass ``mpr serve`` runs every ``MPR_POLL_INTERVAL`` seconds
    (:func:`mpr.polling.poll_once`): jobs whose execution ended without calling
    back become FAILED (see :meth:`LambdaExecutor.poll`).
    """
    from mpr.polling import poll_once

    return await poll_once(["lambda"])
