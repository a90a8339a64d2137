"""A local fake of the Cloud Run Admin API v2 (jobs, executions, operations) that really runs tasks.

Only what ``google-cloud-run``'s REST transport calls for the gcp executor:

- ``POST /v2/{job}:run`` (RunJobRequest JSON) → a long-running Operation whose
  metadata is the new Execution; the execution's tasks are started as real
  processes (``python -m mpr_gcp.task`` by default) with ``CLOUD_RUN_JOB``,
  ``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``, ``CLOUD_RUN_TASK_COUNT``
  and ``CLOUD_RUN_TASK_ATTEMPT`` set, ``parallelism`` at a time, each task
  retried up to ``max_retries`` times when it exits non-zero;
- ``GET /v2/{execution}``, ``POST /v2/{execution}:cancel`` (SIGTERM to running
  tasks, SIGKILL to every process of the "container" after a grace period),
  ``GET /v2/{job}`` and ``GET /v2/{operation}``.

Responses follow the real JSON shapes (camelCase, enum names, RFC 3339
times, ``{"error": {"code", "message", "status"}}`` on errors), so the real
client parses them. Use it as a context manager::

    with FakeCloudRun(jobs=["projects/p/locations/r/jobs/mpr"], env={...}) as api:
        os.environ["MPR_GCP_API_ENDPOINT"] = api.url
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
_JOB = r"projects/[^/]+/locations/[^/]+/jobs/[^/:]+"
_ROUTES = [
    ("POST", re.compile(rf"^/v2/({_JOB}):run$"), "run_job"),
    ("GET", re.compile(rf"^/v2/({_JOB})$"), "get_job"),
    ("GET", re.compile(rf"^/v2/({_JOB}/executions/[^/:]+)$"), "get_execution"),
    ("POST", re.compile(rf"^/v2/({_JOB}/executions/[^/:]+):cancel$"), "cancel_execution"),
    ("GET", re.compile(r"^/v2/(projects/[^/]+/locations/[^/]+/operations/[^/:]+)$"), "get_operation"),
]
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")


def _ts(when: float | None) -> str | None:
    if when is None:
        return None
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to a task process and everything it started (a container going away)."""
    targets = [proc.pid, *_descendants(proc.pid)] if proc.poll() is None else _descendants(proc.pid)
    for pid in targets:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ApiError(Exception):
    """An error the fake answers with (Google's JSON error shape)."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass
class FakeTask:
    """One task of an execution: its attempts and their exit codes."""

    index: int
    attempt: int = 0
    state: str = "pending"  # pending, running, succeeded, failed, cancelled
    exit_codes: list[int] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    start_at: float = 0.0


@dataclass
class FakeExecution:
    """A run of a job: ``task_count`` tasks, ``parallelism`` at a time."""

    name: str
    job: str
    operation: str
    task_count: int
    parallelism: int
    max_retries: int
    timeout: float | None
    env: dict[str, str]
    args: list[str] | None
    tasks: list[FakeTask]
    command: list[str] = field(default_factory=list)
    base_env: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    cancelled: bool = False
    retried: int = 0
    peak_running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> dict[str, int]:
        states = [t.state for t in self.tasks]
        return {
            "runningCount": states.count("running"),
            "succeededCount": states.count("succeeded"),
            "failedCount": states.count("failed"),
            "cancelledCount": states.count("cancelled"),
        }

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            counts = self.counts()
            conditions = []
            if self.completed is not None:
                if self.cancelled:
                    conditions.append(
                        {
                            "type": "Completed",
                            "state": "CONDITION_FAILED",
                            "executionReason": "CANCELLED",
                            "message": "The execution was cancelled.",
                            "lastTransitionTime": _ts(self.completed),
                        }
                    )
                elif counts["failedCount"]:
                    failed = next(t for t in self.tasks if t.state == "failed")
                    conditions.append(
                        {
                            "type": "Completed",
                            "state": "CONDITION_FAILED",
                            "executionReason": "NON_ZERO_EXIT_CODE",
                            "message": f"Task {self.name.rsplit('/', 1)[1]}-task{failed.index} failed with message: "
                            f"The container exited with an error (exit code {failed.exit_codes[-1]}).",
                            "lastTransitionTime": _ts(self.completed),
                        }
                    )
                else:
                    conditions.append(
                        {
                            "type": "Completed",
                            "state": "CONDITION_SUCCEEDED",
                            "message": "Execution completed successfully.",
                            "lastTransitionTime": _ts(self.completed),
                        }
                    )
            elif self.cancelled:
                conditions.append(
                    {
                        "type": "Completed",
                        "state": "CONDITION_RECONCILING",
                        "executionReason": "CANCELLING",
                        "message": "The execution is being cancelled.",
                    }
                )
            else:
                conditions.append({"type": "Completed", "state": "CONDITION_RECONCILING"})
            body = {
                "name": self.name,
                "uid": self.name.rsplit("/", 1)[1],
                "job": self.job.rsplit("/", 1)[1],
                "parallelism": self.parallelism,
                "taskCount": self.task_count,
                "createTime": _ts(self.created),
                "startTime": _ts(self.started),
                "completionTime": _ts(self.completed),
                "reconciling": self.completed is None,
                "conditions": conditions,
                "retriedCount": self.retried,
                "template": {"maxRetries": self.max_retries},
                **counts,
            }
        return {k: v for k, v in body.items() if v is not None}

    def operation_json(self) -> dict[str, Any]:
        execution = self.to_json()
        op: dict[str, Any] = {"name": self.operation, "metadata": {"@type": EXECUTION_TYPE, **execution}}
        if self.completed is not None:
            op["done"] = True
            if self.cancelled:
                op["error"] = {"code": 1, "message": "The execution was cancelled."}
            elif execution["failedCount"]:
                op["error"] = {"code": 2, "message": execution["conditions"][0]["message"]}
            else:
                op["response"] = {"@type": EXECUTION_TYPE, **execution}
        return op


class FakeCloudRun:
    """The fake API server plus the task runner. ``url`` is what MPR_GCP_API_ENDPOINT points at."""

    def __init__(
        self,
        jobs: list[str],
        *,
        env: dict[str, str] | None = None,
        parallelism: int = 2,
        max_retries: int = 3,
        command: list[str] | None = None,
        grace_seconds: float = 5.0,
        start_seconds: float = 0.0,
        log_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.jobs = set(jobs)
        self.env = dict(env or {})
        self.parallelism = parallelism
        self.max_retries = max_retries
        self.command = command or [sys.executable, "-m", "mpr_gcp.task"]
        self.grace_seconds = grace_seconds
        self.start_seconds = start_seconds
        """Container start latency: an attempt's process starts this long after its slot is free
        (real Cloud Run takes seconds); a cancel meanwhile means it never starts."""
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="fake-cloud-run-"))
        self.executions: dict[str, FakeExecution] = {}
        self.operations: dict[str, FakeExecution] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    # --- lifecycle -------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeCloudRun:
        thread = threading.Thread(target=self._server.serve_forever, name="fake-cloud-run", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the server and kill every task still running."""
        self._closing.set()
        for execution in list(self.executions.values()):
            for task in execution.tasks:
                if task.proc is not None and task.proc.poll() is None:
                    _kill_tree(task.proc, signal.SIGKILL)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, name: str, timeout: float = 120.0) -> FakeExecution:
        """Block until execution ``name`` has completed (tests)."""
        deadline = time.monotonic() + timeout
        execution = self.executions[name]
        while execution.completed is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {name} did not complete in {timeout} s: {execution.to_json()}")
            time.sleep(0.05)
        return execution

    def task_log(self, name: str) -> str:
        """Every attempt's output of every task of execution ``name`` (for assertion messages)."""
        out = []
        for task in self.executions[name].tasks:
            for attempt, path in enumerate(task.logs):
                text = path.read_text(errors="replace") if path.exists() else ""
                out.append(f"--- task {task.index} attempt {attempt} ---\n{text}")
        return "\n".join(out)

    # --- API -------------------------------------------------------------

    def run_job(self, job: str, body: dict[str, Any]) -> dict[str, Any]:
        if job not in self.jobs:
            raise ApiError(404, "NOT_FOUND", f"Resource '{job}' was not found")
        overrides = body.get("overrides") or {}
        task_count = int(overrides.get("taskCount") or 1)
        env: dict[str, str] = {}
        args = None
        for container in overrides.get("containerOverrides") or []:
            for var in container.get("env") or []:
                env[var["name"]] = var.get("value", "")
            if container.get("args"):
                args = list(container["args"])
        timeout = overrides.get("timeout")
        location = job.rsplit("/jobs/", 1)[0]
        short = job.rsplit("/", 1)[1]
        name = f"{job}/executions/{short}-{uuid.uuid4().hex[:5]}"
        execution = FakeExecution(
            name=name,
            job=job,
            operation=f"{location}/operations/{uuid.uuid4()}",
            task_count=task_count,
            parallelism=self.parallelism,
            max_retries=self.max_retries,
            timeout=float(str(timeout).rstrip("s")) if timeout else None,
            env=env,
            args=args,
            tasks=[FakeTask(i) for i in range(task_count)],
            # the job's container as it was when the execution started
            command=list(self.command),
            base_env=dict(self.env),
        )
        self.executions[name] = execution
        self.operations[execution.operation] = execution
        runner = threading.Thread(target=self._run, args=(execution,), name=f"fake-run-{name}", daemon=True)
        runner.start()
        self._threads.append(runner)
        return execution.operation_json()

    def get_job(self, job: str, body: dict[str, Any]) -> dict[str, Any]:
        if job not in self.jobs:
            raise ApiError(404, "NOT_FOUND", f"Resource '{job}' was not found")
        return {
            "name": job,
            "template": {
                "parallelism": self.parallelism,
                "taskCount": 1,
                "template": {"maxRetries": self.max_retries, "containers": [{"image": "mpr-task"}]},
            },
        }

    def get_execution(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if name not in self.executions:
            raise ApiError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return self.executions[name].to_json()

    def cancel_execution(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        execution = self.executions.get(name)
        if execution is None:
            raise ApiError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        if execution.completed is not None:
            raise ApiError(400, "FAILED_PRECONDITION", f"Execution '{name}' has already completed")
        with execution.lock:
            execution.cancelled = True
            running = [t for t in execution.tasks if t.state == "running" and t.proc is not None]
        for task in running:
            _kill_tree(task.proc, signal.SIGTERM)
        return execution.operation_json()

    def get_operation(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if name not in self.operations:
            raise ApiError(404, "NOT_FOUND", f"Operation '{name}' was not found")
        return self.operations[name].operation_json()

    # --- task runner -----------------------------------------------------

    def _schedule(self, execution: FakeExecution, task: FakeTask) -> None:
        """Give ``task`` its slot: its process starts now, or after the container start latency."""
        task.proc = None
        if self.start_seconds > 0:
            task.start_at = time.monotonic() + self.start_seconds
            task.state = "running"  # the API counts a starting container as running
        else:
            self._start(execution, task)

    def _start(self, execution: FakeExecution, task: FakeTask) -> None:
        env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
        env.update(execution.base_env)
        env.update(execution.env)
        env.update(
            CLOUD_RUN_JOB=execution.job.rsplit("/", 1)[1],
            CLOUD_RUN_EXECUTION=execution.name.rsplit("/", 1)[1],
            CLOUD_RUN_TASK_INDEX=str(task.index),
            CLOUD_RUN_TASK_COUNT=str(execution.task_count),
            CLOUD_RUN_TASK_ATTEMPT=str(task.attempt),
        )
        log = self.log_dir / execution.name.rsplit("/", 1)[1] / f"task-{task.index}-attempt-{task.attempt}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as fh:
            task.proc = subprocess.Popen(
                [*execution.command, *(execution.args or [])],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        task.logs.append(log)
        task.started = time.monotonic()
        task.state = "running"

    def _run(self, execution: FakeExecution) -> None:
        pending = deque(execution.tasks)
        running: list[FakeTask] = []
        execution.started = time.time()
        term_sent_at: float | None = None
        while (pending or running) and not self._closing.is_set():
            with execution.lock:
                if execution.cancelled:
                    for task in pending:
                        task.state = "cancelled"
                    pending.clear()
                    term_sent_at = term_sent_at or time.monotonic()
                while pending and len(running) < execution.parallelism:
                    task = pending.popleft()
                    self._schedule(execution, task)
                    running.append(task)
                execution.peak_running = max(execution.peak_running, len(running))
            time.sleep(0.05)
            now = time.monotonic()
            for task in list(running):
                if task.proc is None:  # its container is still starting
                    with execution.lock:
                        if execution.cancelled:
                            task.state = "cancelled"
                            running.remove(task)
                        elif now >= task.start_at:
                            self._start(execution, task)
                    continue
                code = task.proc.poll()
                if code is None:
                    if (
                        term_sent_at is not None
                        and now - term_sent_at > self.grace_seconds
                        or execution.timeout
                        and now - task.started > execution.timeout
                    ):
                        _kill_tree(task.proc, signal.SIGKILL)
                    continue
                _kill_tree(task.proc, signal.SIGKILL)  # the container stops: nothing it started survives
                with execution.lock:
                    task.exit_codes.append(code)
                    running.remove(task)
                    if execution.cancelled:
                        task.state = "cancelled" if code else "succeeded"
                    elif code == 0:
                        task.state = "succeeded"
                    elif task.attempt < execution.max_retries:
                        task.attempt += 1
                        execution.retried += 1
                        self._schedule(execution, task)
                        running.append(task)
                    else:
                        task.state = "failed"
        with execution.lock:
            execution.completed = time.time()

    # --- HTTP ------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _dispatch(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw.strip() else {}
                    for verb, pattern, handler in _ROUTES:
                        match = pattern.match(path)
                        if verb == method and match:
                            api.requests.append((method, path, body))
                            status, payload = 200, getattr(api, handler)(match.group(1), body)
                            break
                    else:
                        raise ApiError(404, "NOT_FOUND", f"{method} {path} is not an API method")
                except ApiError as exc:
                    status, payload = (
                        exc.code,
                        {"error": {"code": exc.code, "message": exc.message, "status": exc.status}},
                    )
                except json.JSONDecodeError:
                    status, payload = (
                        400,
                        {"error": {"code": 400, "message": "invalid JSON body", "status": "INVALID_ARGUMENT"}},
                    )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

        return Handler
