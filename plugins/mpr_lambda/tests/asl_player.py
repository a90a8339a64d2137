"""Play deploy/aws/statemachine.asl.json by calling the Lambda handlers in-process.

The Lambda runtime cannot run here, so this plays what Step Functions would
do, reading everything from the shipped files: the states, their
Parameters/ItemSelector/ResultSelector/ResultPath/OutputPath, Retry and
Catch come from the ASL; which handler serves which ``${...Arn}`` comes from
the template's DefinitionSubstitutions and each function's Handler. A handler
exception becomes what the Lambda service integration reports:
``{"Error": <exception class>, "Cause": <JSON with errorMessage>}``.

Each call gets a context with a fresh ``aws_request_id``, and ``$$.State``
carries the state's ``RetryCount`` as in Step Functions.

Only the ASL features the file uses are implemented (JSONPath reference
paths, Task with ``lambda:invoke``, inline Map, Fail); anything else raises.
"""

from __future__ import annotations

import copy
import importlib
import json
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags as {"Tag": value}."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def handlers_from_template(template_path: Path) -> dict[str, Callable[[dict, Any], Any]]:
    """``{"${PlanFunctionArn}": mpr_lambda.handler.plan, ...}`` from the SAM template."""
    template = yaml.load(template_path.read_text(), Loader=_CfnLoader)
    resources = template["Resources"]
    machine = next(r for r in resources.values() if r["Type"] == "AWS::Serverless::StateMachine")
    out = {}
    for placeholder, ref in machine["Properties"]["DefinitionSubstitutions"].items():
        logical = ref["GetAtt"].split(".")[0]
        module, _, func = resources[logical]["Properties"]["Handler"].rpartition(".")
        out["${" + placeholder + "}"] = getattr(importlib.import_module(module), func)
    return out


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda runtime's context object the handlers read (a new request id per call)."""

    function_name: str = "mpr"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class StepError(Exception):
    """A state failed with a Step Functions error ``name`` and ``cause``."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"{name}: {cause[:200]}")
        self.name, self.cause = name, cause


class Stopped(Exception):
    """The execution was stopped (StopExecution) between two states."""


@dataclass
class Run:
    """The outcome of playing an execution."""

    status: str  # SUCCEEDED | FAILED | ABORTED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    trace: list[tuple[str, str]] = field(default_factory=list)  # (state name, "ok"/"error:<name>"/"retry")


def _get(data: Any, path: str, ctx: dict) -> Any:
    if path.startswith("$$"):
        data, path = ctx, path[1:]
    if path == "$":
        return data
    assert path.startswith("$."), f"unsupported path {path!r}"
    for part in path[2:].split("."):
        if not isinstance(data, dict) or part not in data:
            raise StepError("States.Runtime", f"path {path!r} matched nothing")
        data = data[part]
    return data


def _template(tmpl: Any, data: Any, ctx: dict) -> Any:
    if isinstance(tmpl, dict):
        out = {}
        for key, value in tmpl.items():
            if key.endswith(".$"):
                out[key[:-2]] = copy.deepcopy(_get(data, value, ctx))
            else:
                out[key] = _template(value, data, ctx)
        return out
    if isinstance(tmpl, list):
        return [_template(v, data, ctx) for v in tmpl]
    return tmpl


def _set(data: Any, path: str | None, value: Any) -> Any:
    if path is None:
        return data
    if path == "$":
        return value
    assert path.startswith("$."), f"unsupported ResultPath {path!r}"
    out = copy.deepcopy(data)
    node = out
    parts = path[2:].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _matches(names: list[str], error: str) -> bool:
    return error in names or ("States.ALL" in names and error != "States.Runtime")


class Player:
    """Runs a state machine definition with Python callables as its Lambda functions."""

    def __init__(
        self,
        definition: dict,
        functions: dict[str, Callable[[dict, Any], Any]],
        *,
        is_running: Callable[[], bool] = lambda: True,
        max_workers: int = 2,
    ) -> None:
        self.definition = definition
        self.functions = functions
        self.is_running = is_running
        self.max_workers = max_workers
        self.trace: list[tuple[str, str]] = []

    def run(self, execution_input: dict, execution_id: str = "arn:aws:states:local:execution:x") -> Run:
        """Play the whole execution."""
        ctx = {"Execution": {"Input": execution_input, "Id": execution_id}}
        try:
            output = self._machine(self.definition, execution_input, ctx)
        except Stopped:
            return Run("ABORTED", trace=self.trace)
        except StepError as exc:
            return Run("FAILED", error=exc.name, cause=exc.cause, trace=self.trace)
        return Run("SUCCEEDED", output=output, trace=self.trace)

    def _machine(self, machine: dict, data: Any, ctx: dict) -> Any:
        name = machine["StartAt"]
        while True:
            if not self.is_running():
                raise Stopped()
            state = machine["States"][name]
            kind = state["Type"]
            if kind == "Fail":
                self.trace.append((name, "fail"))
                raise StepError(state.get("Error", "States.Fail"), state.get("Cause", ""))
            try:
                if kind == "Task":
                    data_out = self._with_retry(name, state, data, ctx, self._task)
                elif kind == "Map":
                    data_out = self._with_retry(name, state, data, ctx, self._map)
                else:
                    raise NotImplementedError(f"state type {kind} is not used by the MPR state machine")
            except StepError as exc:
                for catcher in state.get("Catch", []):
                    if _matches(catcher["ErrorEquals"], exc.name):
                        self.trace.append((name, f"caught:{exc.name}"))
                        data = _set(data, catcher.get("ResultPath", "$"), {"Error": exc.name, "Cause": exc.cause})
                        name = catcher["Next"]
                        break
                else:
                    raise
                continue
            data = data_out
            if state.get("End"):
                return data
            name = state["Next"]

    def _with_retry(self, name: str, state: dict, data: Any, ctx: dict, step: Callable) -> Any:
        counts: dict[int, int] = {}
        while True:
            try:
                # the context object's State, as Step Functions fills it for each attempt of the state
                state_ctx = {**ctx, "State": {"Name": name, "RetryCount": sum(counts.values())}}
                result = step(name, state, data, state_ctx)
                self.trace.append((name, "ok"))
                return result
            except StepError as exc:
                for i, retrier in enumerate(state.get("Retry", [])):
                    if _matches(retrier["ErrorEquals"], exc.name):
                        if counts.get(i, 0) < retrier.get("MaxAttempts", 3):
                            counts[i] = counts.get(i, 0) + 1
                            self.trace.append((name, f"retry:{exc.name}"))
                            break  # retried at once: the player does not sleep the backoff
                        raise
                else:
                    raise

    def _finish(self, state: dict, data: Any, result: Any, ctx: dict) -> Any:
        if "ResultSelector" in state:
            result = _template(state["ResultSelector"], result, ctx)
        out = _set(data, state.get("ResultPath", "$"), result)
        return _get(out, state.get("OutputPath", "$"), ctx)

    def _task(self, name: str, state: dict, data: Any, ctx: dict) -> Any:
        assert state["Resource"] == "arn:aws:states:::lambda:invoke", state["Resource"]
        params = _template(state["Parameters"], data, ctx)
        function = self.functions[params["FunctionName"]]
        payload = json.loads(json.dumps(params.get("Payload", {})))  # what crosses the wire is JSON
        try:
            returned = function(payload, LambdaContext(function_name=params["FunctionName"]))
        except Exception as exc:
            cause = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__)[-3:],
            }
            self.trace.append((name, f"error:{type(exc).__name__}"))
            raise StepError(type(exc).__name__, json.dumps(cause)) from exc
        result = {"StatusCode": 200, "Payload": json.loads(json.dumps(returned)), "ExecutedVersion": "$LATEST"}
        return self._finish(state, data, result, ctx)

    def _map(self, name: str, state: dict, data: Any, ctx: dict) -> Any:
        items = _get(data, state["ItemsPath"], ctx)
        processor = state["ItemProcessor"]
        workers = max(1, min(state.get("MaxConcurrency", 0) or 40, self.max_workers))

        def one(index: int) -> Any:
            item_ctx = {**ctx, "Map": {"Item": {"Index": index, "Value": items[index]}}}
            selected = _template(state["ItemSelector"], data, item_ctx) if "ItemSelector" in state else items[index]
            return self._machine(processor, selected, item_ctx)

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(one, i) for i in range(len(items))]
            results, first_error = [], None
            for future in futures:
                try:
                    results.append(future.result())
                except StepError as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return self._finish(state, data, results, ctx)
