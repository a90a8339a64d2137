"""The huey queue: storage choice, priorities, settings, hook registration."""

from __future__ import annotations

import threading

import click
import pytest
from huey import PriorityRedisHuey, SqliteHuey
from mpr_local.queue import JobQueue, get_queue, make_huey
from mpr_local.settings import LocalSettings
from mpr_local.worker import WorkerConsumer

from mpr.errors import ConfigError
from mpr.settings import get_settings


def test_queue_is_sqlite_in_var_dir_without_redis_and_priority_redis_with_it(queue_kind, media):
    queue = get_queue(get_settings())
    if queue_kind == "sqlite":
        assert isinstance(queue.huey, SqliteHuey)
        assert queue.huey.storage.filename == str(media["var"] / "queue.db")
    else:
        assert isinstance(queue.huey, PriorityRedisHuey)
    assert queue.kind == queue_kind
    assert get_queue(get_settings()) is queue


def test_higher_priority_jobs_run_first_in_enqueue_order(queue_kind, media):
    order: list[str] = []
    done = threading.Event()

    def runner(job_id: str, *, cancel: threading.Event | None = None, worker: str = "") -> None:
        order.append(job_id)
        if len(order) == 5:
            done.set()

    settings = get_settings()
    queue = JobQueue(make_huey(settings), runner=runner)
    for job_id, priority in [("low-1", 0), ("high", 10), ("mid", 5), ("low-2", 0), ("urgent", 99)]:
        queue.enqueue(job_id, priority)
    assert queue.pending() == 5
    consumer = WorkerConsumer(queue, settings, LocalSettings.from_env())
    consumer.start()
    try:
        assert done.wait(10)
    finally:
        consumer.stop(graceful=True)
        queue.huey.flush()
        queue.close()
    assert order == ["urgent", "high", "mid", "low-1", "low-2"]


def test_runner_gets_a_cancel_event_and_the_worker_identity(queue_kind, media):
    seen: dict[str, object] = {}
    done = threading.Event()

    def runner(job_id: str, *, cancel: threading.Event | None = None, worker: str = "") -> None:
        seen.update(job_id=job_id, cancel=cancel, worker=worker)
        done.set()

    settings = get_settings()
    queue = JobQueue(make_huey(settings), runner=runner)
    local = LocalSettings.from_env()
    consumer = WorkerConsumer(queue, settings, local)
    # an idle worker looks at the queue at least every 0.25 s (huey's default backs off to 10 s)
    assert consumer.default_delay == local.poll_interval and consumer.max_delay == local.max_poll_interval <= 0.25
    consumer.start()
    try:
        task_id = queue.enqueue("abc", 0)
        assert done.wait(30)
    finally:
        consumer.stop(graceful=True)
        queue.huey.flush()
        queue.close()
    assert task_id
    assert seen["job_id"] == "abc"
    assert isinstance(seen["cancel"], threading.Event) and not seen["cancel"].is_set()
    _host, pid, thread = str(seen["worker"]).split(":")
    assert pid.isdigit() and thread.startswith("Worker-")


def test_local_settings_reject_bad_values():
    assert LocalSettings.from_env({}).queue_name == "mpr"
    with pytest.raises(ConfigError, match="MPR_LOCAL_QUEUE"):
        LocalSettings.from_env({"MPR_LOCAL_QUEUE": "a b;c"})
    with pytest.raises(ConfigError, match="MPR_LOCAL_HEARTBEAT_INTERVAL"):
        LocalSettings.from_env({"MPR_LOCAL_HEARTBEAT_INTERVAL": "soon"})
    assert LocalSettings.from_env({}).reaper_every(60) == 10
    assert LocalSettings.from_env({}).reaper_every(3) == 1
    assert LocalSettings.from_env({"MPR_LOCAL_REAPER_INTERVAL": "0.5"}).reaper_every(60) == 0.5


def test_plugin_registers_local_executor_and_worker_command(media):
    from mpr_local.executor import LocalExecutor

    from mpr.executors import get_executor
    from mpr.plugins import load_plugins, plugin_manager

    assert load_plugins().executors["local"] is LocalExecutor
    assert isinstance(get_executor("local"), LocalExecutor)
    group = click.Group("mpr")
    plugin_manager().hook.register_commands(cli=group)
    assert "worker" in group.commands


def test_worker_command_refuses_an_unmigrated_database_with_a_clear_error(media):
    import os
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mpr"), "worker"],
        env={**os.environ, "MPR_DATABASE_URL": f"sqlite://{media['var'] / 'empty.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot use the database" in proc.stderr and "mpr migrate" in proc.stderr
    assert "Traceback" not in proc.stderr


class _Touch:
    """A pickle that creates a file when unpickled: what a hostile queue entry could do with pickle."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_queue_entries_are_json_so_a_pickle_on_the_queue_runs_nothing(queue_kind, media):
    import pickle

    marker = media["var"] / "pwned"
    ran: list[str] = []
    done = threading.Event()

    def runner(job_id: str, *, cancel: threading.Event | None = None, worker: str = "") -> None:
        ran.append(job_id)
        done.set()

    settings = get_settings()
    queue = JobQueue(make_huey(settings), runner=runner)
    queue.huey.storage.enqueue(pickle.dumps(_Touch(marker)), 5)  # taken first (higher priority)
    queue.enqueue("after-the-bad-entry", 0)
    assert queue.queued_job_ids() == {"after-the-bad-entry"}
    consumer = WorkerConsumer(queue, settings, LocalSettings.from_env())
    consumer.start()
    try:
        assert done.wait(10)
    finally:
        consumer.stop(graceful=True)
        queue.huey.flush()
        queue.close()
    assert ran == ["after-the-bad-entry"]
    assert not marker.exists()


def test_json_serializer_round_trips_huey_messages_with_dates_and_callbacks(media):
    import datetime as dt

    from mpr_local.queue import JsonSerializer

    queue = JobQueue(make_huey(get_settings()))
    task = queue.task.s("job-1", priority=3, eta=dt.datetime(2030, 1, 1, 12, 0), expires=30)
    task.on_complete = queue.task.s("job-2")
    message = queue.huey._registry.create_message(task)
    serializer = JsonSerializer()
    data = serializer.serialize(message)
    assert data.startswith(b'["m",') and b"job-1" in data
    assert serializer.deserialize(data) == message
    again = queue.huey.deserialize_task(queue.huey.serialize_task(task))
    assert again.args == ("job-1",) and again.priority == 3 and again.eta == dt.datetime(2030, 1, 1, 12, 0)
    assert again.on_complete.args == ("job-2",)
    with pytest.raises(TypeError, match="cannot put a set on the MPR queue"):
        serializer.serialize({1, 2})
    queue.close()
