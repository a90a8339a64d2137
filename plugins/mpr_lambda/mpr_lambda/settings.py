"""Settings of the Lambda executor, read from its own ``MPR_SFN_*`` and ``MPR_LAMBDA_*`` variables.

Used on both sides: by the executor inside MPR (state machine ARN, endpoint)
and by the handlers inside Lambda (chunk sizing, /tmp budget, the callback
secret, which the Lambdas get from their own environment or SSM Parameter
Store and never from the execution input).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mpr.errors import ConfigError
from mpr.settings import env_float as _float
from mpr.settings import env_url as _url


@dataclass(frozen=True)
class LambdaSettings:
    """Everything the Lambda executor and its handlers read from the environment."""

    state_machine_arn: str | None = None
    endpoint_url: str | None = None  # Step Functions API (moto in tests)
    region: str = "us-east-1"
    work_url: str | None = None  # where chunk files go; default s3://<output bucket>/mpr-work/
    chunk_seconds: float | None = None  # default: the job's, else MPR_CHUNK_SECONDS
    timeout: float = 900.0  # Lambda's hard limit per invocation
    min_speed: float = 0.5  # the slowest encode speed (x realtime) we plan for
    max_chunks: int = 400  # keeps the Concat payload (plan + results) under the 256 KB state limit
    tmp_dir: str = "/tmp"
    tmp_bytes: int = 512 * 1024 * 1024  # Lambda's default ephemeral storage
    callback_secret: str | None = None
    callback_secret_param: str | None = None  # SSM parameter holding the secret
    callback_timeout: float = 15.0
    progress_timeout: float = 3.0  # per chunk progress report; 0 turns the reports off

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LambdaSettings:
        """Build from ``env`` (default ``os.environ``); raise ConfigError naming a bad variable."""
        env = os.environ if env is None else env
        arn = (env.get("MPR_SFN_STATE_MACHINE_ARN") or "").strip() or None
        if arn and not arn.startswith("arn:"):
            raise ConfigError(
                f"MPR_SFN_STATE_MACHINE_ARN must be a state machine ARN (arn:aws:states:...), got {arn!r}"
            )
        work_url = (env.get("MPR_SFN_WORK_URL") or "").strip() or None
        if work_url and not work_url.startswith(("s3://", "gs://")):
            raise ConfigError(f"MPR_SFN_WORK_URL must be an s3:// URL, got {work_url!r}")
        arn_region = arn.split(":")[3] if arn and arn.count(":") >= 4 else ""
        region = (
            env.get("MPR_SFN_REGION")
            or arn_region
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        chunk = env.get("MPR_LAMBDA_CHUNK_SECONDS")
        return cls(
            state_machine_arn=arn,
            endpoint_url=_url(env, "MPR_SFN_ENDPOINT_URL"),
            region=region,
            work_url=work_url,
            chunk_seconds=_float(env, "MPR_LAMBDA_CHUNK_SECONDS", 0.0, 0.5) if chunk else None,
            timeout=_float(env, "MPR_LAMBDA_TIMEOUT", 900.0, 10.0),
            min_speed=_float(env, "MPR_LAMBDA_MIN_SPEED", 0.5, 0.01),
            max_chunks=int(_float(env, "MPR_LAMBDA_MAX_CHUNKS", 400, 1)),
            tmp_dir=(env.get("MPR_LAMBDA_TMP_DIR") or "/tmp"),
            tmp_bytes=int(_float(env, "MPR_LAMBDA_TMP_MB", 512, 64) * 1024 * 1024),
            callback_secret=(env.get("MPR_CALLBACK_SECRET") or None),
            callback_secret_param=(env.get("MPR_LAMBDA_CALLBACK_SECRET_PARAM") or None),
            callback_timeout=_float(env, "MPR_LAMBDA_CALLBACK_TIMEOUT", 15.0, 1.0),
            progress_timeout=_float(env, "MPR_LAMBDA_PROGRESS_TIMEOUT", 3.0, 0.0),
        )

    def require_arn(self) -> str:
        """The state machine ARN, or ConfigError saying how to set it."""
        if not self.state_machine_arn:
            raise ConfigError(
                "MPR_EXECUTOR=lambda needs MPR_SFN_STATE_MACHINE_ARN (the StateMachineArn output of deploy/aws/template.yaml)"
            )
        return self.state_machine_arn
