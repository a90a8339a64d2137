"""Helpers for running deploy/aws/statemachine.asl.json on the moto server (imported by the tests)."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

FUNCTIONS = {
    "PlanFunctionArn": "plan",
    "EncodeChunkFunctionArn": "encode",
    "ConcatFunctionArn": "concat",
    "CallbackFunctionArn": "callback",
    "FailureFunctionArn": "failure",
}

MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def deploy(server: Any, definition: dict, *, execute: bool | None = None) -> dict[str, str]:
    """Create the Lambdas (docker-free) and the state machine; return {"arn": ..., <placeholder>: fn arn}.

    ``execute=False``: moto only records executions (RUNNING until stopped) instead of
    interpreting them (default: as MOTO_CONFIG says, i.e. interpret). The setting picks a
    different moto backend, so it is made before the state machine is created.
    """
    config = MOTO_CONFIG if execute is None else {**MOTO_CONFIG, "stepfunctions": {"execute_state_machine": execute}}
    server.configure(config)
    suffix = uuid.uuid4().hex[:8]
    iam = server.client("iam")
    role = iam.create_role(
        RoleName=f"mpr-sfn-{suffix}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    lam = server.client("lambda")
    arns: dict[str, str] = {}
    for placeholder, short in FUNCTIONS.items():
        name = f"mpr-{short}-{suffix}"
        fn = lam.create_function(
            FunctionName=name, Runtime="python3.12", Role=role, Handler="handler.handler", Code={"ZipFile": _zip()}
        )
        arns[placeholder] = fn["FunctionArn"]
    text = json.dumps(definition)
    for placeholder, arn in arns.items():
        text = text.replace("${" + placeholder + "}", arn)
    assert "${" not in text, "every DefinitionSubstitution is known"
    sfn = server.client("stepfunctions")
    arns["arn"] = sfn.create_state_machine(name=f"mpr-{suffix}", definition=text, roleArn=role)["stateMachineArn"]
    arns["role"] = role
    return arns


def queue_results(server: Any, *results: Any) -> None:
    """Queue what the next docker-free Lambda invocations return (FIFO, shared by all functions)."""
    import httpx

    body = {"results": [r if isinstance(r, str) else json.dumps(r) for r in results], "region": "us-east-1"}
    httpx.post(f"{server.url}/moto-api/static/lambda-simple/response", json=body, timeout=10).raise_for_status()


def wait(server: Any, execution_arn: str, timeout: float = 60.0) -> dict:
    """Poll DescribeExecution until the execution is no longer RUNNING."""
    sfn = server.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        info = sfn.describe_execution(executionArn=execution_arn)
        if info["status"] != "RUNNING" or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def history(server: Any, execution_arn: str) -> list[dict]:
    """Every history event of the execution."""
    sfn = server.client("stepfunctions")
    events: list[dict] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def entered(events: list[dict]) -> list[str]:
    """Names of the states entered, in order."""
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
