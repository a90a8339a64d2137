"""The real deploy/aws/statemachine.asl.json interpreted by moto's Step Functions (docker-free Lambdas).

moto's docker-free Lambda cannot run handler code: each invocation returns the
next queued result or echoes its payload. That is enough to prove the ASL's
wiring: the Map fans out one iteration per plan item, Retry re-invokes a
failing step, Catch routes any failure to NotifyFailure with the error.
"""

from __future__ import annotations

import copy
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sfn_helpers import deploy, entered, history, queue_results, wait


def job_input(**over) -> dict:
    job_id = str(uuid.uuid4())
    base = {
        "job_id": job_id,
        "attempt": 0,
        "source_url": "s3://in/clip.mp4",
        "source_key": "clip.mp4",
        "output_url": "s3://out/clip.mp4",
        "output_key": "clip.mp4",
        "work_url": f"s3://out/mpr-work/{job_id}/0/",
        "preset": {"name": "h264", "container": "mp4", "video_codec": "libx264"},
        "trim_start": None,
        "trim_end": None,
        "chunk_seconds": 1.0,
        "callback_url": f"http://127.0.0.1:1/api/jobs/{job_id}/callback",
    }
    return {**base, **over}


PLAN = {
    "items": [
        {"kind": "video", "index": 0, "start": 0.0, "end": 1.0, "frames": 25},
        {"kind": "video", "index": 1, "start": 1.0, "end": 2.0, "frames": 25},
        {"kind": "video", "index": 2, "start": 2.0, "end": 3.0, "frames": 25},
        {"kind": "audio"},
    ],
    "info": {"ext": "mp4", "duration": 3.0, "mode": "chunked", "video_start": 0.0},
}


def test_state_machine_is_accepted_by_moto(moto_server, asl) -> None:
    arns = deploy(moto_server, asl)
    sfn = moto_server.client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=arns["arn"])
    assert described["status"] == "ACTIVE"
    assert json.loads(described["definition"])["StartAt"] == "Plan"


def test_map_fans_out_one_iteration_per_plan_item(moto_server, asl) -> None:
    arns = deploy(moto_server, asl)
    data = job_input()
    queue_results(moto_server, PLAN)  # the Plan Lambda's answer; later Lambdas echo their payload
    sfn = moto_server.client("stepfunctions")
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(data))
    info = wait(moto_server, run["executionArn"])
    events = history(moto_server, run["executionArn"])
    assert info["status"] == "SUCCEEDED", info
    names = entered(events)
    assert names[0] == "Plan" and names[-1] == "NotifySuccess"
    assert names.count("EncodeChunk") == len(PLAN["items"])
    assert "NotifyFailure" not in names
    assert sum(1 for e in events if e["type"] == "MapIterationSucceeded") == len(PLAN["items"])

    # NotifySuccess echoes its payload: the job, the Concat result and the execution id
    out = json.loads(info["output"])
    assert out["job"] == data and out["execution"] == run["executionArn"]
    concat_payload = out["result"]  # Concat echoed {"job", "plan", "encoded"}
    assert concat_payload["plan"]["items"] == PLAN["items"]
    encoded = concat_payload["encoded"]
    assert [e["item"] for e in encoded] == PLAN["items"]  # Map keeps item order
    assert all(e["job"] == data for e in encoded)  # each iteration gets the execution input


def test_max_concurrency_bounds_the_fan_out(asl) -> None:
    encode = asl["States"]["Encode"]
    assert encode["Type"] == "Map" and 1 <= encode["MaxConcurrency"] <= 40
    assert encode["ItemsPath"] == "$.plan.items"


def _throttle_retrier(state: dict) -> dict:
    return next(r for r in state["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"])


def test_every_lambda_task_retries_throttling_and_catches_into_failure(asl) -> None:
    states = dict(asl["States"])
    states.update(asl["States"]["Encode"]["ItemProcessor"]["States"])
    for name in ("Plan", "EncodeChunk", "Concat"):
        retrier = _throttle_retrier(states[name])
        assert retrier["MaxAttempts"] >= 3 and retrier["BackoffRate"] >= 1.5
    for name in ("Plan", "Encode", "Concat"):
        catch = states[name]["Catch"]
        assert catch == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}]
    assert states["NotifyFailure"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"


# moto's docker-free Lambda answers a > 6 MB result with a real function error
# (FunctionError "Unhandled", errorType Function.ResponseSizeTooLarge): a queued
# BIG result is how a step fails here.
BIG = "x" * 6_000_100
ONE = {**PLAN, "items": PLAN["items"][:1]}
CHUNK_DONE = {"kind": "video", "index": 0, "url": "s3://out/w/chunk_00000.mp4", "size": 1}


def _failure_input(events: list[dict]) -> dict:
    return next(
        json.loads(e["stateEnteredEventDetails"]["input"])
        for e in events
        if e.get("stateEnteredEventDetails", {}).get("name") == "NotifyFailure"
    )


def test_failed_chunk_is_caught_and_reported_to_the_failure_callback(moto_server, asl) -> None:
    arns = deploy(moto_server, asl)
    queue_results(moto_server, ONE, BIG)  # Plan, then the one chunk fails (not a retried error)
    sfn = moto_server.client("stepfunctions")
    data = job_input()
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(data))
    info = wait(moto_server, run["executionArn"])
    events = history(moto_server, run["executionArn"])
    assert info["status"] == "FAILED"
    assert info.get("error") == "MPR.JobFailed"
    names = entered(events)
    assert names[-2:] == ["NotifyFailure", "Failed"] and "Concat" not in names
    assert sum(1 for e in events if e["type"] == "TaskFailed") == 1  # not retried
    failure_input = _failure_input(events)
    assert failure_input["error"]["Error"] == "Function.ResponseSizeTooLarge"
    assert "errorMessage" in json.loads(failure_input["error"]["Cause"])
    assert failure_input["job_id"] == data["job_id"]  # NotifyFailure's payload is built from this input


def test_failed_plan_goes_straight_to_failure_callback(moto_server, asl) -> None:
    arns = deploy(moto_server, asl)
    queue_results(moto_server, BIG)
    sfn = moto_server.client("stepfunctions")
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(job_input()))
    info = wait(moto_server, run["executionArn"])
    names = entered(history(moto_server, run["executionArn"]))
    assert info["status"] == "FAILED"
    assert names == ["Plan", "NotifyFailure", "Failed"]


def _retry_variant(asl: dict, interval: int = 1) -> dict:
    """The shipped ASL with the encoder's throttling retrier also matching the error moto can raise.

    moto's docker-free Lambda cannot throttle; its only function error is
    Function.ResponseSizeTooLarge. Adding that name to the very retrier the
    shipped file defines (same MaxAttempts and BackoffRate; a 1 s interval to
    keep the test short) exercises the retry path for real.
    """
    variant = copy.deepcopy(asl)
    task = variant["States"]["Encode"]["ItemProcessor"]["States"]["EncodeChunk"]
    retrier = _throttle_retrier(task)
    retrier["ErrorEquals"] = [*retrier["ErrorEquals"], "Function.ResponseSizeTooLarge"]
    retrier["IntervalSeconds"] = interval
    retrier["MaxDelaySeconds"] = interval
    return variant


def test_retry_reinvokes_a_failing_chunk_until_it_succeeds(moto_server, asl) -> None:
    arns = deploy(moto_server, _retry_variant(asl))
    queue_results(moto_server, ONE, BIG, BIG, CHUNK_DONE)  # throttled twice, then fine
    sfn = moto_server.client("stepfunctions")
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(job_input()))
    info = wait(moto_server, run["executionArn"])
    events = history(moto_server, run["executionArn"])
    names = entered(events)
    assert info["status"] == "SUCCEEDED", info
    assert sum(1 for e in events if e["type"] == "TaskFailed") == 2
    assert "NotifyFailure" not in names and names[-1] == "NotifySuccess"
    out = json.loads(info["output"])
    assert out["result"]["encoded"] == [CHUNK_DONE]


def test_retries_are_bounded_then_caught(moto_server, asl) -> None:
    attempts = _throttle_retrier(asl["States"]["Encode"]["ItemProcessor"]["States"]["EncodeChunk"])["MaxAttempts"]
    arns = deploy(moto_server, _retry_variant(asl))
    queue_results(moto_server, ONE, *[BIG] * (attempts + 1))
    sfn = moto_server.client("stepfunctions")
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(job_input()))
    info = wait(moto_server, run["executionArn"])
    events = history(moto_server, run["executionArn"])
    assert info["status"] == "FAILED"
    assert sum(1 for e in events if e["type"] == "TaskFailed") == attempts + 1
    assert entered(events)[-2:] == ["NotifyFailure", "Failed"]
    assert _failure_input(events)["error"]["Error"] == "Function.ResponseSizeTooLarge"


def test_unreachable_mpr_fails_the_execution_after_callback_retries(moto_server, asl) -> None:
    # The success callback keeps failing: the execution ends FAILED, which the executor's poll() reports.
    variant = copy.deepcopy(asl)
    retrier = variant["States"]["NotifySuccess"]["Retry"][0]
    retrier.update(IntervalSeconds=1, MaxAttempts=1)
    arns = deploy(moto_server, variant)
    queue_results(moto_server, ONE, CHUNK_DONE, {"output_key": "clip.mp4"}, BIG, BIG)
    sfn = moto_server.client("stepfunctions")
    run = sfn.start_execution(stateMachineArn=arns["arn"], input=json.dumps(job_input()))
    info = wait(moto_server, run["executionArn"])
    events = history(moto_server, run["executionArn"])
    assert info["status"] == "FAILED"
    assert entered(events)[-1] == "NotifySuccess"
    assert sum(1 for e in events if e["type"] == "TaskFailed") == 2
